"""Training state on disk: step checkpoints (weights + optimizer, schedule, RNG, data positions), resume.

Rank 0 writes; every rank's data position is gathered into the checkpoint first. The trainer
state holds tensors and plain values only, so it loads with `torch.load(weights_only=True)`;
the weights are safetensors. A step folder counts once its trainer state (written last,
atomically) is there, so a run killed at any moment resumes from the last complete one.
"""

from __future__ import annotations

import io
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import distributed as dist
from ..errors import ConfigError
from ..io import fs
from ..io.shards import atomic_path
from . import train_uri
from .checkpoint import WEIGHTS, save_checkpoint

if TYPE_CHECKING:
    from .train import Trainer

TRAINER_STATE = "trainer_state.pt"
KEEP_CHECKPOINTS = 2


def check_world_size(checkpoint: Path, state: dict, world: dist.World) -> None:
    before = state.get("world_size", 1)
    if before != world.world_size:
        raise ConfigError(f"{fs.redact(checkpoint)} was trained with {before} process(es) ({state.get('launcher', 'single')}); "
                          f"resume it with {before}, not {world.world_size}, or train into a new --out")


def save_training_checkpoint(trainer: Trainer) -> Path:
    """Write checkpoints/step-N (model + trainer state) and refresh `model/`; keep the last two.

    Every rank calls it (their data positions are gathered); rank 0 writes. On an object store the
    step folder is written locally, then uploaded (train_uri.publish_checkpoint).
    """
    world = trainer.world
    positions = dist.gather_objects(trainer.feed.state(), world)
    if not world.is_main:
        return trainer.out / "model"
    name = f"step-{trainer.step:07d}"
    if fs.is_remote(trainer.out):
        with tempfile.TemporaryDirectory(prefix="wit-retrieval-checkpoint-") as local:
            _write_step(trainer, Path(local) / name, positions)
            train_uri.publish_checkpoint(Path(local) / name, trainer.out, TRAINER_STATE, KEEP_CHECKPOINTS)
        return trainer.out / "model"
    folder = trainer.out / "checkpoints" / name
    _write_step(trainer, folder, positions)
    final, staging = trainer.out / "model", trainer.out / "model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(TRAINER_STATE))
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    for old in checkpoints(trainer.out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_step(trainer: Trainer, folder: Path, positions: list) -> None:
    """Model files, then the trainer state (last: it marks the folder complete)."""
    config, world = trainer.config, trainer.world
    datasets = [f"MMIR:{fs.path(config.data.root).name}:{config.data.train_split}"]
    save_checkpoint(folder, trainer.built, fusion=config.model.fusion, step=trainer.step,
                    training_datasets=datasets, base=config.model.base)
    state = {"step": trainer.step, "optimizer": trainer.optimizer.state_dict(),
             "scheduler": trainer.scheduler.state_dict(), "rng": _rng_state(),
             "world_size": world.world_size, "launcher": world.launcher,
             "loader": config.data.loader, "data": [{"rank": r, **p} for r, p in enumerate(positions)]}
    with atomic_path(folder / TRAINER_STATE) as tmp:  # written last: it marks the folder complete
        torch.save(state, tmp)


def resume(trainer: Trainer) -> None:
    from safetensors.torch import load_file

    found = checkpoints(trainer.out)
    world = trainer.world
    seen = dist.gather_objects(found[-1].name if found else None, world)
    if len(set(seen)) > 1:
        raise ConfigError(f"the ranks see different checkpoints in {fs.redact(trainer.out)} ({seen}); the output "
                          "folder must be one shared folder (or URI) for all nodes")
    if not found:
        return
    latest = found[-1]
    state = load_trainer_state(latest)
    check_world_size(latest, state, world)
    if fs.is_remote(latest):
        from safetensors.torch import load

        trainer.built.model.load_state_dict(load((latest / WEIGHTS).read_bytes()))
    else:
        trainer.built.model.load_state_dict(load_file(str(latest / WEIGHTS), device="cpu"))
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    trainer.step = state["step"]
    if state.get("loader", "memory") != trainer.config.data.loader:
        raise ConfigError(f"{latest} was trained with [data] loader = {state.get('loader', 'memory')!r}; resume it "
                          "with the same loader")
    data = state.get("data") or [{"micro_batch": trainer.step * trainer.config.optim.grad_accum}]
    trainer.feed.restore(data[world.rank] if len(data) > world.rank else data[0])


def checkpoints(out) -> list[Path]:
    """Finished step checkpoints (with trainer state), oldest first (ObjectPaths for a URI output)."""
    return train_uri.step_folders(out, TRAINER_STATE)


def load_trainer_state(folder, *, mmap: bool = False) -> dict:
    """A step's trainer state (tensors and plain values only: weights_only=True)."""
    path = fs.path(folder) / TRAINER_STATE
    if isinstance(path, Path):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)


def _rng_state() -> dict:
    """RNG states as tensors and plain values, so the trainer state loads with weights_only=True."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
