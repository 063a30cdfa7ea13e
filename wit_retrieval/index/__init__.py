"""Nearest-neighbour search over embeddings with faiss: exact by default, ANN on request.

Official scores use exact search (ANN results are not self-consistent and quantisation hurts
cross-modal queries); `wit-retrieval index check` shows what an ANN index costs in recall.

What fits where (n vectors x d dims; memory of the index itself, queries are searched in
chunks so search adds only chunk x k x 12 bytes plus faiss's 4096 x 1024 score block, ~16 MB):

- fp32 exact: n x d x 4 bytes. WIT's 11.5M images x 512 = 22 GiB: fits a 32 GiB machine;
  on smaller ones load with `mmap=True` (the OS pages vectors from disk: slower, but it runs).
- `--quantize fp16`: 11 GiB; `--quantize int8`: 5.5 GiB (exhaustive, small recall loss).
- `--dim 256` (Matryoshka models only) halves each figure; `--dim 128` quarters it.
- `--kind auto --memory-budget 4GB` picks the best index that fits (IVF-SQ8, then OPQ+IVF-PQ
  at 64/32/16/8 bytes per vector: 11.5M x 64 B = 0.7 GiB) and records why in index.json.
"""

from __future__ import annotations

from .check import check_index
from .config import IndexChoice, IndexConfig, choose_index, parse_memory
from .core import Index, build_index, load_index

__all__ = [
    "Index", "IndexChoice", "IndexConfig", "build_index", "check_index", "choose_index", "load_index",
    "parse_memory",
]
