"""One optimizer step over the global batch, on one process or many (data parallel).

Each process encodes its share of every micro-batch; query and target embeddings are gathered
from all processes with gradients (open_clip's gather-with-grad) and each process computes the
loss terms of its own rows against the whole global batch (local loss), normalised by the global
batch size, so that the sum over processes is the single-process loss. Gradients are then summed
over processes; every process applies the same update.

With `grad_accum` > 1 the step is GradCache / open_clip's `--accum-freq`: a no-grad pass embeds
every micro-batch and keeps its features; then each micro-batch is embedded again with gradients
and the loss of the WHOLE accumulated batch is back-propagated with the other micro-batches'
cached features, so every accumulated sample is a negative of every other. Terms that act on
the temperature directly take its gradient in the first of these passes only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .. import distributed as dist
from ..errors import ConfigError
from .fusion import make_query_batch
from .losses import local_info_nce, local_spread_out, truncate
from .train_data import TrainBatch


@dataclass
class Features:
    """Embeddings of one micro-batch's local rows (and, gathered, of the global micro-batch)."""

    queries: torch.Tensor                 # [b, D]
    positives: torch.Tensor               # [b, D]
    query_codes: torch.Tensor             # [b] int64 hashes of query keys (duplicate mask)
    target_codes: torch.Tensor            # [b] int64 hashes of target ids
    hard: torch.Tensor | None = None      # [b, K, D] (local only: a query's own hard negatives)
    hard_valid: torch.Tensor | None = None
    teacher_targets: torch.Tensor | None = None   # [b, T] (NaN rows: no teacher)
    teacher_queries: torch.Tensor | None = None


def key_code(key) -> int:
    """A stable 63-bit code of a hashable key (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest(), "little") >> 1


def encode(trainer, batch: TrainBatch) -> Features:
    """Embed one local micro-batch (queries through the fusion, targets and hard negatives)."""
    model, device = trainer.built.model, trainer.device
    features = model.image_features(batch.pixels.to(device, non_blocking=True))
    entity_index = batch.entity_index.to(device)
    entity = features[entity_index.clamp(min=0)]
    # the loaders tokenize in their workers (train_data.QueryTokens); other callers' batches are tokenized here
    ready = batch.tokens is not None and batch.text_mode == trainer.fusion.text_mode
    query_batch = make_query_batch(trainer.fusion, trainer.built.tokenizer, batch.masked_texts, entity,
                                   entity_index >= 0, tokens=(batch.tokens, batch.slots) if ready else None
                                   ).to(device)
    out = Features(trainer.fusion.encode(model, query_batch), features[batch.target_index.to(device)],
                   torch.tensor([key_code(k) for k in batch.query_keys], device=device),
                   torch.tensor([key_code(k) for k in batch.target_keys], device=device))
    if batch.hard_index is not None:
        hard_index = batch.hard_index.to(device)
        out.hard, out.hard_valid = features[hard_index.clamp(min=0)], hard_index >= 0
    teacher, side = trainer.teacher, trainer.config.distill.on
    if teacher is not None:
        if side in ("targets", "both"):
            out.teacher_targets = teacher.lookup(batch.target_keys, device)
        if side in ("queries", "both"):
            out.teacher_queries = teacher.lookup(batch.query_ids, device)
    return out


def gathered(local: Features, world, *, with_grad: bool) -> Features:
    """The global micro-batch: every process's rows in rank order (hard negatives stay local)."""
    if not world.distributed:
        return local
    take = dist.gather_with_grad if with_grad else dist.gather
    return Features(take(local.queries, world), take(local.positives, world),
                    dist.gather(local.query_codes, world), dist.gather(local.target_codes, world),
                    teacher_targets=None if local.teacher_targets is None else dist.gather(local.teacher_targets, world),
                    teacher_queries=None if local.teacher_queries is None else dist.gather(local.teacher_queries, world))


def _cat(items, name):
    values = [getattr(i, name) for i in items]
    return None if values[0] is None else torch.cat(values)


