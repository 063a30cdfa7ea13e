"""Contrastive training of mixed-modal retrievers (`wit-retrieval train CONFIG`).

Both towers train jointly on (query -> target scene), entity images going through the same
image tower as targets. AdamW with warm-up and cosine decay, gradient accumulation with cached
features, bf16 autocast on GPUs, data parallel under torchrun or SLURM (see distributed.py and
train_step.py: `optim.batch_size` is the global micro-batch, split over processes, with global
in-batch negatives), safetensors checkpoints every N steps and on exit written by rank 0, exact
resume (model, optimizer, schedule, RNG and data position), validation through the scorer on
rank 0, JSONL logs and a plot.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import distributed as dist
from ..errors import ConfigError
from ..io import fs
from ..io.shards import atomic_path, write_json_atomic
from .checkpoint import Built, build_retriever
from .fusion import get_fusion
from .qat import attach_qat, check_resume
from .train_config import TrainConfig
from .train_feeds import make_feed
from .train_state import check_world_size, checkpoints, load_trainer_state, resume, save_training_checkpoint
from .train_uri import RunLog


@dataclass
class Trainer:
    """Everything a step needs; built once by `prepare`."""

    config: TrainConfig
    built: Built
    fusion: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    feed: object                     # train_data.IndexFeed or train_stream.StreamFeed
    store: object                    # the image store (validation)
    device: str
    out: Path                        # or an io.fs.ObjectPath (s3://, gs://)
    step: int = 0
    data_counts: dict = field(default_factory=dict)
    teacher: object = None           # distill.TeacherCache when [distill] is on
    world: dist.World = field(default_factory=dist.World)


def train(config: TrainConfig, *, store=None, stop_after: int | None = None) -> dict:
    """Train (resuming from the latest checkpoint in the output folder); returns a summary.

    Under torchrun or SLURM (see distributed.py) every process runs this; rank 0 logs, validates
    and writes; the others return the same summary without writing it.
    """
    world = dist.world_from_env()
    dist.rank_prefixed_warnings(world)
    _preflight(config, world)
    device = dist.device_for(world)
    with dist.process_group(world, device):
        trainer = prepare(config, store, world=world, device=device)
        with _stop_on_signal() as stop:
            return _train_loop(trainer, config, store, stop_after, stop)


def _train_loop(trainer: Trainer, config: TrainConfig, store, stop_after: int | None, stop) -> dict:
    main, world = trainer.world.is_main, trainer.world
    log = RunLog(trainer.out) if main else None
    started, seen = time.perf_counter(), 0
    last_val: dict = {}
    interrupted = False
    per_step = config.optim.batch_size * config.optim.grad_accum
    with _progress(main, config.optim.steps, trainer.step) as advance:
        while trainer.step < config.optim.steps:
            if stop_after is not None and trainer.step >= stop_after:
                break
            tick = time.perf_counter()
            parts, interrupted = train_step(trainer, stop=stop.is_set())
            seen += per_step
            step = trainer.step
            rate = per_step / (time.perf_counter() - tick)
            advance(loss=parts["total"], rate=rate)
            if main and (step % config.run.log_every == 0 or step == config.optim.steps):
                log.write({"step": step, **parts, "lr": trainer.scheduler.get_last_lr()[0],
                           "samples_per_s": round(rate, 2),
                           "samples_per_s_per_device": round(rate / world.world_size, 2)})
            if main and config.run.eval_every and (step % config.run.eval_every == 0
                                                   or step == config.optim.steps):
                last_val = validate(trainer, store)
                log.write({"step": step, "val": last_val})
            if interrupted:
                break
            if config.run.checkpoint_every and step % config.run.checkpoint_every == 0:
                save_training_checkpoint(trainer)
                if main:
                    log.publish()
    seconds = time.perf_counter() - started
    save_training_checkpoint(trainer)
    skipped: dict[str, int] = {}
    for counts in dist.gather_objects(trainer.feed.counts, world):  # images skipped, per class, all ranks
        for key, value in counts.items():
            skipped[key] = skipped.get(key, 0) + value
    summary = {"out": fs.redact(trainer.out), "step": trainer.step, "checkpoint": fs.redact(trainer.out / "model"),
               "seconds": round(seconds, 2), "samples_per_s": round(seen / seconds, 2) if seconds else None,
               "world_size": world.world_size, "rank": world.rank, "val": last_val, "interrupted": interrupted,
               "data": {**trainer.data_counts, **skipped}}
    if main:
        write_json_atomic(trainer.out / "summary.json", summary)
        log.publish()
        plot_training(log.path, trainer.out / "training.png")
    if interrupted:
        raise KeyboardInterrupt
    return summary


@contextlib.contextmanager
def _progress(enabled: bool, total: int, done: int):
    """Rank 0's progress bar (loss and samples/s); a no-op elsewhere."""
    if not enabled:
        yield lambda **fields: None
        return
    from rich.progress import TextColumn

    from ..progress import make_progress

    with make_progress(TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} samples/s")) as bar:
        task = bar.add_task("training", total=total, completed=done, loss=float("nan"), rate=0.0)
        yield lambda **fields: bar.update(task, advance=1, **fields)


