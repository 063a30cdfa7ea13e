"""Helpers of the data-parallel training tests (tests/test_train_distributed.py, tests/test_train_torchrun.py).

Every process that trains imports torch and open_clip (most of a tiny run's cost), so the tests
launch real processes only where the launcher is what they test (torchrun, SLURM's variables, two
loopback nodes, a SIGKILL); single-process runs and refusals run `wit-retrieval train` through
the CLI in the test process itself (`train_here`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_models_world import make_world, write_store

STEPS = 5
RUN = [sys.executable, "-m", "wit_retrieval", "train"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
LAUNCHER_VARS = ("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_", "MASTER_", "GROUP_RANK")
LOSS_KEYS = ("total", "loss", "spread_out", "grad_norm")


def equivalence_setup(base: Path) -> Path:
    """A tiny world, a hard-negatives run and the config of the equivalence runs (K = STEPS steps of
    wit-tiny-vit with the duplicate mask, hard negatives, spread-out and accumulation on)."""
    from wit_retrieval.io.runs import write_trec
    from wit_retrieval.models.train_data import read_queries

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
    return config


def env(**extra) -> dict:
    """This environment without any launcher's variables, one thread, offline; plus `extra`."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    out.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out.update(extra)
    return out


def port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(commands: list[list[str]], envs: list[dict], timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Start every command at once (the ranks of one run), wait for all."""
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c, e in zip(commands, envs)]
    results = []
    for proc, command in zip(procs, commands):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def torchrun_two(config, out, *extra, checkpoint_every: int = 1) -> list[str]:
    """`torchrun --standalone --nproc_per_node 2 -m wit_retrieval train CONFIG --out OUT` (checkpoints every step)."""
    return TORCHRUN + ["--standalone", "--nproc_per_node", "2", "-m", "wit_retrieval", "train", str(config),
                       "--out", str(out), "--set", f"run.checkpoint_every={checkpoint_every}", *extra]


def train_here(args: list[str], **launcher):
    """`wit-retrieval train ARGS` through the CLI in this process, seeing only the launcher variables given.

    Nothing here may reach a rendezvous: a process group would wait for ranks that never come, so
    trying to start one fails the test at once instead.
    """
    import torch
    from typer.testing import CliRunner

    from wit_retrieval import distributed
    from wit_retrieval.cli import app

    original = distributed.process_group

    def no_rendezvous(world, *args, **kwargs):
        if world.distributed:
            raise AssertionError(f"an in-process run tried to start a process group for {world}")
        return original(world, *args, **kwargs)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(LAUNCHER_VARS):
                patch.delenv(key)
        for key, value in launcher.items():
            patch.setenv(key, value)
        patch.setattr(distributed, "process_group", no_rendezvous)
        try:
            return CliRunner().invoke(app, ["train", *args])
        finally:
            torch.set_num_threads(threads)  # [run] threads must not outlive the run in this worker


def log(out) -> list[dict]:
    """The run's JSONL log records, in order."""
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def steps(out) -> list[dict]:
    """One log record per step. A run killed and resumed logs again the steps after its last checkpoint:
    an exact resume logs the same losses for them, which is checked here."""
    by_step: dict[int, dict] = {}
    for record in log(out):
        if "step" not in record or "total" not in record:
            continue
        before = by_step.get(record["step"])
        if before is not None:
            assert [before[k] for k in LOSS_KEYS] == [record[k] for k in LOSS_KEYS], (before, record)
        by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def weights(out) -> dict:
    """The final model's tensors."""
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))
