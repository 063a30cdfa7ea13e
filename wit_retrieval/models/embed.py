"""Batched, cached, resumable image embedding over an image store.

Decoding and the PIL part of preprocessing (resize, crop) run in a thread pool (PIL releases the
GIL there) or in worker processes (a torch DataLoader, forked, so the store needs no pickling), a
few batches ahead of the encoder; ToTensor + Normalize run once per batch, vectorised
(models/preprocess.py: the same pixels as open_clip's transform); the model runs under
inference_mode (bf16 autocast on GPU), on CPU with prepacked oneDNN linears in ViT towers (models/onednn.py,
fp32, same embeddings up to float rounding). Embeddings are cached as parquet parts (io/embeddings.py
format: id + embedding) under a key of model name, revision and preprocessing: a second evaluation
re-embeds nothing, and an interrupted run resumes from its last finished part.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io.shards import write_json_atomic
from .preprocess import SplitTransform, open_image, prepare, split_transform, to_batch

FAST_PATHS = ("auto", "onednn", "eager")  # EmbedConfig.fast_path


@dataclass(frozen=True)
class EmbedConfig:
    """How to embed: batch size, decoders, cache folder, part size, progress bar, JPEG draft, CPU fast path."""

    batch_size: int = 64
    workers: int = 4
    decoder: str = "threads"         # threads (PIL releases the GIL) | processes (a DataLoader, forked workers)
    cache_dir: str | None = None
    part_rows: int = 8192
    prefetch_batches: int = 3
    progress: bool = True
    # JPEG draft: decode large JPEGs at 1/2..1/8 scale (still >= the model's input size); much faster
    # on big photos but the pixels differ from open_clip's transform, so it is off by default and
    # has its own cache key
    draft: bool = False
    torch_threads: int | None = None  # the encoder's torch threads during the run (None: leave as is)
    # fp32 CPU fast path for open_clip ViT image towers (models/onednn.py): 'auto' uses prepacked oneDNN
    # linears where they apply (CPU, float32, standard blocks, at least 256 wide) and eager elsewhere;
    # 'onednn' at any width, warning when they cannot be used; 'eager' never. Same embeddings up to float
    # rounding (~1e-7), so the cache key does not depend on it
    fast_path: str = "auto"

    def __post_init__(self):
        if self.fast_path not in FAST_PATHS:
            from ..errors import ConfigError

            raise ConfigError(f"fast_path must be one of {', '.join(FAST_PATHS)}, not {self.fast_path!r}")


def cache_key(metadata, *, draft: bool = False) -> str:
    """16 hex digits naming an embedding cache: model name, revision, preprocessing and weight quantization."""
    parts = (metadata.name, metadata.revision, metadata.preprocessing + (" draft" if draft else ""))
    quantization = getattr(metadata, "quantization", "")
    # float weights keep the key they always had, so existing caches stay valid
    text = "\x1f".join(parts + ((quantization,) if quantization else ()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cache_folder(cache_dir: str | Path, metadata, *, draft: bool = False) -> Path:
    """The folder of this encoder's cached image embeddings under `cache_dir`."""
    return Path(cache_dir) / f"images-{cache_key(metadata, draft=draft)}"


def embed_images(encoder, store, ids: Sequence[str], config: EmbedConfig = EmbedConfig()
                 ) -> tuple[list[str], np.ndarray, list[str]]:
    """(ids embedded, embeddings [n, D] in that order, ids missing or undecodable) for `ids`."""
    wanted = list(dict.fromkeys(ids))
    cached: dict[str, np.ndarray] = {}
    folder = None
    if config.cache_dir:
        folder = cache_folder(config.cache_dir, encoder.metadata, draft=config.draft)
        cached = _read_cache(folder, encoder.metadata)
    todo = [i for i in wanted if i not in cached]
    missing: list[str] = []
    if todo:
        parts = [todo[i: i + config.part_rows] for i in range(0, len(todo), config.part_rows)]
        for part_ids, part_emb, part_failed in embed_parts(encoder, store, parts, config):
            missing.extend(f.image_id for f in part_failed)
            cached.update(zip(part_ids, part_emb))
            if folder is not None and part_ids:
                _write_part(folder, part_ids, part_emb)
    found = [i for i in wanted if i in cached]
    dim = encoder.metadata.dim
    matrix = np.stack([cached[i] for i in found]).astype(np.float32) if found else np.zeros((0, dim), np.float32)
    return found, matrix, missing


def embed_parts(encoder, store, parts: Sequence[Sequence[str]], config: EmbedConfig
                ) -> Iterator[tuple[list[str], np.ndarray, list[Failed]]]:
    """(ids embedded, embeddings, failures) for each part in turn, yielded as soon as it is done.

    Batches never span two parts, and decoding runs ahead across part boundaries, so the
    pipeline never drains between parts; memory holds one part's embeddings at a time.
    """
    from ..progress import progress_task
    from .onednn import fast_encoding

    batches, last_of_part = [], set()
    for part in parts:
        batches.extend(list(part[i: i + config.batch_size]) for i in range(0, len(part), config.batch_size))
        last_of_part.add(len(batches) - 1)
    part_ids: list[str] = []
    part_emb: list[np.ndarray] = []
    part_failed: list[Failed] = []
    split = split_transform(encoder.preprocess, draft=config.draft)
    in_processes = config.decoder == "processes" and config.workers > 0
    decoded = (_decoded_in_processes if in_processes else _decoded_in_threads)(split, store, batches, config)
    total = sum(len(part) for part in parts)
    with _maybe_progress(progress_task, "embedding images", total, config.progress) as advance, \
            _torch_threads(config.torch_threads), fast_encoding(encoder, config.fast_path, config.batch_size) as encode:
        for n, (batch_ids, pixels, bad) in enumerate(decoded):
            if batch_ids:
                part_emb.append(encode(pixels))
                part_ids.extend(batch_ids)
            part_failed.extend(bad)
            advance(len(batch_ids) + len(bad))
            if n in last_of_part:
                emb = np.concatenate(part_emb) if part_emb else np.zeros((0, encoder.metadata.dim), np.float32)
                yield part_ids, emb, part_failed
                part_ids, part_emb, part_failed = [], [], []


