"""Top-k in trec_eval's order: score descending, then id descending, ties at the cut included.

faiss returns the k best in an unspecified order among equal scores, and at the k-th place it
keeps an arbitrary subset of a tie group. Scoring tools (trec_eval, ir_measures, our metrics)
order equal scores by document id descending, so a run cut at k must hold the *largest* ids of
the tie group that straddles the cut. Index labels are positions in id-sorted order, so "id
descending" is "label descending". We ask faiss for k+1 results: when the k-th and (k+1)-th
scores differ, only the order inside the k needs fixing; when they are equal, the query is
searched again with a wider k until the tie group ends inside the results (rare on real data:
it needs duplicate or equidistant vectors).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (scores desc, labels)


def sort_ties(scores: np.ndarray, labels: np.ndarray) -> None:
    """Reorder, in place, the rows that hold equal scores by (score desc, label desc)."""
    if scores.shape[1] < 2:
        return
    rows = np.flatnonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1))
    if rows.size == 0:
        return
    sub_s, sub_l = scores[rows], labels[rows]
    order = np.lexsort((-sub_l, -sub_s), axis=-1)
    scores[rows] = np.take_along_axis(sub_s, order, axis=1)
    labels[rows] = np.take_along_axis(sub_l, order, axis=1)


def exact_topk(search: SearchFn, queries: np.ndarray, k: int, ntotal: int) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive top-k with trec_eval's tie order; k is capped at ntotal."""
    k = min(k, ntotal)
    if k <= 0 or len(queries) == 0:
        return np.empty((len(queries), max(k, 0)), np.float32), np.empty((len(queries), max(k, 0)), np.int64)
    wide = k + 1 if k < ntotal else k
    scores, labels = search(queries, wide)
    if wide > k:
        straddling = np.flatnonzero(scores[:, k - 1] == scores[:, k])
        scores, labels = np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(labels[:, :k])
        if straddling.size:
            fixed_s, fixed_l = _widen(search, queries[straddling], k, ntotal, start=2 * wide)
            scores[straddling], labels[straddling] = fixed_s, fixed_l
    sort_ties(scores, labels)
    return scores, labels


def _widen(search: SearchFn, queries: np.ndarray, k: int, ntotal: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Search again with more results until each row's tie group at place k ends; keep the best k.

    Whole rows are replaced by the wider search, so every score of a row comes from one
    computation (BLAS and SIMD kernels may round differently).
    """
    out_s = np.empty((len(queries), k), np.float32)
    out_l = np.empty((len(queries), k), np.int64)
    pending = np.arange(len(queries))
    width = min(start, ntotal)
    while pending.size:
        scores, labels = search(np.ascontiguousarray(queries[pending]), width)
        done = (scores[:, k - 1] != scores[:, width - 1]) if width < ntotal else np.ones(len(pending), bool)
        for row in np.flatnonzero(done):
            order = np.lexsort((-labels[row], -scores[row]))[:k]
            out_s[pending[row]], out_l[pending[row]] = scores[row][order], labels[row][order]
        pending = pending[~done]
        width = min(ntotal, width * 4)
    return out_s, out_l
