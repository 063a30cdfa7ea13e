"""The C path of the MMIR shard function: `_fastbuild.process` over whole Arrow batches.

`shard._queries_python` is the reference: for the gazetteer linker this path gives the same
table byte for byte (tests/test_build_fastpath.py), ~10x faster. It is used when the
extension was compiled (`pip install` does it; `setup.py` makes it optional) unless
`WIT_RETRIEVAL_PURE_PYTHON=1` is set. What C cannot know is asked of Python once per code
point (`char_info`) or per rare row (decomposed text, URLs that need parsing).
"""

from __future__ import annotations

import os
import time
import unicodedata
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..ids import normalize_url
from ..schema import MENTION, QUERIES
from .keys import string_buffers
from .names import _FOLDS, match_form

try:
    from . import _fastbuild
except ImportError:  # not compiled: the Python path runs
    _fastbuild = None


def enabled() -> bool:
    """Whether builds use the C path (compiled, and not switched off by WIT_RETRIEVAL_PURE_PYTHON=1)."""
    return _fastbuild is not None and os.environ.get("WIT_RETRIEVAL_PURE_PYTHON", "") not in ("1", "true", "yes")


def char_info(cp: int) -> tuple[str, bool]:
    """(match form of the character's fold, whether a text of such characters is surely NFC).

    A starter that is its own NFC and composes with nothing (no mark, no conjoining jamo) is
    safe; a row with any other character is checked with unicodedata.is_normalized first.
    """
    char = chr(cp)
    safe = (unicodedata.combining(char) == 0 and unicodedata.category(char)[0] != "M"
            and not 0x1100 <= cp <= 0x11FF and unicodedata.is_normalized("NFC", char))
    return match_form(_FOLDS[cp]), safe


class FastShard:
    """What one process's C calls share: the entity table as buffers and one C automaton per language."""

    def __init__(self, linker, images: dict[str, tuple[str, str]]):
        """`images`: entity_id -> (image_url, image_id); a shard.EntityImages is read as columns."""
        _fastbuild.set_charinfo(char_info)
        self.linker = linker
        self.images = images
        table = getattr(images, "table", None)
        if table is None:
            table = pa.table({"entity_id": pa.array(list(images), pa.string()),
                              "image_url": pa.array([v[0] for v in images.values()], pa.string()),
                              "image_id": pa.array([v[1] for v in images.values()], pa.string())})
        ids = table["entity_id"].to_pylist()
        self.index = dict(zip(ids, range(len(ids))))
        if len(self.index) < len(ids):  # a repeated id: the dict path keeps the last
            keep = sorted(self.index.values())
            table = table.take(pa.array(keep, pa.int64()))
            self.index = {entity: i for i, entity in enumerate(table["entity_id"].to_pylist())}
        self._entities = string_buffers(table["entity_id"])
        self._entities_array = table["entity_id"].combine_chunks() if isinstance(table["entity_id"], pa.ChunkedArray) \
            else table["entity_id"]
        self._urls = string_buffers(pc.fill_null(table["image_url"], ""))
        offsets, data = string_buffers(table["image_id"])
        self._images = bytes(data)[offsets[0]:offsets[-1]] if len(offsets) > 1 else b""
        if len(self._images) != 16 * len(ids):  # the C path compares 16 bytes per entity
            raise ValueError("entity image ids must be 16 hex digits each (ids.image_id)")
        self._has = bytes([1]) * len(ids)
        self._automata: dict[str, object] = {}
        self._choices: dict[str, list[dict[str, str]]] = {}

    def _entity(self, entity_id: str) -> int:
        """The index of an entity id; one the entity table lacks is added without an image."""
        index = self.index.get(entity_id)
        if index is None:
            index = self.index[entity_id] = len(self.index)
            self._entities = string_buffers(pa.array([*self.index], pa.string()))
            self._urls = string_buffers(pa.array([*_decode(self._urls), ""], pa.string()))
            self._images += b"0" * 16
            self._has += b"\x00"
        return index

    def automaton(self, language: str):
        """The C automaton of a language (None when it has no names); built once per process."""
        if language not in self._automata:
            compiled = self.linker.compiled(language)  # its load time is the linker's own
            started = time.process_time()
            if compiled is None or not len(compiled["targets"]):
                self._automata[language] = None
            else:
                targets = self._targets(compiled, self._choices.setdefault(language, []))
                automaton = _load_blob(compiled["blob"])
                if automaton is None:  # no cached blob (or another version's): built from the keys
                    lang = self.linker.language(language)
                    automaton = _fastbuild.Automaton(lang.keys, [(*value[:3], -1) for value in lang.values])
                automaton.set_targets(targets)
                self._automata[language] = automaton
            # a one-time load: the shard function's CPU leaves it out, as it does the linker's
            self.linker.load_cpu_seconds = getattr(self.linker, "load_cpu_seconds", 0.0) + (
                time.process_time() - started)
        return self._automata[language]

    def _targets(self, compiled: dict, choices: list) -> np.ndarray:
        """Each key's target for the C automaton: an entity index, -1 (a blocker) or -2 - k (choice k).

        Entity ids are looked up in one Arrow kernel (a Python loop over ~100k keys per language
        cost a worker a third of a second at start-up); the rare others one by one.
        """
        ids, others = compiled["targets"], compiled["others"]
        found = pc.index_in(ids, value_set=self._entities_array)
        targets = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        for k in map(int, np.flatnonzero(targets < 0)):  # blockers, choices, ids the entity table lacks
            targets[k] = self._target(others[k] if k in others else ids[k].as_py(), choices)
        return targets

    def _target(self, target, choices: list) -> int:
        if target is None:
            return -1
        if isinstance(target, str):
            return self._entity(target)
        choices.append(target)  # several exact titles: decided per match by the surface
        return -1 - len(choices)

    def queries(self, batch: pa.RecordBatch, split: str, filters, stats, candidates: pa.Array | None = None
                ) -> pa.Table:
        """The kept rows of a batch as a QUERIES table, and the drop counts added to `stats`.

        `candidates` (bool per row) skips the others without copying the batch (the rows without
        a reference description); None: every row is one.
        """
        from .shard import COPIED_COLUMNS

        codes = pc.dictionary_encode(batch.column("language"))
        languages = codes.dictionary.to_pylist()
        automata = tuple(self.automaton(code) if code is not None else None for code in languages)
        lang_index = pc.fill_null(codes.indices, -1).cast(pa.int32())
        texts = batch.column("caption_reference_description")
        out = _fastbuild.process(
            string_buffers(texts), string_buffers(pc.fill_null(batch.column("image_url"), "")),
            string_buffers(pc.fill_null(batch.column("page_url"), "")), _values(lang_index), automata,
            self._entities, self._urls, self._images, self._has, split.encode("utf-8"),
            max(filters.min_entities, 1), filters.max_entities, filters.min_context_words,
            filters.drop_target_is_entity_image,
            partial(self._fallback, texts, languages, lang_index), partial(self._choose, languages),
            normalize_url, partial(unicodedata.is_normalized, "NFC"),
            None if candidates is None else candidates.to_numpy(zero_copy_only=False).view(np.uint8))
        for name, count in out.pop("dropped").items():
            if count:  # stats.json lists the filters that dropped something, as the Python path does
                stats.dropped[name] += count
        return _table(out, split, batch, COPIED_COLUMNS)

    def _fallback(self, texts, languages, lang_index, row: int) -> list[tuple[int, int, int]]:
        language = languages[lang_index[row].as_py()]
        spans = self.linker.link(texts[row].as_py(), language)
        return [(start, end, self._entity(entity)) for start, end, entity in spans]

    def _choose(self, languages, lang: int, choice: int, surface: str) -> int:
        entity = self._choices[languages[lang]][choice].get(surface)
        return -1 if entity is None else self._entity(entity)


