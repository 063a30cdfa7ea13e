"""`download` into s3:// from the loopback synthetic-world server: verified, atomic, skipped on re-run."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.objectstores import moto_endpoint, raw_keys, s3_bucket  # noqa: F401
from wit_retrieval.cli import app
from wit_retrieval.io import fs
from wit_retrieval.synth.server import serve_directory


def test_download_into_s3(tmp_path, s3_bucket):  # noqa: F811
    from wit_retrieval.synth import WorldConfig, generate_world

    world = tmp_path / "world"
    generate_world(WorldConfig(entities=40, scenes=120, images=False, languages=("en", "de")), world)
    out = f"{s3_bucket}/downloads"
    runner = CliRunner()
    with serve_directory(world) as server:
        args = ["--out", out, "--base-url", server.url, "--quiet"]
        first = runner.invoke(app, ["download", "mmir", "--split", "val", "--split", "test", *args])
        assert first.exit_code == 0, first.output
        again = runner.invoke(app, ["download", "mmir", "--split", "val", "--split", "test", *args])
    assert first.output.count("downloaded") == 2 and first.output.count("sha256 ok") == 2
    assert again.output.count("skipped") == 2  # verified notes beside the objects
    files = [f for f in raw_keys(out) if f and not f.endswith("/")]
    assert len(files) == 4 and all(f.endswith((".tsv.gz", ".tsv.gz.ok")) for f in files)  # nothing temporary
    for name in files:
        if name.endswith(".tsv.gz"):
            assert fs.path(f"{out}/{name}").read_bytes() == (world / name).read_bytes()
