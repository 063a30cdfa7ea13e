"""TREC text files, columnar: runs (`qid Q0 docid rank score tag`) and qrels (`qid 0 docid rel`).

A strict run (one space or one tab between six non-empty fields, nothing else) is split in C on
threads (io/trec_split.py, io/_fasttrec.c). Failing that, a clean file is parsed by pyarrow.csv:
multithreaded C, columns straight into Arrow. Whether the pyarrow
parse can be trusted is decided from the parsed columns (no field may be empty: two separators
in a row or one at a line's end leave an empty field) and one memchr for the other separator,
never by a second pass in Python. Anything else (runs of spaces, mixed tabs, bad lines, other
encodings) goes to the line parser, which reads whitespace as trec_eval does and names each
bad line. Files are opened in `_open` only (trec_split maps the strict ones itself).
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from ..errors import InputError
from ..ranking import from_numpy

RUN_COLUMNS = ["query_id", "q0", "image_id", "rank", "score", "tag"]
QRELS_COLUMNS = ["query_id", "iteration", "image_id", "relevance"]
# on_problem(kind, line, message): how lenient readers report a bad line instead of raising.
ProblemSink = Callable[[str, int | None, str], None]
_SEPARATORS = re.compile(r"[ \t]+")  # TREC fields: runs of spaces or tabs, as trec_eval reads them


def _open(path: Path, mode: str = "rb"):
    """The one place TREC files are opened (object-store paths plug in here)."""
    return open(path, mode)


def delimiter_of(path: Path) -> str:
    """A tab if the file's first line holds one, else a space."""
    with _open(path) as f:
        first = f.readline()
    return "\t" if b"\t" in first else " "


def _contains(path: Path, needle: bytes) -> bool:
    """memchr over the mapped file: ~10 ms per 100 MB, no copy."""
    with _open(path) as f:
        if f.seek(0, 2) == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(needle) >= 0


def read_regular(path: Path, names: list[str], types: dict[str, pa.DataType]) -> pa.Table | None:
    """The file parsed by pyarrow.csv when every line is `f1 f2 ...` with single separators; else None.

    Text columns must be given as string or binary: an empty one reveals a doubled, leading or
    trailing separator or a blank line; binary ones are checked for UTF-8 here.
    """
    delimiter = delimiter_of(path)
    # Text is parsed as binary and cast to string afterwards: the cast validates UTF-8 over the
    # whole buffer at once, which costs ~30% less CPU than the reader's per-value check.
    as_read = {name: pa.binary() if pa.types.is_string(t) else t for name, t in types.items()}
    try:
        with _open(path) as f:
            table = pcsv.read_csv(
                f,
                read_options=pcsv.ReadOptions(column_names=names, block_size=4 << 20),
                parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char=False, double_quote=False,
                                                escape_char=False, ignore_empty_lines=False),
                convert_options=pcsv.ConvertOptions(column_types=as_read, strings_can_be_null=False,
                                                    quoted_strings_can_be_null=False),
            )
        for index, name in enumerate(names):
            column = table[name]
            if column.null_count:
                return None
            if pa.types.is_binary(column.type):
                if any(_min_length(chunk) == 0 for chunk in column.chunks):
                    return None
                text = column.cast(pa.string())  # raises on bad UTF-8, as a string column would
                if pa.types.is_string(types.get(name, pa.binary())):
                    table = table.set_column(index, name, text)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    # The other separator inside a field would be a field boundary for trec_eval.
    if _contains(path, b" " if delimiter == "\t" else b"\t"):
        return None
    return table


def _min_length(chunk: pa.Array) -> int:
    """Shortest value of a string/binary chunk, from its offsets (no kernel, no copy)."""
    if len(chunk) == 0:
        return 1
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=len(chunk) + 1, offset=4 * chunk.offset)
    return int(np.diff(offsets).min())


def line_numbers(num_rows: int) -> pa.Array:
    """1-based line numbers of a file whose every line is a row."""
    return from_numpy(np.arange(1, num_rows + 1, dtype=np.int64))


def read_trec_run(path: Path, on_problem: ProblemSink) -> pa.Table:
    """(query_id, image_id, rank, score, line) of a TREC run; bad lines go to `on_problem`."""
    from .trec_split import read_strict_run

    table = read_strict_run(path)  # the common case, in C on threads; None: not strict, read carefully
    if table is not None:
        return table
    binary = pa.binary()
    types = {"query_id": pa.string(), "q0": binary, "image_id": pa.string(), "rank": pa.int64(),
             "score": pa.float64(), "tag": binary}
    table = read_regular(path, RUN_COLUMNS, types)
    if table is None:
        return _read_trec_lines(path, on_problem)
    return table.drop_columns(["q0", "tag"]).append_column("line", line_numbers(table.num_rows))


def _read_trec_lines(path: Path, on_problem: ProblemSink) -> pa.Table:
    """Line by line, naming each bad line: wrong field count, encoding, non-numeric rank or score."""
    qids, docs, ranks, scores, lines = [], [], [], [], []
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                on_problem("encoding", number, f"not UTF-8 (byte {exc.start}); save the file as UTF-8")
                continue
            text = text.strip(" \t\r\n")
            if not text:
                continue
            fields = _SEPARATORS.split(text)
            if len(fields) != 6:
                on_problem("format", number, f"expected 6 fields `qid Q0 docid rank score tag`, got {len(fields)}")
                continue
            try:
                rank = int(fields[3])
            except ValueError:
                on_problem("rank", number, f"rank {fields[3]!r} is not an integer")
                continue
            try:
                value = float(fields[4])
            except ValueError:
                on_problem("score", number, f"score {fields[4]!r} is not a number")
                continue
            qids.append(fields[0])
            docs.append(fields[2])
            ranks.append(rank)
            scores.append(value)
            lines.append(number)
    return pa.table({"query_id": pa.array(qids, pa.string()), "image_id": pa.array(docs, pa.string()),
                     "rank": pa.array(ranks, pa.int64()), "score": pa.array(scores, pa.float64()),
                     "line": pa.array(lines, pa.int64())})


def read_trec_qrels(path: Path) -> pa.Table:
    """(query_id, image_id, relevance) of TREC qrels; a bad line raises InputError naming it."""
    types = {"query_id": pa.string(), "iteration": pa.binary(), "image_id": pa.string(), "relevance": pa.int64()}
    table = read_regular(path, QRELS_COLUMNS, types)
    if table is not None:
        return table.select(["query_id", "image_id", "relevance"])
    qids, docs, rels = [], [], []
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise InputError("not UTF-8; save the file as UTF-8", path=str(path), line=number) from None
            if not fields:
                continue
            if len(fields) != 4 or not re.fullmatch(r"-?\d+", fields[3]):
                raise InputError("expected `qid 0 docid relevance` with an integer relevance", path=str(path),
                                 line=number)
            qids.append(fields[0])
            docs.append(fields[2])
            rels.append(int(fields[3]))
    return pa.table({"query_id": pa.array(qids, pa.string()), "image_id": pa.array(docs, pa.string()),
                     "relevance": pa.array(rels, pa.int64())})
