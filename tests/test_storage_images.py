"""`images fetch` writing its store to a real S3 server (moto_server) and the GCS emulator on loopback:
the same ids, bytes and failures as a local fetch, a SIGKILLed fetch resumed to the same store, only
committed keys left, no credential in anything written or printed; the store read back from the bucket."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from tests.objectstores import (  # noqa: F401
    S3_ENV,
    gcs_bucket,
    gcs_endpoint,
    moto_endpoint,
    raw_keys,
    s3_bucket,
)
from tests.test_images_support import AGENT
from tests.test_storage_build import _assert_only_committed
from wit_retrieval.cli import app
from wit_retrieval.images import open_store
from wit_retrieval.images.store import done_shards
from wit_retrieval.io import fs
from wit_retrieval.synth.faults import FaultPlan, FaultRule
from wit_retrieval.synth.server import serve_directory

CLI = [sys.executable, "-c", "from wit_retrieval.cli import main; main()"]
SHARD_SIZE = "8"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, list[str]]:
    """The miniature world's drawn images (entities, locator maps, scenes) and their Commons URLs."""
    from wit_retrieval.synth.generate import generate_world
    from wit_retrieval.synth.world import WorldConfig

    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(entities=16, scenes=30, images=True, image_size=16), out)
    files = sorted(p for p in (out / "wikipedia").rglob("*") if p.is_file())
    urls = [f"https://upload.wikimedia.org/{p.relative_to(out).as_posix()}" for p in files]
    assert len(urls) > 40
    return out, urls


def _gone(urls: list[str]) -> FaultPlan:
    """Every 9th URL answers 404: failures recorded as data, alike everywhere."""
    return FaultPlan(rules=(FaultRule("http_404", paths=tuple(urlsplit(u).path for u in urls[::9])),))


def _url_file(folder: Path, urls: list[str]) -> Path:
    path = folder / "urls.tsv"
    path.write_text("image_url\n" + "\n".join(urls) + "\n", encoding="utf-8")
    return path


def _args(server, urls: str, out: str, *more: str, rate: str = "0") -> list[str]:
    return ["images", "fetch", "--urls", urls, "--out", out, "--user-agent", AGENT, "--allow-host", "127.0.0.1",
            "--host-alias", f"upload.wikimedia.org={server.url}", "--timeout", "5", "--shard-size", SHARD_SIZE,
            "--rate", rate, "--no-progress", *more]