def compile_language(lang) -> dict:
    """What the C path needs of a linker._Language, cached by the gazetteer in place of its keys:
    the automaton as bytes (`blob`; None without the extension), each key's target entity id
    (`targets`; null for a blocker or a choice) and those others by key index (`others`)."""
    targets = [value[3] if value[3].__class__ is str else None for value in lang.values]
    return {"blob": automaton_blob(lang.keys, lang.values), "targets": pa.array(targets, pa.string()),
            "others": {k: value[3] for k, value in enumerate(lang.values) if value[3].__class__ is not str}}


def automaton_blob(keys: list[str], values: list[tuple]) -> bytes | None:
    """The C automaton of a language's keys as bytes (targets left out), for the gazetteer's cache."""
    if _fastbuild is None or not keys:
        return None
    return _fastbuild.Automaton(keys, [(*value[:3], -1) for value in values]).to_bytes()


def _load_blob(blob: bytes | None):
    if blob is None or _fastbuild is None:
        return None
    try:
        return _fastbuild.Automaton(blob)
    except ValueError:  # another version's layout: rebuilt from the keys
        return None


def _values(array: pa.Array) -> np.ndarray:
    return np.frombuffer(array.buffers()[1], np.int32)[array.offset:array.offset + len(array)]


def _decode(buffers: tuple) -> list[str]:
    offsets, data = buffers
    raw = bytes(data)
    return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]


def _string(pair: tuple[bytes, bytes], count: int) -> pa.Array:
    offsets, data = pair
    return pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _int32(data: bytes) -> pa.Array:
    return pa.Array.from_buffers(pa.int32(), len(data) // 4, [None, pa.py_buffer(data)])


def _table(out: dict, split: str, batch: pa.RecordBatch, copied: dict[str, str]) -> pa.Table:
    """The QUERIES table from process()'s buffers (the kept rows, in input order)."""
    rows = np.frombuffer(out["rows"], np.int64)
    kept = len(rows)
    list_offsets = pa.py_buffer(out["list_offsets"])
    names = len(out["entity_ids"][0]) // 4 - 1
    mentions = len(out["mask"]) // 4
    struct = pa.StructArray.from_arrays(
        [_int32(out["mask"]), _string(out["entity_id"], mentions), _string(out["surface"], mentions),
         _int32(out["start"]), _int32(out["end"])], fields=list(MENTION))
    arrays = {
        "query_id": _string(out["query_id"], kept),
        "target_image_id": _string(out["target_image_id"], kept),
        "masked_text": _string(out["masked_text"], kept),
        "entity_ids": pa.Array.from_buffers(QUERIES.field("entity_ids").type, kept, [None, list_offsets],
                                            children=[_string(out["entity_ids"], names)]),
        "entity_image_urls": pa.Array.from_buffers(QUERIES.field("entity_image_urls").type, kept,
                                                   [None, list_offsets], children=[_string(out["entity_image_urls"], names)]),
        "num_entities": _int32(out["num_entities"]),
        "mentions": pa.ListArray.from_arrays(pa.Array.from_buffers(pa.int32(), kept + 1, [None, pa.py_buffer(out["mention_offsets"])]),
                                             struct, type=QUERIES.field("mentions").type),
    }
    taken = batch.take(pa.array(rows, pa.int64()))
    arrays.update({name: taken.column(source) for name, source in copied.items()})
    arrays["split"] = pa.array([split] * kept, pa.string())
    arrays["query_type"] = pc.if_else(pc.greater(arrays["num_entities"], 1), "multi", "single")
    return pa.table([arrays[name] for name in QUERIES.names], schema=QUERIES)
