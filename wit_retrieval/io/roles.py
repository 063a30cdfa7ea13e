"""Detect which column of a released EI/MMIR file plays which role, from its header and content.

The released files' column names are not published, so nothing here relies on header names
except as a last tie-break: roles are read off the values (a column whose values contain
`[MASK_` is the masked text, Commons URLs are images, `/wiki/` URLs are pages, lists of URLs
are the entity images, ...). Every decision carries its evidence, and the user can override.
"""

from __future__ import annotations

import ast
import codecs
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from ..errors import ConfigError, InputError
from .tsv import RowErrors, decode_byte_literal, read_header, read_tsv_rows

MMIR_ROLES = ("target_image_url", "masked_text", "entity_image_urls", "entity_names", "language", "page_url",
              "page_title")
EI_ROLES = ("image_url", "entity_name", "language", "page_url", "entity_id")
REQUIRED = {"mmir": ("target_image_url", "masked_text", "entity_image_urls"), "ei": ("image_url", "entity_name")}
EXTRA = "_extra"  # fields beyond the header's width (rows may be wider than the header)
SAMPLE_ROWS = 500

_URL = re.compile(r"^https?://\S+$")
_IMAGE_HOSTS = ("upload.wikimedia.org", "commons.wikimedia.org")
_LANG = re.compile(r"^[a-z]{2,3}(-[a-z0-9]+)*$")
_QID = re.compile(r"^Q\d+$")


# Unrolled loops ("normal* (special normal*)*"): Python's re is slow on per-character alternation.
_ITEM = r"""b?(?:'[^'\\]*(?:\\.[^'\\]*)*'|"[^"\\]*(?:\\.[^"\\]*)*")"""
_PY_LIST = re.compile(rf"\[\s*(?:{_ITEM}\s*(?:,\s*{_ITEM}\s*)*,?\s*)?\]", re.S)
_PY_ITEM = re.compile(r"""(b?)(?:'([^'\\]*(?:\\.[^'\\]*)*)'|"([^"\\]*(?:\\.[^"\\]*)*)")""", re.S)


def _unrepr(is_bytes: str, body: str) -> str:
    """One item of a Python list repr, without calling the compiler (as ast.literal_eval does)."""
    if "\\" not in body:
        return body
    if is_bytes:
        return codecs.escape_decode(body.encode("utf-8"))[0].decode("utf-8", "replace")
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _bracketed_list(text: str) -> tuple[list[str], str] | None:
    """A JSON list or a Python list repr of strings / byte strings; None if neither."""
    if not text.startswith('["') and _PY_LIST.fullmatch(text):  # '["' is JSON's way (or repr of "it's")
        return [_unrepr(b, s1 or s2) for b, s1, s2 in _PY_ITEM.findall(text)], "python"
    try:
        return [str(v) for v in json.loads(text)], "json"
    except (ValueError, TypeError):
        pass
    try:
        items = ast.literal_eval(text)
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items], "python"
    except (ValueError, SyntaxError, TypeError, MemoryError):
        return None


def split_list(value: str | list | None, *, names: bool = False) -> tuple[list[str], str]:
    """(items, encoding) of a list cell: JSON list, Python list repr, '|' or ' ' separated, or single.

    Space separation is only accepted for URLs (`names=False`): names contain spaces.
    """
    if value is None or value == "":
        return [], "empty"
    if isinstance(value, list):
        return [str(v) for v in value], "fields"
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        parsed = _bracketed_list(text)
        if parsed is not None:
            return parsed
    if "|" in text:
        return [decode_byte_literal(t.strip()) for t in text.split("|") if t.strip()], "pipe"
    tokens = text.split()
    if not names and len(tokens) > 1 and all(_URL.match(t) for t in tokens):
        return tokens, "space"
    return [text], "single"


