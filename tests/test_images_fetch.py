"""Fetching against the loopback server with injected faults: accounting, classification, retries, rate."""

from __future__ import annotations

import tarfile
import time
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest

from tests.test_images_support import AGENT, make_world
from wit_retrieval.errors import ConfigError
from wit_retrieval.images import open_store
from wit_retrieval.images.decode import DecodeConfig
from wit_retrieval.images.fetch import FetchConfig
from wit_retrieval.images.http import HttpConfig, thumbnail_url
from wit_retrieval.images.run import fetch_images, retry_failed
from wit_retrieval.images.store import done_shards, shard_paths
from wit_retrieval.synth.faults import FaultPlan, FaultRule
from wit_retrieval.synth.server import serve_directory

# what each injected fault must become in the manifest
EXPECTED = {
    "timeout": "timeout", "slow": "timeout", "http_429": "http_429", "http_503": "http_5xx",
    "http_404": "http_404", "truncated": "truncated", "reset": "connection", "corrupt_image": "decode_error",
    "zero_bytes": "empty", "html": "not_an_image", "redirect_allowed": None,
    "redirect_disallowed": "disallowed_host", "redirect_loop": "redirect_loop", "huge_dimensions": "too_many_pixels",
}


def _http(server, **kw) -> HttpConfig:
    base = dict(user_agent=AGENT, rate=None, concurrency=16, timeout=0.4, connect_timeout=0.5, max_retries=1,
                backoff_base=0.01, max_retry_after=0.5, allow_hosts=("127.0.0.1",),
                host_aliases=(("upload.wikimedia.org", server.url),))
    return HttpConfig(**{**base, **kw})


def _rows(out) -> list[dict]:
    return sorted((r for s in done_shards(out) for r in pq.read_table(shard_paths(out, s)[1]).to_pylist()),
                  key=lambda r: r["image_id"])


@pytest.mark.slow
def test_2000_urls_with_faults_are_all_accounted_for(tmp_path):
    urls = make_world(tmp_path / "world", 2000)
    urls += urls[:50]  # duplicates collapse to one row each
    kinds = sorted(EXPECTED)
    slow = {"timeout": 3.0, "slow": 3.0}  # far beyond the client's timeout, even on a loaded machine
    plan = FaultPlan(seed=7, rules=tuple(FaultRule(k, fraction=0.2 / len(kinds), delay_s=slow.get(k)) for k in kinds))
    out = tmp_path / "out"
    start = time.monotonic()
    with serve_directory(tmp_path / "world", faults=plan) as server:
        http = _http(server, timeout=1.0, concurrency=32)
        config = FetchConfig(str(out), http, DecodeConfig(encode="original"), shard_size=1000)
        status = fetch_images(config, urls)
    assert time.monotonic() - start < 60  # about 10 s on an idle two-core machine
    rows = _rows(out)
    assert len(rows) == 2000 == len({r["image_id"] for r in rows}) == status["accounted"]
    assert status["pending"] == 0 and status["ok"] + status["failed"] == 2000
    wrong = []
    for row in rows:
        rule = plan.choose(urlsplit(row["url"]).path)
        expected = EXPECTED[rule.kind] if rule else None
        got = row["error"] if row["status"] == "failed" else None
        if got != expected:
            wrong.append((rule.kind if rule else None, got))
    assert not wrong, wrong[:10]
    faulty = sum(1 for r in rows if r["status"] == "failed")
    assert 0.12 * 2000 < faulty < 0.25 * 2000
    store = open_store(out)
    assert len(store) == status["ok"]
    for shard in done_shards(out):  # every tar is complete and holds exactly the ok rows
        with tarfile.open(shard_paths(out, shard)[0]) as tar:
            members = tar.getnames()
        ok = [r["image_id"] for r in rows if r["shard"] == f"{shard:05d}" and r["status"] == "ok"]
        assert sorted(m.split(".")[0] for m in members if m.endswith(".png")) == ok
        assert len(members) == 2 * len(ok)
    assert {r["retryable"] for r in rows if r["error"] in ("timeout", "http_429", "truncated")} == {True}
    assert {r["retryable"] for r in rows if r["error"] in ("http_404", "decode_error")} == {False}


