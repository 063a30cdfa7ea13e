"""Contrastive training of mixed-modal retrievers (`wit-retrieval train CONFIG`).

Both towers train jointly on (query -> target scene), entity images going through the same
image tower as targets. AdamW with warm-up and cosine decay, gradient accumulation, bf16
autocast on GPUs, safetensors checkpoints every N steps and on exit, exact resume (model,
optimizer, schedule and RNG states), validation through the scorer, JSONL logs and a plot.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..io.shards import atomic_path, write_json_atomic
from .checkpoint import WEIGHTS, Built, build_retriever, save_checkpoint
from .distill import distill_terms, load_teacher
from .fusion import get_fusion, make_query_batch
from .losses import duplicate_mask, info_nce, spread_out, truncate
from .qat import attach_qat, check_resume
from .train_config import TrainConfig
from .train_data import (
    ImageLoader,
    TrainBatch,
    batch_indices,
    hard_negatives_from_run,
    load_samples,
    make_batch,
)

TRAINER_STATE = "trainer_state.pt"
KEEP_CHECKPOINTS = 2


@dataclass
class Trainer:
    """Everything a step needs; built once by `prepare`."""

    config: TrainConfig
    built: Built
    fusion: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    samples: list
    loader: ImageLoader
    device: str
    out: Path
    step: int = 0
    data_counts: dict = field(default_factory=dict)
    teacher: object = None           # distill.TeacherCache when [distill] is on


def train(config: TrainConfig, *, store=None, stop_after: int | None = None) -> dict:
    """Train (resuming from the latest checkpoint in the output folder); returns a summary."""
    trainer = prepare(config, store)
    with _sigterm_as_interrupt():
        return _train_loop(trainer, config, store, stop_after)


def _train_loop(trainer: Trainer, config: TrainConfig, store, stop_after: int | None) -> dict:
    log = _Log(trainer.out / "train_log.jsonl")
    started, seen = time.perf_counter(), 0
    last_val: dict = {}
    interrupted = False
    try:
        while trainer.step < config.optim.steps:
            if stop_after is not None and trainer.step >= stop_after:
                break
            tick = time.perf_counter()
            parts = train_step(trainer)
            seen += config.optim.batch_size * config.optim.grad_accum
            step = trainer.step
            if step % config.run.log_every == 0 or step == config.optim.steps:
                rate = config.optim.batch_size * config.optim.grad_accum / (time.perf_counter() - tick)
                log.write({"step": step, **parts, "lr": trainer.scheduler.get_last_lr()[0],
                           "samples_per_s": round(rate, 2)})
            if config.run.eval_every and (step % config.run.eval_every == 0 or step == config.optim.steps):
                last_val = validate(trainer, store)
                log.write({"step": step, "val": last_val})
            if config.run.checkpoint_every and step % config.run.checkpoint_every == 0:
                save_training_checkpoint(trainer)
    except KeyboardInterrupt:
        interrupted = True
    final = save_training_checkpoint(trainer)
    seconds = time.perf_counter() - started
    summary = {"out": str(trainer.out), "step": trainer.step, "checkpoint": str(final), "seconds": round(seconds, 2),
               "samples_per_s": round(seen / seconds, 2) if seconds else None, "val": last_val,
               "interrupted": interrupted, "data": trainer.data_counts}
    write_json_atomic(trainer.out / "summary.json", summary)
    plot_training(trainer.out / "train_log.jsonl", trainer.out / "training.png")
    if interrupted:
        raise KeyboardInterrupt
    return summary


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM (a scheduler's kill) like Ctrl-C while training, so the run saves its checkpoint."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare(config: TrainConfig, store=None) -> Trainer:
    """Seed, build the model, optimizer, schedule and data, and resume if a checkpoint exists."""
    if not config.data.root:
        raise ConfigError("[data] root is not set: pass --data ROOT or set it in the config")
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
    device = "cuda" if torch.cuda.is_available() else "cpu"
    built.model.to(device).train()
    optimizer = _optimizer(built.model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    store = store if store is not None else _open_store(config)
    hard = hard_negatives_from_run(config.loss.hard_negatives) if config.loss.hard_negatives else None
    samples, counts = load_samples(config.data.root, config.data.train_split, store,
                                   max_queries=config.data.max_train_queries, hard_negatives=hard,
                                   per_query=config.loss.hard_negatives_per_query)
    if len(samples) < config.optim.batch_size:
        raise ConfigError(f"{len(samples)} training queries is fewer than one batch "
                          f"({config.optim.batch_size}); lower [optim] batch_size")
    loader = ImageLoader(store, built.preprocess, cache=config.data.cache_images, workers=config.data.workers)
    out = Path(config.run.out)
    check_resume(out, config.quant)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", config.to_dict())
    trainer = Trainer(config, built, fusion, optimizer, scheduler, samples, loader, device, out, data_counts=counts,
                      teacher=load_teacher(config.distill, samples))
    _resume(trainer)
    # [quant]: fake-quantized weights from start_step (a model transformation; checkpoints add the export)
    attach_qat(built.model, config.quant, optimizer, step=trainer.step, spec=built.spec)
    return trainer


def train_step(trainer: Trainer) -> dict:
    """One optimizer step over `grad_accum` micro-batches; returns the loss parts."""
    config = trainer.config
    model = trainer.built.model
    totals: dict[str, float] = {}
    for micro in range(config.optim.grad_accum):
        index = batch_indices(len(trainer.samples), config.optim.batch_size, config.run.seed,
                              trainer.step * config.optim.grad_accum + micro)
        batch = make_batch([trainer.samples[i] for i in index], trainer.loader,
                           config.loss.hard_negatives_per_query if config.loss.hard_negatives else 0)
        with _autocast(trainer.device, config.optim.precision):
            loss, parts = batch_loss(trainer, batch)
        (loss / config.optim.grad_accum).backward()
        for name, value in parts.items():
            totals[name] = totals.get(name, 0.0) + value / config.optim.grad_accum
    if config.optim.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.clip.logit_scale.clamp_(0, math.log(100))
    trainer.step += 1
    totals["temperature"] = float(1 / model.clip.logit_scale.detach().exp())
    return {k: round(v, 6) for k, v in totals.items()}


def batch_loss(trainer: Trainer, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured loss of one micro-batch and its parts."""
    cfg, model, device = trainer.config.loss, trainer.built.model, trainer.device
    features = model.image_features(batch.pixels.to(device))
    positives = features[batch.target_index.to(device)]
    entity_index = batch.entity_index.to(device)
    entity = features[entity_index.clamp(min=0)]
    queries_batch = make_query_batch(trainer.fusion, trainer.built.tokenizer, batch.masked_texts, entity,
                                     entity_index >= 0).to(device)
    queries = trainer.fusion.encode(model, queries_batch)
    duplicates = duplicate_mask(batch.query_keys, batch.target_keys) if cfg.duplicate_mask else None
    hard = hard_valid = None
    if batch.hard_index is not None:
        hard_index = batch.hard_index.to(device)
        hard, hard_valid = features[hard_index.clamp(min=0)], hard_index >= 0
    scale = model.clip.logit_scale.exp()
    parts, total = {}, queries.new_zeros(())
    for dim in (queries.shape[-1], *cfg.matryoshka_dims):
        if dim > queries.shape[-1]:
            raise ConfigError(f"[loss] matryoshka_dims: {dim} exceeds the embedding width {queries.shape[-1]}")
        term = info_nce(truncate(queries, dim), truncate(positives, dim), scale, duplicates=duplicates,
                        hard_negatives=None if hard is None else truncate(hard, dim), hard_valid=hard_valid,
                        hard_alpha=cfg.hard_negative_alpha, same_tower=cfg.same_tower_negatives,
                        symmetric=cfg.symmetric)
        parts["loss" if dim == queries.shape[-1] else f"loss@{dim}"] = float(term.detach())
        total = total + term
    if cfg.spread_out_weight:
        regulariser = spread_out(queries) + spread_out(positives)
        parts["spread_out"] = float(regulariser.detach())
        total = total + cfg.spread_out_weight * regulariser
    if trainer.teacher is not None:
        term, distilled = distill_terms(trainer.teacher, trainer.config.distill, queries=queries,
                                        query_ids=batch.query_ids, positives=positives, target_ids=batch.target_keys)
        parts.update(distilled)
        total = total + term
    parts["total"] = float(total.detach())
    return total, parts


