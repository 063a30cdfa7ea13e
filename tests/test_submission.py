"""Validation of submitted runs: every problem named with its line; random and broken files never crash it."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wit_retrieval.ids import image_id
from wit_retrieval.submission import SEVERITY, SplitTruth, ValidationConfig, validate_run

URLS = [f"https://upload.wikimedia.org/wikipedia/commons/{i % 10}/{i % 10}{i}/Img_{i}.jpg" for i in range(8)]
IDS = [image_id(u) for u in URLS]
QUERIES = ["test-q1", "test-q2", "test-q3"]
TRUTH = SplitTruth(pa.array(QUERIES), pa.array(IDS))


def trec_line(q, d, rank, score, tag="run"):
    return f"{q} Q0 {d} {rank} {score} {tag}\n"


def good_trec() -> str:
    return "".join(trec_line(q, IDS[j], j + 1, 1.0 - j / 10) for q in QUERIES for j in range(4))


def kinds_at(report) -> dict[str, set]:
    out: dict[str, set] = {}
    for p in report.problems:
        out.setdefault(p.kind, set()).add(p.line)
    return out


def check(tmp_path, text: str | bytes, name="run.trec", **config):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return validate_run(path, TRUTH, ValidationConfig(**config))


def test_clean_run_is_ok_and_parsed(tmp_path):
    report, run = check(tmp_path, good_trec())
    assert report.ok and not report.problems
    assert report.num_rows == 12 and report.num_queries == 3
    assert run.table["line"].to_pylist() == list(range(1, 13))


def test_each_problem_is_named_with_its_line(tmp_path):
    lines = good_trec().splitlines(keepends=True)
    lines[1] = trec_line("test-q1", IDS[0], 2, 0.9)  # duplicate image in q1 (first at line 1)
    lines[2] = trec_line("test-q1", "0000000000000000", 3, 0.8)  # unknown image
    lines[3] = trec_line("test-q1", IDS[3], 4, 5.0)  # rank 4 scores above rank 3
    lines[5] = trec_line("test-q2", IDS[1], 2, "nan")  # non-finite score
    lines.append(trec_line("other-q", IDS[0], 1, 1.0))  # unknown query
    report, _ = check(tmp_path, "".join(lines))
    found = kinds_at(report)
    assert found["duplicate_image"] == {2}
    assert found["unknown_image"] == {3}
    assert found["rank_order"] == {4}
    assert found["nonfinite_score"] == {6}
    assert found["unknown_query"] == {13}
    assert not report.ok and report.num_errors == 4 and report.num_warnings == 1
    assert "duplicate_image: 1" in report.summary()


def test_parse_problems_fall_back_to_line_parser(tmp_path):
    text = good_trec().replace(f"test-q2 Q0 {IDS[2]} 3 0.8 run", f"test-q2 Q0 {IDS[2]} 3 high run")
    text = text.replace(f"test-q3 Q0 {IDS[0]} 1 1.0 run\n", f"test-q3 Q0 {IDS[0]} 1\n")
    report, run = check(tmp_path, text.encode() + b"test-q3 Q0 \xff\xfe 9 0.1 run\n")
    found = kinds_at(report)
    assert found == {"score": {7}, "format": {9}, "encoding": {13}}
    assert run.table.num_rows == 10  # bad lines are skipped, the rest is kept


def test_missing_queries_warn_or_fail_with_strict(tmp_path):
    text = "".join(line for line in good_trec().splitlines(keepends=True) if not line.startswith("test-q3"))
    report, _ = check(tmp_path, text)
    assert report.ok and kinds_at(report) == {"missing_query": {None}}
    strict, _ = check(tmp_path, text, strict=True)
    assert not strict.ok and "test-q3" in strict.problems[0].message


def test_max_k_and_size_cap(tmp_path):
    report, _ = check(tmp_path, good_trec(), max_k=3)
    assert kinds_at(report)["too_many"] == {1, 5, 9}
    report, run = check(tmp_path, good_trec(), max_bytes=100)
    assert run is None and report.problems[0].kind == "size" and "--max-bytes" in report.problems[0].message


def test_json_run_urls_lines_and_meta(tmp_path):
    obj = {"version": "rc2", "split": "test", "metric": "recall",
           "test-q1": [URLS[0], IDS[1]], "test-q2": [IDS[2], 7], "test-q3": "oops"}
    text = json.dumps(obj, indent=2)
    report, run = check(tmp_path, text, name="run.json")
    assert run.meta == {"version": "rc2", "split": "test", "metric": "recall"}
    assert run.table["image_id"].to_pylist()[:2] == [IDS[0], IDS[1]]  # the URL was mapped
    lines = text.splitlines()
    found = kinds_at(report)
    assert found["format"] == {lines.index('  "test-q2": [') + 1, lines.index('  "test-q3": "oops"') + 1}
    dup = f'{{"test-q1": ["{IDS[0]}"],\n"test-q1": ["{IDS[1]}"]}}'
    assert kinds_at(check(tmp_path, dup, name="dup.json")[0])["duplicate_query"] == {1}
    assert kinds_at(check(tmp_path, '{"test-q1": [', name="bad.json")[0])["format"] == {1}


def test_parquet_run_rows(tmp_path):
    table = pa.table({"query_id": ["test-q1", "test-q1", None], "image_id": [IDS[0], IDS[0], IDS[1]],
                      "score": [1.0, float("inf"), 0.5]})
    pq.write_table(table, tmp_path / "run.parquet")
    report, _ = validate_run(tmp_path / "run.parquet", TRUTH)
    assert kinds_at(report) == {"format": {3}, "nonfinite_score": {2}, "duplicate_image": {2},
                                "missing_query": {None}}
    pq.write_table(pa.table({"qid": ["x"]}), tmp_path / "wrong.parquet")
    report, run = validate_run(tmp_path / "wrong.parquet", TRUTH)
    assert run is None and "query_id" in report.problems[0].message


def assert_named(report):
    for p in report.problems:
        assert p.kind in SEVERITY and p.message and p.severity in ("error", "warning")
    assert report.ok == (report.num_errors == 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash(tmp_path, data):
    for name in ("run.trec", "run.json"):
        report, _ = check(tmp_path, data, name=name)
        assert_named(report)


# Line breaks end a line rather than sit in a field; every other character may appear.
FIELD = st.one_of(st.sampled_from(QUERIES + IDS + ["Q0", "1", "0.5", "nan", "-inf", "x", "", " ", "\t"]),
                  st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=6))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(FIELD, min_size=0, max_size=8), max_size=12), sep=st.sampled_from([" ", "\t"]))
def test_broken_trec_lines_are_named(tmp_path, rows, sep):
    text = "".join(sep.join(r) + "\n" for r in rows)
    report, run = check(tmp_path, text)
    assert_named(report)
    bad = [i + 1 for i, r in enumerate(rows)
           if len(re.split(r"[ \t]+", sep.join(r).strip(" \t"))) != 6 and sep.join(r).strip(" \t")]
    if bad:  # a line without six fields is always reported at its own line number
        assert bad[0] in {p.line for p in report.problems if p.kind == "format"} or report.counts["format"] > 20


def test_validate_does_not_raise_on_a_missing_file(tmp_path):
    report, run = validate_run(tmp_path / "nope.trec", TRUTH)
    assert run is None and not report.ok


def test_duplicates_in_fixed_depth_blocks_and_split_mismatch(tmp_path):
    text = "".join(trec_line(q, IDS[j % 3], j + 1, 1.0 - j / 10) for q in QUERIES for j in range(4))
    report, _ = check(tmp_path, text)  # every query repeats IDS[0] at its 4th line
    assert kinds_at(report)["duplicate_image"] == {4, 8, 12}
    assert "first at line 1" in report.problems[0].message
    truth = SplitTruth(TRUTH.query_ids, TRUTH.image_ids, split="test")
    (tmp_path / "val.json").write_text(json.dumps({"split": "val", "test-q1": [IDS[0]]}))
    report, _ = validate_run(tmp_path / "val.json", truth)
    assert kinds_at(report)["split_mismatch"] == {1}


def test_validation_fingerprints_are_reused_by_scoring_and_change_nothing(tmp_path):
    """Validation keeps fingerprint(image_id) with the run; scoring with it equals scoring without it,
    also when a query's rows are split across the file (the regrouping path)."""
    import numpy as np

    from wit_retrieval.metrics import evaluate_queries, parse_measures
    from wit_retrieval.ranking import IMAGE_FINGERPRINT, fingerprint, to_numpy

    rng = np.random.default_rng(5)
    lines = [f"q{q} Q0 img{int(d)} {r + 1} {10 - r * 0.5} t" for q in range(40)
             for r, d in enumerate(rng.choice(60, 12, replace=False))]
    lines = lines[:200] + lines[300:] + lines[200:300]  # some queries' rows split across the file
    run_path = tmp_path / "run.trec"
    run_path.write_text("\n".join(lines) + "\n")
    qrels = pa.table({"query_id": [f"q{q}" for q in range(40)], "image_id": [f"img{q}" for q in range(40)],
                      "relevance": [1] * 40})
    report, parsed = validate_run(run_path, SplitTruth(pa.array([f"q{q}" for q in range(40)])))
    assert report.ok and IMAGE_FINGERPRINT in parsed.table.column_names
    assert np.array_equal(to_numpy(parsed.table[IMAGE_FINGERPRINT]), fingerprint(parsed.table["image_id"]))
    measures = parse_measures(["R@5", "MRR@10", "nDCG@10"])
    with_fp = evaluate_queries(parsed.table, qrels, measures)
    without = evaluate_queries(parsed.table.drop_columns([IMAGE_FINGERPRINT]), qrels, measures)
    assert with_fp.values.keys() == without.values.keys()
    for name in with_fp.values:
        assert np.array_equal(with_fp.values[name], without.values[name]), name
    assert max(v.max() for v in without.values.values()) > 0  # some query found its image


