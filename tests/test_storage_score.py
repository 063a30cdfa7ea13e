"""`score` reading its run (and sidecar) and qrels from the loopback S3 server and writing its JSON there."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.objectstores import S3_ENV, moto_endpoint, raw_keys, s3_bucket  # noqa: F401
from wit_retrieval.cli import app
from wit_retrieval.io import fs

RUN = "".join(f"q{q} Q0 img{(q + k) % 5} {k + 1} {10 - k} test\n" for q in range(4) for k in range(3))
QRELS = "".join(f"q{q} 0 img{q} 1\n" for q in range(4))


def test_score_run_and_qrels_on_s3_equals_local(tmp_path, s3_bucket):  # noqa: F811
    (tmp_path / "run.trec").write_text(RUN)
    (tmp_path / "run.trec.meta.json").write_text('{"model": "tiny"}')
    (tmp_path / "qrels.txt").write_text(QRELS)
    for name in ("run.trec", "run.trec.meta.json", "qrels.txt"):
        with fs.open_file(f"{s3_bucket}/in/{name}", "wb") as f:
            f.write((tmp_path / name).read_bytes())
    runner = CliRunner()
    args = ["--measures", "R@1,MRR@10", "--bootstrap", "0"]
    local = runner.invoke(app, ["score", str(tmp_path / "run.trec"), "--qrels", str(tmp_path / "qrels.txt"),
                                "--json", str(tmp_path / "out.json"), *args])
    assert local.exit_code == 0, local.output
    bucket = s3_bucket.split("://")[1]
    keyed = f"s3://{S3_ENV['AWS_ACCESS_KEY_ID']}:{S3_ENV['AWS_SECRET_ACCESS_KEY']}@{bucket}"
    remote = runner.invoke(app, ["score", f"{keyed}/in/run.trec", "--qrels", f"{s3_bucket}/in/qrels.txt",
                                 "--json", f"{s3_bucket}/results/out.json", *args])
    assert remote.exit_code == 0, remote.output
    mine, theirs = json.loads((tmp_path / "out.json").read_text()), json.loads(fs.path(f"{s3_bucket}/results/out.json").read_text())
    assert theirs["scores"] == mine["scores"] and theirs["run_metadata"]["model"] == "tiny"
    assert theirs["run_metadata"]["run_file"] == f"{s3_bucket}/in/run.trec"  # redacted: no key, no secret
    text = fs.path(f"{s3_bucket}/results/out.json").read_text()
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in text and S3_ENV["AWS_SECRET_ACCESS_KEY"] not in remote.output
    # committed, no temporary key (only pyarrow's empty folder marker over it, see docs/storage.md)
    assert [k for k in raw_keys(f"{s3_bucket}/results") if k and not k.endswith("/")] == ["out.json"]