def test_retry_after_seconds_and_http_date_are_honoured(tmp_path):
    urls = make_world(tmp_path / "world", 4)
    paths = tuple(urlsplit(u).path for u in urls[:2])
    rules = (FaultRule("http_429", paths=paths[:1], transient_attempts=1, retry_after_s=1),
             FaultRule("http_503", paths=paths[1:], transient_attempts=1, retry_after_s=1))
    with serve_directory(tmp_path / "world", faults=FaultPlan(seed=0, rules=rules)) as server:
        config = FetchConfig(str(tmp_path / "out"), _http(server, max_retry_after=5.0, timeout=2.0))
        start = time.monotonic()
        status = fetch_images(config, urls)
        elapsed = time.monotonic() - start
        attempts = server.stats()["attempts"]
    assert status["ok"] == 4 and 0.9 <= elapsed < 4
    assert attempts[paths[0]] == 2 and attempts[paths[1]] == 2

    with serve_directory(tmp_path / "world", faults=FaultPlan(seed=0, rules=(FaultRule(
            "http_429", paths=paths[:1], transient_attempts=1, retry_after_s=2, retry_after="date"),))) as server:
        config = FetchConfig(str(tmp_path / "out2"), _http(server, max_retry_after=5.0, timeout=2.0))
        start = time.monotonic()
        assert fetch_images(config, urls)["ok"] == 4
        assert time.monotonic() - start >= 0.9  # an HTTP date one to two seconds ahead (whole seconds)


def test_retry_failed_recovers_every_transient_failure(tmp_path):
    urls = make_world(tmp_path / "world", 120)
    transient = ("timeout", "http_429", "http_503", "truncated", "reset", "zero_bytes")
    rules = [FaultRule(k, fraction=0.04, transient_attempts=100, delay_s=3.0 if k == "timeout" else None)
             for k in transient]
    gone = FaultRule("http_404", paths=tuple(urlsplit(u).path for u in urls[::20]))
    out = tmp_path / "out"
    with serve_directory(tmp_path / "world", faults=FaultPlan(seed=3, rules=(*rules, gone))) as server:
        config = FetchConfig(str(out), _http(server, max_retries=0, timeout=1.0), shard_size=40)
        first = fetch_images(config, urls)
        before = {r["image_id"]: r for r in _rows(out)}
        assert first["retryable"] > 0 and first["failed"] > first["retryable"]
        server.set_faults(FaultPlan(seed=3, rules=(gone,)))  # the transient faults are lifted
        shard_paths(out, 1)[2].unlink()  # as if a rewrite had been killed before its new done-marker
        second = retry_failed(config)
    after = {r["image_id"]: r for r in _rows(out)}
    assert set(after) == set(before) and second["retryable"] == 0
    assert second["ok"] == len(urls) - len(gone.paths)
    assert {r["error"] for r in after.values() if r["status"] == "failed"} == {"http_404"}
    for image_id, row in before.items():
        if row["status"] == "ok":  # kept rows keep their bytes
            assert after[image_id]["sha256"] == row["sha256"]
    store = open_store(out)
    assert len(store) == second["ok"]
    import hashlib

    assert all(hashlib.sha256(store.get(i)).hexdigest() == after[i]["sha256"] for i in store.ids())


@pytest.mark.slow
def test_rate_limited_server_sees_almost_no_excess(tmp_path):
    urls = make_world(tmp_path / "world", 300)
    rate = 100.0
    with serve_directory(tmp_path / "world", rate_limit=rate) as server:
        config = FetchConfig(str(tmp_path / "out"), _http(server, rate=rate, timeout=2.0, max_retry_after=5.0),
                             shard_size=300)
        start = time.monotonic()
        status = fetch_images(config, urls)
        elapsed = time.monotonic() - start
        stats = server.stats()
    assert status["ok"] == 300
    assert stats["over_limit"] <= 0.01 * stats["requests"]
    assert 300 / elapsed >= 0.85 * rate  # planning and startup included


def test_politeness_is_checked_before_any_request(tmp_path):
    urls = make_world(tmp_path / "world", 3)
    with serve_directory(tmp_path / "world") as server:
        with pytest.raises(ConfigError, match="User-Agent"):  # a real Wikimedia host, no contact
            fetch_images(FetchConfig(str(tmp_path / "a"), HttpConfig(user_agent="bot/1.0")), urls)
        with pytest.raises(ConfigError, match="--allow-host 127.0.0.1"):
            HttpConfig(user_agent=AGENT, host_aliases=(("upload.wikimedia.org", server.url),))
        # loopback is never reachable without an explicit --allow-host, even by a direct URL
        direct = [server.url + urlsplit(u).path for u in urls]
        status = fetch_images(FetchConfig(str(tmp_path / "b"), HttpConfig(user_agent=AGENT)), direct)
        assert status["errors"] == {"disallowed_host": 3}
        assert server.stats()["requests"] == 0


