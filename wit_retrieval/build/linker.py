"""Entity linkers: a gazetteer over `entity_names` (Aho-Corasick), or spans a user brings.

A linker turns one reference description into non-overlapping spans
`(start, end, entity_id)` with character offsets in the original text. Linkers are
registered names (`LINKERS`): `gazetteer` and `spans`. A build process creates its linker
once (`load_linker`, cached per process) and the gazetteer builds one automaton per
language on first use, never per row.
"""

from __future__ import annotations

import itertools
import json
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from ..errors import ConfigError, require
from ..io import fs
from ..registry import Registry
from .names import (
    ascii_match_form,
    fold,
    fold_with_offset_map,
    fold_with_offsets,
    match_form,
    strip_qualifier,
    uses_spaces,
)

Span = tuple[int, int, str]  # (start, end, entity_id), offsets in the original text


class Linker(Protocol):
    def link(self, text: str, language: str, row_id: str) -> list[Span]:
        """Non-overlapping spans of entity mentions in `text`, sorted by start."""
        ...

    def link_batch(self, texts: list[str], languages: list[str], row_ids: list[str] | None) -> list[list[Span]]:
        """link() of many rows (a linker may do it faster than row by row)."""
        ...


LINKERS: Registry[Linker] = Registry("linker")


@dataclass(frozen=True)
class LinkerSpec:
    """Which linker a build uses, in a picklable form that workers rebuild from."""

    name: str = "gazetteer"
    names_path: str | None = None  # entity_names table folder (gazetteer)
    spans_path: str | None = None  # JSONL of {row_id, start, end, entity_id} (spans)
    min_length: int = 3  # shortest name matched, in characters
    allow_digit_names: bool = False  # names made only of digits ("1984") are not matched

    def __post_init__(self):
        if self.name not in LINKERS:
            LINKERS.get(self.name)  # raises with did-you-mean
        if self.name == "spans" and not self.spans_path:
            raise ConfigError("the spans linker needs --spans FILE (JSONL of {row_id, start, end, entity_id})")


_CACHE: dict[LinkerSpec, Linker] = {}
_CACHE_VERSION = 7  # bump when the automaton's keys or values change shape
GAZETTEER_CACHE = "_gazetteer"  # folder inside entity_names (ignored by readers: leading underscore)


def load_linker(spec: LinkerSpec) -> Linker:
    """The linker of `spec`, built once per process."""
    linker = _CACHE.get(spec)
    if linker is None:
        linker = _CACHE[spec] = LINKERS.create(spec.name, spec)
    return linker


def _leftmost_longest_key(span: Span) -> tuple[int, int]:
    return span[0], -span[1]


def leftmost_longest(spans: list[Span]) -> list[Span]:
    """Keep the leftmost span, the longest on ties, then the next that does not overlap."""
    kept: list[Span] = []
    last_end = -1
    for span in sorted(spans, key=_leftmost_longest_key):
        if span[0] >= last_end:
            kept.append(span)
            last_end = span[1]
    return kept


@dataclass
class _Language:
    """One language's matching keys; the automata are built from them on first use, per process."""

    keys: list[str]  # padded match forms
    values: list[tuple]  # (length, right, left, target): target an entity id, {title: id}, or None (blocker)
    ambiguous: int  # folded names not linked because they name several entities
    names: int
    _automaton: object = None

    @property
    def automaton(self):
        """pyahocorasick's automaton of the keys (None when there are none)."""
        if self._automaton is None and self.keys:
            import ahocorasick

            automaton = ahocorasick.Automaton()
            for key, value in zip(self.keys, self.values):
                automaton.add_word(key, value)
            automaton.make_automaton()
            self._automaton = automaton
        return self._automaton

    def __getstate__(self):  # sent to workers without the automaton (rebuilt there from the keys)
        return {**self.__dict__, "_automaton": None}