@dataclass
class _Profile:
    """What the sampled values of one column look like."""

    index: int
    name: str
    values: int = 0
    mask: int = 0
    image_url: int = 0
    page_url: int = 0
    url_list: int = 0
    list_items: int = 0
    lang: int = 0
    qid: int = 0
    encodings: dict[str, int] = field(default_factory=dict)

    def add(self, value) -> None:
        if value is None or value == "":
            return
        self.values += 1
        text = value if isinstance(value, str) else " ".join(value)
        self.mask += "[MASK_" in text
        self.lang += bool(_LANG.match(text)) and len(text) <= 12
        self.qid += bool(_QID.match(text))
        if isinstance(value, str) and _URL.match(value):
            image = any(h in value for h in _IMAGE_HOSTS)
            self.image_url += image
            self.page_url += not image and "/wiki/" in value
        items, encoding = split_list(value)
        if encoding != "single" and items and all(_URL.match(i) for i in items):
            self.url_list += 1
            self.list_items += len(items)
            self.encodings[encoding] = self.encodings.get(encoding, 0) + 1

    def frac(self, count: int) -> float:
        return count / self.values if self.values else 0.0

    def describe(self, count: int, what: str) -> str:
        where = "fields beyond the header" if self.name == EXTRA else f"column {self.index} {self.name!r}"
        return f"{where}: {count}/{self.values} sampled values {what}"


@dataclass(frozen=True)
class ColumnMapping:
    """Role -> header name for one released file, with the evidence behind each choice."""

    path: str
    kind: str
    header: tuple[str, ...]
    roles: dict[str, str]
    evidence: dict[str, str]
    list_encoding: str = "single"

    def __str__(self) -> str:
        lines = [f"{self.path} ({self.kind}, list encoding: {self.list_encoding})"]
        width = max(len(r) for r in self.roles) if self.roles else 0
        for role in MMIR_ROLES if self.kind == "mmir" else EI_ROLES:
            header = self.roles.get(role)
            shown = "-" if header is None else repr(header)
            lines.append(f"  {role:<{width}}  <- {shown:<28} {self.evidence.get(role, 'not found')}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"path": self.path, "kind": self.kind, "header": list(self.header), "roles": self.roles,
                "evidence": self.evidence, "list_encoding": self.list_encoding}


def kind_from_name(path: str | os.PathLike) -> str | None:
    """`ei` or `mmir` from a released file's name, or None."""
    name = Path(path).name.lower()
    if "entity_image" in name or name.startswith("ei"):
        return "ei"
    if "mmir" in name:
        return "mmir"
    return None


def _profiles(path, header: list[str]) -> tuple[list[_Profile], list[dict]]:
    profiles = [_Profile(i, name) for i, name in enumerate(header)] + [_Profile(len(header), EXTRA)]
    rows = []
    for row in read_tsv_rows(path, errors=RowErrors(), variable_fields=True):
        rows.append(row)
        for profile in profiles:
            profile.add(row.get(profile.name))
        if len(rows) >= SAMPLE_ROWS:
            break
    return profiles, rows


def _best(profiles: list[_Profile], score, used: set[str], threshold: float = 0.5) -> _Profile | None:
    candidates = [p for p in profiles if p.name not in used and p.values and score(p) >= threshold]
    return max(candidates, key=lambda p: (score(p), -p.index), default=None)


def _title_match(profiles, rows, page_url_col: str | None, used: set[str]) -> _Profile | None:
    """The column whose values equal the page title spelled in the page URL."""
    if page_url_col is None:
        return None
    def score(p: _Profile) -> float:
        hits = sum(1 for r in rows if r.get(p.name) and r.get(page_url_col)
                   and unquote(r[page_url_col].rsplit("/", 1)[-1]).replace("_", " ") == r[p.name])
        return hits / p.values
    return _best(profiles, score, used)


def _text_column(profiles, used: set[str], kind: str) -> _Profile | None:
    """Fallback for names/titles: a non-URL, non-code column (header names only break ties)."""
    hint = ("name", "entity") if kind == "ei" else ("title",)
    def score(p: _Profile) -> float:
        plain = 1 - p.frac(p.image_url + p.page_url + p.url_list + p.lang + p.qid + p.mask)
        return plain + 0.1 * any(h in p.name.lower() for h in hint)
    return _best(profiles, score, used, threshold=0.9)


