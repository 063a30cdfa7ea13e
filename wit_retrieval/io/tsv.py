"""Header-driven, streaming reader of WIT / EI / MMIR TSV(.gz) files.

Dialect: tab-separated, a header row, double-quoted fields that may hold tabs and newlines
(`""` is a literal quote), `true`/`false` booleans, empty fields are null, values possibly
written as Python byte literals `b'...'`.

`read_wit_batches` cuts the (decompressed) file into segments of ~8 MB of whole rows, each
cut made before a line shaped like the first line of a row of this file (`segments.py`). Each
segment goes through the fast path all or nothing, so nothing is yielded from a segment that
fails: its string columns split in C (`_fasttsv.c`, when all the columns read are strings and
the segment holds nothing unusual), else pyarrow.csv. A failed segment (a malformed row, a
wrong field count, invalid UTF-8) goes through the robust Python reader of `tsv_robust.py`,
which reports bad rows (file + line) and keeps every good row; a row it finds still open at
the segment's end carries over into the next segment, which is then read by the robust reader
too. One bad row costs one segment of Python parsing, not a shard, and no row is ever yielded
twice.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ..errors import InputError
from ..schema import WIT_BOOL_COLUMNS, WIT_COLUMNS, WIT_INT_COLUMNS
from .segments import cut_pattern, open_binary, prefetch, segments

try:
    from . import _fasttsv
except ImportError:  # not compiled: pyarrow.csv splits every segment
    _fasttsv = None

log = logging.getLogger(__name__)

MAX_SAMPLES = 20
_BLOCK_SIZE = 1 << 20
_SEGMENT_BYTES = 8 << 20
_BYTE_LITERAL_RE = r"(?s)^b'.*'$|^b\".*\"$"


@dataclass(frozen=True)
class BadRow:
    """One malformed row: where it starts and why it was dropped."""

    path: str
    line: int
    reason: str
    excerpt: str


class RowErrors:
    """Counts bad rows and keeps the first few as samples for reports."""

    def __init__(self, max_samples: int = MAX_SAMPLES):
        self.count = 0
        self.samples: list[BadRow] = []
        self.max_samples = max_samples

    def add(self, path: str | os.PathLike, line: int, reason: str, excerpt: str = "") -> None:
        """Record one bad row (logged as a warning for the first few)."""
        self.count += 1
        if len(self.samples) < self.max_samples:
            self.samples.append(BadRow(str(path), int(line), reason, excerpt[:200]))
        if self.count <= 5:
            log.warning("%s:%d: bad row skipped: %s", path, line, reason)

    def merge(self, other: RowErrors) -> None:
        """Add another collector's counts and samples (e.g. from a worker process)."""
        self.count += other.count
        room = self.max_samples - len(self.samples)
        self.samples.extend(other.samples[: max(room, 0)])

    def summary(self) -> str:
        """One line per sample, headed by the count."""
        if not self.count:
            return "no bad rows"
        lines = [f"{self.count} bad row(s)"]
        lines += [f"  {s.path}:{s.line}: {s.reason}" for s in self.samples[:5]]
        if self.count > 5:
            lines.append(f"  ... and {self.count - 5} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for stats files."""
        return {"count": self.count, "samples": [asdict(s) for s in self.samples]}

    def __bool__(self) -> bool:  # an empty collector is still a collector
        return True


def decode_byte_literal(s: str | None) -> str | None:
    """Decode a Python byte literal `b'...'` / `b"..."` (with \\xNN UTF-8 escapes); others unchanged."""
    if s is None or len(s) < 3 or s[0] != "b" or s[1] not in "'\"" or s[-1] != s[1]:
        return s
    body = s[2:-1]
    if "\\" not in body:
        return body
    try:
        raw = codecs.escape_decode(body.encode("utf-8"))[0]
    except ValueError:
        return s
    return raw.decode("utf-8", errors="replace")


def decode_byte_literals_array(array: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Decode the byte-literal values of a string array; untouched when there are none (cheap check)."""
    starts = pc.or_(pc.starts_with(array, "b'"), pc.starts_with(array, 'b"'))
    if not pc.any(starts).as_py():
        return array
    is_literal = pc.fill_null(pc.match_substring_regex(array, _BYTE_LITERAL_RE), False)
    if not pc.any(is_literal).as_py():
        return array
    # Vectorised for the plain-ASCII bodies; only values with escapes go through Python.
    stripped = pc.if_else(is_literal, pc.utf8_slice_codeunits(array, 2, -1), array)
    escaped = pc.and_(is_literal, pc.fill_null(pc.match_substring(array, "\\"), False))
    if not pc.any(escaped).as_py():
        return stripped
    values = stripped.to_pylist()
    originals = array.to_pylist()
    for i, flag in enumerate(escaped.to_pylist()):
        if flag:
            values[i] = decode_byte_literal(originals[i])
    return pa.array(values, pa.string())


def read_header(path: str | os.PathLike) -> list[str]:
    """Column names from the header row (byte literals decoded, blanks stripped)."""
    with open_binary(path) as f:
        first = f.readline()
    if not first.strip():
        raise InputError("empty file or empty header row; expected a tab-separated header", path=str(path))
    names = first.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n").split("\t")
    return [decode_byte_literal(n.strip().strip('"')) or f"column_{i}" for i, n in enumerate(names)]


def column_types(header: list[str]) -> dict[str, pa.DataType]:
    """Arrow type per column: WIT's ints and booleans typed, every other column a string."""
    types = {}
    for name in header:
        if name in WIT_INT_COLUMNS:
            types[name] = pa.int64()
        elif name in WIT_BOOL_COLUMNS:
            types[name] = pa.bool_()
        else:
            types[name] = pa.string()
    return types


def _select(header: list[str], columns, path) -> list[str]:
    if columns is None:
        return list(header)
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(
            f"no column(s) {', '.join(missing)} in the header; columns are: {', '.join(header)}",
            path=str(path),
        )
    return list(columns)


def _decode_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    arrays = [
        decode_byte_literals_array(col) if pa.types.is_string(col.type) else col for col in batch.columns
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _parse_segment(data: bytes, header, selected, types) -> list[pa.RecordBatch]:
    """One segment through pyarrow.csv, all or nothing (raises pa.ArrowInvalid on a bad row).

    The streaming reader costs less CPU than read_csv here; its batches are collected before
    any is yielded, so a failure late in the segment yields nothing of it.
    """
    parse = pcsv.ParseOptions(delimiter="\t", quote_char='"', newlines_in_values=True)
    convert = pcsv.ConvertOptions(column_types=types, include_columns=selected, strings_can_be_null=True,
                                  null_values=[""], true_values=["true"], false_values=["false"])
    block_size = _BLOCK_SIZE
    while True:
        try:
            read = pcsv.ReadOptions(block_size=block_size, column_names=header)
            return list(pcsv.open_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                                      convert_options=convert))
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc) or block_size > len(data):
                raise
            block_size = len(data) + 1  # a row longer than a block: parse the segment in one block


def read_wit_batches(
    path: str | os.PathLike,
    *,
    columns: list[str] | None = None,
    batch_rows: int = 65536,
    errors: RowErrors | None = None,
    variable_fields: bool | None = None,
    background: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Typed record batches of a header-driven TSV(.gz); bad rows go to `errors`, never raise.

    `variable_fields` (default: False for WIT's header, True otherwise) pads short rows with
    nulls instead of reporting them, as the released EI/MMIR files need. `background`:
    decompress and cut segments in a thread, ahead of the parsing; worth it where a core is
    spare (with one busy process per core the thread only adds hand-offs: measured, a build
    with two workers on two cores spent 5% more CPU with it).
    """
    from . import fs

    if fs.is_remote(path):  # the reader seeks and reopens: it reads a local copy (io.fs.local_copy)
        with fs.local_copy(path) as local:
            yield from _read_batches(local, fs.redact(path), columns, batch_rows, errors, variable_fields, background)
        return
    yield from _read_batches(path, str(path), columns, batch_rows, errors, variable_fields, background)


def _read_batches(path, shown: str, columns, batch_rows, errors, variable_fields, background):
    """read_wit_batches of a local file; bad rows are reported under `shown` (the URI it came from)."""
    from .tsv_robust import RobustParser, rows_to_batches, text_lines

    header = read_header(path)
    selected = _select(header, columns, path)
    types = column_types(header)
    schema = pa.schema([(c, types[c]) for c in selected])
    if variable_fields is None:
        variable_fields = tuple(header) != WIT_COLUMNS
    parser = RobustParser(shown, header, errors if errors is not None else RowErrors(), variable_fields)
    cut = cut_pattern(path, header)
    blocks = segments(path, cut, _SEGMENT_BYTES)
    for first_line, data in prefetch(blocks) if background else blocks:
        batches = None if parser.pending else _fast_segment(path, first_line, data, header, selected, types, cut)
        if batches is None:  # failed, or a row left open by the robust reader continues here
            yield from rows_to_batches(parser.rows(text_lines(data, first_line)), schema, batch_rows)
            continue
        for batch in batches:
            for start in range(0, batch.num_rows, batch_rows):
                yield _decode_batch(batch.slice(start, batch_rows))
    parser.finish()


def _fast_segment(path, first_line: int, data: bytes, header, selected, types, cut) -> list | None:
    """The batches of a segment (split in C, else by pyarrow), or None when the robust reader must take it."""
    batch = _split_strings(data, header, selected, types)
    if batch is not None:
        return [batch]
    last = header[-1]
    include = selected if last in selected else [*selected, last]
    try:
        batches = _parse_segment(data, header, include, types)
    except pa.ArrowInvalid as exc:
        log.info("%s: lines from %d: pyarrow failed (%s); robust reader", path, first_line, str(exc)[:200])
        return None
    # pyarrow closes a quote left open at the end of its input silently: in the last column of
    # the last row, that swallows the rows after it. Their row-start lines in that value give it away.
    tail = batches[-1].column(last)[-1].as_py() if batches and batches[-1].num_rows else None
    if isinstance(tail, str) and "\n" in tail and cut.search(tail.encode("utf-8")):
        log.info("%s: lines from %d: rows swallowed by an open quote; robust reader", path, first_line)
        return None
    return batches if include is selected else [b.select(selected) for b in batches]


def _split_strings(data: bytes, header, selected, types) -> pa.RecordBatch | None:
    """The selected columns of a segment via io/_fasttsv.c when they are all strings: it copies
    only those (pyarrow tokenizes and converts more), and leaves anything unusual to pyarrow (None)."""
    if _fasttsv is None or any(types[name] != pa.string() for name in selected) or \
            os.environ.get("WIT_RETRIEVAL_PURE_PYTHON", "") in ("1", "true", "yes"):
        return None
    split = _fasttsv.split(data, len(header), [header.index(name) for name in selected])
    if split is None:
        return None
    rows, columns = split
    arrays = []
    for offsets, values, validity, nulls in columns:
        array = pa.Array.from_buffers(pa.string(), rows, [pa.py_buffer(validity) if nulls else None,
                                                          pa.py_buffer(offsets), pa.py_buffer(values)], null_count=nulls)
        try:
            array.validate(full=True)  # UTF-8, as pyarrow.csv checks it
        except pa.ArrowInvalid:
            return None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=list(selected))


def read_tsv_rows(
    path: str | os.PathLike,
    *,
    errors: RowErrors | None = None,
    variable_fields: bool | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows as dicts keyed by the header (typed, byte literals decoded), plus `_line` (1-based).

    Fields beyond the header's width are kept as a list under `_extra`.
    """
    from .tsv_robust import robust_rows

    header = read_header(path)
    if variable_fields is None:
        variable_fields = tuple(header) != WIT_COLUMNS
    yield from robust_rows(path, header, errors=errors, variable_fields=variable_fields)
