"""Measures against ir_measures (pytrec_eval provider, trec_eval's tie rule) and ranx, to 1e-9."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from wit_retrieval.errors import ConfigError
from wit_retrieval.metrics import (
    MEASURES,
    chance_level,
    evaluate_queries,
    evaluate_run,
    parse_measure,
    parse_measures,
    per_query,
)

CUTOFFS = (1, 3, 5, 10)


def random_case(seed: int, *, ties: bool, num_queries: int = 150, num_docs: int = 40):
    """A run with (optionally) tied scores, missing queries, unjudged and graded items, extra queries."""
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for i in range(num_queries):
        q = f"q{i:03d}"
        judged = rng.choice(num_docs, int(rng.integers(1, 6)), replace=False)
        qrels[q] = {f"d{j:02d}": int(rng.integers(0, 3)) for j in judged}
        qrels[q][f"d{judged[0]:02d}"] = int(rng.integers(1, 3))  # at least one relevant
        if rng.random() < 0.1:
            continue  # missing from the run: scores 0
        docs = rng.choice(num_docs, int(rng.integers(1, 25)), replace=False)
        scores = rng.integers(0, 4, len(docs)).astype(float) if ties else rng.permutation(len(docs)) / 7.0
        run[q] = [(f"d{j:02d}", float(s)) for j, s in zip(docs, scores)]
    run["not-in-qrels"] = [("d01", 1.0)]
    return run, qrels


def ir_measures_values(run, qrels):
    import ir_measures
    from ir_measures import AP, RR, R, Success, nDCG

    objs = {f"{n}@{k}": m @ k for k in CUTOFFS for n, m in (("R", R), ("Success", Success), ("nDCG", nDCG),
                                                             ("AP", AP))}
    evaluator = ir_measures.pytrec_eval.evaluator([*objs.values(), RR], qrels)
    got = {(str(m.measure), m.query_id): m.value
           for m in evaluator.iter_calc([ir_measures.ScoredDoc(q, d, s) for q, items in run.items() for d, s in items])}
    qids = sorted(qrels)
    out = {name: np.array([got.get((str(m), q), 0.0) for q in qids]) for name, m in objs.items()}
    rr = np.array([got.get(("RR", q), 0.0) for q in qids])
    for k in CUTOFFS:  # trec_eval has no RR cutoff: MRR@k is RR when the first hit is within k
        out[f"MRR@{k}"] = np.where(rr >= 1.0 / k - 1e-12, rr, 0.0)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_ir_measures_pytrec_eval_with_ties(seed):
    run, qrels = random_case(seed, ties=True)
    reference = ir_measures_values(run, qrels)
    ours = per_query(run, qrels, list(reference))
    for name, values in reference.items():
        np.testing.assert_allclose(ours[name], values, rtol=0, atol=1e-9, err_msg=name)


RANX_NAMES = {"R": "recall", "Success": "hit_rate", "MRR": "mrr", "nDCG": "ndcg", "AP": "map"}


def ranx_values(run, qrels):
    from ranx import Qrels, Run, evaluate

    names = [f"{r}@{k}" for k in CUTOFFS for r in RANX_NAMES.values()]
    positive = {q: {d: r for d, r in docs.items() if r > 0} for q, docs in qrels.items()}
    ranx_run = Run({q: dict(items) for q, items in run.items() if q in qrels})
    return evaluate(Qrels(positive), ranx_run, names, make_comparable=True, return_mean=False)


@pytest.mark.slow  # numba compiles ranx's metrics on first use
def test_equals_ranx_on_tie_free_runs():
    """ranx orders tied items by numba's unstable quicksort (not by id), so only tie-free runs compare."""
    run, qrels = random_case(3, ties=False)
    got = ranx_values(run, qrels)
    ours = per_query(run, qrels, [f"{n}@{k}" for k in CUTOFFS for n in RANX_NAMES])
    for k in CUTOFFS:
        for ours_name, ranx_name in RANX_NAMES.items():
            np.testing.assert_allclose(ours[f"{ours_name}@{k}"], got[f"{ranx_name}@{k}"], atol=1e-9,
                                       err_msg=f"{ours_name}@{k}")