def test_thumbnails_byte_cap_and_resize(tmp_path):
    urls = make_world(tmp_path / "world", 6)
    with serve_directory(tmp_path / "world") as server:
        config = FetchConfig(str(tmp_path / "thumbs"), _http(server, thumb_width=16, timeout=2.0),
                             DecodeConfig(encode="png"))
        assert fetch_images(config, urls)["ok"] == 6
        assert any("/thumb/" in p for p in server.stats()["attempts"])
        store = open_store(tmp_path / "thumbs")
        assert {store.open(i).size[0] for i in store.ids()} == {16}
        # a thumbnail the server refuses (e.g. wider than the original): the original is fetched
        refused = urlsplit(thumbnail_url(urls[0], 16)).path
        server.set_faults(FaultPlan(rules=(FaultRule("http_503", paths=(refused,), retry_after_s=0),)))
        server.reset_stats()
        config = FetchConfig(str(tmp_path / "fallback"), _http(server, thumb_width=16, timeout=2.0))
        assert fetch_images(config, urls[:1])["ok"] == 1
        assert server.stats()["attempts"] == {refused: 2, urlsplit(urls[0]).path: 1}
        server.set_faults(None)
        capped = FetchConfig(str(tmp_path / "cap"), _http(server, max_bytes=50, timeout=2.0))
        assert fetch_images(capped, urls)["errors"] == {"too_large": 6}
        resized = FetchConfig(str(tmp_path / "crop"), _http(server, timeout=2.0),
                              DecodeConfig(resize="center-crop", size=8))
        fetch_images(resized, urls)
        assert {open_store(tmp_path / "crop").open(i).size for i in store.ids()} == {(8, 8)}


def test_mirrors_come_first(tmp_path):
    urls = make_world(tmp_path / "world", 10)
    mirror = tmp_path / "mirror"
    make_world(mirror, 5)  # the same first five files, offline
    from wit_retrieval.images.mirrors import parse_mirror

    with serve_directory(tmp_path / "world") as server:
        config = FetchConfig(str(tmp_path / "out"), _http(server, timeout=2.0),
                             mirrors=(parse_mirror(str(mirror)),))
        status = fetch_images(config, urls)
        assert server.stats()["requests"] == 5
    assert status["ok"] == 10 and status["sources"] == {"mirror": 5, "http": 5}
    # an earlier store of ours is a mirror too: nothing goes to the network
    with serve_directory(tmp_path / "world") as server:
        again = FetchConfig(str(tmp_path / "out2"), _http(server), mirrors=(parse_mirror(str(tmp_path / "out")),))
        assert fetch_images(again, urls)["sources"] == {"mirror": 10}
        assert server.stats()["requests"] == 0


@pytest.mark.slow
def test_ray_engine_gives_the_same_store(tmp_path):
    pytest.importorskip("ray")
    from wit_retrieval.engine import EngineConfig

    urls = make_world(tmp_path / "world", 60)
    gone = FaultRule("http_404", paths=(urlsplit(urls[3]).path,))
    with serve_directory(tmp_path / "world", faults=FaultPlan(rules=(gone,))) as server:
        for name, engine in (("local", EngineConfig("local", 1)), ("ray", EngineConfig("ray", 2))):
            config = FetchConfig(str(tmp_path / name), _http(server, timeout=2.0), shard_size=20, engine=engine)
            assert fetch_images(config, urls)["ok"] == 59
    strip = [{k: v for k, v in r.items() if k != "offset"} for r in _rows(tmp_path / "local")]
    assert strip == [{k: v for k, v in r.items() if k != "offset"} for r in _rows(tmp_path / "ray")]


def test_resume_refuses_other_image_settings(tmp_path):
    urls = make_world(tmp_path / "world", 3)
    with serve_directory(tmp_path / "world") as server:
        fetch_images(FetchConfig(str(tmp_path / "out"), _http(server, timeout=2.0)), urls)
        with pytest.raises(ConfigError, match="resize"):
            fetch_images(FetchConfig(str(tmp_path / "out"), _http(server), DecodeConfig(resize="keep-ratio")), urls)
        again = fetch_images(FetchConfig(str(tmp_path / "out"), _http(server, rate=5.0)), urls)  # resumes
        assert again["ok"] == 3 and server.stats()["requests"] == 3
