"""Streaming reader of MediaWiki SQL dumps (`page`, `page_props`, `redirect`, ...).

A dump is MySQL text: `CREATE TABLE` statements and `INSERT INTO \\`t\\` VALUES (...),(...);`
lines of many megabytes. The reader decodes fixed-size chunks and tokenises tuple by tuple,
keeping only the unfinished tail of a chunk, so memory stays flat however long a line is.
Column positions come from the dump's own `CREATE TABLE` when present (a newer dump may reorder
columns), else from the documented order.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ..errors import InputError
from .segments import READ_ERRORS, damaged, open_binary
from .tsv import RowErrors

# Documented column orders (reference/domain.md section 3), used when a dump has no CREATE TABLE.
DEFAULT_COLUMNS = {
    "page": ("page_id", "page_namespace", "page_title", "page_is_redirect", "page_is_new", "page_random",
             "page_touched", "page_links_updated", "page_latest", "page_len", "page_content_model",
             "page_lang"),
    "page_props": ("pp_page", "pp_propname", "pp_value", "pp_sortkey"),
    "redirect": ("rd_from", "rd_namespace", "rd_title", "rd_interwiki", "rd_fragment"),
}
DEFAULT_PROPS = frozenset({"page_image_free", "page_image", "wikibase_item", "disambiguation"})

_STATEMENT = re.compile(r"INSERT INTO `([^`]+)` VALUES\s*|CREATE TABLE `([^`]+)` \(")
# One tuple; the alternatives are disjoint, so a failed match (unfinished tuple) backtracks linearly.
# Possessive quantifiers (Python >= 3.11) make both patterns about 3x faster.
if sys.version_info >= (3, 11):
    _TUPLE = re.compile(r"\(((?:[^'()]++|'(?:[^'\\]++|\\.)*+')*+)\)", re.S)
    _VALUE = re.compile(r"'((?:[^'\\]++|\\.)*+)'|([^,']+)", re.S)
else:  # pragma: no cover
    _TUPLE = re.compile(r"\(((?:[^'()]|'(?:[^'\\]|\\.)*')*)\)", re.S)
    _VALUE = re.compile(r"'((?:[^'\\]|\\.)*)'|([^,']+)", re.S)
_COLUMN = re.compile(r"^\s*`([^`]+)`\s", re.M)
_ESCAPE = re.compile(r"\\(.)", re.S)
_UNESCAPE = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_QUOTE = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\x1a": "\\Z", '"': '\\"'}
_MAX_TUPLE_CHARS = 64 << 20


class Page(NamedTuple):
    page_id: int
    namespace: int
    title: str  # as in the dump: underscores for spaces
    is_redirect: bool


class PageProp(NamedTuple):
    page_id: int
    name: str
    value: str | None


class Redirect(NamedTuple):
    from_id: int
    namespace: int
    title: str  # target title, underscores for spaces


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return _ESCAPE.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), s)


def _convert(raw: str):
    if raw[0] in " \n\t":
        raw = raw.strip()
    if raw == "NULL":
        return None
    # no try/except: exceptions on every float would cost a third of the parse time
    return float(raw) if ("." in raw or "e" in raw or "E" in raw) else int(raw)


def parse_tuple(inner: str) -> tuple:
    """Values of one tuple's inner text: str, int, float or None."""
    return tuple([_unescape(s) if not raw else _convert(raw) for s, raw in _VALUE.findall(inner)])


