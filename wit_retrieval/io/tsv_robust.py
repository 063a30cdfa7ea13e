"""The robust (pure Python) TSV reader behind `tsv.py`: survives malformed rows.

Recovery from an unclosed quote: while a quoted field runs over a line end, each next line is
checked for the shape of a row start of this file (a first field shaped like the first fields of
the good rows so far, and enough tabs). Such a line closes the open row as bad (reported with
its starting line) and starts a new row, so one stray quote never swallows the rest of a shard.
A legitimate multi-line field whose continuation line looks exactly like a whole row of the file
would be cut there; real WIT text does not do that.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from .segments import READ_ERRORS, damaged, open_binary
from .tsv import RowErrors, column_types, decode_byte_literal

_MAX_RECORD_CHARS = 512 << 20
_SHAPES = (
    ("url", re.compile(r"^(b['\"])?https?://\S+$")),
    ("code", re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]+)*$")),
    ("int", re.compile(r"^-?\d+$")),
)


def _shape(value: str) -> str:
    if not value:
        return "empty"
    for name, pattern in _SHAPES:
        if pattern.match(value):
            return name
    return "other"


class _RowStart:
    """Learns what the first line of a row looks like from the good rows seen so far."""

    checked_columns = 3

    def __init__(self, header: list[str], variable_fields: bool):
        self.width = len(header)
        self.shapes: list[set[str]] = [set() for _ in range(min(self.checked_columns, self.width))]
        if header[0] == "language":
            self.shapes[0].add("code")
        self.min_fields = self.width
        self.variable_fields = variable_fields
        self.learned = 0

    def learn(self, fields: list[str]) -> None:
        if self.learned < 1000:
            self.learned += 1
            for shapes, value in zip(self.shapes, fields):
                shapes.add(_shape(value))
            self.min_fields = min(self.min_fields, len(fields))

    def matches(self, line: str) -> bool:
        """Whether `line` parses as the first line of a row shaped like this file's rows."""
        fields: list[str] = []
        if _split_line(line, 0, fields, [], False):
            count_ok = 1 <= len(fields) < self.width  # the row's multi-line field starts here
        elif self.variable_fields:
            count_ok = len(fields) >= self.min_fields
        else:
            count_ok = len(fields) == self.width
        if not count_ok or not fields or _shape(fields[0]) in ("other", "empty"):
            return False
        for shapes, value in zip(self.shapes, fields):
            kind = _shape(value)
            if shapes and "other" not in shapes and kind != "empty" and kind not in shapes:
                return False
        return True


def _split_line(line: str, i: int, fields: list[str], buf: list[str], in_quote: bool) -> bool:
    """Parse `line` from `i` into `fields`; returns True if it ends inside a quoted field."""
    if not in_quote and '"' not in line:  # the common case, at C speed
        fields.extend(line[i:].split("\t"))
        return False
    n = len(line)
    while True:
        if in_quote:
            j = line.find('"', i)
            if j < 0:
                buf.append(line[i:])
                return True
            buf.append(line[i:j])
            if j + 1 < n and line[j + 1] == '"':
                buf.append('"')
                i = j + 2
                continue
            in_quote = False
            k = line.find("\t", j + 1)  # text after a closing quote is kept literally
            buf.append(line[j + 1 : k if k >= 0 else n])
            fields.append("".join(buf))
            buf.clear()
            if k < 0:
                return False
            i = k + 1
        if i < n and line[i] == '"':
            in_quote, i = True, i + 1
            continue
        k = line.find("\t", i)
        if k < 0:
            fields.append(line[i:])
            return False
        fields.append(line[i:k])
        i = k + 1


