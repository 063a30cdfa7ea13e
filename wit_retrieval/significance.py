"""How sure a score is: seeded bootstrap confidence intervals and paired tests between two runs.

All resampling is vectorised and chunked (bounded memory at a million queries) and seeded,
so the same inputs give the same intervals and p-values.
"""

from __future__ import annotations

import math

import numpy as np

CHUNK_CELLS = 4_000_000  # resampled cells per chunk: bounds memory at ~32 MB


def _chunks(total: int, n: int) -> list[int]:
    size = max(1, CHUNK_CELLS // max(n, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def bootstrap_means(values: np.ndarray, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of `samples` resamples (with replacement) of the rows of `values` [n] or [n, m]."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    if n:
        # Measures take few distinct values (most queries score all zeros, or all ones): resampling
        # n queries is then drawing how often each distinct row is drawn, a multinomial over the
        # distinct rows -- the same distribution, for a fraction of the random numbers.
        distinct, counts = _distinct_rows(values.reshape(n, -1))
        if 4 * len(distinct) <= n:
            drawn = rng.multinomial(n, counts / n, size=samples)
            return (drawn @ distinct / n).reshape((samples,) + values.shape[1:])
    out = []
    for size in _chunks(samples, n):
        # How often each query is drawn, then one matrix product: no [size, n, m] gather.
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        out.append(counts @ values / n)
    return np.concatenate(out) if out else np.empty((0,) + values.shape[1:])


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(rows, axis=0, return_counts=True), in the same (lexicographic) order.

    Each column is factorised on its own (a 1-d sort) and the codes are combined into one
    integer key, column 0 most significant: ~10x faster than sorting whole rows.
    """
    key, radix = np.zeros(len(rows), np.int64), 1
    for column in rows.T[::-1]:
        levels, codes = np.unique(column, return_inverse=True)
        if radix * len(levels) >= 2**62:  # too many combinations for one integer key
            return np.unique(rows, axis=0, return_counts=True)
        key += codes.reshape(-1).astype(np.int64) * radix
        radix *= len(levels)
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    return rows[first], counts


def bootstrap_ci(values: np.ndarray, samples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each column of `values` (nan when empty)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0 or samples <= 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan
    means = bootstrap_means(values, samples, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    return np.percentile(means, tail, axis=0), np.percentile(means, 100.0 - tail, axis=0)


def permutation_p(diffs: np.ndarray, permutations: int = 10000, seed: int = 0) -> float:
    """Two-sided paired randomisation test: flip the sign of each query's difference at random."""
    diffs = np.asarray(diffs, dtype=np.float64)
    n = len(diffs)
    if n == 0 or permutations <= 0:
        return float("nan")
    observed = abs(diffs.mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    for size in _chunks(permutations, n):
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        means = (signs @ diffs) / n
        # A tolerance keeps exact ties with the observed mean (common with 0/1 values) counted.
        extreme += int(np.sum(np.abs(means) >= observed - 1e-12))
    return (extreme + 1) / (permutations + 1)


def paired_t_p(diffs: np.ndarray) -> tuple[float, float]:
    """Paired t statistic and two-sided p-value (t = 0, p = 1 when every difference is equal to 0)."""
    from scipy import stats

    diffs = np.asarray(diffs, dtype=np.float64)
    n = len(diffs)
    if n < 2:
        return float("nan"), float("nan")
    sd = diffs.std(ddof=1)
    if sd == 0:
        return (0.0, 1.0) if diffs.mean() == 0 else (math.copysign(math.inf, diffs.mean()), 0.0)
    t = diffs.mean() / (sd / math.sqrt(n))
    return float(t), float(2.0 * stats.t.sf(abs(t), df=n - 1))


def cohens_d(diffs: np.ndarray) -> float:
    """Cohen's d for paired samples (d_z): mean difference / standard deviation of differences."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if len(diffs) < 2:
        return float("nan")
    sd = diffs.std(ddof=1)
    if sd == 0:
        return 0.0 if diffs.mean() == 0 else math.copysign(math.inf, diffs.mean())
    return float(diffs.mean() / sd)


def paired_test(a: np.ndarray, b: np.ndarray, *, permutations: int = 10000, samples: int = 1000,
                seed: int = 0, confidence: float = 0.95) -> dict:
    """Paired comparison of per-query values of run A and run B on the same queries (B - A)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    diffs = b - a
    t, p_t = paired_t_p(diffs)
    low, high = bootstrap_ci(diffs, samples, seed, confidence)
    return {
        "num_queries": len(diffs),
        "mean_a": float(a.mean()) if len(a) else float("nan"),
        "mean_b": float(b.mean()) if len(b) else float("nan"),
        "mean_difference": float(diffs.mean()) if len(diffs) else float("nan"),
        "difference_ci": [float(low), float(high)],
        "t": t,
        "p_ttest": p_t,
        "p_permutation": permutation_p(diffs, permutations, seed),
        "cohens_d": cohens_d(diffs),
    }
