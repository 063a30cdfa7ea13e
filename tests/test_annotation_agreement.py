"""Agreement statistics against independent implementations (statsmodels, krippendorff)."""

from __future__ import annotations

import numpy as np
import pytest

from wit_retrieval.annotation.agreement import (
    count_matrix,
    fleiss_kappa,
    krippendorff_alpha,
    majority,
    wilson,
)

krippendorff = pytest.importorskip("krippendorff")
inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
proportion = pytest.importorskip("statsmodels.stats.proportion")


def _counts(reliability: np.ndarray, categories: int) -> np.ndarray:
    """raters x units (nan = missing) -> units x categories counts."""
    return np.stack([(reliability == c).sum(axis=0) for c in range(categories)], axis=1).astype(float)


@pytest.mark.parametrize("seed", range(6))
def test_fleiss_kappa_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    categories = int(rng.integers(2, 5))
    raters, units = int(rng.integers(2, 7)), int(rng.integers(5, 60))
    # skew towards one label so kappa is not always near zero
    ratings = np.where(rng.random((raters, units)) < 0.5, 0, rng.integers(0, categories, (raters, units)))
    counts = _counts(ratings, categories)
    expected = inter_rater.fleiss_kappa(counts, method="fleiss")
    assert fleiss_kappa(counts) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
@pytest.mark.parametrize("seed", range(5))
def test_krippendorff_alpha_matches_package_with_missing_ratings(level, seed):
    rng = np.random.default_rng(100 + seed)
    categories, raters, units = int(rng.integers(2, 6)), int(rng.integers(2, 8)), int(rng.integers(5, 80))
    truth = rng.integers(0, categories, units)
    noise = rng.integers(0, categories, (raters, units))
    ratings = np.where(rng.random((raters, units)) < 0.6, truth, noise).astype(float)
    ratings[rng.random(ratings.shape) < 0.35] = np.nan  # missing ratings
    expected = krippendorff.alpha(reliability_data=ratings, level_of_measurement=level,
                                  value_domain=list(range(categories)))
    assert krippendorff_alpha(_counts(ratings, categories), level) == pytest.approx(expected, abs=1e-9)


def test_perfect_agreement_and_degenerate_inputs():
    counts = np.array([[3, 0], [0, 3], [3, 0]], dtype=float)
    assert fleiss_kappa(counts) == pytest.approx(1.0)
    assert krippendorff_alpha(counts) == pytest.approx(1.0)
    assert np.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category only: undefined
    assert np.isnan(krippendorff_alpha(np.array([[1, 0], [0, 1]])))  # no unit has two ratings


def test_count_matrix_ignores_unknown_labels():
    counts = count_matrix([["yes", "no", "yes"], ["unsure"], []], ["yes", "no"])
    assert counts.tolist() == [[2, 1], [0, 0], [0, 0]]


def test_majority_reports_ties():
    assert majority(["yes", "yes", "no"]) == ("yes", ["yes"])
    assert majority(["yes", "no"]) == (None, ["no", "yes"])
    assert majority([]) == (None, [])


@pytest.mark.parametrize(("k", "n"), [(0, 10), (7, 10), (10, 10), (93, 120), (1, 1)])
def test_wilson_matches_statsmodels(k, n):
    p, low, high = wilson(k, n, 0.95)
    expected_low, expected_high = proportion.proportion_confint(k, n, alpha=0.05, method="wilson")
    assert p == k / n and low == pytest.approx(expected_low, abs=1e-12) and high == pytest.approx(expected_high, abs=1e-12)


def test_agreement_of_a_ratings_table_matches_the_packages():
    from wit_retrieval.annotation import agreement
    from wit_retrieval.annotation.ratings import ratings_table

    rng = np.random.default_rng(7)
    labels = ("no", "partly", "yes")
    raters, units = 5, 40
    reliability = np.where(rng.random((raters, units)) < 0.5, rng.integers(0, 3, units), rng.integers(0, 3, (raters, units)))
    reliability = reliability.astype(float)
    reliability[rng.random(reliability.shape) < 0.3] = np.nan
    rows = [{"item_id": f"i{u}", "task_kind": "mmir-answerable", "rater": f"r{r}", "label": labels[int(v)],
             "is_gold": False, "source": "csv"}
            for r in range(raters) for u in range(units) if not np.isnan(v := reliability[r, u])]
    result = agreement(ratings_table(rows))
    for level in ("nominal", "ordinal"):
        expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement=level, value_domain=[0, 1, 2])
        assert result[f"krippendorff_alpha_{level}"] == pytest.approx(expected, abs=1e-9)
    assert result["krippendorff_alpha"] == result["krippendorff_alpha_ordinal"]
    counts = _counts(reliability, 3)
    assert result["fleiss_kappa"] == pytest.approx(fleiss_kappa(counts), abs=1e-12)
    full = counts[counts.sum(axis=1) == counts.sum(axis=1).max()]
    assert fleiss_kappa(full) == pytest.approx(inter_rater.fleiss_kappa(full, method="fleiss"), abs=1e-9)
