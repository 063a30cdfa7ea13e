"""Data parallel training with real torchrun / gloo on CPU: 2 processes (one node, two loopback
"nodes", SLURM's variables) compute the same losses and gradients at every step and end with the
same weights as 1 process, with the duplicate mask, hard negatives and gradient accumulation on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.test_models_world import make_world, write_store
from wit_retrieval.io.runs import write_trec
from wit_retrieval.models.train_data import read_queries

pytestmark = pytest.mark.slow
STEPS = 5
RUN = [sys.executable, "-m", "wit_retrieval", "train"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dp")
    world = make_world(base / "root", entities=6, scenes={"train": 32, "val": 8}, size=32)
    write_store(world.store, world.root.images)
    queries = read_queries(world.root.root, "train")
    targets = [q["target_image_id"] for q in queries]
    write_trec({q["query_id"]: [(t, 1.0 / (n + 1)) for n, t in enumerate(targets[n % 7:n % 7 + 4])]
                for n, q in enumerate(queries)}, base / "first.trec")
    config = base / "dp.toml"
    config.write_text(f"""
[model]
base = "open_clip:wit-tiny-vit:random"
fusion = "inject"
[data]
root = "{world.root.root}"
loader = "memory"            # the same global batches for any world size
[optim]
steps = {STEPS}
batch_size = 8
grad_accum = 2
lr = 1e-3
warmup_steps = 2
[loss]
duplicate_mask = true
hard_negatives = "{base / 'first.trec'}"
hard_negatives_per_query = 2
spread_out_weight = 0.1
[run]
checkpoint_every = 0
eval_every = 0
log_every = 1
threads = 1
""")
    return base, config


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_",
                                                                    "MASTER_", "GROUP_RANK"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_all(commands: list[list[str]], envs: list[dict], timeout: float = 240) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c, e in zip(commands, envs)]
    results = []
    for proc, command in zip(procs, commands):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _weights(out) -> dict:
    return load_file(str(out / "model" / "model.safetensors"))


def _assert_same(reference, other) -> None:
    a, b = _log(reference), _log(other)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        for key in ("total", "loss", "spread_out", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), (key, x, y)
    wa, wb = _weights(reference), _weights(other)
    assert wa.keys() == wb.keys()
    squares = [(float((wa[n] - wb[n]).norm()) ** 2, float(wa[n].norm()) ** 2) for n in wa]
    assert sum(d for d, _ in squares) ** 0.5 <= 1e-5 * sum(n for _, n in squares) ** 0.5
    for name in wa:
        x, y = wa[name], wb[name]
        if name.endswith("attn.in_proj_bias"):
            # the key bias has an exactly zero gradient (softmax ignores a shift): Adam turns its
            # float noise into lr-sized steps, so only the query and value biases are comparable
            x, y = x.view(3, -1)[[0, 2]], y.view(3, -1)[[0, 2]]
        diff = float((x - y).norm())
        assert diff <= 1e-5 * max(float(x.norm()), 1e-3), name


@pytest.fixture(scope="module")
def single(setup):
    base, config = setup
    out = base / "single"
    [result] = _run_all([RUN + [str(config), "--out", str(out)]], [_env()])
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(out)
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in log)
    assert json.loads((out / "summary.json").read_text())["world_size"] == 1
    return out, result


def _torchrun_two(config, out, *extra) -> list[str]:
    return TORCHRUN + ["--standalone", "--nproc_per_node", "2", "-m", "wit_retrieval", "train", str(config),
                       "--out", str(out), "--set", "run.checkpoint_every=1", *extra]


@pytest.fixture(scope="module")
def two(setup):
    """The 2-process run (checkpointing every step, which changes nothing in the weights)."""
    base, config = setup
    [result] = _run_all([_torchrun_two(config, base / "two")], [_env()])
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "two"


def test_two_processes_match_one(setup, single, two, tmp_path):
    base, config = setup
    out = two
    _assert_same(single[0], out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == STEPS
    assert {"samples_per_s", "samples_per_s_per_device"} <= set(_log(out)[0])
    # accumulation keeps every micro-batch as a negative: 2 x 8 accumulated is one batch of 16
    other = tmp_path / "accum1"
    [result] = _run_all([RUN + [str(config), "--out", str(other), "--set", "optim.grad_accum=1",
                                "--set", "optim.batch_size=16"]], [_env()])
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same(single[0], other)
    # and the comparison is tight enough to fail: one loss off by 1e-4 relative
    log = _log(other)
    log[2]["loss"] *= 1 + 1e-4
    (other / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    with pytest.raises(AssertionError):
        _assert_same(single[0], other)


def test_two_loopback_nodes_match_one(setup, single, tmp_path):
    base, config = setup
    out, port = tmp_path / "nodes", _port()
    commands = [TORCHRUN + ["--nnodes", "2", "--node_rank", str(i), "--nproc_per_node", "1", "--master_addr",
                            "127.0.0.1", "--master_port", str(port), "-m", "wit_retrieval", "train", str(config),
                            "--out", str(out)] for i in range(2)]
    results = _run_all(commands, [_env(), _env()])
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    _assert_same(single[0], out)


def test_slurm_variables_match_one(setup, single, tmp_path):
    base, config = setup
    out, port = tmp_path / "slurm", _port()
    envs = [_env(SLURM_PROCID=str(i), SLURM_NTASKS="2", SLURM_LOCALID=str(i), SLURM_NODEID="0", SLURM_NNODES="1",
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)) for i in range(2)]
    results = _run_all([RUN + [str(config), "--out", str(out)]] * 2, envs)
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    _assert_same(single[0], out)
    # only rank 0 printed the summary; rank 1's warnings carry its rank
    assert json.loads(results[0].stdout)["world_size"] == 2 and results[1].stdout.strip() == ""
    warned = [line for line in results[1].stderr.splitlines() if "random weights" in line]
    assert warned and all(line.startswith("[rank 1] ") for line in warned), results[1].stderr[-2000:]
    assert "samples/s" not in results[1].stderr  # the progress bar is rank 0's alone


def test_error_on_one_rank_ends_all_quickly(setup, tmp_path):
    """A rank whose data root is broken fails; the other ends within seconds with that rank's error."""
    base, config = setup
    out, port = tmp_path / "err", _port()
    envs = [_env(SLURM_PROCID=str(i), SLURM_NTASKS="2", SLURM_LOCALID=str(i), MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=str(port)) for i in range(2)]
    commands = [RUN + [str(config), "--out", str(out)], RUN + [str(config), "--out", str(out), "--set",
                                                              "loss.hard_negatives=" + str(base / "missing.trec")]]
    started = time.monotonic()
    results = _run_all(commands, envs, timeout=120)
    assert time.monotonic() - started < 90
    assert all(r.returncode != 0 for r in results)
    assert "missing.trec" in results[1].stderr
    assert "rank 1" in results[0].stderr and "missing.trec" in results[0].stderr, results[0].stderr[-2000:]
    assert results[0].stderr.strip().splitlines()[-1].startswith("error:")


