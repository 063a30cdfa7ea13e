"""Agreement statistics: Fleiss' kappa, Krippendorff's alpha, majority labels, Wilson intervals.

Both coefficients take an items x categories matrix of counts (how many raters gave each
label to each item), so missing ratings are simply smaller row sums.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import ConfigError


def count_matrix(units: Iterable[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """Items x labels counts from each item's list of labels (labels outside `labels` are ignored)."""
    index = {label: i for i, label in enumerate(labels)}
    rows = []
    for unit in units:
        row = np.zeros(len(labels), dtype=np.float64)
        for label in unit:
            if label in index:
                row[index[label]] += 1
        rows.append(row)
    return np.vstack(rows) if rows else np.zeros((0, len(labels)))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa; items may have different numbers of raters (items with fewer than 2 are skipped).

    With the same number of raters everywhere this is exactly Fleiss (1971).
    """
    counts = np.asarray(counts, dtype=np.float64)
    per_item = counts.sum(axis=1)
    counts, per_item = counts[per_item >= 2], per_item[per_item >= 2]
    if len(counts) == 0:
        return float("nan")
    observed = ((counts * (counts - 1)).sum(axis=1) / (per_item * (per_item - 1))).mean()
    shares = counts.sum(axis=0) / per_item.sum()
    expected = float((shares**2).sum())
    if expected == 1.0:
        return float("nan")  # one category only: agreement is undefined, not perfect
    return float((observed - expected) / (1 - expected))


def _distance(level: str, totals: np.ndarray) -> np.ndarray:
    """Squared difference function delta^2(c, k) over the ordered categories."""
    k = len(totals)
    c = np.arange(k)
    if level == "nominal":
        return (c[:, None] != c[None, :]).astype(np.float64)
    if level == "interval":
        return (c[:, None] - c[None, :]).astype(np.float64) ** 2
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(totals)])
        low, high = np.minimum(c[:, None], c[None, :]), np.maximum(c[:, None], c[None, :])
        between = cum[high + 1] - cum[low]  # sum of n_g for g from c to k inclusive
        return (between - (totals[:, None] + totals[None, :]) / 2) ** 2
    raise ConfigError(f"unknown level of measurement {level!r}; use nominal, ordinal or interval")


def krippendorff_alpha(counts: np.ndarray, level: str = "nominal") -> float:
    """Krippendorff's alpha from items x categories counts (categories in order for ordinal/interval)."""
    counts = np.asarray(counts, dtype=np.float64)
    per_item = counts.sum(axis=1)
    counts, per_item = counts[per_item >= 2], per_item[per_item >= 2]  # only pairable units count
    if len(counts) == 0:
        return float("nan")
    # Coincidences o_ck = sum_u n_uc (n_uk - [c == k]) / (m_u - 1).
    weighted = counts / (per_item - 1)[:, None]
    coincidence = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    totals = coincidence.sum(axis=0)
    n = totals.sum()
    delta = _distance(level, totals)
    expected = (np.outer(totals, totals) * delta).sum()
    if expected == 0:
        return float("nan")
    return float(1 - (n - 1) * (coincidence * delta).sum() / expected)


def majority(labels: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the most frequent label or None on a tie, the labels tied for most votes)."""
    if not labels:
        return None, []
    counts = Counter(labels)
    top = max(counts.values())
    tied = sorted(label for label, c in counts.items() if c == top)
    return (tied[0] if len(tied) == 1 else None), tied


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(proportion, lower, upper) with the Wilson score interval; nan for zero trials."""
    if trials == 0:
        return float("nan"), float("nan"), float("nan")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return p, max(0.0, centre - half), min(1.0, centre + half)
