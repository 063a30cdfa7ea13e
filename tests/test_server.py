"""The loopback Wikimedia-like server: files, ranges, thumbnails, every fault kind, rate limits."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from PIL import Image

from wit_retrieval.errors import ConfigError
from wit_retrieval.synth.faults import FaultPlan, FaultRule, TokenBucket
from wit_retrieval.synth.server import serve_directory

REPO = Path(__file__).resolve().parents[1]


def commons_path(name: str) -> str:
    h = hashlib.md5(name.encode()).hexdigest()
    return f"/wikipedia/commons/{h[0]}/{h[:2]}/{name}"


def thumb_path(name: str, width: int, thumb_name: str | None = None) -> str:
    h = hashlib.md5(name.encode()).hexdigest()
    return f"/wikipedia/commons/thumb/{h[0]}/{h[:2]}/{name}/{width}px-{thumb_name or name}"


def _png(size, color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def world(tmp_path) -> Path:
    root = tmp_path / "world"
    for name, size, color in [("Eiffel_Tower.png", (64, 32), "red"), ("Brandenburger_Tor_(2).png", (40, 40), "blue")]:
        target = root / commons_path(name).lstrip("/")
        target.parent.mkdir(parents=True)
        target.write_bytes(_png(size, color))
    svg = root / commons_path("Flag.svg").lstrip("/")
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    wit = root / "gresearch/wit/wit_v1.train.all-00000-of-00001.tsv.gz"
    wit.parent.mkdir(parents=True)
    wit.write_bytes(gzip.compress(b"language\tpage_url\nen\thttps://en.wikipedia.org/wiki/Paris\n" * 50))
    big = root / "enwiki/latest/enwiki-latest-page.sql.gz"
    big.parent.mkdir(parents=True)
    big.write_bytes(os.urandom(1_500_000))  # above the read-whole limit: goes out with sendfile
    (tmp_path / "secret.txt").write_text("outside the served folder")
    return root


@pytest.fixture
def server(world):
    with serve_directory(world) as srv:
        yield srv


EIFFEL = commons_path("Eiffel_Tower.png")


def test_serves_files_with_types_and_validators(server, world):
    wit = "/gresearch/wit/wit_v1.train.all-00000-of-00001.tsv.gz"
    r = requests.get(server.url + wit, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/gzip"
    assert r.content == (world / wit.lstrip("/")).read_bytes()
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert r.headers["ETag"] and parsedate_to_datetime(r.headers["Last-Modified"])
    img = requests.get(server.url + EIFFEL, timeout=5)
    assert img.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (64, 32)
    # quoted names (parentheses, percent-encoding) map to the file on disk
    assert requests.get(server.url + commons_path("Brandenburger_Tor_%282%29.png"), timeout=5).status_code == 404
    tor = commons_path("Brandenburger_Tor_(2).png").replace("(", "%28").replace(")", "%29")
    assert requests.get(server.url + tor, timeout=5).status_code == 200
    assert requests.get(server.url + "/no/such/file.png", timeout=5).status_code == 404
    again = requests.get(server.url + wit, headers={"If-None-Match": r.headers["ETag"]}, timeout=5)
    assert again.status_code == 304


def test_head_and_ranges(server, world):
    big = "/enwiki/latest/enwiki-latest-page.sql.gz"
    data = (world / big.lstrip("/")).read_bytes()
    head = requests.head(server.url + big, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(data)
    assert head.headers["Accept-Ranges"] == "bytes"
    with requests.Session() as s:  # one keep-alive connection through all of these
        for spec, expect in [("bytes=10-19", data[10:20]), ("bytes=1499990-", data[1499990:]),
                             ("bytes=-5", data[-5:]), ("bytes=0-", data)]:
            r = s.get(server.url + big, headers={"Range": spec}, timeout=5)
            assert r.status_code == 206, spec
            assert r.content == expect, spec
            start = len(data) - len(expect) if spec.startswith("bytes=-") else int(spec[6:].split("-")[0])
            assert r.headers["Content-Range"] == f"bytes {start}-{start + len(expect) - 1}/{len(data)}"
        small = s.get(server.url + EIFFEL, headers={"Range": "bytes=0-7"}, timeout=5)
        assert small.status_code == 206 and small.content == b"\x89PNG\r\n\x1a\n"
        out = s.get(server.url + big, headers={"Range": f"bytes={len(data)}-"}, timeout=5)
        assert out.status_code == 416 and out.headers["Content-Range"] == f"bytes */{len(data)}"
        assert s.get(server.url + big, timeout=5).content == data


def test_thumbnails(server):
    r = requests.get(server.url + thumb_path("Eiffel_Tower.png", 32), timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (32, 16)  # aspect kept
    wide = requests.get(server.url + thumb_path("Eiffel_Tower.png", 1024), timeout=5)
    assert Image.open(io.BytesIO(wide.content)).size == (64, 32)  # never upscaled
    assert requests.get(server.url + thumb_path("Missing.png", 32), timeout=5).status_code == 404
    assert requests.get(server.url + thumb_path("Eiffel_Tower.png", 32, "Other.png"), timeout=5).status_code == 404
    # SVG thumbnails end in .png; the bare name is not a thumbnail of an SVG
    assert requests.get(server.url + thumb_path("Flag.svg", 20), timeout=5).status_code == 404
    assert requests.get(server.url + thumb_path("Flag.svg", 20, "Flag.svg.png"), timeout=5).status_code == 501


@pytest.mark.parametrize("raw", ["/../secret.txt", "/wikipedia/../../secret.txt", "/%2e%2e/secret.txt"])
def test_path_traversal_refused(server, raw):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", raw)  # http.client sends the path as is (requests would normalise it)
    resp = conn.getresponse()
    assert resp.status in (403, 404)
    assert b"outside" not in resp.read()
    conn.close()


def _plan(kind, path=EIFFEL, **kw) -> FaultPlan:
    return FaultPlan(seed=0, rules=(FaultRule(kind, paths=(path,), **kw),))


def test_fault_status_and_body_kinds(server):
    url = server.url + EIFFEL
    server.set_faults(_plan("http_429", retry_after_s=7))
    r = requests.get(url, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    server.set_faults(_plan("http_429", retry_after="date", retry_after_s=30))
    when = parsedate_to_datetime(requests.get(url, timeout=5).headers["Retry-After"])
    assert 20 < when.timestamp() - time.time() < 40
    server.set_faults(_plan("http_503"))
    assert requests.get(url, timeout=5).status_code == 503
    server.set_faults(_plan("http_404"))
    assert requests.get(url, timeout=5).status_code == 404
    server.set_faults(_plan("zero_bytes"))
    r = requests.get(url, timeout=5)
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Type"] == "image/png"
    server.set_faults(_plan("html"))
    r = requests.get(url, timeout=5)
    assert r.headers["Content-Type"].startswith("text/html") and b"<html" in r.content
    server.set_faults(_plan("corrupt_image"))
    r = requests.get(url, timeout=5)
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception):  # noqa: B017 - Pillow raises several kinds for broken files
        Image.open(io.BytesIO(r.content)).load()
    assert requests.get(url, timeout=5).content == r.content  # deterministic corruption
    server.set_faults(_plan("huge_dimensions"))
    r = requests.get(url, timeout=5)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(r.content))
    assert r.content[16:24] == (60000).to_bytes(4, "big") * 2  # IHDR width and height
    assert server.stats()["faults"]["http_429"] == 2


def test_fault_connection_kinds(server, world):
    url = server.url + EIFFEL
    original = (world / EIFFEL.lstrip("/")).read_bytes()
    server.set_faults(_plan("timeout", delay_s=3))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, timeout=0.3)
    server.set_faults(_plan("slow", delay_s=0.4))
    t0 = time.monotonic()
    r = requests.get(url, timeout=5)
    assert r.content == original and time.monotonic() - t0 >= 0.35
    server.set_faults(_plan("truncated"))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=5)
    server.set_faults(_plan("reset"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {EIFFEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        with pytest.raises(ConnectionResetError):
            while sock.recv(4096):
                pass
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=5)


def test_redirect_kinds(server, world):
    url = server.url + EIFFEL
    server.set_faults(_plan("redirect_allowed"))
    r = requests.get(url, timeout=5)
    assert r.status_code == 200 and r.history[0].status_code == 302
    assert r.content == (world / EIFFEL.lstrip("/")).read_bytes()
    server.set_faults(_plan("redirect_disallowed"))
    r = requests.get(url, timeout=5, allow_redirects=False)
    assert r.status_code == 302 and ".invalid/" in r.headers["Location"]
    server.set_faults(_plan("redirect_loop"))
    with requests.Session() as s:
        s.max_redirects = 5
        with pytest.raises(requests.exceptions.TooManyRedirects):
            s.get(url, timeout=5)


def test_fractions_are_deterministic_per_seed():
    paths = [commons_path(f"File_{i}.png") for i in range(2000)]
    plan = FaultPlan(seed=3, rules=(FaultRule("http_503", fraction=0.2), FaultRule("reset", fraction=0.1)))
    chosen = [plan.choose(p) for p in paths]
    n503 = sum(1 for c in chosen if c and c.kind == "http_503")
    nreset = sum(1 for c in chosen if c and c.kind == "reset")
    assert 340 < n503 < 460 and 150 < nreset < 250
    assert chosen == [plan.choose(p) for p in paths]
    other = FaultPlan(seed=4, rules=plan.rules)
    assert [other.choose(p) for p in paths] != chosen
    explicit = FaultPlan(seed=3, rules=(FaultRule("html", paths=(paths[0],)),) + plan.rules)
    assert explicit.choose(paths[0]).kind == "html"
    scoped = FaultPlan(seed=3, rules=(FaultRule("http_404", fraction=1.0, under="/wikipedia/"),))
    assert scoped.choose(paths[0]) and scoped.choose("/gresearch/wit/x.tsv.gz") is None
    with pytest.raises(ConfigError):
        FaultPlan(rules=(FaultRule("http_503", fraction=0.7), FaultRule("reset", fraction=0.5)))
    with pytest.raises(ConfigError, match="unknown fault kind"):
        FaultRule("explode", fraction=0.1)


def test_server_faults_follow_the_plan_and_transient_ones_clear(server, world):
    plan = FaultPlan(seed=1, rules=(FaultRule("http_503", fraction=0.5, transient_attempts=2),))
    server.set_faults(plan)
    paths = ["/gresearch/wit/wit_v1.train.all-00000-of-00001.tsv.gz", EIFFEL, commons_path("Brandenburger_Tor_(2).png")]
    with requests.Session() as s:
        for path in paths:
            codes = [s.get(server.url + path, timeout=5).status_code for _ in range(3)]
            assert codes == ([503, 503, 200] if plan.choose(path) else [200, 200, 200]), path
        server.set_faults(FaultPlan(seed=1, rules=(FaultRule("http_503", paths=(EIFFEL,)),)))
        assert [s.get(server.url + EIFFEL, timeout=5).status_code for _ in range(3)] == [503] * 3
        server.set_faults(None)  # lifting the plan clears permanent faults too
        assert s.get(server.url + EIFFEL, timeout=5).status_code == 200
    stats = server.stats()
    assert stats["attempts"][EIFFEL] == 7
    assert stats["requests"] == sum(stats["by_status"].values()) == 13


def test_rate_limit_counts_requests_over_it(world):
    rate = 5  # low, so the assertions hold however slowly a loaded machine sends the burst
    with serve_directory(world, rate_limit=rate) as srv, requests.Session() as s:
        started = time.monotonic()
        codes = [s.get(srv.url + EIFFEL, timeout=5).status_code for _ in range(60)]  # a burst
        elapsed = time.monotonic() - started
        stats = srv.stats()
        assert codes.count(429) == stats["over_limit"] and codes.count(200) + codes.count(429) == 60
        assert codes.count(200) <= rate + rate * elapsed + 1  # the bucket: burst plus refill, no more
        assert codes.count(429) > 0
        r429 = next(r for r in (s.get(srv.url + EIFFEL, timeout=5) for _ in range(20)) if r.status_code == 429)
        assert int(r429.headers["Retry-After"]) >= 1
        time.sleep(1.5)  # refill, then a client pacing itself under the limit is never refused
        srv.reset_stats()
        for _ in range(6):
            s.get(srv.url + EIFFEL, timeout=5)
            time.sleep(1 / (rate - 1))
        assert srv.stats()["over_limit"] == 0 and srv.stats()["requests"] == 6


def test_token_bucket_refills():
    bucket = TokenBucket(rate=100, burst=2)
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    assert 0 < bucket.take() <= 0.011
    time.sleep(0.03)
    assert bucket.take() == 0.0


def test_cli_serve_prints_aliases_and_serves(world):
    proc = subprocess.Popen(
        [sys.executable, "-c", "from wit_retrieval.cli import main; main()", "serve", str(world), "--port", "0",
         "--fault", "http_503=1.0", "--fault-under", "/wikipedia/"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        url = proc.stdout.readline().split(" at ")[-1].strip()
        lines = [proc.stdout.readline() for _ in range(4)]
        assert any(f"--host-alias upload.wikimedia.org={url}" in line for line in lines)
        assert requests.get(url + EIFFEL, timeout=5).status_code == 503
        wit = "/gresearch/wit/wit_v1.train.all-00000-of-00001.tsv.gz"
        assert requests.get(url + wit, timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert '"requests": 2' in out
