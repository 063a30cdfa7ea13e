"""`build mmir` and `images fetch` on a real 2-node Ray cluster (tests/ray_cluster.py): joined by
RAY_ADDRESS or --ray-address with token authentication, outputs equal the local engine's, a
killed worker or a lost node retried, the per-host rate global, an unreachable cluster one line."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.ray_cluster import HEAD_COMMAND, WORKER_COMMAND, cli, cli_background, free_port
from tests.test_build_inputs import wit_row, write_dumps, write_wit
from tests.test_images_support import AGENT, make_world
from wit_retrieval.build import EntitiesConfig, MmirConfig, build_entities, build_mmir
from wit_retrieval.build.mmir import read_split_table
from wit_retrieval.engine import EngineConfig, redact_address
from wit_retrieval.synth.server import serve_directory

REPO = Path(__file__).resolve().parents[1]
PAGES = ["Paris", "Berlin", "Angela_Merkel", "Eiffel_Tower", "Rome", "London"]
TEXTS = ["{a} and {b} in spring", "A street of {a}, near {b}", "{a} at night, seen from {b}"]


def _mmir_world(root: Path, files: int = 6, rows: int = 1500) -> tuple[Path, list[str]]:
    """Entities of PAGES and `files` WIT train files of `rows` rows each: shards that run long
    enough (seconds) for a worker to be killed in the middle of one."""
    write_dumps(root / "dumps", "en", [(i + 1, 0, t, False) for i, t in enumerate(PAGES)],
                [p for i, t in enumerate(PAGES) for p in ((i + 1, "page_image_free", f"{t}.jpg"),
                                                          (i + 1, "wikibase_item", f"Q{i + 1}"))])
    names = [p.replace("_", " ") for p in PAGES]
    paths = []
    for f in range(files):
        body = [wit_row("en", f"Page {f}", f"f{f}_{r}.jpg",
                        TEXTS[r % 3].format(a=names[r % 6], b=names[(r // 6) % 6]) + f" {r}")
                for r in range(rows)]
        paths.append(str(write_wit(root / "wit" / f"wit_v1.train.all-{f:05d}-of-{files:05d}.tsv.gz", body)))
    data = root / "data"
    build_entities(EntitiesConfig(out=str(data), wit=tuple(paths), dumps=str(root / "dumps")))
    return data, paths


def _tables(root: Path) -> dict:
    keys = {"queries": "query_id", "corpus": "image_id", "qrels": "query_id"}
    return {name: read_split_table(root, name).sort_by(key).to_pylist() for name, key in keys.items()}


def _copy_entities(src: Path, dst: Path) -> Path:
    import shutil

    for name in ("entities", "entity_names"):
        shutil.copytree(src / name, dst / name)
    return dst


def _kill_first(cluster, task: str, proc, timeout: float = 120) -> int:
    """Wait for a worker of the cluster to run `task`, SIGKILL it, return its pid."""
    import os
    import signal

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        pids = cluster.task_pids(task)
        if pids:
            time.sleep(0.3)  # in the middle of its shard, not at its first line
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"no worker ran {task} before the run ended: {proc.communicate()}")


@pytest.mark.slow
def test_build_mmir_joins_by_address_and_survives_a_killed_worker(ray_cluster, tmp_path):
    data, files = _mmir_world(tmp_path)
    local = _copy_entities(data, tmp_path / "local")
    build_mmir(MmirConfig(out=str(local), wit=tuple(files), engine=EngineConfig(workers=1), export=False))
    expected = _tables(local)
    assert len(expected["queries"]) > 1000

    # RAY_ADDRESS alone, as Ray documents it
    joined = _copy_entities(data, tmp_path / "env")
    done = cli(ray_cluster, "build", "mmir", "--wit", *files, "--out", str(joined), "--engine", "ray",
               "--no-export", RAY_ADDRESS=ray_cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _tables(joined) == expected
    config = (joined / "config" / "build_mmir.json")
    assert config.exists() and "auth" not in config.read_text()

    # --ray-address, and a worker SIGKILLed in the middle of a shard: Ray runs the shard again
    killed = _copy_entities(data, tmp_path / "killed")
    proc = cli_background(ray_cluster, "build", "mmir", "--wit", *files, "--out", str(killed), "--engine", "ray",
                          "--ray-address", ray_cluster.address, "--no-export")
    _kill_first(ray_cluster, "build_shard", proc)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert _tables(killed) == expected


def _fetch_args(server, urls_file: Path, out: Path, rate: float, *more: str) -> list[str]:
    return ["images", "fetch", "--urls", str(urls_file), "--out", str(out), "--user-agent", AGENT,
            "--rate", str(rate), "--timeout", "5", "--max-retries", "2", "--shard-size", "20", "--no-progress",
            "--allow-host", "127.0.0.1", "--host-alias", f"upload.wikimedia.org={server.url}", *more]


def _manifest(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    from wit_retrieval.images.store import done_shards, shard_paths

    rows = [r for s in done_shards(out) for r in pq.read_table(shard_paths(out, s)[1]).to_pylist()]
    return sorted(({k: v for k, v in r.items() if k not in ("offset", "fetched_at", "elapsed_ms")} for r in rows),
                  key=lambda r: r["image_id"])


@pytest.mark.slow
def test_images_fetch_rate_stays_global_and_a_killed_worker_is_retried(ray_cluster, tmp_path):
    urls = make_world(tmp_path / "world", 320)
    urls_file = tmp_path / "urls.tsv"
    urls_file.write_text("image_url\n" + "\n".join(urls) + "\n")
    rate = 40.0
    with serve_directory(tmp_path / "world", rate_limit=rate) as server:
        done = cli(ray_cluster, *_fetch_args(server, urls_file, tmp_path / "local", 0))
        assert done.returncode == 0, done.stderr[-3000:]
        server.reset_stats()
        # --workers 0 on Ray: one task per cluster CPU (8 here, more than this machine's), each rate / 8
        proc = cli_background(ray_cluster, *_fetch_args(server, urls_file, tmp_path / "ray", rate, "--engine", "ray",
                                                        "--workers", "0", "--ray-address", ray_cluster.address))
        _kill_first(ray_cluster, "fetch_shard", proc)
        out, err = proc.communicate(timeout=300)
        stats = server.stats()
    assert proc.returncode == 0, err[-3000:]
    assert stats["requests"] >= len(urls)
    assert stats["over_limit"] <= 0.01 * stats["requests"], stats
    assert _manifest(tmp_path / "ray") == _manifest(tmp_path / "local")
    assert len(_manifest(tmp_path / "ray")) == len(urls)


@pytest.mark.slow
def test_a_lost_node_is_retried_or_named_and_rerunning_resumes(ray_cluster, tmp_path):
    import os
    import signal

    urls = make_world(tmp_path / "world", 240)
    urls_file = tmp_path / "urls.tsv"
    urls_file.write_text("image_url\n" + "\n".join(urls) + "\n")
    with serve_directory(tmp_path / "world") as server:
        assert cli(ray_cluster, *_fetch_args(server, urls_file, tmp_path / "local", 0)).returncode == 0
        args = _fetch_args(server, urls_file, tmp_path / "ray", 30, "--engine", "ray", "--workers", "0")
        proc = cli_background(ray_cluster, *args, RAY_ADDRESS=ray_cluster.address)
        deadline = time.monotonic() + 120
        while not any(p in ray_cluster.task_pids("fetch_shard") for p in _children(ray_cluster.raylet_pids(1))):
            assert time.monotonic() < deadline and proc.poll() is None, "no task reached the second node"
            time.sleep(0.05)
        for pid in ray_cluster.raylet_pids(1):  # the second node's raylet: the node is lost
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
        if proc.returncode:  # failed: one line that says what to re-run; re-running resumes
            assert "run the same command again" in err and "Traceback" not in err, err[-3000:]
            again = cli(ray_cluster, *args, RAY_ADDRESS=ray_cluster.address)
            assert again.returncode == 0, again.stderr[-3000:]
    ray_cluster.start_worker()  # the next tests get their 2 nodes back
    assert _manifest(tmp_path / "ray") == _manifest(tmp_path / "local")


def _children(parents: list[int]) -> list[int]:
    from tests.ray_cluster import _parent, _processes

    return [pid for pid, _ in _processes() if _parent(pid) in parents]


@pytest.mark.slow
def test_an_unreachable_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray", reason="needs Ray: pip install 'wit-retrieval[ray]'")
    from tests.ray_cluster import RayCluster

    nowhere = RayCluster(tmp_path / "none")  # never started: its env has token auth on, like a user's
    nowhere.token_path.parent.mkdir()
    nowhere.token_path.write_text("0" * 64)
    urls_file = tmp_path / "urls.tsv"
    urls_file.write_text("image_url\nhttps://upload.wikimedia.org/wikipedia/commons/a/ab/X.png\n")
    secret = f"ray://admin:s3cret@127.0.0.1:{free_port()}"
    for address in (f"127.0.0.1:{free_port()}", secret):
        done = cli(nowhere, "images", "fetch", "--urls", str(urls_file), "--out", str(tmp_path / "out"),
                   "--user-agent", AGENT, "--engine", "ray", "--ray-address", address, "--no-progress", timeout=180)
        assert done.returncode == 1, done.stderr[-2000:]
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert redact_address(address) in lines[0] and "s3cret" not in done.stderr + done.stdout
    assert redact_address(secret) == secret.replace("admin:s3cret@", "")


def test_the_cluster_page_shows_the_commands_the_tests_run():
    page = (REPO / "docs" / "cluster.md").read_text(encoding="utf-8")
    shown = [re.sub(r"\s+", " ", line.strip()) for line in page.splitlines() if line.strip().startswith("ray start")]
    values = dict(head_ip="$HEAD_IP", node_ip="$NODE_IP", port="6379", cpus="$CPUS", temp_dir="/tmp/ray")
    assert HEAD_COMMAND.format(**values) in shown
    assert WORKER_COMMAND.format(**values) in shown


def test_no_secret_of_an_address_reaches_a_written_config(monkeypatch):
    import copy
    import json
    from dataclasses import asdict

    from wit_retrieval.images.fetch import FetchConfig
    from wit_retrieval.images.http import HttpConfig

    engine = EngineConfig("ray", 0, "ray://admin:s3cret@head:10001/?token=abc")
    assert engine.address == "ray://admin:s3cret@head:10001/?token=abc"  # what connecting uses
    written = json.dumps(asdict(FetchConfig("out", HttpConfig(user_agent=AGENT), engine=engine)))
    assert "s3cret" not in written and "abc" not in written and "ray://head:10001/" in written
    assert "s3cret" not in repr(engine) and "s3cret" not in str(copy.deepcopy(engine))
    assert redact_address("admin:pw@10.0.0.1:6379") == "10.0.0.1:6379" and redact_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert EngineConfig("ray").address == "10.0.0.1:6379"  # RAY_ADDRESS alone, as Ray documents it
    assert EngineConfig("ray", ray_address="auto").address == "auto"  # the option wins


@pytest.mark.slow
def test_embed_with_ray_data_on_the_cluster_writes_what_one_process_writes(ray_cluster, tmp_path):
    # issue 15: Ray Data batch inference (decode stage + encoder actor pool) over the same parts plan
    import json
    import subprocess
    import sys

    import numpy as np

    from tests.test_models_world import make_world as make_image_world
    from tests.test_models_world import write_store
    from wit_retrieval.io.embeddings import read_embeddings

    world = make_image_world(tmp_path / "data", entities=6, scenes={"test": 30}, size=24)
    write_store(world.store, tmp_path / "images")
    args = ["embed", "--model", "open_clip:wit-tiny-vit:random", "--images", str(tmp_path / "images"),
            "--batch-size", "4", "--workers", "1", "--part-rows", "6", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "wit_retrieval", *args, "--out", str(tmp_path / "one")],
                         env=ray_cluster.env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr
    done = cli(ray_cluster, *args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "2",
               RAY_ADDRESS=ray_cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["engine"] == "ray" and summary["parts_written"] == summary["parts_total"]
    ids1, m1 = read_embeddings(tmp_path / "one")
    ids2, m2 = read_embeddings(tmp_path / "ray")
    assert ids1 == ids2
    np.testing.assert_allclose(m1, m2, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "one").glob("part-*")) == \
        sorted(p.name for p in (tmp_path / "ray").glob("part-*"))