def validate(trainer: Trainer, store=None) -> dict:
    """R@1/5/10 (and MRR@10) on the validation split through the scorer, with the current weights."""
    from ..evaluate import rank_queries
    from ..metrics import evaluate_run, load_qrels, parse_measures
    from .encoders import OpenClipEncoder
    from .train_data import read_queries

    config = trainer.config
    store = store if store is not None else trainer.loader.store
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


def save_training_checkpoint(trainer: Trainer) -> Path:
    """Write checkpoints/step-N (model + trainer state) and refresh `model/`; keep the last two."""
    config = trainer.config
    folder = trainer.out / "checkpoints" / f"step-{trainer.step:07d}"
    datasets = [f"MMIR:{Path(config.data.root).name}:{config.data.train_split}"]
    save_checkpoint(folder, trainer.built, fusion=config.model.fusion, step=trainer.step,
                    training_datasets=datasets, base=config.model.base)
    state = {"step": trainer.step, "optimizer": trainer.optimizer.state_dict(),
             "scheduler": trainer.scheduler.state_dict(), "rng": _rng_state()}
    with atomic_path(folder / TRAINER_STATE) as tmp:
        torch.save(state, tmp)
    final = trainer.out / "model"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(folder, final, ignore=shutil.ignore_patterns(TRAINER_STATE))
    for old in _checkpoints(trainer.out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _resume(trainer: Trainer) -> None:
    from safetensors.torch import load_file

    found = _checkpoints(trainer.out)
    if not found:
        return
    latest = found[-1]
    trainer.built.model.load_state_dict(load_file(str(latest / WEIGHTS), device=trainer.device))
    state = torch.load(latest / TRAINER_STATE, map_location=trainer.device, weights_only=False)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    trainer.step = state["step"]


def _checkpoints(out: Path) -> list[Path]:
    """Finished step checkpoints (with trainer state), oldest first."""
    return sorted(p.parent for p in (out / "checkpoints").glob(f"step-*/{TRAINER_STATE}"))


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


def _freeze(model, config: TrainConfig) -> None:
    clip = model.clip
    if config.model.freeze_image:
        clip.visual.requires_grad_(False)
    if config.model.freeze_text:
        for name, param in clip.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                param.requires_grad_(False)


def _autocast(device: str, precision: str):
    if precision == "bf16" or (precision == "auto" and device == "cuda"):
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
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


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Log:
    """Append-only JSONL log, one flushed line per record."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


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
