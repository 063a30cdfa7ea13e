"""Whole runs under real torchrun / SLURM variables on CPU (gloo): an error on one rank ends every
rank quickly with its one-line error; inject learns under torchrun as one process does; QAT works
under torchrun. (Equivalence with one process and exact resume: tests/test_train_distributed.py.)"""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.test_models_world import make_world, write_store
from tests.torchrun_runs import RUN, STEPS, TORCHRUN, env, equivalence_setup, log, port, run_all, torchrun_two
from wit_retrieval.models.train_data import read_queries

pytestmark = pytest.mark.slow
TEST = 200  # test scenes of the learning run: chance R@10 is 10 / TEST


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dp")
    return base, equivalence_setup(base)


def test_error_on_one_rank_ends_all_quickly(setup, tmp_path):
    """A rank whose data root is broken fails; the other ends within seconds with that rank's error."""
    base, config = setup
    out, master = tmp_path / "err", port()
    envs = [env(SLURM_PROCID=str(i), SLURM_NTASKS="2", SLURM_LOCALID=str(i), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(master)) for i in range(2)]
    commands = [RUN + [str(config), "--out", str(out)], RUN + [str(config), "--out", str(out), "--set",
                                                              "loss.hard_negatives=" + str(base / "missing.trec")]]
    started = time.monotonic()
    results = run_all(commands, envs, timeout=120)
    assert time.monotonic() - started < 90
    assert all(r.returncode != 0 for r in results)
    assert "missing.trec" in results[1].stderr
    assert "rank 1" in results[0].stderr and "missing.trec" in results[0].stderr, results[0].stderr[-2000:]
    assert results[0].stderr.strip().splitlines()[-1].startswith("error:")


def test_inject_learns_under_torchrun(tmp_path):
    """torchrun with 2 processes learns entities from images as one process does, at the issue's size:
    200 steps on a world of 120 entities (48 plain icons and 72 dotted or small ones) and 1,200
    training scenes; the final model stays at OUT/model and `evaluate --checkpoint` reads it."""
    from typer.testing import CliRunner

    from tests.test_train_learns import text_oracle_recall
    from wit_retrieval.cli import app

    world = make_world(tmp_path / "root", entities=120, scenes={"train": 1200, "val": 20, "test": TEST}, size=32)
    write_store(world.store, world.root.images)
    common = ["--data", str(world.root.root), "--set", "optim.batch_size=32", "--set", "optim.warmup_steps=10",
              "--set", "run.eval_every=0", "--set", "run.checkpoint_every=0"]
    [result] = run_all([TORCHRUN + ["--standalone", "--nproc_per_node", "2", "-m", "wit_retrieval", "train",
                                    "baselines/inject-mini.toml", "--out", str(tmp_path / "run"), "--set",
                                    "optim.steps=200", *common]], [env()], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert max(r.get("step", 0) for r in log(tmp_path / "run")) == 200
    runner = CliRunner()
    untrained = runner.invoke(app, ["train", "baselines/inject-mini.toml", "--out", str(tmp_path / "zero"),
                                    "--set", "optim.steps=0", *common])
    assert untrained.exit_code == 0, untrained.output
    recall = {}
    for name in ("run", "zero"):
        result = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / name / "model"), "--data",
                                     str(world.root.root), "--out", str(tmp_path / f"eval-{name}"),
                                     "--bootstrap", "0"])
        assert result.exit_code == 0, result.output
        recall[name] = json.loads((tmp_path / f"eval-{name}" / "results.json").read_text())["scores"]["R@10"]
    oracle = text_oracle_recall(read_queries(world.root.root, "test"), 10)
    print(f"R@10 run {recall['run']:.3f} untrained {recall['zero']:.3f} chance {10 / TEST:.3f} oracle {oracle:.3f}")
    assert recall["run"] > 3 * 10 / TEST and recall["run"] > recall["zero"] + 0.1, recall
    assert recall["run"] > oracle + 0.05, (recall, oracle)  # and beyond what any text-only model can do


def test_quantization_aware_training_under_torchrun(setup, tmp_path):
    """[quant] under torchrun: both ranks fake-quantize from start_step, rank 0 writes the int4 export."""
    base, config = setup
    out = tmp_path / "qat"
    # one checkpoint, at the end (with the export): checkpoints in between test nothing more here
    [result] = run_all([torchrun_two(config, out, "--set", "quant.bits=4", "--set", "quant.start_step=2",
                                     checkpoint_every=0)], [env()])
    assert result.returncode == 0, result.stderr[-3000:]
    spec = json.loads((out / "model" / "retriever.json").read_text())
    assert spec["quant"]["scheme"] == "int4" and spec["quant"]["active"]
    export = load_file(str(out / "model" / spec["quant"]["export"]))
    packed = [t for name, t in export.items() if t.dtype == torch.uint8]
    assert packed and all(t.shape[-1] >= 1 for t in packed)
    assert [r["step"] for r in log(out)] == list(range(1, STEPS + 1))
