"""Building blocks of the id-keyed stores that training reads at random (teacher_store.py, hard_store.py).

A store is written once, from an input read block by block: every row is keyed by the 64-bit
hash of its id (train_shards.id_hash, as images.idx.npy) and appended to one of 2**bits bucket
files chosen by the hash's top bits. Each bucket is then sorted alone (its rows fit in memory
by construction), so the concatenation of the sorted buckets is sorted as a whole: the store's
index is a sorted file of hashes, searched through every 1,024th hash held in memory and one
read of one block. Building holds one input block and one bucket; reading holds the sample
(8 bytes per 1,024 ids) and reads rows with pread: no memory map, so the pages a run touches
stay in the page cache and never count as the process's memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .train_shards import id_hash

BUCKET_BYTES = 16 << 20           # rows per bucket sized so that one bucket holds about this much
MAX_BITS = 12                     # at most 4,096 bucket files (each opened, appended and closed per block)
DONE = "store.json"               # written last: a folder without it is unfinished


def hashes_of(ids: Sequence[str]) -> np.ndarray:
    """uint64 hashes of `ids` (each distinct id hashed once)."""
    memo: dict[str, int] = {}
    return np.fromiter((memo[i] if i in memo else memo.setdefault(i, id_hash(i)) for i in ids),
                       dtype=np.uint64, count=len(ids))


def bucket_bits(total_bytes: int) -> int:
    """Bits of the bucket number so that a bucket holds about BUCKET_BYTES of input."""
    buckets = max(1, -(-int(total_bytes) // BUCKET_BYTES))
    return min(MAX_BITS, (buckets - 1).bit_length())


def files_fingerprint(paths: Sequence[Path]) -> list:
    """(name, size, mtime) of each file: what a store's key covers."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def store_key(kind: str, version: int, paths: Sequence[Path], **options) -> str:
    """16 hex digits naming a store built from `paths` with `options`."""
    parts = {"kind": kind, "version": version, "files": files_fingerprint(paths), **options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class BucketSpill:
    """Rows (hash, sequence number, payload bytes) appended to bucket files by the hash's top bits."""

    def __init__(self, folder: Path, bits: int):
        self.folder, self.bits, self.rows = Path(folder), bits, 0
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a previous, interrupted build: start the spill again
        self.folder.mkdir(parents=True)

    @property
    def buckets(self) -> int:
        return 1 << self.bits

    def add(self, hashes: np.ndarray, payloads: np.ndarray | Sequence[bytes]) -> None:
        """Append one block; `payloads` is a 2-D array (one fixed-width row each) or a list of bytes."""
        if not len(hashes):
            return
        number = (hashes >> np.uint64(64 - self.bits)).astype(np.int64) if self.bits else np.zeros(len(hashes), int)
        order = np.argsort(number, kind="stable")
        edges = np.flatnonzero(np.diff(number[order])) + 1
        seqs = np.arange(self.rows, self.rows + len(hashes), dtype=np.uint64)
        self.rows += len(hashes)
        for rows in np.split(order, edges):
            bucket = int(number[rows[0]])
            if isinstance(payloads, np.ndarray):
                blob = np.ascontiguousarray(payloads[rows]).tobytes()
                lengths = np.full(len(rows), payloads[0].nbytes, np.uint32)
            else:
                chosen = [payloads[r] for r in rows]
                blob, lengths = b"".join(chosen), np.fromiter(map(len, chosen), np.uint32, len(chosen))
            for suffix, data in (("h", hashes[rows].tobytes()), ("s", seqs[rows].tobytes()),
                                 ("l", lengths.tobytes()), ("p", blob)):
                with open(self.folder / f"{bucket:04d}.{suffix}", "ab") as handle:
                    handle.write(data)

    def read(self, bucket: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
        """(hashes, sequence numbers, payload offsets [n+1], payload) of one bucket, in arrival order."""
        base = self.folder / f"{bucket:04d}"
        if not base.with_suffix(".h").exists():
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(1, np.int64), b""
        lengths = np.fromfile(base.with_suffix(".l"), np.uint32)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        return (np.fromfile(base.with_suffix(".h"), np.uint64), np.fromfile(base.with_suffix(".s"), np.uint64),
                offsets, base.with_suffix(".p").read_bytes())

    def drop(self, bucket: int) -> None:
        """Delete a bucket once it is written out (the spill never holds twice the input on disk)."""
        for suffix in "hslp":
            (self.folder / f"{bucket:04d}.{suffix}").unlink(missing_ok=True)


def sorted_rows(hashes: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Row order by (hash, arrival): equal hashes stay in the order they were read."""
    return np.lexsort((seqs, hashes))


@contextmanager
def building(folder: Path) -> Iterator[Path]:
    """A temporary sibling folder renamed to `folder` when the build succeeds (atomic for readers).

    The caller holds the lock of the folder it builds in (the teacher's, or the prepared folder's).
    """
    folder = Path(folder)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # an interrupted build's (its builder holds no lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if folder.exists():  # an older, unfinished copy
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_built(folder: Path) -> bool:
    """True when `folder` holds a finished store."""
    return (Path(folder) / DONE).is_file()



class FileReader:
    """Reads at offsets with pread (nothing mapped, nothing cached); opened lazily, so a copy opens its own."""

    def __init__(self, path: Path):
        self.path, self._fd = Path(path), None

    def read(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self._fd, length, offset)

    def __getstate__(self):
        return {"path": self.path, "_fd": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class SortedHashes:
    """A sorted uint64 hash file searched through every STRIDE-th hash in memory and one read of one block.

    Lookups read the disk with pread (no memory map), so a process holds the sample (8 bytes per
    STRIDE ids: 110 KB for 14M ids) and the block it is searching, whatever the file's size.
    """

    STRIDE = 1024

    def __init__(self, path: Path, rows: int):
        self.file, self.rows = FileReader(path), rows
        self.sample = np.array([self._read(n, 1)[0] for n in range(0, rows, self.STRIDE)], np.uint64)

    def _read(self, start: int, count: int) -> np.ndarray:
        return np.frombuffer(self.file.read(start * 8, count * 8), np.uint64)

    def __len__(self) -> int:
        return self.rows

    def find(self, hashes: np.ndarray) -> np.ndarray:
        """Row of each hash, -1 where absent."""
        out = np.full(len(hashes), -1, np.int64)
        if not self.rows or not len(hashes):
            return out
        blocks = np.searchsorted(self.sample, hashes, side="right") - 1
        if len(hashes) == 1:  # one id (a query's hard negatives): no grouping by block
            if blocks[0] >= 0:
                start = int(blocks[0]) * self.STRIDE
                values = self._read(start, min(self.STRIDE, self.rows - start))
                at = int(values.searchsorted(hashes[0]))
                out[0] = start + at if at < len(values) and values[at] == hashes[0] else -1
            return out
        for block in np.unique(blocks[blocks >= 0]):
            start = int(block) * self.STRIDE
            values = self._read(start, min(self.STRIDE, self.rows - start))
            mine = np.flatnonzero(blocks == block)
            at = np.minimum(np.searchsorted(values, hashes[mine]), len(values) - 1)
            hit = values[at] == hashes[mine]
            out[mine[hit]] = start + at[hit]
        return out


def sample_of(column: np.ndarray, stride: int = SortedHashes.STRIDE) -> np.ndarray:
    """Every `stride`-th value of a sorted column, contiguous in memory (8 bytes per `stride` rows)."""
    return np.ascontiguousarray(column[::stride])


def block_find(column: np.ndarray, sample: np.ndarray, key: np.uint64, stride: int = SortedHashes.STRIDE) -> int:
    """Row of `key` in a sorted column (a memory-mapped field of a record array: strided), -1 if absent.

    numpy's searchsorted copies a strided array whole before searching (a 56 MB copy per lookup for
    7M records); through the sample only one block of `stride` values is read and copied.
    """
    block = int(np.searchsorted(sample, key, side="right")) - 1
    if block < 0:
        return -1
    start = block * stride
    values = np.ascontiguousarray(column[start:start + stride])
    at = int(values.searchsorted(key))
    return start + at if at < len(values) and values[at] == key else -1
