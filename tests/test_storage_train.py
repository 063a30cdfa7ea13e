"""`prepare` and `train` on a data root and outputs in a real S3 server on loopback (moto_server): shards
equal to a local preparation, the same weights as a local run, resume from the bucket's checkpoint,
only committed keys left, no credentials in what is written or printed."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch
from safetensors.torch import load, load_file
from typer.testing import CliRunner

from tests.objectstores import S3_ENV, gcs_bucket, gcs_endpoint, moto_endpoint, raw_keys, s3_bucket  # noqa: F401
from tests.test_models_world import make_world, one_torch_thread, write_store  # noqa: F401
from tests.test_storage_build import _assert_only_committed, upload
from wit_retrieval.cli import app
from wit_retrieval.io import fs
from wit_retrieval.models import train_shards
from wit_retrieval.models.train import train
from wit_retrieval.models.train_config import config_from_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]
CONFIG = """[model]
base = "open_clip:wit-tiny-vit:random"
fusion = "inject"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = make_world(tmp_path_factory.mktemp("world"), entities=6, scenes={"train": 24, "val": 8}, size=32)
    write_store(world.store, world.root.root / "images")
    return world


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WIT_RETRIEVAL_CACHE", str(tmp_path / "cache"))


def _with_credentials(uri: str) -> str:
    """The same URI carrying the credentials (what must never be written or printed)."""
    return uri.replace("s3://", f"s3://{S3_ENV['AWS_ACCESS_KEY_ID']}:{SECRET}@")


def _prepare(runner, config, data: str, out: str) -> dict:
    result = runner.invoke(app, ["prepare", str(config), "--data", data, "--out", out])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0 and SECRET not in result.output, result.output
    return json.loads(result.output[result.output.index("{"):])


def _assert_same_shards(local, remote: str) -> list[dict]:
    """The same files with the same bytes (shards, their counts, the entity store); manifests alike but for
    their inputs and key; only committed keys in the bucket."""
    names = fs.walk_files(local)
    assert fs.walk_files(remote) == names and len(names) > 4
    for name in names:
        if name != "manifest.json":
            assert fs.path(f"{remote}/{name}").read_bytes() == (local / name).read_bytes(), name
    manifests = [json.loads(fs.path(f"{root}/manifest.json").read_text()) for root in (local, remote)]
    assert manifests[0]["shards"] == manifests[1]["shards"] and manifests[0]["bytes"] == manifests[1]["bytes"]
    _assert_only_committed(remote)
    return manifests


def _hard_negatives_file(world, path) -> None:
    """A hard-negatives parquet naming, for each training query, 3 other stored targets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    queries = pq.read_table(world.root.table_split("queries", "train")).to_pylist()
    targets = sorted({q["target_image_id"] for q in queries})
    lists = [[t for t in targets if t != q["target_image_id"]][i % 5:i % 5 + 3] for i, q in enumerate(queries)]
    pq.write_table(pa.table({"query_id": [q["query_id"] for q in queries], "image_ids": lists,
                             "scores": [[1.0] * len(x) for x in lists]}), path)


def test_prepare_on_gcs_equals_the_local_preparation(world, tmp_path, gcs_bucket):  # noqa: F811
    """With hard negatives read from the bucket too: the shards carry the same lists as a local prepare's."""
    _hard_negatives_file(world, tmp_path / "hard.parquet")
    upload(world.root.root, f"{gcs_bucket}/root")
    fs.path(f"{gcs_bucket}/hard.parquet").write_bytes((tmp_path / "hard.parquet").read_bytes())
    runner = CliRunner()
    config = tmp_path / "train.toml"
    for hard, out in ((tmp_path / "hard.parquet", str(tmp_path / "shards")),
                      (f"{gcs_bucket}/hard.parquet", f"{gcs_bucket}/shards")):
        config.write_text(CONFIG + f'[loss]\nhard_negatives = "{hard}"\nhard_negatives_per_query = 2\n')
        data = str(world.root.root) if out.startswith(str(tmp_path)) else f"{gcs_bucket}/root"
        result = _prepare(runner, config, data, out)
    assert result["out"] == f"{gcs_bucket}/shards" and result["samples"] == 24
    _assert_same_shards(tmp_path / "shards", f"{gcs_bucket}/shards")
    with tarfile.open(tmp_path / "shards" / "samples-00000.tar") as tar:
        assert b'"hard": ["' in b"".join(tar.extractfile(m).read() for m in tar if m.name.endswith(".json"))