def _snapshot(store_location: str) -> tuple[list[dict], dict[str, str]]:
    """Manifest rows (without tar offsets, which follow completion order) and each image's sha256,
    read through the store reader (ranged reads on a bucket), checked against a sequential pass."""
    with open_store(store_location) as store:
        rows = sorted(({k: v for k, v in r.items() if k != "offset"} for r in store.manifest().to_pylist()),
                      key=lambda r: r["image_id"])
        by_id = {i: hashlib.sha256(store.get(i)).hexdigest() for i in store.ids()}
        assert {i: hashlib.sha256(b).hexdigest() for i, b in store.iter_items()} == by_id
    return rows, by_id


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, with this environment (the bucket's endpoint and keys) and `env`
    (a None value removes a variable)."""
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run(CLI + args, capture_output=True, text=True, env=merged, timeout=300)


def _secrets() -> list[str]:
    return [S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"]]


def test_fetch_into_s3_equals_local_and_a_killed_fetch_resumes(world, tmp_path, s3_bucket, monkeypatch):  # noqa: F811
    import tempfile

    folder, urls = world
    url_file = _url_file(tmp_path, urls)
    remote_urls = f"{s3_bucket}/input/urls.tsv"
    with fs.open_file(remote_urls, "wb") as sink:
        sink.write(url_file.read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    runner = CliRunner()
    with serve_directory(folder, faults=_gone(urls)) as server:
        local = str(tmp_path / "local")
        result = runner.invoke(app, _args(server, str(url_file), local))
        assert result.exit_code == 0, result.output
        # uninterrupted, the URL list read from the bucket too; the tars staged in `scratch`
        whole = f"{s3_bucket}/whole"
        with monkeypatch.context() as patch:
            patch.setattr(tempfile, "tempdir", str(scratch))
            done = runner.invoke(app, _args(server, remote_urls, whole))
        assert done.exit_code == 0, done.output
        assert [p.name for p in scratch.iterdir()] == ["wit-retrieval-locks"]  # no scratch tar left behind

        # SIGKILLed after some shards (the CLI and its 2 workers), then run again: only the rest is fetched
        killed = f"{s3_bucket}/killed"
        args = _args(server, str(url_file), killed, rate="25")
        proc = subprocess.Popen(CLI + args + ["--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)})
        deadline = time.monotonic() + 60
        while len(done_shards(killed)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = done_shards(killed)
        planned = -(-len(urls) // int(SHARD_SIZE))
        assert 0 < len(finished) < planned
        server.reset_stats()
        resumed = runner.invoke(app, args)
        assert resumed.exit_code == 0, resumed.output
        # the finished shards were not fetched again
        assert server.stats()["requests"] <= len(urls) - len(finished) * int(SHARD_SIZE)
    expected = _snapshot(local)
    assert len(expected[1]) == len(urls) - len(urls[::9]) and len(expected[0]) == len(urls)
    assert {r["error"] for r in expected[0] if r["status"] == "failed"} == {"http_404"}
    assert _snapshot(whole) == expected
    assert _snapshot(killed) == expected
    assert sorted(fs.walk_files(whole)) == sorted(fs.walk_files(killed))
    for store in (whole, killed):
        _assert_only_committed(store)
        assert not [k for k in raw_keys(store) if ".lock-" in k]  # locks stay on the machine
        status = runner.invoke(app, ["images", "status", store, "--json"])
        assert json.loads(status.output)["ok"] == len(expected[1])
    printed = result.output + done.output + resumed.output
    written = "".join(fs.path(f"{s3_bucket}/{f}").read_text() for f in fs.walk_files(s3_bucket)
                      if f.endswith((".json", ".done")))
    assert not [s for s in _secrets() if s in printed or s in written]


def test_credentials_in_a_store_uri_stay_out_of_what_is_written(world, tmp_path, s3_bucket):  # noqa: F811
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, urls = world
    bucket = s3_bucket.split("://")[1]
    keyed = f"s3://{S3_ENV['AWS_ACCESS_KEY_ID']}:{S3_ENV['AWS_SECRET_ACCESS_KEY']}@{bucket}/store"
    # a parquet mirror holding the first four images: its index is kept in the store's _mirrors/
    mirror = tmp_path / "mirror.parquet"
    data = [(folder / urlsplit(u).path.lstrip("/")).read_bytes() for u in urls[:4]]
    pq.write_table(pa.table({"image_url": urls[:4], "image": data}), mirror)
    with serve_directory(folder) as server:
        args = _args(server, str(_url_file(tmp_path, urls[:10])), keyed, "--mirror", f"parquet:{mirror}")
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 6
    status = CliRunner().invoke(app, ["images", "status", keyed])
    config = fs.path(f"{s3_bucket}/store/_fetch.json").read_text()
    assert json.loads(config)["out"] == f"{s3_bucket}/store"
    assert json.loads(config)["mirrors"][0]["index"].startswith(f"{s3_bucket}/store/_mirrors/mirror-")
    assert not [s for s in _secrets() if s in result.output + status.output + config]
    assert len(open_store(keyed)) == 10
    _assert_only_committed(f"{s3_bucket}/store")


def test_ranged_reads_of_a_bucket_store_in_any_order(world, tmp_path, s3_bucket, monkeypatch):  # noqa: F811
    """Windows smaller than an image, reads out of disk order from 4 threads, more shards than windows kept."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from wit_retrieval.images import store as store_module

    folder, urls = world
    with serve_directory(folder) as server:
        args = _args(server, str(_url_file(tmp_path, urls[:18])), f"{s3_bucket}/store")
        assert CliRunner().invoke(app, [*args, "--shard-size", "3"]).exit_code == 0
    for window, kept in ((600, 8), (1 << 20, 2)):  # 600: every image overflows its window
        monkeypatch.setattr(store_module, "_WINDOW", window)
        monkeypatch.setattr(store_module, "_WINDOWS_KEPT", kept)
        with open_store(f"{s3_bucket}/store") as store:
            rows = {r["image_id"]: r["sha256"] for r in store.manifest().to_pylist()}
            order = store.ids() * 2
            random.Random(window).shuffle(order)
            with ThreadPoolExecutor(4) as pool:  # as embed's decode threads read
                read = pool.map(lambda i: hashlib.sha256(store.get(i)).hexdigest(), order)
                assert dict(zip(order, read)) == rows
            assert len(store._windows) <= kept


def test_fetch_a_build_on_s3_into_its_images_prefix(world, s3_bucket):  # noqa: F811
    import pyarrow as pa

    from wit_retrieval.io.shards import write_table_dir
    from wit_retrieval.layout import DataRoot
    from wit_retrieval.schema import ENTITIES, QUERIES

    folder, urls = world
    root = DataRoot(f"{s3_bucket}/root")
    query = {name: None for name in QUERIES.names}
    query.update(query_id="q", split="test", target_image_url=urls[0], entity_image_urls=urls[1:3])
    write_table_dir(root.table_split("queries", "test"), [pa.Table.from_pylist([query], schema=QUERIES)], QUERIES)
    entities = [{**{name: None for name in ENTITIES.names}, "entity_id": f"Q{i}", "image_url": u}
                for i, u in enumerate(urls[2:6])]
    write_table_dir(root.table("entities"), [pa.Table.from_pylist(entities, schema=ENTITIES)], ENTITIES)
    with serve_directory(folder) as server:
        args = _args(server, "-", "-")[6:]  # everything after --urls FILE --out DIR
        result = CliRunner().invoke(app, ["images", "fetch", "--data", str(root.root), *args])
        assert result.exit_code == 0, result.output
    assert len(open_store(f"{s3_bucket}/root/images")) == 6
    _assert_only_committed(f"{s3_bucket}/root/images")


def test_fetch_and_retry_failed_on_gcs(world, tmp_path, gcs_bucket):  # noqa: F811
    folder, urls = world
    urls = urls[:24]
    flaky = FaultRule("http_503", paths=tuple(urlsplit(u).path for u in urls[::5]), transient_attempts=100)
    url_file = _url_file(tmp_path, urls)
    remote = f"{gcs_bucket}/images"
    runner = CliRunner()
    with serve_directory(folder, faults=FaultPlan(rules=(flaky,))) as server:
        first = runner.invoke(app, _args(server, str(url_file), remote, "--max-retries", "0"))
        assert first.exit_code == 0, first.output
        before = _snapshot(remote)
        assert {r["error"] for r in before[0] if r["status"] == "failed"} == {"http_5xx"}
        server.set_faults(FaultPlan())  # the server recovers
        again = runner.invoke(app, ["images", "retry-failed", remote, "--no-progress"])
        assert again.exit_code == 0, again.output
        local = str(tmp_path / "local")
        assert runner.invoke(app, _args(server, str(url_file), local)).exit_code == 0
    rows, images = _snapshot(remote)
    assert (rows, images) == _snapshot(local) and len(images) == len(urls)
    _assert_only_committed(remote)


def test_a_file_uri_is_a_local_store(world, tmp_path):
    folder, urls = world
    with serve_directory(folder) as server:
        result = CliRunner().invoke(app, _args(server, f"file://{_url_file(tmp_path, urls[:3])}",
                                               f"file://{tmp_path}/store"))
    assert result.exit_code == 0, result.output
    assert len(open_store(tmp_path / "store")) == 3 and len(done_shards(tmp_path / "store")) == 1


def test_missing_or_mangled_store_uri_is_one_line(tmp_path, s3_bucket):  # noqa: F811
    from wit_retrieval.errors import InputError

    with pytest.raises(InputError, match="no such image store"):
        open_store(f"{s3_bucket}/nothing")
    with pytest.raises(InputError, match="lost a slash"):
        open_store(Path(f"{s3_bucket}/images"))  # what a Path-typed option makes of a URI
    result = CliRunner().invoke(app, ["images", "status", f"{s3_bucket}/nothing"])
    assert result.exit_code == 1 and "no such store folder" in result.output


@pytest.mark.slow
def test_ray_engine_fetches_into_s3_as_the_local_engine(world, tmp_path, s3_bucket):  # noqa: F811
    pytest.importorskip("ray")
    folder, urls = world
    urls = urls[:20]
    url_file = _url_file(tmp_path, urls)
    with serve_directory(folder, faults=_gone(urls)) as server:
        local = str(tmp_path / "local")
        assert CliRunner().invoke(app, _args(server, str(url_file), local)).exit_code == 0
        remote = f"{s3_bucket}/ray"
        # a Ray started by the command (its workers get this environment: the endpoint and keys)
        done = _run(_args(server, str(url_file), remote, "--engine", "ray", "--workers", "2"),
                    {"RAY_ADDRESS": None})
        assert done.returncode == 0, done.stderr[-3000:]
    assert _snapshot(remote) == _snapshot(local)
    _assert_only_committed(remote)
    assert not [s for s in _secrets() if s in done.stdout + done.stderr]


@pytest.mark.slow
def test_embedding_reads_an_image_store_in_a_bucket(world, tmp_path, s3_bucket):  # noqa: F811
    """What `embed`, `evaluate` and `prepare` do with `--images s3://...`: open_store, then images in disk order."""
    pytest.importorskip("open_clip")
    from wit_retrieval.models import load_encoder
    from wit_retrieval.models.embed import EmbedConfig, embed_images

    folder, urls = world
    url_file = _url_file(tmp_path, urls[:12])
    stores = {"local": str(tmp_path / "images"), "s3": f"{s3_bucket}/images"}
    with serve_directory(folder) as server:
        for store in stores.values():
            assert CliRunner().invoke(app, _args(server, str(url_file), store)).exit_code == 0
    encoder = load_encoder("open_clip:wit-tiny-vit:random", device="cpu")
    embedded = {}
    for name, location in stores.items():
        with open_store(location) as store:
            embedded[name] = embed_images(encoder, store, store.ids(), EmbedConfig(batch_size=4, workers=0))
    assert embedded["s3"][0] == embedded["local"][0] and len(embedded["s3"][0]) == 12
    assert (embedded["s3"][1] == embedded["local"][1]).all() and embedded["s3"][2] == []