class Gazetteer:
    """Matches entity names per language: casefolded, NFKC, leftmost-longest, word bounded."""

    def __init__(self, spec: LinkerSpec, names=None):
        require("ahocorasick", "base")


        self.spec = spec
        if names is None and not spec.names_path:
            raise ConfigError("the gazetteer linker needs the entity_names table; run `build ei` first")
        self._names = names
        self.load_cpu_seconds = 0.0  # spent loading or building automata (one-time, per process)
        self._by_language: dict[str, object] | None = None  # read on the first cache miss only
        self._languages: dict[str, _Language | None] = {}
        self._compiled: dict[str, dict | None] = {}

    def _names_of(self, language: str):
        """The names of one language (the table is read and split by language once)."""
        import pyarrow.compute as pc

        from ..io.shards import read_table_dir

        if self._by_language is None:
            columns = ["entity_id", "language", "name", "source"]
            table = read_table_dir(self.spec.names_path, columns=columns) if self._names is None \
                else self._names.select(columns)
            self._by_language = {}
            for code in pc.unique(table["language"]).to_pylist():
                if code is not None:
                    self._by_language[code] = table.filter(pc.equal(table["language"], code))
        return self._by_language.get(language)

    def warm_cache(self) -> int:
        """Build the on-disk automaton cache of every language that lacks one (once, here, rather
        than in every build worker at the same time); returns how many were built. Nothing stays
        in memory."""
        if not self.spec.names_path or self._names is not None:
            return 0
        from . import fastpath

        kinds = (False, True) if fastpath.enabled() else (False,)
        built = [code for code in self.languages() if not all(self._cache_path(code, fast).exists() for fast in kinds)]
        for code in built:
            self.language(code)  # the keys first: the compiled form is made from them, in memory
            if fastpath.enabled():
                self.compiled(code)
        self._by_language = None
        self._languages.clear()
        self._compiled.clear()
        return len(built)

    def languages(self) -> list[str]:
        """The language codes that have names."""
        import pyarrow.compute as pc

        from ..io.shards import read_table_dir

        table = self._names if self._names is not None else read_table_dir(self.spec.names_path, columns=["language"])
        return [code for code in pc.unique(table["language"]).to_pylist() if code is not None]

    def _cache_path(self, language: str, fast: bool = False):
        """Where a language's automaton is cached: keyed by the table's manifest and the options."""
        import hashlib

        from ..io.shards import read_manifest

        manifest = read_manifest(self.spec.names_path)
        key = json.dumps([manifest, language, self.spec.min_length, self.spec.allow_digit_names, _CACHE_VERSION],
                         sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return fs.join(self.spec.names_path, GAZETTEER_CACHE, f"{language}-{digest}.{'fast' if fast else 'keys'}.arrow")

    def language(self, language: str) -> _Language | None:
        """The automaton of one language (None when it has no names); built once, cached on disk."""
        return self._loaded(self._languages, language, fast=False)

    def compiled(self, language: str) -> dict | None:
        """What the C path needs of a language (`fastpath.compile_language`), cached on disk beside
        the keys and loaded without them: the keys are read only when a rare row needs Python."""
        return self._loaded(self._compiled, language, fast=True)

    def _loaded(self, store: dict, language: str, fast: bool):
        if language not in store:
            started, counted = time.process_time(), self.load_cpu_seconds
            store[language] = self._cached(language, fast)
            # a load nested in this one (the keys a compiled form is made from) counted itself
            self.load_cpu_seconds += time.process_time() - started - (self.load_cpu_seconds - counted)
        return store[language]

    def _cached(self, language: str, fast: bool = False):
        """Load the language's keys (or, `fast`, its compiled form) from the table's cache, or make
        and store them there.

        The cache key covers the table's manifest and the matching options, so a rebuilt
        entity_names table or other options never reuse a stale automaton.
        """
        from ..io.shards import read_manifest
        from . import gazetteer_cache as cache

        manifest = read_manifest(self.spec.names_path) if self.spec.names_path and self._names is None else None
        if manifest is None:
            return self._make(language, fast)
        path = self._cache_path(language, fast)
        if path.exists():
            try:  # data only (Arrow IPC): the cache may sit on storage others write to
                return cache.load_compiled(path) if fast else cache.load_language(path, _Language)
            except FileNotFoundError:
                pass  # a compiled form without its blob: made again
            except (cache.CacheFormatError, pa.ArrowInvalid, KeyError, ValueError):
                cache.remove(path)  # a damaged or foreign cache file is rebuilt, never trusted
        made = self._make(language, fast)
        if made is not None:
            (cache.save_compiled if fast else cache.save_language)(path, made)
        return made

    def _make(self, language: str, fast: bool):
        if fast:
            from .fastpath import compile_language

            lang = self.language(language)
            return None if lang is None else compile_language(lang)
        names = self._names_of(language)
        return None if names is None else self._build(names)

    def _build(self, names) -> _Language:
        candidates: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        exact_titles: dict[str, dict[str, str]] = defaultdict(dict)
        blockers: set[str] = set()
        for entity_id, name, source in zip(
            names["entity_id"].to_pylist(), names["name"].to_pylist(), names["source"].to_pylist()
        ):
            # punctuation at a name's ends stays in the key (as a separator): "X (band)" ends at ")"
            key = match_form(fold(name.strip()))
            if not self.usable(key.strip()):
                continue
            candidates[key][entity_id].add(source)
            if source == "title":
                exact_titles[key][name] = entity_id
                base = strip_qualifier(name)
                if base:
                    blockers.add(match_form(fold(base.strip())))
        keys: list[str] = []
        values: list[tuple] = []
        ambiguous = 0
        # an ambiguous name stays in as a blocker (target None): it links nothing, and no
        # shorter name inside it links either ("Copper Shield" inside "Western Copper Shield");
        # so do the qualifier-less titles `build ei` left out because they collide
        for key in blockers - candidates.keys():
            if self.usable(key.strip()):
                candidates[key] = {}
        for key, entities in candidates.items():
            target = resolve(entities, exact_titles.get(key, {})) if entities else None
            ambiguous += target is None
            # the right word boundary lives in the key ("name " ends before a separator); the left
            # one is checked per match (a space there would be eaten by the previous match)
            left, right = (int(c != " " and uses_spaces(c)) for c in (key[0], key[-1]))
            padded = key + " " * right
            keys.append(padded)
            values.append((len(padded), right, left, target))
        return _Language(keys, values, ambiguous, len(candidates))

    def usable(self, key: str) -> bool:
        """Whether a folded name may be matched at all (length, not only digits)."""
        if len(key) < self.spec.min_length:
            return False
        word_chars = "".join(c for c in key if c.isalnum())
        return bool(word_chars) and (self.spec.allow_digit_names or not word_chars.isdigit())

    def link(self, text: str, language: str, row_id: str = "") -> list[Span]:
        """Spans of the names of `language` in `text` (offsets in the original text)."""
        lang = self.language(language)
        if lang is None or lang.automaton is None:
            return []
        if text.isascii():
            form, offsets = ascii_match_form(text), None
        else:
            folded, offsets = fold_with_offsets(text)
            form = match_form(folded)
        found: list[Span] = []
        # positions in it are one more than in the folded text; the NUL ends the row as in link_batch
        scanned = " " + form + _ROW_END
        for last, (length, right, left, target) in lang.automaton.iter_long(scanned):
            first = last - length + 1
            if left and scanned[first - 1] not in _SEPARATORS:  # starts inside a word
                continue
            start, end = first - 1, last - right
            if offsets is not None:
                start, end = offsets[start], offsets[end]
                if start < 0 or end < 0:  # inside one character's expansion
                    continue
            if target is not None and not isinstance(target, str):  # several exact titles: the case-exact one
                target = target.get(text[start:end])
            found.append((start, end, target))
        return _select(found)

    def link_batch(self, texts: list[str], languages: list[str], row_ids=None) -> list[list[Span]]:
        """link() of many rows: rows of one language are scanned as one string, in C."""
        out: list[list[Span]] = [[] for _ in texts]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, language in enumerate(languages):
            groups[language].append(i)
        for language, rows in groups.items():
            lang = self.language(language)
            if lang is None or lang.automaton is None:
                continue
            ascii_rows, nfc_rows = [], []
            for i in rows:
                text = texts[i]
                if text.isascii():
                    ascii_rows.append(i)
                elif unicodedata.is_normalized("NFC", text):
                    nfc_rows.append(i)
                else:  # decomposed text: folded row by row (rare: Wikipedia stores NFC)
                    out[i] = self.link(text, language)
            if ascii_rows:
                forms = ascii_match_form(_ROW_SEPARATOR.join([texts[i] for i in ascii_rows]))
                _scan(lang.automaton, forms, None, ascii_rows, texts, out)
            if nfc_rows:
                folded, offsets = fold_with_offset_map(_ROW_SEPARATOR.join([texts[i] for i in nfc_rows]))
                _scan(lang.automaton, match_form(folded), offsets, nfc_rows, texts, out)
        return out  # _scan already left the blockers out (what _select does for link())


# Between rows scanned as one string: NUL is in no key, so no name matches across rows,
# and the spaces around it are the word boundaries of the rows' ends.
_ROW_SEPARATOR = " \x00 "
# After every row, the last one and a row linked alone included: iter_long falls back to a
# shorter name (a fail link) only when a character stops the path, never at the string's end;
# so each row must end the same way for a row's spans not to depend on its neighbours.
_ROW_END = " \x00"


def _scan(automaton, form: str, offsets, rows: list[int], texts: list[str], out: list[list[Span]]) -> None:
    """Match the names in the match form of rows joined by _ROW_SEPARATOR (offsets: fold's map)."""
    # the hottest loop of a build: locals only, and the row boundary is found by a running
    # comparison (matches come sorted by position)
    gap = len(_ROW_SEPARATOR)
    starts = list(itertools.accumulate((len(texts[i]) + gap for i in rows), initial=0))
    row, row_start, next_start = 0, 0, starts[1]
    scanned = " " + form + _ROW_END
    separators = _SEPARATORS
    for last, (length, right, left, target) in automaton.iter_long(scanned):
        first = last - length + 1
        if left and scanned[first - 1] not in separators:
            continue
        start, end = first - 1, last - right  # in the joined folded text
        if offsets is not None:
            start, end = offsets[start], offsets[end]
            if start < 0 or end < 0:
                continue
        if start >= next_start:
            while start >= starts[row + 1]:
                row += 1
            row_start, next_start = starts[row], starts[row + 1]
        start -= row_start
        end -= row_start
        if target.__class__ is not str:  # a blocker (None), or several exact titles: the case-exact one
            target = None if target is None else target.get(texts[rows[row]][start:end])
            if target is None:  # blocked: what _select would drop
                continue
        out[rows[row]].append((start, end, target))


_SEPARATORS = frozenset(" \x00")


def _select(found: list) -> list[Span]:
    """The spans without the blockers (ambiguous names); iter_long already gave leftmost-longest."""
    return [span for span in found if span[2] is not None]


def resolve(entities: dict[str, set[str]], exact_titles: dict[str, str]) -> str | dict[str, str] | None:
    """The entity a folded name links to; a dict {title: entity} to decide by exact case; or None.

    A name of one entity links to it. A name of several links only where exactly one of them
    has it as its title; where several titles fold to it, the one spelled exactly as the
    surface wins at match time.
    """
    if len(entities) == 1:
        return next(iter(entities))
    titled = [entity for entity, sources in entities.items() if "title" in sources]
    if len(titled) == 1:
        return titled[0]
    if len(titled) > 1 and len(set(exact_titles.values())) > 1:
        return dict(exact_titles)
    return None


LINKERS.register("gazetteer")(Gazetteer)


from . import spans as _spans_linker  # noqa: E402, F401  (registers `spans`; it imports the names above)
