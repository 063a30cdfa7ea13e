"""Exact search in torch, for GPUs: a chunked matrix product and top-k, in our tie order.

faiss-cpu's exact search is BLAS on the CPU; on a GPU the same search is a matrix product per
block of the corpus and a running top-k. Scores are computed in full fp32 (TF32 off: it rounds
inputs to 10 bits of mantissa and would reorder near-ties), and `exact_topk` (index/topk.py)
puts tied scores in trec_eval's order exactly as it does for faiss, so a run is the same
whichever device searched, up to neighbours whose scores differ by less than fp32 rounding (the
two kernels sum a dot product in different orders). `faiss-gpu` is the other way to search on a GPU; it installs the
same `faiss` module as `faiss-cpu`, so it is a swap a user makes by hand (docs/embedding.md),
not an extra.
"""

from __future__ import annotations

import contextlib

import numpy as np

CORPUS_CHUNK = 262_144  # corpus rows per matrix product: [queries, chunk] scores stay small on the device


@contextlib.contextmanager
def _full_fp32():
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class TorchFlatBackend:
    """Exhaustive fp32 search with the matrix on a torch device (a drop-in for the faiss Flat backend)."""

    exhaustive = True

    def __init__(self, vectors: np.ndarray, metric: str, device: str, corpus_chunk: int = CORPUS_CHUNK):
        import torch

        self.host = vectors  # kept for save(): the index folder's vectors.npy
        self.metric, self.device, self.corpus_chunk = metric, device, corpus_chunk
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(device)
        self.norms = (self.vectors * self.vectors).sum(dim=1) if metric == "l2" else None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k] descending, int64 labels); for l2 the scores are negated squared distances."""
        import torch

        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device, non_blocking=True)
        best_s = best_l = None
        with torch.inference_mode(), _full_fp32():
            for start in range(0, self.vectors.shape[0], self.corpus_chunk):
                block = self.vectors[start: start + self.corpus_chunk]
                scores = q @ block.T
                if self.metric == "l2":
                    scores = 2 * scores - self.norms[start: start + len(block)] - (q * q).sum(dim=1, keepdim=True)
                top_s, top_l = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                top_l += start
                if best_s is not None:
                    top_s, pick = torch.topk(torch.cat([best_s, top_s], 1), min(k, best_s.shape[1] + top_s.shape[1]),
                                             dim=1)
                    top_l = torch.gather(torch.cat([best_l, top_l], 1), 1, pick)
                best_s, best_l = top_s, top_l
        return best_s.float().cpu().numpy(), best_l.cpu().numpy().astype(np.int64)

    def vector(self, label: int) -> np.ndarray:
        return np.asarray(self.host[label], np.float32)

    def save(self, directory) -> None:
        from .core import _FlatBackend

        _FlatBackend(self.host, self.metric).save(directory)
