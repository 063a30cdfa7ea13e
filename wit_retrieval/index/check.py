"""What an ANN index costs: its recall against exact search on sampled queries (like autofaiss score_index)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InputError
from .core import Index


def _timed_search(index: Index, queries: np.ndarray, k: int) -> tuple[list[list[str]], float]:
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, time.perf_counter() - t0


def check_index(ann: Index, exact: Index, queries: np.ndarray, k: int = 100) -> dict[str, Any]:
    """Recall of `ann` against `exact` on `queries`.

    recall@r: mean |top-r(ann) ∩ top-r(exact)| / r, for r in 1, 10, k (the share of the exact
    results an ANN user still gets); top1_in_k: how often the exact best result is anywhere in
    the ANN top k (autofaiss's 1-recall@k). Also both indexes' query throughput.
    """
    if ann.ntotal != exact.ntotal:
        raise InputError(f"the indexes hold different collections ({ann.ntotal} vs {exact.ntotal} vectors)")
    if len(queries) == 0:
        raise InputError("no queries to check with")
    k = min(k, exact.ntotal)
    ann_ids, ann_s = _timed_search(ann, queries, k)
    exact_ids, exact_s = _timed_search(exact, queries, k)
    result: dict[str, Any] = {"queries": len(queries), "k": k}
    for r in sorted({1, 10, k} & set(range(1, k + 1))):
        hits = [len(set(a[:r]) & set(e[:r])) / r for a, e in zip(ann_ids, exact_ids)]
        result[f"recall@{r}"] = float(np.mean(hits))
    result[f"top1_in_{k}"] = float(np.mean([bool(e) and e[0] in set(a) for a, e in zip(ann_ids, exact_ids)]))
    result["ann_queries_per_s"] = len(queries) / max(ann_s, 1e-9)
    result["exact_queries_per_s"] = len(queries) / max(exact_s, 1e-9)
    result["ann"] = ann.metadata.get("factory")
    result["exact"] = exact.metadata.get("factory")
    return result
