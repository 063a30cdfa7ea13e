"""Importing ratings from the app's SQLite, Label Studio exports, crowd CSV and parquet; bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wit_retrieval.annotation.importers import import_ratings, load_ratings
from wit_retrieval.annotation.ratings import RATINGS, write_ratings
from wit_retrieval.annotation.store import AnnotationStore
from wit_retrieval.annotation.tasks import Item, write_items
from wit_retrieval.cli import app
from wit_retrieval.errors import InputError


def _items() -> list[Item]:
    items = [Item(item_id=f"ei-correct-{n}", task_kind="ei-correct", language="en" if n % 2 else "de",
                  query_type=None, source_id=f"Q{n}", title=f"Entity {n}") for n in range(4)]
    items.append(Item(item_id="ei-correct-gold", task_kind="ei-correct", language="en", query_type=None,
                      source_id="Q9", is_gold=True, gold_label="no"))
    items.append(Item(item_id="mmir-answerable-0", task_kind="mmir-answerable", language="en",
                      query_type="multi", source_id="test-0"))
    return items


@pytest.fixture
def items_file(tmp_path) -> Path:
    path = tmp_path / "items.jsonl"
    write_items(_items(), path)
    return path


def _ls_export(path: Path) -> Path:
    tasks = [
        {"id": 1, "data": {"item_id": "ei-correct-0", "task_kind": "ei-correct", "language": "de"},
         "annotations": [
             {"id": 10, "completed_by": 3, "was_cancelled": False, "created_at": "2026-01-01T00:00:00Z",
              "result": [{"from_name": "label", "to_name": "candidate", "type": "choices",
                          "value": {"choices": ["yes"]}}]},
             {"id": 11, "completed_by": {"id": 4, "email": "ann@example.org"}, "was_cancelled": False,
              "result": [{"from_name": "label", "to_name": "candidate", "type": "choices",
                          "value": {"choices": ["no"]}}]},
             {"id": 12, "completed_by": 5, "was_cancelled": True, "result": []},
         ]},
        {"id": 2, "data": {"item_id": "ei-correct-gold", "task_kind": "ei-correct"},
         "annotations": [{"id": 13, "completed_by": 3, "result": [
             {"from_name": "label", "to_name": "candidate", "type": "choices", "value": {"choices": ["no"]}}]}]},
    ]
    path.write_text(json.dumps(tasks, indent=2), encoding="utf-8")
    return path


def test_import_every_format_into_one_table(tmp_path, items_file):
    store = AnnotationStore(tmp_path / "app.sqlite")
    store.add_items(_items())
    store.record("ei-correct-1", "alice", "yes")
    store.record("ei-correct-gold", "alice", "yes")
    store.record("mmir-answerable-0", "alice", "partly")
    ls = _ls_export(tmp_path / "ls.json")
    crowd = tmp_path / "crowd.csv"
    crowd.write_text("item_id,rater,label\nei-correct-2,w1,no\nmmir-answerable-0,w1,yes\n", encoding="utf-8")
    minimal = tmp_path / "min.json"
    minimal.write_text(json.dumps([{"item_id": "ei-correct-3", "label": "unsure", "annotator": 7}]), encoding="utf-8")
    table = import_ratings([tmp_path / "app.sqlite", ls, crowd, minimal], items_file)
    assert table.schema == RATINGS
    rows = {(r["item_id"], r["rater"]): r for r in table.to_pylist()}
    assert len(rows) == 9
    assert rows[("ei-correct-gold", "alice")]["is_gold"] and rows[("ei-correct-gold", "alice")]["gold_label"] == "no"
    assert rows[("mmir-answerable-0", "alice")]["query_type"] == "multi"
    assert rows[("ei-correct-0", "label-studio:3")]["label"] == "yes"
    assert rows[("ei-correct-0", "ann@example.org")]["label"] == "no"  # the e-mail, not the id
    assert ("ei-correct-0", "label-studio:5") not in rows  # cancelled annotation
    assert rows[("ei-correct-gold", "label-studio:3")]["is_gold"]
    assert rows[("ei-correct-3", "label-studio:7")]["label"] == "unsure"
    assert {r["source"] for r in rows.values()} == {"app", "label-studio", "csv"}
    assert rows[("ei-correct-0", "label-studio:3")]["language"] == "de"  # from the items file
    out = tmp_path / "ratings.parquet"
    write_ratings(table, out)
    assert load_ratings(out).equals(table)


def test_mturk_batch_results_are_read_through_column_aliases(tmp_path, items_file):
    path = tmp_path / "Batch_123_batch_results.csv"
    path.write_text("\ufeffHITId,WorkerId,Input.item_id,Input.text,Answer.label,SubmitTime\n"
                    'H1,A1B2,ei-correct-0,"a, text",yes,Mon Jan 05 10:00:00 PST 2026\n'
                    "H2,A1B2,ei-correct-gold,x,no,Mon Jan 05 10:01:00 PST 2026\n", encoding="utf-8")
    rows = import_ratings([path], items_file).to_pylist()
    assert [(r["item_id"], r["rater"], r["label"], r["is_gold"]) for r in rows] == [
        ("ei-correct-0", "A1B2", "yes", False), ("ei-correct-gold", "A1B2", "no", True)]
    assert rows[0]["source"] == "csv" and rows[0]["rated_at"].startswith("Mon Jan 05")


def test_app_ratings_import_without_items_file(tmp_path):
    store = AnnotationStore(tmp_path / "app.sqlite")
    store.add_items(_items())
    store.record("ei-correct-gold", "bob", "no")
    before = (tmp_path / "app.sqlite").read_bytes()
    row = load_ratings(tmp_path / "app.sqlite").to_pylist()[0]
    assert (tmp_path / "app.sqlite").read_bytes() == before  # read-only
    assert row["is_gold"] and row["gold_label"] == "no" and row["source"] == "app"


@pytest.mark.parametrize(("name", "content", "message", "line"), [
    ("a.csv", "item_id,rater\nei-correct-0,w1\n", "missing column", 1),
    ("b.csv", "item_id,rater,label\nei-correct-0,w1,yes\nei-correct-1,w2,maybe\n", "label 'maybe'", 3),
    ("c.csv", "item_id,rater,label\nei-correct-0,w1,yes\nnot-an-item,w2,yes\n", "not in the items file", 3),
    ("d.csv", "item_id,rater,label\nei-correct-0,,yes\n", "needs item_id, rater and label", 2),
    ("e.csv", "item_id,rater,label\nei-correct-0,w1,yes,extra\n", "no extra fields", 2),
    ("f.json", '[\n  {"data": {"item_id": "ei-correct-0"}, "annotations": []},\n  {"data": {"item_id": "x",}}\n]',
     "invalid JSON", 3),
    ("g.json", '[\n {"data": {"item_id": "ei-correct-0"}},\n {"data": {"no_id": 1}}\n]', "not a Label Studio task", 3),
    ("h.json", '{"tasks": []}', "JSON array", 1),
    ("i.json", '[\n {"data": {"item_id": "ei-correct-0"}, "annotations": [{"completed_by": 1, "result": '
     '[{"from_name": "label", "type": "choices", "value": {"choices": ["yes", "no"]}}]}]}\n]',
     "expected one choice", 2),
])
def test_malformed_files_name_file_and_line(tmp_path, items_file, name, content, message, line):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        import_ratings([path], items_file)
    assert info.value.path == str(path) and info.value.line == line
    assert f"{path}:{line}:" in str(info.value)


def test_unusable_whole_files(tmp_path, items_file):
    not_ours = tmp_path / "other.sqlite"
    import sqlite3

    with sqlite3.connect(not_ours) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(InputError, match="not a rater-app database"):
        import_ratings([not_ours])
    broken = tmp_path / "broken.parquet"
    write_ratings(RATINGS.empty_table(), broken)
    broken.write_bytes(broken.read_bytes()[:20])
    with pytest.raises(InputError, match="parquet"):
        import_ratings([broken])
    crowd = tmp_path / "nokind.csv"
    crowd.write_text("item_id,rater,label\nei-correct-0,w1,yes\n", encoding="utf-8")
    with pytest.raises(InputError, match="--items"):
        import_ratings([crowd])
    unknown = tmp_path / "ratings.txt"
    unknown.write_text("hello", encoding="utf-8")
    with pytest.raises(InputError, match="unknown ratings format"):
        import_ratings([unknown])


def test_cli_import_writes_nothing_when_one_file_is_bad(tmp_path, items_file):
    good = tmp_path / "good.csv"
    good.write_text("item_id,rater,label\nei-correct-0,w1,yes\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,rater,label\nei-correct-0,w2,yes\nei-correct-1,w2,perhaps\n", encoding="utf-8")
    out = tmp_path / "ratings.parquet"
    runner = CliRunner()
    result = runner.invoke(app, ["annotate", "import", str(good), "--items", str(items_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    before = out.read_bytes()
    result = runner.invoke(app, ["annotate", "import", str(bad), "--items", str(items_file), "--out", str(out),
                                 "--append"])
    assert result.exit_code == 1 and f"{bad}:3:" in result.output and "perhaps" in result.output
    assert out.read_bytes() == before and not list(tmp_path.glob(".tmp-*"))
    second = tmp_path / "second.csv"
    second.write_text("item_id,rater,label\nei-correct-1,w2,no\n", encoding="utf-8")
    result = runner.invoke(app, ["annotate", "import", str(second), "--items", str(items_file), "--out", str(out),
                                 "--append"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == 2