class RobustParser:
    """Incremental robust parser: fed lines segment by segment; an unfinished row carries over."""

    def __init__(self, path: str | os.PathLike, header: list[str], errors: RowErrors, variable_fields: bool):
        self.path, self.header, self.errors = path, header, errors
        self.variable_fields = variable_fields
        self.row_start = _RowStart(header, variable_fields)
        self.pending: list[tuple[int, str]] = []  # raw lines of a row still inside a quoted field
        types = column_types(header)
        self.converters = [_converter(types[name]) for name in header]

    def records(self, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
        """(starting line, raw fields) of each complete row; bad rows reported; see `pending`."""
        fields: list[str] = []
        buf: list[str] = []
        raw: list[tuple[int, str]] = []
        size, open_quote = 0, False
        for number, line in itertools.chain(self.pending, lines):
            if open_quote:
                if self.row_start.matches(line) or size > _MAX_RECORD_CHARS:
                    start, first = raw[0]
                    self.errors.add(self.path, start, f"unclosed quoted field runs into line {number}", first)
                    fields, buf, open_quote = [], [], False
                else:
                    buf.append("\n")
                    size += len(line)
                    raw.append((number, line))
                    open_quote = _split_line(line, 0, fields, buf, True)
                    if not open_quote:
                        self.row_start.learn(fields)
                        yield raw[0][0], fields
                        fields = []
                    continue
            if not line:
                continue  # blank lines between rows, as pyarrow skips them
            raw, size = [(number, line)], len(line)
            open_quote = _split_line(line, 0, fields, buf, False)
            if not open_quote:
                self.row_start.learn(fields)
                yield number, fields
                fields = []
        self.pending = raw if open_quote else []

    def finish(self) -> None:
        """At the end of the file: a row still open is truncated."""
        if self.pending:
            start, first = self.pending[0]
            self.errors.add(self.path, start, "unclosed quoted field at end of file (truncated row)", first)
            self.pending = []

    def rows(self, lines: Iterable[tuple[int, str]]) -> Iterator[dict[str, Any]]:
        """Typed dict rows with `_line`; bad values or (when strict) field counts reported."""
        header, width, path = self.header, len(self.header), self.path
        for line, fields in self.records(lines):
            if len(fields) != width and not self.variable_fields:
                self.errors.add(path, line, f"expected {width} fields, got {len(fields)}", "\t".join(fields)[:200])
                continue
            row: dict[str, Any] = {}
            try:
                for name, convert, value in zip(header, self.converters, fields):
                    if not value:
                        row[name] = None
                    elif convert is None:  # a string: decode only what may be a byte literal
                        row[name] = decode_byte_literal(value) if value[0] == "b" else value
                    else:
                        row[name] = convert(value)
            except (ValueError, KeyError):
                self.errors.add(path, line, f"column {name}: unexpected value {value[:50]!r}", "\t".join(fields)[:200])
                continue
            for name in header[len(fields) :]:
                row[name] = None
            if len(fields) > width:
                row["_extra"] = [decode_byte_literal(v) for v in fields[width:]]
            row["_line"] = line
            yield row


def text_lines(data, first_line: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of a block of whole lines (UTF-8, bad bytes replaced)."""
    lines = str(data, "utf-8", errors="replace").split("\n")  # bytes or a memoryview of them
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=first_line):
        yield number, line.removesuffix("\r")


def _file_lines(path) -> Iterator[tuple[int, str]]:
    number = 1
    try:
        with open_binary(path) as f:
            f.readline()  # header
            for number, raw in enumerate(f, start=2):
                yield number, raw.decode("utf-8", errors="replace").rstrip("\n").removesuffix("\r")
    except READ_ERRORS as exc:
        raise damaged(path, number, exc) from None


def _converter(dtype: pa.DataType):
    if pa.types.is_integer(dtype):
        return int
    if pa.types.is_boolean(dtype):
        return {"true": True, "false": False}.__getitem__
    return None


def robust_rows(
    path: str | os.PathLike,
    header: list[str],
    *,
    errors: RowErrors | None = None,
    variable_fields: bool = False,
) -> Iterator[dict[str, Any]]:
    """Typed dict rows of a whole file with `_line`; bad rows reported to `errors`."""
    parser = RobustParser(path, header, errors if errors is not None else RowErrors(), variable_fields)
    yield from parser.rows(_file_lines(path))
    parser.finish()


def rows_to_batches(rows: Iterable[dict], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of `schema`'s columns from dict rows."""
    names = schema.names
    columns: dict[str, list] = {n: [] for n in names}
    count = 0
    for row in rows:
        for n in names:
            columns[n].append(row[n])
        count += 1
        if count == batch_rows:
            yield pa.RecordBatch.from_arrays([pa.array(columns[n], schema.field(n).type) for n in names], schema=schema)
            columns, count = {n: [] for n in names}, 0
    if count:
        yield pa.RecordBatch.from_arrays([pa.array(columns[n], schema.field(n).type) for n in names], schema=schema)
