"""Index builds from embeddings on disk without holding the matrix in memory.

Reading millions of vectors into one array and handing it to faiss holds the matrix (4 bytes a
dimension a vector: 2 GiB for 1M x 512) beside the index being built. Here the embeddings are
staged once into a scratch file *in id order* (the order index labels follow): a first pass reads
only the id columns and sorts them, a second streams the parts one row group at a time and writes
each row at its sorted position. `build_index` then reads the staged rows with plain file reads,
a block at a time (an ANN index trains on a sample and adds in blocks, as faiss allows), never
through a memory map, whose touched pages would count as the process's memory. Memory holds the
index, the ids and one block. An exact (Flat) index is itself the matrix, so it needs that much.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..io.embeddings import embedding_files, iter_embedding_blocks, read_embeddings, read_npy_ids
from .config import IndexConfig
from .core import Index, build_index


class StagedMatrix:
    """A float32 [n, d] matrix in a file, read by rows (row indexes ascending) with pread: no memory map."""

    def __init__(self, path: Path, n: int, d: int):
        self.shape, self.ndim, self.dtype = (n, d), 2, np.dtype(np.float32)
        self._fd = os.open(path, os.O_RDONLY)
        self._row = d * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.arange(self.shape[0])[rows] if not isinstance(rows, np.ndarray) else rows
        out = np.empty((len(rows), self.shape[1]), np.float32)
        if len(rows) == 0:
            return out
        # consecutive rows are read in one call: a block of the sorted order is one read
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            first = int(rows[run[0]])
            data = os.pread(self._fd, len(run) * self._row, first * self._row)
            out[run[0]: run[-1] + 1] = np.frombuffer(data, np.float32).reshape(len(run), self.shape[1])
        return out

    def close(self) -> None:
        os.close(self._fd)


def build_index_from_files(path: str | Path, config: IndexConfig = IndexConfig(),
                           metadata: dict[str, Any] | None = None, *, scratch: str | Path | None = None) -> Index:
    """Build an index from an embedding file or folder of parts, staged on disk in id order.

    `scratch`: the folder for the staging file (default: the system's temp folder); it needs
    rows x dim x 4 bytes free, checked before writing.
    """
    path = Path(path)
    if path.suffix == ".npy":  # already a matrix on disk
        ids, matrix = read_npy_ids(path), np.load(path, mmap_mode="r")
        if matrix.dtype != np.float32:
            ids, matrix = read_embeddings(path)
        return build_index(matrix, ids, config, metadata=metadata)
    ids = pa.concat_arrays([pq.read_table(f, columns=["id"])["id"].combine_chunks().cast(pa.string())
                            for f in embedding_files(path)])
    if len(ids) == 0:
        raise InputError("no embeddings to index", path=str(path))
    order = pc.array_sort_indices(ids).to_numpy()
    position = np.empty_like(order)
    position[order] = np.arange(len(order))  # row in file order -> row in id order
    sorted_ids = ids.take(pa.array(order)).to_pylist()
    with tempfile.TemporaryDirectory(prefix="wit-index-", dir=scratch) as tmp:
        staged = _stage(path, position, Path(tmp) / "staged.f32")
        try:
            return build_index(staged, sorted_ids, config, metadata=metadata)
        finally:
            staged.close()


def _stage(path: Path, position: np.ndarray, target: Path) -> StagedMatrix:
    """Write every row at its id-order position in a raw float32 file; free space checked first."""
    blocks = iter_embedding_blocks(path)
    first_ids, first = next(blocks)
    n, dim = len(position), first.shape[1]
    need = n * dim * 4
    free = _free_bytes(target.parent)
    if free < need:
        raise InputError(f"staging {n} x {dim} vectors needs {need / 2**30:.1f} GiB in {target.parent}, "
                         f"{free / 2**30:.1f} GiB free; give a scratch folder with room (--scratch)")
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, need)
        row = 0
        for _, block in _chain((first_ids, first), blocks):
            dest = position[row: row + len(block)]
            by_dest = np.argsort(dest, kind="stable")
            for run in np.split(by_dest, np.flatnonzero(np.diff(dest[by_dest]) != 1) + 1):
                os.pwrite(fd, np.ascontiguousarray(block[run]).tobytes(), int(dest[run[0]]) * dim * 4)
            row += len(block)
    finally:
        os.close(fd)
    return StagedMatrix(target, n, dim)


def _chain(first, rest):
    yield first
    yield from rest


def _free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize
