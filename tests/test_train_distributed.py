"""Data parallel training with real torchrun / gloo on CPU: 2 processes (one node, two loopback
"nodes", SLURM's variables) compute the same losses and gradients at every step and end with the
same weights as 1 process, with the duplicate mask, hard negatives and gradient accumulation on;
the 2-process torchrun run is killed with SIGKILL mid-run and resumed, exactly.

(Errors, learning and QAT under torchrun: tests/test_train_torchrun.py; the two files run on
separate xdist workers.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from tests.torchrun_runs import (
    RUN,
    STEPS,
    TORCHRUN,
    env,
    equivalence_setup,
    log,
    port,
    run_all,
    steps,
    torchrun_two,
    train_here,
    weights,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dp")
    return base, equivalence_setup(base)


def _assert_same(reference, other) -> None:
    a, b = steps(reference), steps(other)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        for key in ("total", "loss", "spread_out", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), (key, x, y)
    wa, wb = weights(reference), weights(other)
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
    """The 1-process reference, run through the CLI in this process (a process start costs more than it)."""
    base, config = setup
    out = base / "single"
    result = train_here([str(config), "--out", str(out)])
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    records = log(out)
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in records)
    assert json.loads((out / "summary.json").read_text())["world_size"] == 1
    return out


@pytest.fixture(scope="module")
def two(setup):
    """The 2-process torchrun run, killed with SIGKILL after its first checkpoint and started again
    with the same command; returns its folder and the last step the killed run had logged."""
    base, config = setup
    out = base / "two"
    proc = subprocess.Popen(torchrun_two(config, out), env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not list(
            (out / "checkpoints").glob("step-*/trainer_state.pt")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = log(out)[-1]["step"] if (out / "train_log.jsonl").exists() else 0
    [result] = run_all([torchrun_two(config, out)], [env()])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, killed_at


@pytest.fixture(scope="module")
def slurm(setup):
    """2 processes started as srun starts them (SLURM's variables, MASTER_ADDR/PORT from the batch script)."""
    base, config = setup
    out, master = base / "slurm", port()
    envs = [env(SLURM_PROCID=str(i), SLURM_NTASKS="2", SLURM_LOCALID=str(i), SLURM_NODEID="0", SLURM_NNODES="1",
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(master)) for i in range(2)]
    results = run_all([RUN + [str(config), "--out", str(out)]] * 2, envs)
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    return out, results


def test_two_processes_match_one(setup, single, two, tmp_path):
    base, config = setup
    out, _ = two
    _assert_same(single, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == STEPS
    assert {"samples_per_s", "samples_per_s_per_device"} <= set(log(out)[0])
    # accumulation keeps every micro-batch as a negative: 2 x 8 accumulated is one batch of 16
    other = tmp_path / "accum1"
    result = train_here([str(config), "--out", str(other), "--set", "optim.grad_accum=1",
                         "--set", "optim.batch_size=16"])
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    _assert_same(single, other)
    # and the comparison is tight enough to fail: one loss off by 1e-4 relative
    records = log(other)
    records[2]["loss"] *= 1 + 1e-4
    (other / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(AssertionError):
        _assert_same(single, other)


def test_two_loopback_nodes_match_one(setup, single, tmp_path):
    base, config = setup
    out, master = tmp_path / "nodes", port()
    commands = [TORCHRUN + ["--nnodes", "2", "--node_rank", str(i), "--nproc_per_node", "1", "--master_addr",
                            "127.0.0.1", "--master_port", str(master), "-m", "wit_retrieval", "train", str(config),
                            "--out", str(out)] for i in range(2)]
    results = run_all(commands, [env(), env()])
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    _assert_same(single, out)


def test_slurm_variables_match_one(single, slurm):
    out, results = slurm
    _assert_same(single, out)
    # only rank 0 printed the summary; rank 1's warnings carry its rank
    assert json.loads(results[0].stdout)["world_size"] == 2 and results[1].stdout.strip() == ""
    warned = [line for line in results[1].stderr.splitlines() if "random weights" in line]
    assert warned and all(line.startswith("[rank 1] ") for line in warned), results[1].stderr[-2000:]
    assert "samples/s" not in results[1].stderr  # the progress bar is rank 0's alone


def test_sigkill_then_same_command_resumes_exactly(two, slurm):
    """The 2-process run killed with SIGKILL mid-run and started again ends with exactly the weights
    of an uninterrupted 2-process run (the SLURM-started one: same ranks, same global batches)."""
    out, killed_at = two
    assert 1 <= killed_at < STEPS, "the run was not killed mid-run"
    a, b = weights(slurm[0]), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(sorted((out / "checkpoints").glob("step-*"))[-1] / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and [d["rank"] for d in state["data"]] == [0, 1]


def test_batch_must_split_and_world_size_is_kept(setup, single, tmp_path):
    """Both are refused before any rendezvous, on every rank alike (so one rank, here in this process, shows it)."""
    base, config = setup
    slurm_vars = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port())}
    result = train_here([str(config), "--out", str(tmp_path / "three")], SLURM_NTASKS="3", **slurm_vars)
    assert result.exit_code == 1, (result.output[-3000:], result.exception)
    assert "must split evenly over the 3 processes" in result.stderr.strip().splitlines()[-1]
    # resuming the single-process run with two processes is refused, naming the original
    out = tmp_path / "resume"
    shutil.copytree(single, out)
    result = train_here([str(config), "--out", str(out), "--set", f"optim.steps={STEPS + 1}"], SLURM_NTASKS="2",
                        **slurm_vars)
    assert result.exit_code == 1, (result.output[-3000:], result.exception)
    assert "trained with 1 process(es)" in result.stderr and "resume it with 1, not 2" in result.stderr
