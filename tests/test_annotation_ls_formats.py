"""Label Studio without the server: image addresses, CORS on the app's image routes, rater identity,
renamed choices tags and gold items (the real server's round trip is in test_annotation_labelstudio.py)."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request

import pytest

from wit_retrieval.annotation.export import label_studio_tasks, write_export
from wit_retrieval.annotation.importers import import_ratings
from wit_retrieval.annotation.tasks import Item, write_items
from wit_retrieval.errors import ConfigError, InputError

from .test_annotation_app import RunningApp, make_items, write_store

LS = "http://127.0.0.1:8080"


def _get(url: str, origin: str | None = None, method: str = "GET") -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, headers={"Origin": origin} if origin else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_cors_only_on_image_routes_and_only_for_the_configured_origin(tmp_path):
    write_store(tmp_path / "images", ["aaaa000000000001"])
    app = RunningApp(tmp_path, make_items(count=2), images=tmp_path / "images")
    app.server.app.cors_origins = frozenset({LS})
    try:
        status, headers = _get(app.url + "/image/aaaa000000000001", LS)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == LS and "Origin" in headers["Vary"]
        status, headers = _get(app.url + "/image/aaaa000000000001", "http://evil.example")
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
        for path in ("/", "/healthz", "/static/app.css"):
            assert "Access-Control-Allow-Origin" not in _get(app.url + path, LS)[1]
        status, headers = _get(app.url + "/image/aaaa000000000001", LS, method="OPTIONS")
        assert status == 204 and headers["Access-Control-Allow-Origin"] == LS
        assert _get(app.url + "/rate", LS, method="OPTIONS")[0] == 403
    finally:
        app.close()
    from wit_retrieval.annotation.app import check_origin

    for bad in ("*", "127.0.0.1:8080", "http://127.0.0.1:8080/projects"):
        with pytest.raises(ConfigError, match="origin"):
            check_origin(bad)


def test_image_base_url_points_every_image_at_our_server(tmp_path):
    items = make_items(count=3)
    tasks = label_studio_tasks(items, "http://127.0.0.1:8765/image/")
    html = " ".join(t["data"]["images_html"] for t in tasks)
    assert "upload.wikimedia.org" not in json.dumps(tasks) and "http://127.0.0.1:8765/image/" in html
    written = write_export(items, {}, tmp_path / "out", image_base_url="http://127.0.0.1:8765/image/")
    assert "upload.wikimedia.org" not in written["csv"].read_text()
    with pytest.raises(ConfigError, match="image-base-url"):
        write_export(items, {}, tmp_path / "bad", image_base_url="ftp://x/")


def _item(n: int, gold: bool = False) -> Item:
    return Item(item_id=f"ei-correct-{n}", task_kind="ei-correct", language="en", query_type=None,
                source_id=f"Q{n}", is_gold=gold, gold_label="no" if gold else None)


def _ls_csv(rows: list[tuple[int, str, str]], tag: str = "label") -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["annotation_id", "annotator", "created_at", "id", "item_id", tag, "lead_time", "task_kind"])
    for n, (annotator, item_id, label) in enumerate(rows):
        writer.writerow([n, annotator, "2026-01-01T00:00:00Z", n, item_id, label, "", "ei-correct"])
    return out.getvalue()


def test_json_with_emails_and_csv_with_ids_are_one_rater_each_counted_once(tmp_path):
    items = tmp_path / "items.jsonl"
    write_items([_item(0), _item(1, gold=True)], items)
    full = [{"id": 1, "data": {"item_id": f"ei-correct-{n}", "task_kind": "ei-correct"}, "annotations": [
        {"completed_by": {"id": who, "email": f"r{who}@example.org"}, "result": [
            {"from_name": "label", "to_name": "images", "type": "choices", "value": {"choices": ["yes"]}}]}
        for who in (1, 2)]} for n in (0, 1)]
    (tmp_path / "a.json").write_text(json.dumps(full))
    (tmp_path / "b.csv").write_text(_ls_csv([(w, f"ei-correct-{n}", "yes") for n in (0, 1) for w in (1, 2)]))
    (tmp_path / "c.json").write_text(json.dumps([{"item_id": "ei-correct-0", "annotator": 1, "label": "yes"}]))
    table = import_ratings([tmp_path / "a.json", tmp_path / "b.csv", tmp_path / "c.json"], items)
    assert sorted((r["item_id"], r["rater"]) for r in table.to_pylist()) == [
        ("ei-correct-0", "r1@example.org"), ("ei-correct-0", "r2@example.org"),
        ("ei-correct-1", "r1@example.org"), ("ei-correct-1", "r2@example.org")]
    assert set(table.column("source").to_pylist()) == {"label-studio"}
    alone = import_ratings([tmp_path / "b.csv"], items)  # ids only: one stable name per id
    assert sorted(set(alone.column("rater").to_pylist())) == ["label-studio:1", "label-studio:2"]
    with pytest.raises(InputError, match="--items"):  # gold items would silently count as data
        import_ratings([tmp_path / "b.csv"])


def test_a_renamed_choices_tag_is_named_in_the_error(tmp_path):
    items = tmp_path / "items.jsonl"
    write_items([_item(0)], items)
    (tmp_path / "a.csv").write_text(_ls_csv([(1, "ei-correct-0", "yes")], tag="verdict"))
    (tmp_path / "b.json").write_text(json.dumps([{"item_id": "ei-correct-0", "annotator": 1, "verdict": "yes"}]))
    (tmp_path / "c.json").write_text(json.dumps([{"data": {"item_id": "ei-correct-0"}, "annotations": [
        {"completed_by": 1, "result": [{"from_name": "verdict", "type": "choices", "value": {"choices": ["yes"]}}]}]}]))
    for name in ("a.csv", "b.json", "c.json"):
        with pytest.raises(InputError, match="verdict"):
            import_ratings([tmp_path / name], items)


def test_label_studio_command_needs_a_token_and_a_reachable_server(tmp_path):
    from typer.testing import CliRunner

    from wit_retrieval.cli import app

    items = make_items(count=2)
    write_export(items, {}, tmp_path / "audit")
    args = ["annotate", "label-studio", str(tmp_path / "audit"), "--url", "http://127.0.0.1:9", "--task", "ei-correct"]
    no_token = CliRunner().invoke(app, args, env={"LABEL_STUDIO_API_KEY": ""})
    assert no_token.exit_code != 0 and "LABEL_STUDIO_API_KEY" in no_token.output
    unreachable = CliRunner().invoke(app, args, env={"LABEL_STUDIO_API_KEY": "x" * 40})
    assert unreachable.exit_code != 0 and "cannot reach Label Studio" in unreachable.output
    missing = CliRunner().invoke(app, [*args[:-1], "relevance"], env={"LABEL_STUDIO_API_KEY": "x" * 40})
    assert missing.exit_code != 0 and "annotate export --task relevance" in missing.output
