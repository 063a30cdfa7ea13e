"""The images CLI: fetch, status, retry-failed, clean errors, and a SIGKILLed run that resumes exactly."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.test_images_support import AGENT, make_world
from wit_retrieval.cli import app
from wit_retrieval.images import open_store
from wit_retrieval.images.store import done_shards, shard_paths
from wit_retrieval.synth.faults import FaultPlan, FaultRule
from wit_retrieval.synth.server import serve_directory

CLI = [sys.executable, "-c", "from wit_retrieval.cli import main; main()"]


def _url_file(tmp_path, urls):
    path = tmp_path / "urls.tsv"
    path.write_text("image_url\n" + "\n".join(urls) + "\n", encoding="utf-8")
    return path


def _args(server, url_file, out, *extra):
    return ["images", "fetch", "--urls", str(url_file), "--out", str(out), "--user-agent", AGENT,
            "--allow-host", "127.0.0.1", "--host-alias", f"upload.wikimedia.org={server.url}",
            "--timeout", "2", "--no-progress", *extra]


def _snapshot(out):
    """Everything that must not depend on interruptions: rows without offsets, and stored bytes."""
    rows = sorted(({k: v for k, v in r.items() if k != "offset"}
                   for s in done_shards(out) for r in pq.read_table(shard_paths(out, s)[1]).to_pylist()),
                  key=lambda r: r["image_id"])
    store = open_store(out)
    return rows, {i: hashlib.sha256(store.get(i)).hexdigest() for i in store.ids()}


def test_fetch_status_and_errors(tmp_path):
    urls = make_world(tmp_path / "world", 12)
    gone = FaultRule("http_404", paths=(urlsplit(urls[0]).path,))
    runner = CliRunner()
    with serve_directory(tmp_path / "world", faults=FaultPlan(rules=(gone,))) as server:
        result = runner.invoke(app, _args(server, _url_file(tmp_path, urls), tmp_path / "out", "--shard-size", "5"))
        assert result.exit_code == 0, result.output
        assert "http_404" in result.output
    result = runner.invoke(app, ["images", "status", str(tmp_path / "out"), "--json"])
    status = json.loads(result.output)
    assert (status["ok"], status["failed"], status["shards_done"], status["errors"]) == (11, 1, 3, {"http_404": 1})
    result = runner.invoke(app, ["images", "fetch", "--urls", str(_url_file(tmp_path, urls)), "--out",
                                 str(tmp_path / "x"), "--user-agent", "bot/1.0", "--no-progress"])
    assert result.exit_code == 1 and "error:" in result.output and "contact" in result.output
    result = runner.invoke(app, ["images", "retry-failed", str(tmp_path / "out"), "--no-progress", "--rate", "5"])
    assert result.exit_code == 0, result.output  # nothing retryable: no request, same store
    assert json.loads((tmp_path / "out" / "_fetch.json").read_text())["http"]["rate"] == 10.0
    result = runner.invoke(app, ["images", "retry-failed", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "images fetch" in result.output


@pytest.mark.slow
def test_sigkilled_fetch_resumes_to_the_same_store(tmp_path):
    urls = make_world(tmp_path / "world", 300)
    gone = FaultRule("http_404", paths=tuple(urlsplit(u).path for u in urls[::25]))
    url_file = _url_file(tmp_path, urls)
    with serve_directory(tmp_path / "world", faults=FaultPlan(rules=(gone,))) as server:
        reference = tmp_path / "reference"  # uninterrupted, in this process
        result = CliRunner().invoke(app, _args(server, url_file, reference, "--shard-size", "20", "--rate", "0"))
        assert result.exit_code == 0, result.output

        out = tmp_path / "out"
        args = ["--shard-size", "20", "--rate", "200"]
        proc = subprocess.Popen(CLI + _args(server, url_file, out, *args, "--workers", "2"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.done"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes, mid-way
        proc.wait()
        killed_at = len(list(out.glob("*.done")))
        assert 0 < killed_at < 15
        resumed = subprocess.run(CLI + _args(server, url_file, out, *args), capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
    assert _snapshot(out) == _snapshot(reference)
    assert not list(out.glob(".tmp-*")) and len(done_shards(out)) == 15


def test_fetch_a_build_into_its_images_folder(tmp_path):
    import pyarrow as pa

    from wit_retrieval.io.shards import write_table_dir
    from wit_retrieval.layout import DataRoot
    from wit_retrieval.schema import ENTITIES, QUERIES

    urls = make_world(tmp_path / "world", 5)
    root = DataRoot(tmp_path / "build")
    query = {name: None for name in QUERIES.names}
    query.update(query_id="q", split="test", target_image_url=urls[0], entity_image_urls=urls[1:3])
    write_table_dir(root.table_split("queries", "test"), [pa.Table.from_pylist([query], schema=QUERIES)], QUERIES)
    entities = [{**{name: None for name in ENTITIES.names}, "entity_id": f"Q{i}", "image_url": u}
                for i, u in enumerate(urls[2:])]
    write_table_dir(root.table("entities"), [pa.Table.from_pylist(entities, schema=ENTITIES)], ENTITIES)
    with serve_directory(tmp_path / "world") as server:
        args = _args(server, "-", "-")[6:]  # everything after --urls FILE --out DIR
        result = CliRunner().invoke(app, ["images", "fetch", "--data", str(root.root), *args])
        assert result.exit_code == 0, result.output
    assert len(open_store(root.images)) == 5
