"""The C reader of strict TREC runs (io/_fasttrec.c through io/trec_split.py): the same rows, ranks
and exactly the same float scores as the line parser, on any cut into pieces; anything outside the
strict form is left to the careful readers (None), never read differently."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wit_retrieval.io import trec, trec_split
from wit_retrieval.io.runs import read_run_table

# where a C compiler is there the extension must be built (pip install compiles it): a missing one fails
pytestmark = pytest.mark.skipif(trec_split._fasttrec is None and shutil.which("cc") is None,
                                reason="no C compiler: io/_fasttrec.c could not be built")


def columns(table: pa.Table) -> dict:
    return {c: table[c].to_pylist() for c in ("query_id", "image_id", "rank", "score", "line")}


def line_parser(path) -> pa.Table:
    return trec._read_trec_lines(path, lambda *a: pytest.fail(f"unexpected problem {a}"))


ids = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)
scores = st.floats(allow_nan=False, allow_infinity=False, width=64)
formats = st.sampled_from([repr, lambda v: f"{v:.6f}", lambda v: f"{v:g}", lambda v: f"{v:.17g}", lambda v: f"{v:e}",
                           lambda v: f"{v:.3E}"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(ids, ids, st.integers(-10**17, 10**17), scores, formats), min_size=1, max_size=60),
       sep=st.sampled_from([" ", "\t"]), end=st.sampled_from(["\n", "\r\n"]), piece=st.integers(1, 400),
       final_newline=st.booleans())
def test_strict_reader_equals_the_line_parser(tmp_path, monkeypatch, rows, sep, end, piece, final_newline):
    body = end.join(sep.join([q, "Q0", d, str(r), fmt(s), "tag"]) for q, d, r, s, fmt in rows)
    path = tmp_path / "run.trec"
    path.write_bytes((body + (end if final_newline else "")).encode("utf-8"))
    monkeypatch.setattr(trec_split, "PIECE", piece)  # many pieces: chunk and line-number seams
    table = trec_split.read_strict_run(path)
    assert table is not None
    assert columns(table) == columns(line_parser(path))
    # the scores are the exact doubles float() gives, not merely close
    assert table["score"].to_pylist() == [float(fmt(s)) for _, _, _, s, fmt in rows]


@pytest.mark.parametrize(("name", "content"), [
    ("an empty line", "q1 Q0 d1 1 0.5 r\n\nq1 Q0 d2 2 0.4 r\n"),
    ("two spaces", "q1 Q0  d1 1 0.5 r\n"),
    ("a leading separator", " q1 Q0 d1 1 0.5 r\n"),
    ("a trailing separator", "q1 Q0 d1 1 0.5 r \n"),
    ("a tab in a space-separated file", "q1 Q0 d1 1 0.5 r\nq1\tQ0 d2 2 0.4 r\n"),
    ("a space in a tab-separated file", "q1\tQ0\td1\t1\t0.5\tmy run\n"),
    ("five fields", "q1 Q0 d1 1 0.5\n"),
    ("seven fields", "q1 Q0 d1 1 0.5 r x\n"),
    ("a rank with a plus sign", "q1 Q0 d1 +1 0.5 r\n"),
    ("a rank of 19 digits", "q1 Q0 d1 1000000000000000000 0.5 r\n"),
    ("a fractional rank", "q1 Q0 d1 1.0 0.5 r\n"),
    ("a score that is not a number", "q1 Q0 d1 1 high r\n"),
    ("a carriage return inside a line", "q1 Q0 d1\r 1 0.5 r\n"),
])
def test_anything_outside_the_strict_form_is_left_to_the_careful_readers(tmp_path, name, content):
    path = tmp_path / "run.trec"
    path.write_text(content, newline="")
    assert trec_split.read_strict_run(path) is None, name


def test_bad_utf8_is_left_to_the_line_parser_which_names_the_line(tmp_path):
    path = tmp_path / "run.trec"
    path.write_bytes(b"q1 Q0 d1 1 0.5 r\nq1 Q0 d\xff 2 0.4 r\n")
    assert trec_split.read_strict_run(path) is None
    found = []
    table = trec.read_trec_run(path, lambda kind, line, message: found.append((kind, line)))
    assert found == [("encoding", 2)] and table["line"].to_pylist() == [1]


def test_non_ascii_ids_are_validated_and_kept(tmp_path, monkeypatch):
    path = tmp_path / "run.trec"
    path.write_text("q\u00e9 Q0 \u65e5\u672c 1 0.5 r\nq2 Q0 d2 1 -1e-3 r\n", encoding="utf-8")
    monkeypatch.setattr(trec_split, "PIECE", 8)
    table = trec_split.read_strict_run(path)
    assert table["query_id"].type == pa.string() and table["query_id"].to_pylist() == ["q\u00e9", "q2"]
    assert table["image_id"].to_pylist() == ["\u65e5\u672c", "d2"] and table["score"].to_pylist() == [0.5, -0.001]


def test_runs_read_through_the_strict_reader_by_default(tmp_path, monkeypatch):
    path = tmp_path / "run.trec"
    path.write_text("".join(f"q{i // 10} Q0 d{i} {i % 10 + 1} {1 - i / 7!r} run\n" for i in range(500)))
    monkeypatch.setattr(trec_split, "PIECE", 1000)
    table = read_run_table(path).table
    assert table["query_id"].num_chunks > 5  # it came from the pieces
    assert columns(table) == columns(line_parser(path))
    assert trec_split.read_strict_run(tmp_path / "run.trec") is not None


def test_an_empty_file_is_left_to_the_careful_readers(tmp_path):
    (tmp_path / "empty.trec").write_bytes(b"")
    assert trec_split.read_strict_run(tmp_path / "empty.trec") is None


def test_pure_python_switch_leaves_runs_to_pyarrow(tmp_path, monkeypatch):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 0.5 r\nq1 Q0 d2 2 0.25 r\n")
    assert trec_split.read_strict_run(path) is not None
    monkeypatch.setenv("WIT_RETRIEVAL_PURE_PYTHON", "1")
    assert trec_split.read_strict_run(path) is None
    assert read_run_table(path).table["score"].to_pylist() == [0.5, 0.25]
