"""Reading a (gzip) TSV file as segments of whole rows, for the TSV reader (`io.tsv`).

A segment is ~8 MB of decompressed rows cut before a line shaped like the first line of a
row of this file (`cut_pattern`), numbered by its first line. Decompression and cutting run
in a background thread (`prefetch`), ahead of the parsing.
"""

from __future__ import annotations

import gzip
import os
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..errors import InputError
from . import inflate

try:
    from . import _fasttsv
except ImportError:  # not compiled: newlines are counted by bytes.count
    _fasttsv = None


READ_ERRORS = (OSError, EOFError, pa.ArrowInvalid)


def damaged(path, line: int, exc: BaseException) -> InputError:
    """The error for a file that cannot be read on (a damaged .gz, e.g. an interrupted download)."""
    return InputError(f"unreadable after line {line} ({exc}); the file is truncated or corrupt: download it again",
                      path=str(path))


def open_binary(path: str | os.PathLike):
    """Open a plain or gzip file (detected by its magic bytes) for binary reading."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=str(path))
    return gzip.open(path, "rb") if inflate.is_gzip(path) else open(path, "rb")


def cut_pattern(path, header: list[str]) -> re.Pattern:
    """Where a segment may end: before a line shaped like the first line of a row of this file."""
    with open_binary(path) as f:
        f.readline()
        first = f.readline().decode("utf-8", errors="replace").split("\t", 1)[0]
    if first.startswith(("http://", "https://", "b'http", 'b"http')):
        shape = rb"(?:b['\"])?https?://[^\t\n]*\t"
    elif re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]+)*", first):
        shape = rb"[a-z]{2,3}(?:[-_][A-Za-z0-9]+)*\t"
    else:
        shape = rb"[^\t\n]*\t"
    tabs = max(0, min(4, len(header) - 2))  # a few more fields on that line, as a row's first line has
    return re.compile(rb"\n(?=" + shape + rb"(?:[^\t\n]*\t){%d})" % tabs)


def segments(path, cut: re.Pattern, size: int) -> Iterator[tuple[int, memoryview]]:
    """(first line number, a view of the bytes) of consecutive blocks of whole rows (cut before a
    row-start line)."""
    line = 2
    try:
        for line, segment in _raw_segments(path, cut, size):
            yield line, segment
    except READ_ERRORS as exc:
        raise damaged(path, line, exc) from None


def _raw_segments(path, cut: re.Pattern, size: int) -> Iterator[tuple[int, memoryview]]:
    """Segments as views of one joined block each: the decompressed bytes are copied once."""
    line, rest, header = 2, b"", True
    pending: list[bytes] = []
    held = 0
    pieces = inflate.pieces(path, size)  # in `prefetch`'s thread when reads run in the background
    while True:
        piece = next(pieces, None)
        if piece is not None:
            pending.append(piece)
            held += len(piece)
            if held < size:
                continue
        data = b"".join([rest, *pending]) if rest or len(pending) != 1 else pending[0]
        pending, held = [], 0
        if header:  # the first line is the header: past it
            if b"\n" not in data and piece is not None:
                rest = data
                continue
            data, header = data[data.find(b"\n") + 1 :] if b"\n" in data else b"", False
        end = _last_cut(data, cut) if piece is not None else len(data)
        if end > 0:
            segment = memoryview(data)[:end]
            yield line, segment
            line += _fasttsv.newlines(segment) if _fasttsv is not None else data.count(b"\n", 0, end)
        rest = data[end:] if end > 0 else data  # no row start in sight (a huge row): read on
        if piece is None:
            return


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Produce `items` in a background thread, `depth` ahead: decompression overlaps parsing."""
    done, stop = object(), threading.Event()
    slots: queue.Queue = queue.Queue(maxsize=depth)

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=produce, daemon=True, name="tsv-segments")
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _last_cut(data: bytes, cut: re.Pattern) -> int:
    window = 1 << 16
    while True:
        start = max(0, len(data) - window)
        last = None
        for last in cut.finditer(data, start):  # noqa: B007 - only the last match is wanted
            pass
        if last is not None:
            return last.start() + 1
        if start == 0:
            return 0
        window *= 4