class Failed(NamedTuple):
    """An image that could not be embedded, and why (recorded, never fatal)."""

    image_id: str
    reason: str


def _load(store, split: SplitTransform, image_id: str):
    """One image after the PIL stage, or a Failed when it is missing or broken (reported, never fatal)."""
    try:
        return prepare(open_image(store, image_id, split), split)
    except KeyError:
        return Failed(image_id, "missing: not in the image store")
    except Exception as exc:  # any decoder error: the image is recorded as failed, the run goes on
        # object addresses (PIL's "<_io.BytesIO object at 0x...>") would make equal runs differ
        message = re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))
        return Failed(image_id, f"undecodable: {type(exc).__name__}: {message}"[:300])


def _batch(ids: list, items: list, split: SplitTransform) -> tuple[list, object, list[Failed]]:
    """(ids decoded, one normalised pixel batch or None, the failures)."""
    ok = [(i, t) for i, t in zip(ids, items) if not isinstance(t, Failed)]
    bad = [t for t in items if isinstance(t, Failed)]
    return [i for i, _ in ok], (to_batch([t for _, t in ok], split) if ok else None), bad


def _decoded_in_threads(split: SplitTransform, store, batches: list[list[str]], config: EmbedConfig):
    """Yield `_batch` per batch, a thread pool decoding up to `prefetch_batches` ahead."""
    # more decoding threads than cores only adds GIL and cache contention (measured: 4 slower than 2 on 2 cores)
    with ThreadPoolExecutor(max(1, min(config.workers, os.cpu_count() or 1))) as pool:
        pending: deque = deque()
        queue = iter(batches)

        def submit(batch):
            pending.append((batch, [pool.submit(_load, store, split, i) for i in batch]))

        for batch in queue:
            submit(batch)
            if len(pending) >= config.prefetch_batches:
                break
        while pending:
            batch, futures = pending.popleft()
            nxt = next(queue, None)
            if nxt is not None:
                submit(nxt)
            yield _batch(batch, [f.result() for f in futures], split)


class _Decode:
    """A map-style dataset: index -> (index, prepared image or None when missing/broken)."""

    def __init__(self, ids: list[str], store, split: SplitTransform):
        self.ids, self.store, self.split = ids, store, split

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return index, _load(self.store, self.split, self.ids[index])


def _worker_init(_worker: int) -> None:
    """One torch thread per decoding process; reopen the store's files (no offset shared with the parent)."""
    import torch
    from torch.utils.data import get_worker_info

    torch.set_num_threads(1)
    close = getattr(get_worker_info().dataset.store, "close", None)
    if close is not None:
        close()


def _decoded_in_processes(split: SplitTransform, store, batches: list[list[str]], config: EmbedConfig):
    """Like `_decoded_in_threads`, decoding in forked DataLoader workers (no GIL shared between decoders)."""
    from torch.utils.data import DataLoader

    ids = [i for batch in batches for i in batch]
    offsets = np.cumsum([0] + [len(b) for b in batches])
    sampler = [list(range(offsets[n], offsets[n + 1])) for n in range(len(batches))]
    # leave one core to the encoder: decoders that starve it only move the bottleneck
    workers = max(1, min(config.workers, (os.cpu_count() or 2) - 1))
    # the batch is normalised inside the worker: one shared-memory tensor per batch crosses to the encoder
    loader = DataLoader(_Decode(ids, store, split), batch_sampler=sampler, num_workers=workers,
                        collate_fn=partial(_collate, split=split), worker_init_fn=_worker_init,
                        prefetch_factor=config.prefetch_batches, multiprocessing_context="fork")
    for ok, pixels, bad in loader:
        yield [ids[i] for i in ok], pixels, [ids[i] for i in bad]


def _collate(items: list, split: SplitTransform):
    return _batch([i for i, _ in items], [t for _, t in items], split)


@contextlib.contextmanager
def _torch_threads(count: int | None):
    """Set torch's intra-op threads for the encoder during the run, restoring them after."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _maybe_progress(progress_task, description: str, total: int, enabled: bool):
    if enabled:
        return progress_task(description, total)
    return contextlib.nullcontext(lambda n=1, **_: None)


def _read_cache(folder: Path, metadata) -> dict[str, np.ndarray]:
    """Embeddings of every finished part in `folder` (created, with its key.json, when new)."""
    from ..io.embeddings import read_embeddings

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "key.json").exists():
        write_json_atomic(folder / "key.json", {"model": metadata.name, "revision": metadata.revision,
                                                "preprocessing": metadata.preprocessing, "dim": metadata.dim,
                                                "quantization": getattr(metadata, "quantization", "")})
    cached: dict[str, np.ndarray] = {}
    for part in sorted(folder.glob("part-*.parquet")):
        ids, matrix = read_embeddings(part)
        cached.update(zip(ids, matrix))
    return cached


def _write_part(folder: Path, ids: list[str], matrix: np.ndarray) -> None:
    """A cache part named by a digest of its ids: the same name from any rank or process, never a clash."""
    from ..io.embeddings import write_embeddings

    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:16]
    meta = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    write_embeddings(folder / f"part-{digest}.parquet", ids, matrix, meta)