def step_loss(trainer, local: list[Features], glob: list[Features], world, *, temperature_grad: bool = True
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """This process's share of the loss of the accumulated global batch (its sum over ranks is the loss)."""
    cfg = trainer.config.loss
    micro, rows_per = len(glob[0].queries), len(local[0].queries)
    total_rows = micro * len(glob)
    rows = torch.cat([m * micro + world.rank * rows_per + torch.arange(rows_per, device=trainer.device)
                      for m in range(len(glob))])
    q, p, q_all, p_all = (_cat(local, "queries"), _cat(local, "positives"), _cat(glob, "queries"),
                          _cat(glob, "positives"))
    masked = None
    if cfg.duplicate_mask:
        qc, tc = _cat(glob, "query_codes"), _cat(glob, "target_codes")
        masked = (qc[rows][:, None] == qc[None, :]) | (tc[rows][:, None] == tc[None, :])
        masked[torch.arange(len(rows), device=rows.device), rows] = False
    hard, hard_valid = _cat(local, "hard"), _cat(local, "hard_valid")
    scale = trainer.built.model.clip.logit_scale.exp()
    scale = scale if temperature_grad else scale.detach()
    parts, total = {}, q.new_zeros(())
    for dim in (q.shape[-1], *cfg.matryoshka_dims):
        if dim > q.shape[-1]:
            raise ConfigError(f"[loss] matryoshka_dims: {dim} exceeds the embedding width {q.shape[-1]}")
        term = local_info_nce(truncate(q, dim), truncate(p, dim), truncate(q_all, dim), truncate(p_all, dim), rows,
                              scale, masked=masked, hard_valid=hard_valid,
                              hard_negatives=None if hard is None else truncate(hard, dim),
                              hard_alpha=cfg.hard_negative_alpha, same_tower=cfg.same_tower_negatives,
                              symmetric=cfg.symmetric) / total_rows
        parts["loss" if dim == q.shape[-1] else f"loss@{dim}"] = term
        total = total + term
    if cfg.spread_out_weight:
        regulariser = local_spread_out(q, q_all, rows) + local_spread_out(p, p_all, rows)
        parts["spread_out"] = regulariser
        total = total + cfg.spread_out_weight * regulariser
    if trainer.teacher is not None:
        term = _distill(trainer, local, glob, rows, parts)
        total = total + term
    parts["total"] = total
    return total, parts


def _distill(trainer, local, glob, rows, parts) -> torch.Tensor:
    """Distillation terms over the global batch (means over the rows that have a teacher)."""
    config = trainer.config.distill
    total = torch.zeros((), device=trainer.device)
    for side, student, student_all in (("targets", "positives", "positives"), ("queries", "queries", "queries")):
        if config.on not in (side, "both"):
            continue
        teacher_all = _cat(glob, f"teacher_{side}")
        valid_all = torch.isfinite(teacher_all).all(dim=1)
        count = int(valid_all.sum())
        if not count:
            continue
        s, t, valid = _cat(local, student), teacher_all[rows], valid_all[rows]
        if config.kind == "similarity":
            s_all, t_all = F.normalize(_cat(glob, student_all)[valid_all], dim=-1), F.normalize(
                teacher_all[valid_all], dim=-1)
            diff = F.normalize(s[valid], dim=-1) @ s_all.T - F.normalize(t[valid], dim=-1) @ t_all.T
            term = diff.pow(2).sum() / (count * count)
        else:
            s, t = s[valid].float(), t[valid]
            if s.shape[1] != t.shape[1]:
                raise ConfigError(f"the teacher has {t.shape[1]} dimensions and the student {s.shape[1]}: "
                                  f"'{config.kind}' distillation needs equal widths; use kind = \"similarity\"")
            if config.kind == "cosine":
                term = (1 - F.cosine_similarity(s, t, dim=-1)).sum() / count
            else:
                term = (F.normalize(s, dim=-1) - F.normalize(t, dim=-1)).pow(2).sum() / (count * s.shape[1])
        parts[f"distill_{side}"] = term
        total = total + term
    return config.weight * total


def optimizer_step(trainer, batches: list[TrainBatch], world, stop: bool = False) -> tuple[dict[str, float], bool]:
    """Forward/backward over the accumulated micro-batches, gradient sum over ranks, update.

    Returns the loss parts (global values) and whether any rank asked to stop (`stop`, e.g. on
    SIGTERM), agreed in the same collective so that every rank stops after the same step.
    """
    from .train import autocast

    model, config = trainer.built.model, trainer.config
    with_autocast = lambda: autocast(trainer.device, config.optim.precision)  # noqa: E731
    if len(batches) == 1:
        with with_autocast():
            local = encode(trainer, batches[0])
        _, parts = _backward(trainer, [local], [gathered(local, world, with_grad=True)], world, True)
    else:
        with torch.no_grad(), with_autocast():
            cached = [encode(trainer, b) for b in batches]
        cached_glob = [gathered(c, world, with_grad=False) for c in cached]
        for m, batch in enumerate(batches):
            with with_autocast():
                fresh = encode(trainer, batch)
            # the codes and teacher rows were gathered in the cache pass: only the embeddings again
            fresh_glob = replace(cached_glob[m], queries=dist.gather_with_grad(fresh.queries, world),
                                 positives=dist.gather_with_grad(fresh.positives, world))
            local = cached[:m] + [fresh] + cached[m + 1:]
            glob = cached_glob[:m] + [fresh_glob] + cached_glob[m + 1:]
            _, parts = _backward(trainer, local, glob, world, m == 0)
    dist.all_reduce_gradients(model.parameters(), world)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm or math.inf)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.clip.logit_scale.clamp_(0, math.log(100))
    names = sorted(parts)
    values = [parts[n].detach().float().cpu() for n in names] + [torch.tensor(float(stop))]
    summed = dist.all_reduce_sum(torch.stack(values).to(trainer.device), world).cpu()
    out = {n: float(v) for n, v in zip(names, summed)}
    out["grad_norm"] = float(norm)
    out["temperature"] = float(1 / model.clip.logit_scale.detach().exp())
    return {k: round(v, 6) for k, v in out.items()}, bool(summed[-1] > 0)


def _backward(trainer, local, glob, world, temperature_grad: bool):
    total, parts = step_loss(trainer, local, glob, world, temperature_grad=temperature_grad)
    total.backward()
    return total, parts