@contextlib.contextmanager
def _stop_on_signal():
    """SIGTERM (a scheduler's kill) or Ctrl-C asks the run to stop after the current step, with a checkpoint.

    The request travels with the step's collective, so every rank stops after the same step; a
    second Ctrl-C interrupts at once.
    """
    import signal
    import threading

    stop = threading.Event()

    def request(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, request) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare(config: TrainConfig, store=None, *, world: dist.World | None = None, device: str | None = None
            ) -> Trainer:
    """Seed, build the model, optimizer, schedule and data, and resume if a checkpoint exists."""
    world = world or dist.World()
    _preflight(config, world)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    _seed_everything(config.run.seed)
    fusion = get_fusion(config.model.fusion)
    heads = dict(config.model.heads)
    if fusion.head and fusion.head not in heads:
        heads[fusion.head] = {}
    built = build_retriever(config.model.base, heads, seed=config.run.seed)
    logit_scale = built.model.clip.logit_scale
    with torch.no_grad():
        logit_scale.fill_(math.log(1 / config.loss.temperature))
    logit_scale.requires_grad_(config.loss.learn_temperature)
    _freeze(built.model, config)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if world.distributed and device.startswith("cuda"):
        # BatchNorm statistics over the global batch (gloo/CPU has no SyncBatchNorm: see docs/training.md)
        built.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(built.model)
    built.model.to(device).train()
    _speed_options(built.model, config)
    optimizer = _optimizer(built.model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    if store is None and config.data.loader == "memory":
        store = _open_store(config)
    feed, counts, teacher = make_feed(config, store, built, world, device)
    out = fs.path(config.run.out)
    check_resume(out, config.quant)
    out.mkdir(parents=True, exist_ok=True)
    if world.is_main:  # URIs without credentials (user:secret@, secret query parameters)
        write_json_atomic(out / "config.json", fs.redact_all(config.to_dict()))
    trainer = Trainer(config, built, fusion, optimizer, scheduler, feed, store, device, out, data_counts=counts,
                      teacher=teacher, world=world)
    resume(trainer)
    # [quant]: fake-quantized weights from start_step (a model transformation; checkpoints add the export)
    attach_qat(built.model, config.quant, optimizer, step=trainer.step, spec=built.spec)
    dist.broadcast_parameters(built.model, world)
    return trainer


def _preflight(config: TrainConfig, world: dist.World) -> None:
    """Refusals every rank reaches alike before any rendezvous (so none waits for the others)."""
    if not config.data.root:
        raise ConfigError("[data] root is not set: pass --data ROOT or set it in the config")
    if config.optim.batch_size % world.world_size:
        raise ConfigError(f"[optim] batch_size {config.optim.batch_size} is the global micro-batch and must "
                          f"split evenly over the {world.world_size} processes; use a multiple of "
                          f"{world.world_size}")
    found = checkpoints(config.run.out)
    if found:
        check_world_size(found[-1], load_trainer_state(found[-1], mmap=True), world)


def train_step(trainer: Trainer, stop: bool = False) -> tuple[dict, bool]:
    """One optimizer step over `grad_accum` global micro-batches (this rank's share of each).

    Returns the loss parts and whether the run must stop now (a rank was asked to stop).
    """
    from .train_step import optimizer_step

    batches = [trainer.feed.next() for _ in range(trainer.config.optim.grad_accum)]
    parts, stopping = optimizer_step(trainer, batches, trainer.world, stop)
    trainer.step += 1
    return parts, stopping


def validate(trainer: Trainer, store=None) -> dict:
    """R@1/5/10 (and MRR@10) on the validation split through the scorer, with the current weights."""
    from ..evaluate import rank_queries
    from ..metrics import evaluate_run, load_qrels, parse_measures
    from .encoders import OpenClipEncoder
    from .train_data import read_queries

    config = trainer.config
    if store is None:  # opened at the first validation (rank 0 only)
        trainer.store = trainer.store if trainer.store is not None else _open_store(config)
        store = trainer.store
    built = trainer.built
    encoder = OpenClipEncoder(built.model, built.preprocess, built.tokenizer, name="training", revision="",
                              native_fusion=config.model.fusion, device=trainer.device)
    try:
        queries = read_queries(config.data.root, config.data.val_split, config.data.max_val_queries)
        corpus = _corpus_ids(config.data.root, config.data.val_split)
        run = rank_queries(encoder, queries, corpus, store, fusion=config.model.fusion, k=10)
    finally:
        built.model.train()
    qrels = load_qrels(config.data.root, config.data.val_split)
    qrels = {q: qrels[q] for q in run if q in qrels}
    return {k: round(v, 6) for k, v in evaluate_run(run, qrels, parse_measures("R@1,R@5,R@10,MRR@10")).items()}


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on gains, biases, embeddings and the temperature (open_clip's rule)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale", "embedding"))
        (no_decay if exclude else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": config.optim.weight_decay}]
    # fused AdamW runs the update in one kernel per group (CPU and CUDA): cheaper steps on small models
    return torch.optim.AdamW(groups, lr=config.optim.lr, fused=True)


def _schedule(config: TrainConfig):
    warmup, total, floor = config.optim.warmup_steps, config.optim.steps, config.optim.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _speed_options(model, config: TrainConfig) -> None:
    """Gradient checkpointing and torch.compile of the towers, when asked."""
    clip = model.clip
    if config.optim.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    if config.optim.compile:
        # Module.compile works in place, so parameter names (and checkpoints) stay unchanged
        clip.visual.compile()
        if hasattr(clip, "transformer"):
            clip.transformer.compile()


def _freeze(model, config: TrainConfig) -> None:
    clip = model.clip
    if config.model.freeze_image:
        clip.visual.requires_grad_(False)
    if config.model.freeze_text:
        for name, param in clip.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                param.requires_grad_(False)


def autocast(device: str, precision: str):
    """bf16 autocast on CUDA by default (`auto`) or when asked; fp32 otherwise."""
    kind = device.split(":")[0]
    if precision == "bf16" or (precision == "auto" and kind == "cuda"):
        return torch.autocast(device_type=kind, dtype=torch.bfloat16)
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"[optim] precision must be auto, fp32 or bf16, got {precision!r}")
    return contextlib.nullcontext()


def _open_store(config: TrainConfig):
    from ..images import open_store
    from ..layout import DataRoot

    return open_store(config.data.images or DataRoot(config.data.root).images)


def _corpus_ids(root: str, split: str) -> list[str]:
    from ..io.shards import read_table_dir
    from ..layout import DataRoot

    return read_table_dir(DataRoot(root).table_split("corpus", split), columns=["image_id"])["image_id"].to_pylist()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def plot_training(log_path: Path, png: Path) -> None:
    """Loss and validation recall against step (matplotlib, Agg)."""
    if not log_path.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    losses = [(r["step"], r["total"]) for r in records if "total" in r]
    vals = [(r["step"], r["val"]) for r in records if r.get("val")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if losses:
        left.plot(*zip(*losses))
    left.set(title="training loss", xlabel="step", ylabel="loss")
    for name in ("R@1", "R@5", "R@10"):
        points = [(s, v[name]) for s, v in vals if name in v]
        if points:
            right.plot(*zip(*points), marker="o", label=name)
    right.set(title="validation recall", xlabel="step", ylim=(0, 1))
    if vals:
        right.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
