"""Bootstrap intervals and paired tests: seeded, against scipy and exact enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from wit_retrieval.results import compare_runs, score_run
from wit_retrieval.significance import bootstrap_ci, cohens_d, paired_t_p, paired_test, permutation_p


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(0).random((500, 2))
    low, high = bootstrap_ci(values, samples=400, seed=3)
    again = bootstrap_ci(values, samples=400, seed=3)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])
    assert np.all(low < values.mean(0)) and np.all(values.mean(0) < high)
    # About mean +- 1.96 standard errors for a large sample.
    se = values.std(0, ddof=1) / np.sqrt(len(values))
    np.testing.assert_allclose(high - low, 2 * 1.96 * se, rtol=0.2)
    assert np.isnan(bootstrap_ci(np.zeros((0, 2)))[0]).all()


def test_paired_t_matches_scipy_and_cohens_d():
    rng = np.random.default_rng(1)
    a, b = rng.random(50), rng.random(50) + 0.1
    t, p = paired_t_p(b - a)
    ref = stats.ttest_rel(b, a)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert cohens_d(b - a) == pytest.approx((b - a).mean() / (b - a).std(ddof=1))
    assert paired_t_p(np.zeros(5)) == (0.0, 1.0)


def test_permutation_p_matches_exact_enumeration():
    diffs = np.array([0.5, 0.25, -0.1, 0.4, 0.3, 0.0, 0.2, -0.05])
    flips = np.array(list(itertools.product([-1, 1], repeat=len(diffs))))
    exact = np.mean(np.abs(flips @ diffs) >= abs(diffs.sum()) - 1e-12)
    assert permutation_p(diffs, permutations=20000, seed=0) == pytest.approx(exact, abs=0.01)
    assert permutation_p(diffs, 1000, seed=5) == permutation_p(diffs, 1000, seed=5)


def test_paired_test_of_identical_runs():
    a = np.array([1.0, 0.0, 0.5, 1.0])
    result = paired_test(a, a, permutations=500, samples=200)
    assert result["mean_difference"] == 0 and result["p_ttest"] == 1.0 and result["p_permutation"] == 1.0
    assert result["difference_ci"] == [0.0, 0.0] and result["cohens_d"] == 0.0


def small_world(num_queries=60):
    rng = np.random.default_rng(2)
    qids = [f"q{i:02d}" for i in range(num_queries)]
    qrels = {q: {f"t{i}": 1} for i, q in enumerate(qids)}
    good = {q: [(f"t{i}", 1.0), ("x", 0.5)] if rng.random() < 0.8 else [("x", 1.0)] for i, q in enumerate(qids)}
    bad = {q: [("x", 1.0), (f"t{i}", 0.5)] for i, q in enumerate(qids)}
    queries = pa.table({"query_id": qids, "language": ["en", "de"] * (num_queries // 2),
                        "query_type": ["single"] * num_queries, "num_entities": [1, 2, 3] * (num_queries // 3)})
    return qrels, good, bad, queries


def test_compare_runs_per_measure_and_breakdown():
    qrels, good, bad, queries = small_world()
    out = compare_runs(bad, good, qrels, "Success@1,MRR@10", queries_table=queries, permutations=2000,
                       bootstrap=200, names=("bad", "good"))
    test = out["tests"]["Success@1"]
    assert out["run_a"] == "bad" and test["mean_a"] == 0 and test["mean_difference"] > 0.5
    assert test["p_ttest"] < 1e-6 and test["p_permutation"] < 0.001 and test["cohens_d"] > 1
    assert test["difference_ci"][0] > 0
    assert set(out["breakdowns"]["language"]) == {"de", "en"}
    assert out["breakdowns"]["num_entities"]["2"]["MRR@10"]["num_queries"] == 20


def test_score_run_record():
    qrels, good, _, queries = small_world()
    results = score_run(good, qrels, "R@1,MRR@10", queries_table=queries, bootstrap=300, corpus_size=1000,
                        metadata={"model": "m"}, keep_per_query=True)
    doc = results.to_dict()
    assert doc["num_queries"] == 60 and doc["run_metadata"] == {"model": "m"}
    lo, hi = doc["ci"]["R@1"]
    assert lo <= doc["scores"]["R@1"] <= hi
    assert doc["chance"]["R@1"] == pytest.approx(1 / 1000)
    assert doc["per_query"]["query_id"][:2] == ["q00", "q01"] and len(doc["per_query"]["R@1"]) == 60
    en = doc["breakdowns"]["language"]["en"]
    assert en["num_queries"] == 30 and en["scores"]["R@1"] == np.mean(doc["per_query"]["R@1"][::2])
    assert "per_query" not in score_run(good, qrels, "R@1", bootstrap=0).to_dict()


def test_bootstrap_of_few_distinct_rows_has_the_resampling_distribution():
    from wit_retrieval.significance import bootstrap_means

    rng = np.random.default_rng(5)
    hits = (rng.random((4000, 1)) < 0.2).astype(float)  # two distinct rows: the multinomial path
    jitter = hits + rng.random((4000, 1)) * 1e-9  # all rows distinct: one draw per query
    few, many = bootstrap_means(hits, 2000, seed=1), bootstrap_means(jitter, 2000, seed=1)
    expected_sd = hits.std() / np.sqrt(len(hits))
    for means in (few, many):
        assert abs(means.mean() - hits.mean()) < 0.2 * expected_sd
        assert abs(means.std() / expected_sd - 1) < 0.1
    assert np.array_equal(few, bootstrap_means(hits, 2000, seed=1)) and not np.array_equal(few, bootstrap_means(hits, 2000, seed=2))


def test_distinct_rows_equal_numpy_unique_rows():
    """The factorised key gives np.unique(axis=0)'s rows, order and counts (so the same intervals)."""
    from wit_retrieval.significance import _distinct_rows

    rng = np.random.default_rng(3)
    for _ in range(100):
        n, m = int(rng.integers(1, 400)), int(rng.integers(1, 10))
        rows = rng.integers(0, int(rng.integers(1, 6)), size=(n, m)) / 7.0
        expected, got = np.unique(rows, axis=0, return_counts=True), _distinct_rows(rows)
        assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    wide = rng.random((50, 12))  # 50^12 combinations overflow one integer key: the fallback path
    assert np.array_equal(np.unique(wide, axis=0, return_counts=True)[1], _distinct_rows(wide)[1])
