"""Index builds from embeddings on disk without holding the matrix in memory.

Reading millions of vectors into one array and handing it to faiss holds the matrix (4 bytes a
dimension a vector: 2 GiB for 1M x 512) beside the index being built. Here the parts are streamed,
one row group at a time, into a memory-mapped float32 file in a scratch folder; `build_index` then
reads it block by block in id order (an ANN index trains on a sample and adds in blocks, as faiss
allows). Memory holds the index and one block; the mapped pages are the kernel's page cache, which
it can drop at any time. An exact (Flat) index is itself the matrix, so it still needs that much.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.embeddings import count_embeddings, iter_embedding_blocks, read_embeddings
from .config import IndexConfig
from .core import Index, build_index


def build_index_from_files(path: str | Path, config: IndexConfig = IndexConfig(),
                           metadata: dict[str, Any] | None = None, *, scratch: str | Path | None = None) -> Index:
    """Build an index from an embedding file or folder of parts, streaming it through a memory map.

    `scratch`: the folder for the staging file (default: the system's temp folder); it needs
    rows x dim x 4 bytes free, checked before writing.
    """
    path = Path(path)
    if path.suffix == ".npy":  # already a matrix on disk: map it as it is
        return _build_from_npy(path, config, metadata)
    total = count_embeddings(path)
    if total == 0:
        raise InputError("no embeddings to index", path=str(path))
    with tempfile.TemporaryDirectory(prefix="wit-index-", dir=scratch) as tmp:
        staged, ids = _stage(path, total, Path(tmp) / "stacked.npy")
        return build_index(staged, ids, config, metadata=metadata)


def _stage(path: Path, total: int, target: Path) -> tuple[np.ndarray, list[str]]:
    """Stream every block into one float32 memory-mapped .npy; returns it (read-only) and the ids."""
    blocks = iter_embedding_blocks(path)
    first_ids, first = next(blocks)
    dim = first.shape[1]
    need = total * dim * 4
    free = _free_bytes(target.parent)
    if free < need:
        raise InputError(f"staging {total} x {dim} vectors needs {need / 2**30:.1f} GiB in {target.parent}, "
                         f"{free / 2**30:.1f} GiB free; give a scratch folder with room (--scratch)")
    matrix = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=(total, dim))
    ids: list[str] = []
    for block_ids, block in _chain((first_ids, first), blocks):
        matrix[len(ids): len(ids) + len(block)] = block
        ids.extend(block_ids)
    matrix.flush()
    del matrix
    return np.load(target, mmap_mode="r"), ids


def _chain(first, rest):
    yield first
    yield from rest


def _free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def _build_from_npy(path: Path, config: IndexConfig, metadata) -> Index:
    from ..io.embeddings import read_npy_ids

    ids = read_npy_ids(path)
    matrix = np.load(path, mmap_mode="r")
    if matrix.dtype != np.float32 or matrix.ndim != 2:
        ids, matrix = read_embeddings(path)
    return build_index(matrix, ids, config, metadata=metadata)
