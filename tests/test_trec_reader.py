"""The columnar TREC reader: the fast path and the line parser agree on every tricky file;
validation reports each kind with its count and first lines; --problems writes them all."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from wit_retrieval.cli import app
from wit_retrieval.errors import InputError
from wit_retrieval.io import trec
from wit_retrieval.io.runs import read_qrels_file, read_run_table
from wit_retrieval.problems import EXAMPLES
from wit_retrieval.ranking import from_numpy, to_numpy
from wit_retrieval.submission import SplitTruth, ValidationConfig, fingerprint, validate_run

ROWS = [("q1", "d1", 1, 0.9), ("q1", "d2", 2, 0.5), ("q1", "d3", 3, 0.5), ("q2", "dé", 1, -1.5e-3), ("q2", "d1", 2, -2.0)]


def text(sep=" ", end="\n", rows=ROWS) -> str:
    return "".join(sep.join([q, "Q0", d, str(r), repr(s), "run"]) + end for q, d, r, s in rows)


def columns(table: pa.Table) -> dict:
    return {c: table[c].to_pylist() for c in ("query_id", "image_id", "rank", "score", "line")}


def lines_parser(path) -> pa.Table:
    return trec._read_trec_lines(path, lambda *a: pytest.fail(f"unexpected problem {a}"))


EXPECTED = {"query_id": [r[0] for r in ROWS], "image_id": [r[1] for r in ROWS], "rank": [r[2] for r in ROWS],
            "score": [r[3] for r in ROWS], "line": [1, 2, 3, 4, 5]}


@pytest.mark.parametrize(("name", "content", "fast"), [
    ("spaces", text(), True),
    ("tabs", text(sep="\t"), True),
    ("crlf", text(end="\r\n"), True),
    ("no final newline", text().rstrip("\n"), True),
    ("double spaces", text(sep="  "), False),
    ("leading and trailing blanks", "".join(" " + line + " \t\n" for line in text().splitlines()), False),
    ("mixed tabs and spaces", text().replace(" Q0 ", "\tQ0 "), False),
])
def test_fast_path_and_line_parser_read_the_same_rows(tmp_path, name, content, fast):
    path = tmp_path / "run.trec"
    path.write_bytes(content.encode("utf-8"))
    regular = trec.read_regular(path, trec.RUN_COLUMNS, {"query_id": pa.string(), "q0": pa.binary(),
                                                         "image_id": pa.string(), "rank": pa.int64(),
                                                         "score": pa.float64(), "tag": pa.binary()})
    assert (regular is not None) == fast, name
    assert columns(read_run_table(path).table) == EXPECTED
    assert columns(lines_parser(path)) == EXPECTED


def test_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "run.trec"
    lines = text().splitlines()
    path.write_text("\n".join(lines[:2] + ["", "   "] + lines[2:]) + "\n")
    assert read_run_table(path).table["line"].to_pylist() == [1, 2, 5, 6, 7]


def test_bad_lines_are_named_and_skipped(tmp_path):
    path = tmp_path / "run.trec"
    lines = text().splitlines()
    lines[1] = "q1 Q0 d2 2.0 0.5 run"  # rank not an integer
    lines[2] = "q1 Q0 d3 3 high run"  # score not a number
    lines[3] = "q2 Q0 d9 1 0.1"  # five fields
    body = ("\n".join(lines) + "\n").encode() + b"q2 Q0 d8 9 0.1 r\xff\n"  # bad UTF-8 in the tag only
    path.write_bytes(body.replace(b"q1 Q0 d1", b"q1 Q0\td1", 0))
    found = []
    table = trec.read_trec_run(path, lambda kind, line, message: found.append((kind, line)))
    assert found == [("rank", 2), ("score", 3), ("format", 4), ("encoding", 6)]
    assert table["line"].to_pylist() == [1, 5]


def test_space_inside_a_tab_separated_field_is_a_field_boundary(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text(text(sep="\t").replace("\trun\n", "\tmy run\n", 1))
    found = []
    trec.read_trec_run(path, lambda kind, line, message: found.append((kind, line, message)))
    assert found == [("format", 1, "expected 6 fields `qid Q0 docid rank score tag`, got 7")]


def test_qrels_columnar_and_messy_read_the_same(tmp_path):
    clean, messy = tmp_path / "clean.txt", tmp_path / "messy.txt"
    clean.write_text("q1 0 d1 1\nq1 0 d2 2\nq2 0 d3 0\n")
    messy.write_text("q1\t0  d1 1\n\n q1 0 d2\t2 \nq2 0 d3 0")
    assert read_qrels_file(clean).to_pydict() == read_qrels_file(messy).to_pydict() == {
        "query_id": ["q1", "q1", "q2"], "image_id": ["d1", "d2", "d3"], "relevance": [1, 2, 0]}
    (tmp_path / "bad.txt").write_text("q1 0 d1 1\nq1 0 d2 yes\n")
    with pytest.raises(InputError) as info:
        read_qrels_file(tmp_path / "bad.txt")
    assert info.value.line == 2


def test_fingerprints_equal_exactly_for_equal_strings():
    words = ["", "a", "abcdefgh", "abcdefghi", "é" * 9, "x" * 40, "x" * 41, "abcdefgh" * 3]
    rng = np.random.default_rng(0)
    values = pa.array([words[i] for i in rng.integers(0, len(words), 500)]).slice(7)  # a sliced array
    fp = fingerprint(pa.chunked_array([values.slice(0, 100), values.slice(100)]))
    strings = values.to_pylist()
    for i in range(0, len(strings), 7):
        same = [j for j in range(len(strings)) if strings[j] == strings[i]]
        assert set(np.flatnonzero(fp == fp[i])) == set(same)
    distinct = pa.array([f"{i:016x}" for i in range(20000)] + [f"https://x.org/{i}.jpg" for i in range(20000)])
    assert len(np.unique(fingerprint(distinct))) == 40000


def test_arrow_numpy_bridge_keeps_values_nulls_and_offsets():
    ints = pa.array([5, None, 7, 8, None, 10], pa.int64()).slice(1)
    assert to_numpy(ints, null=-1).tolist() == [-1, 7, 8, -1, 10]
    with pytest.raises(ValueError):
        to_numpy(ints)
    bools = pa.chunked_array([pa.array([True, False, True] * 5).slice(2), pa.array([False])])
    assert to_numpy(bools).tolist() == bools.to_pylist()
    assert to_numpy(pa.chunked_array([], pa.float64())).dtype == np.float64
    back = from_numpy(np.array([3, 4, 5]), mask=np.array([False, True, False]))
    assert back.to_pylist() == [3, None, 5]
    assert from_numpy(np.array([True, False, True])).to_pylist() == [True, False, True]


def test_validation_of_duplicates_ties_unknown_queries(tmp_path):
    rows = [(f"q{q}", f"img{(q * 7 + j) % 13:03d}", j + 1, 1.0 - (j // 2) / 10) for q in range(4) for j in range(6)]
    rows[9] = ("q1", rows[7][1], 4, rows[9][3])  # q1 repeats its 2nd image (line 8) at line 10
    rows[20] = ("q3", rows[19][1], 3, rows[20][3])  # q3 repeats line 20 at line 21
    path = tmp_path / "run.trec"
    path.write_text(text(rows=rows + [("q9", "img000", 1, 1.0)]))
    truth = SplitTruth(pa.array([f"q{q}" for q in range(4)]))
    report, run = validate_run(path, truth)
    counts = report.counts
    assert counts == {"duplicate_image": 2, "unknown_query": 1}  # ties (equal scores) are no rank_order
    assert [p.line for p in report.first("duplicate_image")] == [10, 21]
    assert "first at line 8" in report.first("duplicate_image")[0].message
    assert report.first("unknown_query")[0].line == 25
    ragged = rows[:9] + rows[10:] + [rows[0]]  # uneven depths (q1's repeat dropped), q0 comes back at the end
    path.write_text(text(rows=ragged))
    report, _ = validate_run(path, truth)
    assert [p.line for p in report.first("duplicate_image")] == [20, 24]


def shuffled_run(path, queries=30, depth=10):
    """Every second row scores above the row before it: depth/2 rank_order warnings per query."""
    rows = [(f"q{q}", f"d{j}", j + 1, float(-j + (5 if j % 2 else 0))) for q in range(queries) for j in range(depth)]
    path.write_text(text(rows=rows))
    return rows


def test_report_counts_all_and_shows_the_first_five(tmp_path):
    shuffled_run(tmp_path / "run.trec")
    report, _ = validate_run(tmp_path / "run.trec", None, ValidationConfig())
    assert report.counts == {"rank_order": 150}
    assert [p.line for p in report.problems] == [2, 4, 6, 8, 10][:EXAMPLES]
    kinds = report.to_dict()["kinds"]
    assert kinds == [{"kind": "rank_order", "severity": "warning", "count": 150, "first_lines": [2, 4, 6, 8, 10],
                      "example": report.problems[0].message}]
    assert report.ok and report.num_warnings == 150


def test_validate_problems_jsonl_and_console_summary(tmp_path):
    shuffled_run(tmp_path / "run.trec")
    with open(tmp_path / "run.trec", "a") as f:
        f.write("q1 Q0 d0 11 -50 run\nbroken line\n")
    out = CliRunner().invoke(app, ["validate", str(tmp_path / "run.trec"), "--problems", str(tmp_path / "p.jsonl")],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 1, out.output
    problems = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    by_kind = {}
    for p in problems:
        by_kind.setdefault(p["kind"], []).append(p["line"])
    assert by_kind["format"] == [302] and by_kind["duplicate_image"] == [301]
    assert by_kind["rank_order"] == list(range(2, 301, 2))  # every one, in line order
    assert "152 problems: " in out.output.replace(",", "")
    assert "rank_order" in out.output and "150" in out.output and "2, 4, 6, 8, 10" in out.output
    # the console wraps at its width, which the temporary path's length shifts: compare words
    assert "duplicate_image: 1, format: 1, rank_order: 150" in " ".join(out.output.split())


def test_score_imports_no_pandas(tmp_path):
    shuffled_run(tmp_path / "run.trec")
    (tmp_path / "qrels.txt").write_text("".join(f"q{q} 0 d{q % 10} 1\n" for q in range(30)))
    code = ("import sys; from wit_retrieval.cli import app\n"
            f"try:\n    app(['score', {str(tmp_path / 'run.trec')!r}, '--qrels', {str(tmp_path / 'qrels.txt')!r}])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('PANDAS' if 'pandas' in sys.modules else 'NO PANDAS')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO PANDAS"
