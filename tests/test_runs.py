"""Run and qrels files: TREC / JSON / parquet round trips, URL mapping, clean errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_retrieval.errors import InputError
from wit_retrieval.ids import image_id
from wit_retrieval.io.runs import (
    detect_format,
    read_qrels_file,
    read_run,
    read_run_table,
    write_json_run,
    write_parquet_run,
    write_qrels_trec,
    write_trec,
)

RUN = {"q1": [("b", 3.0), ("a", 2.5), ("c", 2.5)], "q2": [("d", 1.0)]}


def test_trec_round_trip_orders_like_trec_eval(tmp_path):
    write_trec(RUN, tmp_path / "run.trec", tag="mine")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 3 mine" and lines[2] == "q1 Q0 c 3 2.5 mine"
    # Ties: image id descending, whatever the file's order.
    assert read_run(tmp_path / "run.trec") == {"q1": [("b", 3.0), ("c", 2.5), ("a", 2.5)], "q2": [("d", 1.0)]}
    with pytest.raises(InputError, match="one word"):
        write_trec(RUN, tmp_path / "x.trec", tag="two words")


def test_json_and_parquet_round_trips(tmp_path):
    write_json_run(RUN, tmp_path / "run.json", split="test", metric="recall", version="2")
    run = read_run_table(tmp_path / "run.json")
    assert run.fmt == "json" and run.meta == {"version": "2", "split": "test", "metric": "recall"}
    assert [d for d, _ in read_run(tmp_path / "run.json")["q1"]] == ["b", "a", "c"]  # list order kept
    write_parquet_run(RUN, tmp_path / "run.parquet")
    assert read_run(tmp_path / "run.parquet")["q1"][0] == ("b", 3.0)
    assert detect_format(tmp_path / "run.parquet") == "parquet"


def test_tab_separated_trec_and_urls_are_mapped(tmp_path):
    url = "https://upload.wikimedia.org/wikipedia/commons/a/ab/Caf%C3%A9.jpg"
    (tmp_path / "run.txt").write_text(f"q1\tQ0\t{url}\t1\t0.5\trun\nq1\tQ0\tplain\t2\t0.25\trun\n")
    assert detect_format(tmp_path / "run.txt") == "trec"
    table = read_run_table(tmp_path / "run.txt").table
    assert table["image_id"].to_pylist() == [image_id(url), "plain"]
    assert table["rank"].to_pylist() == [1, 2] and table["line"].to_pylist() == [1, 2]


def test_bad_lines_raise_with_path_and_line(tmp_path):
    (tmp_path / "run.trec").write_text("q1 Q0 a 1 0.5 run\nq1 Q0 b 2 zero run\n")
    with pytest.raises(InputError, match=r"run\.trec:2: .*not a number"):
        read_run(tmp_path / "run.trec")
    with pytest.raises(InputError, match="not found"):
        read_run(tmp_path / "missing.trec")


def test_qrels_files(tmp_path):
    write_qrels_trec({"q1": {"a": 1, "b": 0}, "q2": {"c": 2}}, tmp_path / "qrels.txt")
    table = read_qrels_file(tmp_path / "qrels.txt")
    assert table.to_pylist()[2] == {"query_id": "q2", "image_id": "c", "relevance": 2}
    pq.write_table(table, tmp_path / "qrels.parquet")
    assert read_qrels_file(tmp_path / "qrels.parquet").equals(table)
    (tmp_path / "bad.txt").write_text("q1 0 a 1\nq1 0 b yes\n")
    with pytest.raises(InputError, match=r"bad\.txt:2"):
        read_qrels_file(tmp_path / "bad.txt")
    pq.write_table(pa.table({"q": ["x"]}), tmp_path / "wrong.parquet")
    with pytest.raises(InputError, match="missing column"):
        read_qrels_file(tmp_path / "wrong.parquet")