def _names_column(profiles, rows, urls_col: str | None, used: set[str]) -> _Profile | None:
    """A column listing one name per entity image: its item counts follow the URL lists'."""
    if urls_col is None:
        return None
    multi = [r for r in rows if len(split_list(r.get(urls_col))[0]) > 1]
    if not multi:
        return None  # single-entity rows alone cannot tell a names column from any text column

    def score(p: _Profile) -> float:
        if p.frac(p.image_url + p.page_url + p.url_list + p.mask) > 0.1:
            return 0.0
        same = sum(1 for r in multi if len(split_list(r.get(p.name), names=True)[0])
                   == len(split_list(r.get(urls_col))[0]))
        return same / len(multi)
    return _best(profiles, score, used, threshold=0.8)


def _resolve_overrides(overrides: dict[str, str], header: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    resolved = {}
    for role, column in overrides.items():
        if role not in allowed:
            raise ConfigError(f"unknown role {role!r}; roles are: {', '.join(allowed)}")
        if column not in header and column != EXTRA:
            if column.isdigit() and int(column) < len(header):
                column = header[int(column)]  # a 0-based column index
            else:
                raise ConfigError(f"--column {role}={column}: no such column; columns are: {', '.join(header)}")
        resolved[role] = column
    return resolved


def detect_columns(
    path: str | os.PathLike, kind: str | None = None, overrides: dict[str, str] | None = None
) -> ColumnMapping:
    """Detect the role of each column of a released EI/MMIR file (overrides win), with evidence."""
    header = read_header(path)
    profiles, rows = _profiles(path, header)
    kind = kind or kind_from_name(path) or ("mmir" if any(p.frac(p.mask) > 0.5 for p in profiles) else "ei")
    if kind not in REQUIRED:
        raise ConfigError(f"unknown kind {kind!r}; use ei or mmir")
    mmir = kind == "mmir"
    roles = _resolve_overrides(dict(overrides or {}), header, MMIR_ROLES if mmir else EI_ROLES)
    evidence = {role: "set by --column" for role in roles}
    used = set(roles.values())

    def assign(role: str, profile: _Profile | None, why) -> None:
        if role not in roles and profile is not None:
            roles[role], evidence[role] = profile.name, why(profile)
            used.add(profile.name)

    image_role = "target_image_url" if mmir else "image_url"
    # column 0 is an image URL in the released files: it wins a tie
    assign(image_role, _best(profiles, lambda p: p.frac(p.image_url) + 0.01 * (p.index == 0), used),
           lambda p: p.describe(p.image_url, "are Commons image URLs"))
    if mmir:
        assign("masked_text", _best(profiles, lambda p: p.frac(p.mask), used),
               lambda p: p.describe(p.mask, "contain [MASK_"))
        assign("entity_image_urls", _best(profiles, lambda p: p.frac(p.url_list + p.image_url), used),
               lambda p: p.describe(p.url_list + p.image_url, f"are image URLs or URL lists ({p.list_items} in lists)"))
    assign("language", _best(profiles, lambda p: p.frac(p.lang), used, 0.8),
           lambda p: p.describe(p.lang, "are language codes"))
    assign("page_url", _best(profiles, lambda p: p.frac(p.page_url), used),
           lambda p: p.describe(p.page_url, "are Wikipedia page URLs"))
    title_role = "page_title" if mmir else "entity_name"
    assign(title_role, _title_match(profiles, rows, roles.get("page_url"), used),
           lambda p: f"column {p.index} {p.name!r}: values equal the title in the page URL")
    assign(title_role, _text_column(profiles, used, kind),
           lambda p: f"column {p.index} {p.name!r}: the plain-text column left (no URLs, codes or masks)")
    if mmir:
        assign("entity_names", _names_column(profiles, rows, roles.get("entity_image_urls"), used),
               lambda p: f"column {p.index} {p.name!r}: one item per entity image URL")
    else:
        assign("entity_id", _best(profiles, lambda p: p.frac(p.qid), used, 0.8),
               lambda p: p.describe(p.qid, "are Wikidata ids"))
    missing = [r for r in REQUIRED[kind] if r not in roles]
    if missing:
        raise InputError(
            f"could not detect the {', '.join(missing)} column(s) of this {kind} file; name them with "
            f"--column ROLE=HEADER (columns are: {', '.join(header)})", path=str(path))
    urls = next((p for p in profiles if p.name == roles.get("entity_image_urls")), None)
    encoding = max(urls.encodings, key=urls.encodings.get) if urls and urls.encodings else "single"
    return ColumnMapping(str(path), kind, tuple(header), roles, evidence, encoding)
