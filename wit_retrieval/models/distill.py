"""Embedding distillation from a teacher's cached embeddings (EmbeddingGemma's embedding matching).

The teacher (a bigger model, or an API such as Gemini Embedding) is run once over the training
targets and/or queries with `wit-retrieval embed`; its vectors are cached as an embedding file
(`id` + `embedding`, see io/embeddings.py). During training each batch's student embeddings are
pulled towards the teacher's rows of the same ids:

- `cosine`: mean of 1 - cos(student, teacher) (needs equal widths);
- `mse`: mean squared error between the L2-normalised vectors, per element (needs equal widths);
- `similarity`: mean squared error between the in-batch similarity matrices (any widths, so a
  3072-d teacher can teach a 512-d student).

Ids without a teacher row are skipped, not guessed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError

KINDS = ("cosine", "mse", "similarity")
SIDES = ("targets", "queries", "both")


@dataclass(frozen=True)
class DistillConfig:
    """[distill]: the teacher's embedding file, the loss weight and kind, and which side it teaches."""

    teacher_embeddings: str = ""     # parquet file/folder or .npy + .ids.txt; "" turns distillation off
    weight: float = 1.0
    kind: str = "cosine"
    on: str = "targets"              # targets (image ids) | queries (query ids) | both

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"[distill] kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.on not in SIDES:
            raise ConfigError(f"[distill] on must be one of {', '.join(SIDES)}, got {self.on!r}")
        if self.weight < 0:
            raise ConfigError(f"[distill] weight must be non-negative, got {self.weight}")

    @property
    def enabled(self) -> bool:
        """True when a teacher file is set and its loss counts."""
        return bool(self.teacher_embeddings) and self.weight > 0


def distill_loss(student, teacher, kind: str = "cosine"):
    """Embedding-matching loss of student [B, D] against teacher [B, D'] rows; NaN teacher rows are skipped."""
    import torch
    import torch.nn.functional as F

    if kind not in KINDS:
        raise ConfigError(f"distillation kind must be one of {', '.join(KINDS)}, got {kind!r}")
    valid = torch.isfinite(teacher).all(dim=1)
    if not bool(valid.any()):
        return student.sum() * 0.0  # keeps the graph (and its device) when no row has a teacher
    s = student[valid].float()
    t = teacher[valid].to(device=s.device, dtype=torch.float32)
    if kind == "similarity":
        s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
        return F.mse_loss(s @ s.T, t @ t.T)
    if s.shape[1] != t.shape[1]:
        raise ConfigError(f"the teacher has {t.shape[1]} dimensions and the student {s.shape[1]}: '{kind}' "
                          "distillation needs equal widths; use kind = \"similarity\"")
    if kind == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    return F.mse_loss(F.normalize(s, dim=-1), F.normalize(t, dim=-1))


class TeacherCache:
    """A teacher's embeddings by id, in memory (only the ids in `keep` when given), L2-normalised."""

    def __init__(self, path: str | Path, *, keep: Collection[str] | None = None, normalize: bool = True):
        import torch

        self.path = Path(path)
        ids, matrix = read_teacher(self.path, keep)
        if normalize and len(matrix):
            matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        self.row = {}
        for n, key in enumerate(ids):
            self.row.setdefault(key, n)  # a repeated id keeps its first row
        self.matrix = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
        self.dim = int(self.matrix.shape[1]) if self.matrix.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self.row)

    def __contains__(self, key: object) -> bool:
        return key in self.row

    def lookup(self, ids: Sequence[str], device=None):
        """Teacher rows [len(ids), dim] float32 in the order of `ids`; NaN rows where an id is unknown."""
        import torch

        rows = torch.tensor([self.row.get(i, -1) for i in ids], dtype=torch.long)
        out = torch.full((len(ids), self.dim), float("nan"), dtype=torch.float32)
        found = rows >= 0
        out[found] = self.matrix[rows[found]]
        return out if device is None else out.to(device)

    def coverage(self, ids: Collection[str]) -> float:
        """Share of `ids` that have a teacher row."""
        return sum(1 for i in ids if i in self.row) / len(ids) if ids else 0.0


def read_teacher(path: Path, keep: Collection[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Ids and matrix of an embedding file; with `keep`, parquet is streamed and only those rows kept."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..io.embeddings import _embedding_block, _parquet_files, read_embeddings

    if keep is None or path.suffix == ".npy":
        ids, matrix = read_embeddings(path)
        if keep is None:
            return ids, matrix
        wanted = set(keep)
        rows = [n for n, i in enumerate(ids) if i in wanted]
        return [ids[n] for n in rows], matrix[rows]
    wanted_array = pa.array(sorted(set(keep)), pa.string())
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for file in _parquet_files(path):
        for batch in pq.ParquetFile(file).iter_batches(columns=["id", "embedding"], batch_size=65536):
            chosen = batch.filter(pc.is_in(batch.column("id").cast(pa.string()), value_set=wanted_array))
            if chosen.num_rows:
                blocks.append(_embedding_block(pa.chunked_array([chosen.column("embedding")]), file, 0))
                ids.extend(chosen.column("id").cast(pa.string()).to_pylist())
    if not blocks:
        return [], np.zeros((0, 0), np.float32)
    if len({b.shape[1] for b in blocks}) > 1:
        raise InputError("teacher embeddings have rows of different widths", path=str(path))
    return ids, np.concatenate(blocks)


def load_teacher(config: DistillConfig, samples: Sequence) -> TeacherCache | None:
    """The teacher rows a training set needs (its targets and/or query ids), or None when disabled."""
    if not config.enabled:
        return None
    wanted: set[str] = set()
    if config.on in ("targets", "both"):
        wanted.update(s.target for s in samples)
    if config.on in ("queries", "both"):
        wanted.update(s.query_id for s in samples)
    teacher = TeacherCache(config.teacher_embeddings, keep=wanted)
    if not len(teacher):
        raise ConfigError(f"[distill] none of the {len(wanted)} training {config.on} ids has a row in "
                          f"{config.teacher_embeddings}; embed them with the teacher first (wit-retrieval embed)")
    return teacher


def distill_terms(teacher: TeacherCache, config: DistillConfig, *, queries, query_ids: Sequence[str] | None,
                  positives, target_ids: Sequence[str]):
    """(weighted distillation loss of a batch, its parts for the training log)."""
    parts: dict[str, float] = {}
    total = positives.new_zeros(()).float()
    if config.on in ("targets", "both"):
        loss = distill_loss(positives, teacher.lookup(target_ids, positives.device), config.kind)
        parts["distill_targets"] = float(loss.detach())
        total = total + loss
    if config.on in ("queries", "both"):
        if query_ids is None:
            raise ConfigError("[distill] on = queries needs the batch's query ids")
        loss = distill_loss(queries, teacher.lookup(query_ids, queries.device), config.kind)
        parts["distill_queries"] = float(loss.detach())
        total = total + loss
    return config.weight * total, parts