def test_fixed_depth_duplicates_survive_a_half_fingerprint_collision():
    """The row-wise sort keys on one 32-bit half of the fingerprints: rows whose halves collide are
    checked on whole codes and strings, and real repeats (in chunks of other widths) are all found."""
    import numpy as np

    from wit_retrieval.fingerprint import fingerprint
    from wit_retrieval.problems import ValidationReport
    from wit_retrieval.submission import _check_duplicates, _Groups

    queries, depth = 300, 20
    ids = [f"img{q}-{j}" for q in range(queries) for j in range(depth)]
    ids[5 * depth + 7], ids[9 * depth + 19] = ids[5 * depth + 3], ids[9 * depth]
    image_ids = pa.chunked_array([pa.array(ids[:1000]), pa.array(ids[1000:])])
    query_ids = pa.chunked_array([pa.array([f"q{q}" for q in range(queries) for _ in range(depth)])])
    doc = fingerprint(image_ids)
    halves = doc.view(np.uint32)
    halves[80] = halves[82]  # rows 40 and 41 (query 2) now share the half the sort keys on, not the other
    report = ValidationReport("run")
    groups = _Groups(np.arange(queries) * depth, np.full(queries, depth), np.arange(queries))
    _check_duplicates(groups, doc, False, np.arange(1, queries * depth + 1), query_ids, image_ids, report)
    assert [(k["kind"], k["count"], k["first_lines"]) for k in report.by_kind()] == \
        [("duplicate_image", 2, [108, 200])]
