"""Decompressed blocks of a gzip (or plain) file, for the TSV segment reader.

WIT ships as gzip: decompressing is half of what reading a shard costs pyarrow. ISA-L's
inflate (the `isal` package, a dependency with wheels for the usual platforms) does the same
work in about a third of zlib's time; without it, zlib runs. Every gzip member is read (files
joined with `cat` are valid gzip), and a file that ends inside a member raises EOFError, as
the gzip module does.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

try:
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - isal is a dependency; this keeps odd platforms working
    _inflater = zlib

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31  # zlib's "gzip header and trailer" mode
_CHUNK = 1 << 20  # compressed bytes per read


def is_gzip(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def pieces(path: str | os.PathLike, size: int) -> Iterator[bytes]:
    """The file's content (decompressed when it is gzip) in pieces: a few MB each for gzip,
    `size` bytes for a plain file."""
    return _gzip_pieces(path) if is_gzip(path) else _plain_pieces(path, size)


def blocks(path: str | os.PathLike, size: int) -> Iterator[bytes]:
    """The file's content (decompressed when it is gzip) in blocks of at least `size` bytes (the
    last may be shorter)."""
    pending: list[bytes] = []
    held = 0
    for piece in pieces(path, size):
        pending.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if held:
        yield b"".join(pending)


def _plain_pieces(path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(size):
            yield piece


def _gzip_pieces(path) -> Iterator[bytes]:
    inflate = _inflater.decompressobj(_GZIP_WBITS)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            while chunk:
                if inflate.eof:  # the next gzip member starts here (zero padding is allowed, as in gzip)
                    chunk = chunk.lstrip(b"\0")
                    if not chunk:
                        break
                    inflate = _inflater.decompressobj(_GZIP_WBITS)
                try:
                    piece = inflate.decompress(chunk)
                except _inflater.error as exc:
                    raise OSError(f"damaged gzip data ({exc})") from None
                if piece:
                    yield piece
                chunk = inflate.unused_data if inflate.eof else b""
    if not inflate.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")