def test_tie_rule_score_then_image_id_descending():
    qrels = {"q": {"a": 1}}
    # All tied: trec_eval orders c, b, a, so "a" is third.
    assert evaluate_run({"q": [("a", 1.0), ("b", 1.0), ("c", 1.0)]}, qrels, "MRR@10")["MRR@10"] == pytest.approx(1 / 3)
    assert evaluate_run({"q": [("a", 1.0), ("b", 0.5)]}, qrels, "R@1")["R@1"] == 1.0
    # The listed order and any rank numbers do not matter, only scores and ids.
    assert evaluate_run({"q": [("b", 0.5), ("a", 1.0)]}, qrels, "R@1")["R@1"] == 1.0


def test_one_target_per_query_recall_equals_success():
    run, qrels = random_case(5, ties=True)
    single = {q: {sorted(docs, key=docs.get)[-1]: 1} for q, docs in qrels.items()}
    values = evaluate_run(run, single, [f"{n}@{k}" for k in CUTOFFS for n in ("R", "Success")])
    for k in CUTOFFS:
        assert values[f"R@{k}"] == values[f"Success@{k}"]
    multi = evaluate_run(run, qrels, "R@5,Success@5")
    assert multi["R@5"] < multi["Success@5"]  # with several targets they differ


def test_missing_queries_score_zero_and_unknown_queries_are_ignored():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    scores = evaluate_queries({"q1": [("a", 1.0)], "zzz": [("b", 1.0)]}, qrels, "Success@1,nDCG@10,AP@10")
    assert list(scores.query_ids) == ["q1", "q2"]
    for values in scores.values.values():
        assert values.tolist() == [1.0, 0.0]
    assert evaluate_run({}, qrels, "R@10")["R@10"] == 0.0


def test_names_parse_and_print_back():
    for name in MEASURES.names():
        for text in (name, f"{name}@7"):
            assert str(parse_measure(text)) == text
    assert [str(m) for m in parse_measures("recall@10, hit@1,ndcg@5,map@3,RR@10")] == \
        ["R@10", "Success@1", "nDCG@5", "AP@3", "MRR@10"]
    with pytest.raises(ConfigError, match="Did you mean"):
        parse_measure("nDGC@10")
    with pytest.raises(ConfigError, match="positive"):
        parse_measure("R@0")
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_measure("R@x")


@pytest.mark.parametrize("num_relevant", [1, 2])
def test_chance_level_is_the_exact_expectation(num_relevant):
    """Average over every ordering of a 5-image corpus equals the closed form."""
    docs = [f"d{i}" for i in range(5)]
    qrels = {"q": {d: 1 for d in docs[:num_relevant]}}
    names = "R@2,Success@2,MRR@3,nDCG@3,AP@4"
    totals = dict.fromkeys(names.split(","), 0.0)
    perms = list(itertools.permutations(docs))
    for perm in perms:
        values = evaluate_run({"q": [(d, -i) for i, d in enumerate(perm)]}, qrels, names)
        for n in totals:
            totals[n] += values[n] / len(perms)
    for m in parse_measures(names):
        assert chance_level(m, 5, np.array([num_relevant])) == pytest.approx(totals[str(m)], abs=1e-12)