def sql_quote(value) -> str:
    """A value as MySQL dump text (strings quoted and escaped like mysqldump)."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + "".join(_QUOTE.get(c, c) for c in value) + "'"


class DumpReader:
    """Iterates `(table, values)` over every tuple of a dump; learns columns from CREATE TABLE."""

    def __init__(self, path: str | os.PathLike, *, chunk_size: int = 1 << 20, errors: RowErrors | None = None,
                 keep: Callable[[str], bool] | None = None):
        self.path = str(path)
        self.chunk_size = chunk_size
        self.errors = errors
        self.keep = keep  # a cheap test on a tuple's raw text: the others are never converted
        self.columns: dict[str, tuple[str, ...]] = {}
        self.lines_read = 1  # lines consumed so far, for error messages

    def _chunks(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            with open_binary(self.path) as f:
                while chunk := f.read(self.chunk_size):
                    yield decoder.decode(chunk)
        except READ_ERRORS as exc:
            raise damaged(self.path, self.lines_read, exc) from None
        yield decoder.decode(b"", final=True)

    def __iter__(self) -> Iterator[tuple[str, tuple]]:
        chunks = self._chunks()
        buf, pos, line, table, eof, after_tuple = "", 0, 1, None, False, False
        while True:
            if table is None:
                m = _STATEMENT.search(buf, pos)
                if m and m.group(2):
                    end = buf.find("\n)", m.end())
                    if end >= 0:
                        self.columns[m.group(2)] = tuple(_COLUMN.findall(buf, m.end(), end))
                        pos = end
                        continue
                elif m:
                    table, pos = m.group(1), m.end()
                    continue
                elif not eof:
                    pos = max(pos, len(buf) - 64)  # keep a possibly cut keyword
            else:
                while pos < len(buf) and buf[pos] in " \n\r\t":
                    pos += 1
                if after_tuple and pos < len(buf):
                    # ',' continues the statement; ';' (or anything else) ends it
                    table = table if buf[pos] == "," else None
                    pos, after_tuple = pos + 1, False
                    continue
                m = _TUPLE.match(buf, pos) if not after_tuple else None
                if m:
                    if self.keep is None or self.keep(m.group(1)):
                        yield table, parse_tuple(m.group(1))
                    pos, after_tuple = m.end(), True
                    continue
                if pos < len(buf) and not after_tuple and (
                    buf[pos] != "(" or len(buf) - pos > _MAX_TUPLE_CHARS or eof
                ):
                    pos, table = self._skip_bad(buf, pos, line), None
                    continue
            if eof:
                return
            line += buf.count("\n", 0, pos)
            self.lines_read = line
            buf, pos = buf[pos:], 0
            try:
                buf += next(chunks)
            except StopIteration:
                eof = True

    def _skip_bad(self, buf: str, pos: int, line: int) -> int:
        """Report an unparsable tuple and resume at the next line (the next INSERT statement)."""
        where = line + buf.count("\n", 0, pos)
        reason = "unparsable tuple in INSERT statement; skipped to the next line"
        if self.errors is None:
            raise InputError(reason + f": {buf[pos:pos + 80]!r}", path=self.path, line=where)
        self.errors.add(self.path, where, reason, buf[pos : pos + 200])
        nl = buf.find("\n", pos)
        return nl + 1 if nl >= 0 else len(buf)


def iter_dump_tuples(path: str | os.PathLike, *, table: str | None = None) -> Iterator[tuple]:
    """Every tuple of a dump (optionally of one table) as a tuple of str / int / float / None."""
    for name, values in DumpReader(path):
        if table is None or name == table:
            yield values


def _table_rows(
    path, table: str, wanted: tuple[str, ...], keep=None, optional: frozenset[str] = frozenset()
) -> Iterator[tuple]:
    """The `wanted` columns of each tuple of `table`, located by the dump's CREATE TABLE if any.

    A column in `optional` that the dump's table lacks (older MediaWiki schemas) reads as None.
    """
    reader = DumpReader(path, keep=keep)
    positions = None
    for name, values in reader:
        if name != table:
            continue
        if positions is None:
            columns = reader.columns.get(table) or DEFAULT_COLUMNS[table]
            missing = [c for c in wanted if c not in columns and c not in optional]
            if missing:
                raise InputError(f"table {table} has no column(s) {', '.join(missing)}", path=str(path))
            positions = [columns.index(c) if c in columns else None for c in wanted]
            last = max(i for c, i in zip(wanted, positions) if i is not None and c not in optional)
        if len(values) <= last:
            continue  # a tuple narrower than its table's required columns: nothing usable in it
        # an optional column past the tuple's end (an older schema without a CREATE TABLE) reads as None
        yield tuple(None if i is None or i >= len(values) else values[i] for i in positions)


def read_pages(path: str | os.PathLike) -> Iterator[Page]:
    """Pages (id, namespace, title, redirect flag) from a `page` dump."""
    for page_id, namespace, title, is_redirect in _table_rows(
        path, "page", ("page_id", "page_namespace", "page_title", "page_is_redirect")
    ):
        yield Page(page_id, namespace, str(title), bool(is_redirect))


def read_page_props(
    path: str | os.PathLike, props: frozenset[str] | None = DEFAULT_PROPS
) -> Iterator[PageProp]:
    """Page properties (all when `props` is None) from a `page_props` dump."""
    quoted = None if props is None else tuple(f"'{p}'" for p in props)
    keep = None if quoted is None else (lambda inner: any(q in inner for q in quoted))
    for page_id, name, value in _table_rows(path, "page_props", ("pp_page", "pp_propname", "pp_value"), keep):
        if props is None or name in props:
            yield PageProp(page_id, name, None if value is None else str(value))


def read_redirects(path: str | os.PathLike) -> Iterator[Redirect]:
    """Local redirects (interwiki ones skipped: they leave the wiki) from a `redirect` dump.

    MySQL-4-era dumps have no `rd_interwiki` column (3 columns): they hold no interwiki redirects.
    """
    for from_id, namespace, title, interwiki in _table_rows(
        path, "redirect", ("rd_from", "rd_namespace", "rd_title", "rd_interwiki"),
        optional=frozenset({"rd_interwiki"}),
    ):
        if not interwiki:
            yield Redirect(from_id, namespace, str(title))
