"""64-bit fingerprints of Arrow strings, computed with numpy over the buffers (no hash table).

Validation uses them to find duplicate image ids and ranking to match run rows with relevant
items: equal strings get equal fingerprints, and callers confirm equal fingerprints by
comparing the strings. Pass k mixes the k-th 8 bytes of each string that has them into its
hash, so a string's fingerprint depends on the string alone, not on the longest string of the
array it sits in (it once did: a run holding a longer id than any relevant one then matched
nothing).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_MIX = np.uint64(0x9E3779B97F4A7C15)
IMAGE_FINGERPRINT = "image_fp"  # optional run column: fingerprint(image_id), computed once by validation


def fingerprint(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A 64-bit hash of each string, 8 bytes per numpy pass over the Arrow buffers."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    out = np.empty(sum(len(c) for c in chunks), np.uint64)
    at = 0
    for chunk in chunks:  # each chunk's hashes are computed in place in the output (no concatenation)
        if len(chunk):
            _fingerprint_chunk(chunk, out[at:at + len(chunk)])
        at += len(chunk)
    return out


def _fingerprint_chunk(chunk: pa.Array, out: np.ndarray) -> None:
    n = len(chunk)
    width = 8 if pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type) else 4
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if width == 8 else np.int32, count=n + 1,
                            offset=width * chunk.offset).astype(np.int64)
    buffer = chunk.buffers()[2]
    data = np.frombuffer(buffer, np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    length = np.diff(offsets)
    if length.min() == length.max():  # one width, as hex or hash ids have: strided views, no gathers
        _fixed_width(data, int(offsets[0]), int(length[0]), out)
    else:
        out[:] = _any_width(data, offsets[:-1], length)


def _mix(h: np.ndarray, word: np.ndarray) -> np.ndarray:
    h = (h ^ word) * _MIX
    h ^= h >> np.uint64(31)
    return h


def _any_width(data: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    if len(data) < 8:
        data = np.concatenate([data, np.zeros(8, np.uint8)])
    # Every 8-byte window of the data as one little-endian word (an unaligned view, no copy).
    words = np.ndarray((len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    h = length.astype(np.uint64) * _MIX
    last, shortest = len(data) - 8, int(length.min())
    for k in range(0, int(length.max(initial=0)), 8):
        pos = start + k
        at = np.minimum(pos, last)
        word = words[at] >> (np.minimum(pos - at, 7).astype(np.uint64) * np.uint64(8))
        if k + 8 <= shortest:  # every string has 8 more bytes
            h = _mix(h, word)
            continue
        remaining = np.clip(length - k, 0, 8).astype(np.uint64)
        keep = np.where(remaining == 8, np.uint64(0xFFFFFFFFFFFFFFFF),
                        (np.uint64(1) << (remaining * np.uint64(8))) - np.uint64(1))
        h = np.where(remaining > 0, _mix(h, word & keep), h)  # strings without byte k are done
    return h


def _fixed_width(data: np.ndarray, base: int, width: int, out: np.ndarray) -> None:
    """The same hashes as `_any_width` when every string has `width` bytes (string i at base + i * width),
    mixed in place in `out`."""
    n = len(out)
    out.fill(width)
    out *= _MIX
    shifted = np.empty_like(out)
    for k in range(0, width, 8):
        size = min(8, width - k)
        if size == 8:  # the k-th word of every string, read in place (unaligned, strided)
            word = np.ndarray((n,), dtype="<u8", buffer=data, offset=base + k, strides=(width,))
        else:  # the short last word, zero-padded as `_any_width` masks it
            padded = np.zeros((n, 8), np.uint8)
            padded[:, :size] = np.ndarray((n, size), dtype=np.uint8, buffer=data, offset=base + k, strides=(width, 1))
            word = padded.view("<u8").reshape(n)
        out ^= word
        out *= _MIX
        np.right_shift(out, np.uint64(31), out=shifted)
        out ^= shifted