def test_batch_must_split_and_world_size_is_kept(setup, single, tmp_path):
    """Both are refused before any rendezvous, on every rank alike (so one rank shows it)."""
    import shutil

    base, config = setup
    slurm = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_port())}
    [result] = _run_all([RUN + [str(config), "--out", str(tmp_path / "three")]], [_env(SLURM_NTASKS="3", **slurm)])
    assert result.returncode == 1
    assert "must split evenly over the 3 processes" in result.stderr.strip().splitlines()[-1]
    # resuming the single-process run with two processes is refused, naming the original
    out = tmp_path / "resume"
    shutil.copytree(single[0], out)
    [result] = _run_all([RUN + [str(config), "--out", str(out), "--set", f"optim.steps={STEPS + 1}"]],
                        [_env(SLURM_NTASKS="2", **slurm)])
    assert result.returncode == 1
    assert "trained with 1 process(es)" in result.stderr and "resume it with 1, not 2" in result.stderr


def test_sigkill_then_same_command_resumes_exactly(setup, two, tmp_path):
    """Two processes killed with SIGKILL mid-run, started again: the same weights as the uninterrupted run."""
    import signal

    base, config = setup
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun_two(config, killed), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not list(
            (killed / "checkpoints").glob("step-*/trainer_state.pt")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log = _log(killed)
    assert log and log[-1]["step"] < STEPS, "the run ended before it could be killed"
    [result] = _run_all([_torchrun_two(config, killed)], [_env()])
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _weights(two), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(sorted((killed / "checkpoints").glob("step-*"))[-1] / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and [d["rank"] for d in state["data"]] == [0, 1]


def test_inject_learns_under_torchrun(tmp_path):
    """torchrun with 2 processes on a demo-like world learns entities from images, as one process does."""
    from typer.testing import CliRunner

    from tests.test_train_learns import text_oracle_recall
    from wit_retrieval.cli import app

    world = make_world(tmp_path / "root", entities=12, scenes={"train": 300, "val": 20, "test": 200}, size=32)
    write_store(world.store, world.root.images)
    common = ["--data", str(world.root.root), "--set", "optim.batch_size=32", "--set", "optim.warmup_steps=10",
              "--set", "run.eval_every=0", "--set", "run.checkpoint_every=0"]
    [result] = _run_all([TORCHRUN + ["--standalone", "--nproc_per_node", "2", "-m", "wit_retrieval", "train",
                                     "baselines/inject-mini.toml", "--out", str(tmp_path / "run"), "--set",
                                     "optim.steps=40", *common]], [_env()])
    assert result.returncode == 0, result.stderr[-3000:]
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
    assert recall["run"] > 3 * 10 / 200 and recall["run"] > recall["zero"] + 0.1, recall
    assert recall["run"] > oracle + 0.05, (recall, oracle)  # and beyond what any text-only model can do


def test_quantization_aware_training_under_torchrun(setup, tmp_path):
    """[quant] under torchrun: both ranks fake-quantize from start_step, rank 0 writes the int4 export."""
    base, config = setup
    out = tmp_path / "qat"
    [result] = _run_all([_torchrun_two(config, out, "--set", "quant.bits=4", "--set", "quant.start_step=2")],
                        [_env()])
    assert result.returncode == 0, result.stderr[-3000:]
    spec = json.loads((out / "model" / "retriever.json").read_text())
    assert spec["quant"]["scheme"] == "int4" and spec["quant"]["active"]
    export = load_file(str(out / "model" / spec["quant"]["export"]))
    packed = [t for name, t in export.items() if t.dtype == torch.uint8]
    assert packed and all(t.shape[-1] >= 1 for t in packed)
    assert [r["step"] for r in _log(out)] == list(range(1, STEPS + 1))
