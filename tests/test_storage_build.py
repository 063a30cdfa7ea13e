"""`build ei` and `build mmir` reading WIT and dumps from, and writing to, a real S3 server on loopback
(moto_server) and the GCS emulator: rows identical to a local build, no temporary or orphan keys left,
no credentials in what the commands write or print."""

from __future__ import annotations

import json
import re

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
from wit_retrieval.cli import app
from wit_retrieval.io import fs
from wit_retrieval.io.shards import read_table_dir

TABLES = ["entities", "entity_names", "ei", "queries/split=train", "queries/split=val", "queries/split=test",
          "qrels/split=train", "qrels/split=test", "corpus/split=train", "corpus/split=val"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from wit_retrieval.synth.generate import generate_world
    from wit_retrieval.synth.world import WorldConfig

    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(entities=120, scenes=400, images=False), out)
    return out


def upload(local, target) -> None:
    """Copy a local folder tree onto a prefix (what a user's `aws s3 sync` would do)."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        with fs.open_file(fs.join(target, str(path.relative_to(local))), "wb") as sink:
            sink.write(path.read_bytes())


def _build(runner, wit: str, dumps: str, out: str, workers: str = "2") -> str:
    result = runner.invoke(app, ["build", "ei", "--dumps", dumps, "--wit", wit, "--out", out])
    assert result.exit_code == 0, result.output
    output = result.output
    result = runner.invoke(app, ["build", "mmir", "--wit", wit, "--out", out, "--workers", workers,
                                 "--train-shards", "2"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return output + result.output


def _assert_same_build(local: str, remote: str) -> None:
    for table in TABLES:
        assert read_table_dir(fs.join(remote, table)).equals(read_table_dir(fs.join(local, table))), table
    # the gazetteer cache's names carry a digest of the manifest (which holds its paths): alike otherwise
    local_files, remote_files = (sorted(re.sub(r"-[0-9a-f]{16}\.", "-*.", f) for f in fs.walk_files(root))
                                 for root in (local, remote))
    assert remote_files == local_files
    for name in local_files:
        if name.startswith("exports/"):  # byte-reproducible exports: the same bytes
            assert fs.path(fs.join(remote, name)).read_bytes() == fs.path(fs.join(local, name)).read_bytes(), name


def _assert_only_committed(root: str) -> None:
    """The server's own listing: the committed files, nothing else (no temporary, staging or marker key)."""
    keys, files = raw_keys(root), fs.walk_files(root)
    # pyarrow's S3 client writes an empty "folder/" key where a deletion would leave a folder empty
    # (Arrow's EnsureParentExists); such a marker is allowed only over committed files
    markers = [k for k in keys if k.endswith("/") or k == ""]
    assert sorted(set(keys) - set(markers)) == files
    assert all(any(f.startswith(m) for f in files) for m in markers), markers
    assert keys and not [f for f in keys if "/.tmp-" in f or f.startswith(".tmp-") or ".build-staging" in f]
    assert not [f for f in keys if f.endswith(".pkl")]


def test_build_from_and_to_s3_equals_the_local_build(world, tmp_path, s3_bucket):  # noqa: F811
    runner = CliRunner()
    local = str(tmp_path / "local")
    _build(runner, str(world / "gresearch" / "wit"), str(world), local)
    upload(world / "gresearch" / "wit", f"{s3_bucket}/wit")
    upload(world / "enwiki", f"{s3_bucket}/dumps/enwiki")
    upload(world / "dewiki", f"{s3_bucket}/dumps/dewiki")
    remote = f"{s3_bucket}/root"
    output = _build(runner, f"{s3_bucket}/wit", f"{s3_bucket}/dumps", remote)
    _assert_same_build(local, remote)
    _assert_only_committed(remote)
    # `score --data` reads the split's qrels, queries and corpus from the bucket: the same scores
    qrels = read_table_dir(fs.join(local, "qrels/split=test")).to_pylist()
    run = tmp_path / "run.trec"
    run.write_text("".join(f"{r['query_id']} Q0 {r['image_id'] if n % 2 else qrels[n - 1]['image_id']} 1 1.0 t\n" for n, r in enumerate(qrels)))
    scores = []
    for root in (local, remote):
        result = runner.invoke(app, ["score", str(run), "--data", root, "--split", "test", "--bootstrap", "0",
                                     "--measures", "R@1", "--json", f"{root}/results/run.json"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(fs.path(f"{root}/results/run.json").read_text())["scores"])
    assert scores[0] == scores[1] and 0 < scores[0]["R@1"] < 1
    config = json.loads(fs.path(f"{remote}/config/build_mmir.json").read_text())
    assert config["out"] == remote and config["wit"][0].startswith(f"{s3_bucket}/wit/")
    # the credentials came from the environment: in nothing written or printed
    written = "".join(fs.path(fs.join(remote, f)).read_text() for f in fs.walk_files(remote) if f.endswith(".json"))
    for secret in S3_ENV.values():
        if secret != "us-east-1":
            assert secret not in written and secret not in output


def test_credentials_in_a_uri_stay_out_of_configs_and_output(world, s3_bucket):  # noqa: F811
    bucket = s3_bucket.split("://")[1]
    keyed = f"s3://{S3_ENV['AWS_ACCESS_KEY_ID']}:{S3_ENV['AWS_SECRET_ACCESS_KEY']}@{bucket}"
    upload(world / "gresearch" / "wit", f"{s3_bucket}/wit")
    result = CliRunner().invoke(app, ["build", "ei", "--wit", f"{keyed}/wit", "--out", f"{keyed}/root"])
    assert result.exit_code == 0, result.output
    written = [fs.path(f"{s3_bucket}/root/{f}").read_text() for f in fs.walk_files(f"{s3_bucket}/root")
               if f.endswith(".json")]
    assert any(f"{s3_bucket}/root" in text for text in written)  # the URI is kept, without its secret
    assert not [text for text in written if S3_ENV["AWS_SECRET_ACCESS_KEY"] in text]
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in result.output


def test_build_mmir_on_gcs_equals_the_local_build(world, tmp_path, gcs_bucket):  # noqa: F811
    runner = CliRunner()
    local = str(tmp_path / "local")
    _build(runner, str(world / "gresearch" / "wit"), str(world), local, workers="1")
    upload(world / "gresearch" / "wit", f"{gcs_bucket}/wit")
    remote = f"{gcs_bucket}/root"
    _build(runner, f"{gcs_bucket}/wit", str(world), remote, workers="1")
    _assert_same_build(local, remote)
    _assert_only_committed(remote)
