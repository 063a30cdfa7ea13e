"""The resumable downloader against a real loopback HTTP server (Range, faults, checksums)."""

from __future__ import annotations

import hashlib
import random

import pytest
from typer.testing import CliRunner

from wit_retrieval.cli import app
from wit_retrieval.errors import ConfigError, DownloadError
from wit_retrieval.sources import DownloadConfig, download_release, release_files
from wit_retrieval.synth.faults import FaultPlan, FaultRule
from wit_retrieval.synth.server import serve_directory

EI = "gresearch/wit-retrieval/entity_image_dataset.tsv.gz"
MMIR_TEST = "gresearch/wit-retrieval/mmir_dataset_test.tsv.gz"
DUMP_DIR = "dewiki/latest"


def _put(root, rel: str, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return data


@pytest.fixture
def world(tmp_path):
    """A mirror tree at the real hosts' paths, with SHA256SUMS and a dated md5sums list."""
    root = tmp_path / "mirror"
    files = {EI: _put(root, EI, 300_000, 1), MMIR_TEST: _put(root, MMIR_TEST, 120_000, 2)}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {rel}\n" for rel, d in files.items())
    (root / "SHA256SUMS").write_text(sums)
    md5 = []
    for table in ("page", "page_props", "redirect"):
        data = _put(root, f"{DUMP_DIR}/dewiki-latest-{table}.sql.gz", 50_000, hash(table) % 100)
        md5.append(f"{hashlib.md5(data).hexdigest()}  dewiki-20240601-{table}.sql.gz\n")
    (root / DUMP_DIR / "dewiki-latest-md5sums.txt").write_text("".join(md5))
    with serve_directory(root) as server:
        yield root, server, files


def _config(tmp_path, server, **kw) -> DownloadConfig:
    return DownloadConfig(out=tmp_path / "out", base_url=server.url, backoff_s=0.01, retries=3, **kw)


def test_download_verify_and_skip(tmp_path, world):
    root, server, files = world
    config = _config(tmp_path, server)
    [result] = download_release("ei", config, progress=False)
    assert result.status == "downloaded" and result.verification == "sha256 ok"
    assert result.path == tmp_path / "out" / EI and result.path.read_bytes() == files[EI]
    assert not list(result.path.parent.glob("*.part"))
    server.reset_stats()
    [again] = download_release("ei", config, progress=False)
    assert again.status == "skipped" and again.verification == "sha256 ok"
    assert server.stats()["bytes_sent"] < 10_000  # checksum list and HEAD only, no body


def test_resume_after_partial_file(tmp_path, world):
    root, server, files = world
    config = _config(tmp_path, server)
    part = tmp_path / "out" / (EI + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(files[EI][:100_000])
    [result] = download_release("ei", config, progress=False)
    assert result.status == "resumed" and result.path.read_bytes() == files[EI]
    assert server.stats()["by_status"].get(206) == 1


def test_interrupted_transfers_resume(tmp_path, world):
    root, server, files = world
    server.set_faults(FaultPlan(rules=[FaultRule("truncated", paths=("/" + EI,), transient_attempts=3),
                                       FaultRule("http_503", paths=("/SHA256SUMS",), transient_attempts=1)]))
    [result] = download_release("ei", _config(tmp_path, server), progress=False)
    assert result.path.read_bytes() == files[EI] and result.verification == "sha256 ok"
    assert server.stats()["faults"]["truncated"] == 3


def test_checksum_mismatch_removes_the_download(tmp_path, world):
    root, server, files = world
    (root / "SHA256SUMS").write_text(f"{'0' * 64}  {EI}\n")
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_release("ei", _config(tmp_path, server), progress=False)
    folder = tmp_path / "out" / EI.rsplit("/", 1)[0]
    assert not list(folder.iterdir())


def test_dumps_md5_and_no_checksum_note(tmp_path, world):
    root, server, files = world
    results = download_release("dumps", _config(tmp_path, server), languages=["de"], progress=False)
    assert [r.verification for r in results] == ["md5 ok"] * 3
    (root / "SHA256SUMS").unlink()
    [test] = download_release("mmir", _config(tmp_path, server), splits=["test"], progress=False)
    assert test.verification == "size only: no checksum published"
    assert test.path.read_bytes() == files[MMIR_TEST]


def test_cli_one_line_errors_and_success(tmp_path, world):
    root, server, files = world
    runner = CliRunner()
    out = str(tmp_path / "cli")
    result = runner.invoke(app, ["download", "mmir", "--split", "validation", "--out", out, "--base-url",
                                 server.url, "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: HTTP 404")
    assert "mmir_dataset_validation.tsv.gz" in result.output
    result = runner.invoke(app, ["download", "mmir", "--split", "test", "--out", out, "--base-url", server.url,
                                 "--user-agent", "tests/1.0 (me@example.org)", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "downloaded" in result.output and "sha256 ok" in result.output
    result = runner.invoke(app, ["download", "dumps", "--lang", "de", "--out", out, "--quiet",
                                 "--host-alias", f"dumps.wikimedia.org={server.url}",
                                 "--host-alias", f"storage.googleapis.com={server.url}"])
    assert result.exit_code == 0, result.output
    assert result.output.count("md5 ok") == 3
    result = runner.invoke(app, ["download", "dumps", "--lang", "de", "--out", out, "--host-alias", "nonsense"])
    assert result.exit_code == 1 and "expected HOST=URL" in result.output


def test_release_catalogue():
    wit = release_files("wit")
    assert len(wit) == 20 and wit[0].url == "https://storage.googleapis.com/gresearch/wit/wit_v1.train.all-00000-of-00010.tsv.gz"
    assert len(release_files("mmir", splits=["train"])) == 5
    assert release_files("wit", splits=["sample"])[0].url.endswith("wit_v1.train.all-1percent_sample.tsv.gz")
    assert release_files("dumps", languages=["en"])[1].url == (
        "https://dumps.wikimedia.org/enwiki/latest/enwiki-latest-page_props.sql.gz")
    with pytest.raises(ConfigError, match="--lang"):
        release_files("dumps")
    with pytest.raises(ConfigError, match="no split"):
        release_files("mmir", splits=["sample"])


def test_download_from_the_synthetic_world(tmp_path):
    from wit_retrieval.synth import WorldConfig, generate_world

    world = tmp_path / "world"
    generate_world(WorldConfig(entities=40, scenes=120, images=False, languages=("en", "de")), world)
    with serve_directory(world) as server:
        config = DownloadConfig(out=tmp_path / "out", base_url=server.url, backoff_s=0.01)
        results = download_release("mmir", config, splits=["val", "test"], progress=False)
        results += download_release("dumps", config, languages=["de"], progress=False)
    assert [r.verification for r in results] == ["sha256 ok"] * 2 + ["sha256 ok"] * 3
    for r in results:
        assert r.path.read_bytes() == (world / r.path.relative_to(tmp_path / "out")).read_bytes()


def test_plain_server_without_head_or_range(tmp_path):
    """A bare server (no HEAD, Range ignored): the download restarts and still completes."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body, seen = random.Random(5).randbytes(70_000), []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            seen.append((self.path, self.headers.get("User-Agent"), self.headers.get("Range")))
            data = body if self.path.endswith("entity_image_dataset.tsv.gz") else None
            self.send_response(200 if data else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = DownloadConfig(out=tmp_path / "out", base_url=f"http://127.0.0.1:{server.server_port}",
                                user_agent="lab-bot/2 (me@example.org)", backoff_s=0.01)
        part = tmp_path / "out" / (EI + ".part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"stale bytes")
        [result] = download_release("ei", config, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert result.path.read_bytes() == body and result.verification == "size only: no checksum published"
    assert {ua for _, ua, _ in seen} == {"lab-bot/2 (me@example.org)"}
    assert [r for p, _, r in seen if p.endswith(".gz")] == ["bytes=11-", None]


def test_429_retry_after_date_is_honoured(tmp_path, world):
    import time

    root, server, files = world
    server.set_faults(FaultPlan(rules=[FaultRule("http_429", paths=("/" + MMIR_TEST,), transient_attempts=1,
                                                 retry_after="date", retry_after_s=2)]))
    start = time.monotonic()
    [result] = download_release("mmir", _config(tmp_path, server), splits=["test"], progress=False)
    assert time.monotonic() - start >= 0.9  # an HTTP-date 2 s ahead (second resolution): waits at least ~1 s
    assert result.path.read_bytes() == files[MMIR_TEST] and server.stats()["faults"]["http_429"] == 1
