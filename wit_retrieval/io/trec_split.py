"""A strict TREC run parsed in C on threads (io/_fasttrec.c): the fast path of `read_trec_run`.

The file is mapped, cut into pieces of about `PIECE` bytes at line ends, and each piece is split
by `_fasttrec.split_run` on a thread of its own (the C code releases the GIL) into buffers
allocated here: each piece becomes one chunk of each column, with no copy on the way into Arrow.
Scores are parsed by Arrow's string-to-float64 cast (correctly rounded, as float() is) and ids
validated as UTF-8 by the binary-to-string cast. A file the C code does not take whole (see
_fasttrec.c: anything but the strict form) gives None, and the caller reads it the careful way.
"""

from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from .trec import delimiter_of, line_numbers

try:  # compiled by setup.py; where it could not be, runs go through pyarrow.csv
    from . import _fasttrec
except ImportError:  # pragma: no cover - exercised where no compiler is present
    _fasttrec = None

PIECE = 16 << 20  # bytes per piece: one chunk per column each, far below int32 offsets' limit
_MIN_LINE = 12     # `a b c 1 2 t\n`: six one-byte fields, five separators, a newline


def _pieces(data: mmap.mmap, size: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges covering the file, each ending just after a newline (or at its end)."""
    out, start = [], 0
    while start < size:
        end = data.find(b"\n", min(start + PIECE, size) - 1)
        end = size if end < 0 else end + 1
        out.append((start, end))
        start = end
    return out


def _split(view: memoryview, delimiter: int) -> tuple | None:
    """One piece's (query_id, image_id, rank, score) arrays, or None (not strict, bad UTF-8, a bad score).

    Runs on a worker thread: the C split and Arrow's casts both release the GIL.
    """
    rows = len(view) // _MIN_LINE + 2
    # Arrow's memory pool, not numpy: its pages come back warm from earlier reads, and fresh
    # ones fault in far more cheaply than malloc's (16 MiB: ~3 ms against ~60 ms on this VM)
    sizes = (4 * rows, len(view), 4 * rows, len(view), 8 * rows, 4 * rows, len(view))
    buffers = [pa.allocate_buffer(size) for size in sizes]
    done = _fasttrec.split_run(view, delimiter, *buffers)
    if done is None:
        return None
    n, qid_bytes, doc_bytes, score_bytes, ascii = done

    def text(offsets: pa.Buffer, data: pa.Buffer, length: int) -> pa.Array:
        # ASCII is valid UTF-8 as it stands; anything else goes through the validating cast
        raw = pa.Array.from_buffers(pa.string() if ascii else pa.binary(), n,
                                    [None, offsets.slice(0, 4 * (n + 1)), data.slice(0, length)])
        return raw if ascii else raw.cast(pa.string())

    try:
        scores = text(buffers[5], buffers[6], score_bytes).cast(pa.float64())
        ranks = pa.Array.from_buffers(pa.int64(), n, [None, buffers[4].slice(0, 8 * n)])
        # copied out at their exact size (concat_arrays of one array copies): the buffers above
        # are sized for the shortest possible lines and go back to the pool for the next piece
        return (*(pa.concat_arrays([a]) for a in (text(buffers[0], buffers[1], qid_bytes),
                                                  text(buffers[2], buffers[3], doc_bytes), ranks)), scores)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # bad UTF-8 or a score Arrow cannot read
        return None


def read_strict_run(path: Path) -> pa.Table | None:
    """(query_id, image_id, rank, score, line) when every line is in the strict form, else None."""
    if _fasttrec is None or os.environ.get("WIT_RETRIEVAL_PURE_PYTHON", "") in ("1", "true", "yes"):
        return None
    delimiter = ord(delimiter_of(path))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pieces = _pieces(data, size)
            with memoryview(data) as whole:
                views = [whole[start:end] for start, end in pieces]
                try:
                    threads = min(len(views), os.cpu_count() or 1)
                    with ThreadPoolExecutor(threads) as pool:
                        parts = list(pool.map(lambda v: _split(v, delimiter), views))
                finally:
                    for view in views:
                        view.release()
    if any(p is None for p in parts):
        return None
    qids, docs, ranks, scores = (pa.chunked_array([p[k] for p in parts], t)
                                 for k, t in enumerate((pa.string(), pa.string(), pa.int64(), pa.float64())))
    return pa.table({"query_id": qids, "image_id": docs, "rank": ranks, "score": scores,
                     "line": line_numbers(len(qids))})