def test_graded_relevance_and_zero_judgments():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": [("c", 3.0), ("b", 2.0), ("a", 1.0)]}
    values = evaluate_run(run, qrels, "nDCG@3,AP@3,R@2")
    dcg = 1 / np.log2(3) + 2 / np.log2(4)
    assert values["nDCG@3"] == pytest.approx(dcg / (2 + 1 / np.log2(3)))
    assert values["AP@3"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert values["R@2"] == 0.5


def test_row_order_and_layout_do_not_matter():
    """Shuffled rows (queries split across the file) and fixed-depth runs take other code paths."""
    import pyarrow as pa

    run, qrels = random_case(6, ties=True)
    rows = [(q, d, s) for q, items in run.items() for d, s in items]
    names = [f"{n}@{k}" for k in CUTOFFS for n in MEASURES.names()]
    reference = ir_measures_values(run, qrels)
    order = np.random.default_rng(0).permutation(len(rows))
    shuffled = pa.table({c: [rows[i][j] for i in order] for j, c in enumerate(("query_id", "image_id", "score"))})
    ours = per_query(shuffled, qrels, names)
    for name, values in reference.items():
        np.testing.assert_allclose(ours[name], values, atol=1e-9, err_msg=name)
    fixed = {q: (items * 10)[:10] for q, items in run.items()}
    fixed = {q: list({d: (d, s) for d, s in items}.values()) for q, items in fixed.items()}
    fixed = {q: items for q, items in fixed.items() if len(items) == len(fixed["q000"])}
    assert len(fixed) > 5
    np.testing.assert_allclose(per_query(fixed, qrels, ["nDCG@10"])["nDCG@10"],
                               ir_measures_values(fixed, qrels)["nDCG@10"], atol=1e-9)


def test_ir_measures_default_rr_at_k_breaks_ties_otherwise_documented_in_readme():
    # ir_measures' default provider for RR@k orders tied scores by doc id ascending; trec_eval (and
    # we) by doc id descending. The README says which measure to compare: our MRR with pytrec_eval's RR.
    import ir_measures
    from ir_measures import RR

    qrels = {"q": {"a": 1}}
    run = {"q": [("a", 1.0), ("b", 1.0), ("c", 1.0)]}
    scored = [ir_measures.ScoredDoc(q, d, s) for q, items in run.items() for d, s in items]
    default_rr10 = ir_measures.calc_aggregate([RR @ 10], qrels, scored)[RR @ 10]
    trec_rr = ir_measures.pytrec_eval.calc_aggregate([RR], qrels, scored)[RR]
    ours = evaluate_run(run, qrels, ["MRR@10", "MRR"])
    assert default_rr10 == pytest.approx(1.0)  # "a" first under doc id ascending
    assert ours["MRR@10"] == ours["MRR"] == pytest.approx(trec_rr) == pytest.approx(1 / 3)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "`RR@k`" in readme and "pytrec_eval" in readme


def test_equals_ir_measures_with_ids_of_many_lengths():
    """Ids of 1 to 40 bytes, a run holding longer ids than any relevant one (and a fixed-depth one):
    fingerprints must not depend on the longest id beside them (they once did, and missed hits)."""
    import pyarrow as pa

    run, qrels = random_case(7, ties=True)
    name = {f"d{j:02d}": f"d{j}" + "x" * (3 * j % 37) for j in range(40)}
    run = {q: [(name[d], s) for d, s in items] for q, items in run.items()}
    qrels = {q: {name[d]: r for d, r in docs.items()} for q, docs in qrels.items()}
    reference = ir_measures_values(run, qrels)
    ours = per_query(run, qrels, list(reference))
    for measure, values in reference.items():
        np.testing.assert_allclose(ours[measure], values, rtol=0, atol=1e-9, err_msg=measure)
    # Fixed depth (the broadcast paths): each query's one short relevant id among longer fillers.
    short = {q: next(d for d, r in docs.items() if r > 0) for q, docs in qrels.items()}
    short = {q: d for q, d in short.items() if len(d) < 9}
    rows = [(q, d, 1.0 if j == 2 else -j) for q in short
            for j, d in enumerate([f"{q}-filler-{k:020d}" for k in range(2)] + [short[q]]
                                  + [f"{q}-filler-{k:020d}" for k in range(2, 4)])]
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(("query_id", "image_id", "score"))})
    assert len(short) > 20
    assert per_query(table, {q: {d: 1} for q, d in short.items()}, ["MRR@10"])["MRR@10"].tolist() == \
        [1.0] * len(short)