def test_prepare_on_s3_equals_the_local_preparation_and_resumes(world, tmp_path, s3_bucket, monkeypatch):  # noqa: F811
    config = tmp_path / "train.toml"
    config.write_text(CONFIG)
    upload(world.root.root, f"{s3_bucket}/root")
    runner = CliRunner()
    local = _prepare(runner, config, str(world.root.root), str(tmp_path / "shards"))
    remote = _prepare(runner, config, _with_credentials(f"{s3_bucket}/root"),
                      _with_credentials(f"{s3_bucket}/shards"))
    assert remote["out"] == f"{s3_bucket}/shards" and remote["samples"] == local["samples"] == 24
    manifests = _assert_same_shards(tmp_path / "shards", f"{s3_bucket}/shards")
    assert SECRET not in json.dumps(manifests[1])
    # interrupted: a shard's counts and the manifest gone; only that shard is written again
    fs.path(f"{s3_bucket}/shards/manifest.json").unlink()
    fs.path(f"{s3_bucket}/shards/samples-00003.json").unlink()
    fs.path(f"{s3_bucket}/shards/.tmp-samples-00003.tar.dead").write_bytes(b"left by a killed upload")
    written = []
    original = train_shards._write_shard
    monkeypatch.setattr(train_shards, "_write_shard", lambda out, n, *a: (written.append(n), original(out, n, *a)))
    _prepare(runner, config, f"{s3_bucket}/root", f"{s3_bucket}/shards")
    assert written == [3]
    assert fs.path(f"{s3_bucket}/shards/manifest.json").read_text() == json.dumps(manifests[1], indent=2,
                                                                                  sort_keys=True) + "\n"
    _assert_only_committed(f"{s3_bucket}/shards")


def _config(root: str, out: str):
    return config_from_dict({
        "model": {"base": "open_clip:wit-tiny-vit:random", "fusion": "inject"},
        "data": {"root": root, "workers": 1, "shuffle_buffer": 8},
        "optim": {"steps": 3, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1},
        "run": {"out": out, "checkpoint_every": 0, "eval_every": 3, "log_every": 1, "threads": 1}})


@pytest.mark.slow
def test_train_from_and_to_s3_equals_the_local_run_and_resumes(world, tmp_path, s3_bucket):  # noqa: F811
    upload(world.root.root, f"{s3_bucket}/root")
    local = train(_config(str(world.root.root), str(tmp_path / "local")))
    data, out = _with_credentials(f"{s3_bucket}/root"), _with_credentials(f"{s3_bucket}/run")
    first = train(_config(data, out), stop_after=1)
    assert first["step"] == 1 and first["out"] == f"{s3_bucket}/run"
    assert [p.name for p in fs.path(out).glob("*")] == ["checkpoints", "config.json", "model",
                                                                      "summary.json", "train_log.jsonl",
                                                                      "training.png"]
    # what a killed upload leaves: a step folder without its trainer state, a temporary key
    fs.path(f"{s3_bucket}/run/checkpoints/step-0000002/model.safetensors").write_bytes(b"half a checkpoint")
    fs.path(f"{s3_bucket}/run/model/.tmp-model.safetensors.dead").write_bytes(b"killed")
    resumed = train(_config(data, out))  # finds step 1 in the bucket, not on this disk
    assert local["step"] == resumed["step"] == 3
    assert resumed["val"] == local["val"] and "R@10" in local["val"]  # validation reads the bucket's image store
    a = load_file(str(tmp_path / "local" / "model" / "model.safetensors"))
    b = load(fs.path(f"{s3_bucket}/run/model/model.safetensors").read_bytes())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    early = load(fs.path(f"{s3_bucket}/run/checkpoints/step-0000001/model.safetensors").read_bytes())
    assert not all(torch.equal(a[k], early[k]) for k in a)  # the comparison above could fail
    log = [json.loads(line) for line in fs.path(f"{s3_bucket}/run/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "total" in r] == [1, 2, 3] and log[-1]["val"] == local["val"]
    files = fs.walk_files(f"{s3_bucket}/run")
    assert [f for f in files if f.startswith("checkpoints/")] == [
        f"checkpoints/step-{s:07d}/{n}" for s in (1, 3)
        for n in ("model.safetensors", "open_clip_config.json", "retriever.json", "trainer_state.pt")]
    _assert_only_committed(f"{s3_bucket}/run")
    _assert_only_committed(f"{s3_bucket}/root")  # the default prepared folder, root/train_shards/<key>
    written = "".join(fs.path(f"{s3_bucket}/run/{n}").read_text() for n in ("config.json", "summary.json",
                                                                           "train_log.jsonl"))
    assert SECRET not in written and SECRET not in json.dumps(resumed)
    # evaluate reads the final model from the bucket (a cached copy): the same scores as from the local run
    runner, scores = CliRunner(), []
    for checkpoint, name in ((tmp_path / "local" / "model", "e-local"), (f"{out}/model", "e-s3")):
        result = runner.invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--data", str(world.root.root),
                                     "--split", "val", "--out", str(tmp_path / name), "--bootstrap", "0"])
        assert result.exit_code == 0 and SECRET not in result.output, result.output
        scores.append((tmp_path / name / "results.json").read_text())
    assert json.loads(scores[0])["scores"] == json.loads(scores[1])["scores"] and SECRET not in scores[1]
