"""Streamed training batches from prepared shards (train_shards.py), split over ranks and workers.

Per epoch the shard order comes from (seed, epoch); rank r takes every world_size-th shard and
its loader worker w every workers-th of those; each worker reads its shards sequentially
through a shuffle buffer of raw (still encoded) samples seeded by (seed, epoch, rank, worker),
cuts them into local batches and decodes (and tokenizes their queries) only then. Every worker yields the same number of
batches per epoch (the smallest any worker of any rank can fill), so ranks stay in step and the
DataLoader's round robin fixes the order: batch k of an epoch comes from worker k % workers.
Resuming skips the batches already used without decoding them, so it is exact and cheap.

A sample whose target does not decode is replaced by another sample of its batch (a duplicate,
which the duplicate mask ignores), so batch composition never depends on decoding and skipping
stays exact; unreadable entity or hard-negative images are left out. Each is counted per class.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, InputError
from .train_data import QueryTokens, Sample, TrainBatch, make_batch
from .train_shards import EntityImages, read_prepared, shard_paths

COUNT_KEYS = ("undecodable_targets", "undecodable_entity_images", "undecodable_hard_negatives")


@dataclass(frozen=True)
class StreamPlan:
    """Which shards each rank and worker reads, and how batches are cut."""

    shards: tuple[int, ...]          # samples per shard
    seed: int
    world_size: int
    rank: int
    workers: int                     # loader worker processes (at least 1 for the arithmetic)
    batch: int                       # local batch size
    buffer: int

    def assignment(self, epoch: int) -> list[list[list[int]]]:
        """[rank][worker] -> shard numbers for `epoch`."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()
        return [[order[r::self.world_size][w::self.workers] for w in range(self.workers)]
                for r in range(self.world_size)]

    def quota(self, epoch: int) -> int:
        """Batches every worker yields in `epoch` (the fewest any worker of any rank can fill)."""
        return min(sum(self.shards[s] for s in shards) // self.batch
                   for rank in self.assignment(epoch) for shards in rank)


class ShardStream(torch.utils.data.IterableDataset):
    """One epoch of this rank's batches; `skip` leading batches are read but not decoded."""

    def __init__(self, out, plan: StreamPlan, preprocess, hard_per_query: int, epoch: int, skip: int = 0,
                 tokenize: QueryTokens | None = None):
        super().__init__()
        self.out, self.plan, self.preprocess, self.tokenize = out, plan, preprocess, tokenize
        self.hard_per_query, self.epoch, self.skip = hard_per_query, epoch, skip
        self.paths = [p for p, _ in shard_paths(out, read_prepared(out))]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        workers = info.num_workers if info is not None else 1
        if workers != self.plan.workers:
            raise ConfigError(f"the loader has {workers} workers but the plan {self.plan.workers}")
        quota = self.plan.quota(self.epoch)
        # The DataLoader starts its round robin at worker 0: after `skip` batches the next one is
        # due from role skip % workers, so the workers take their roles rotated by that much.
        role = (worker + self.skip % workers) % workers
        done = self.skip // workers + (1 if role < self.skip % workers else 0)
        shards = self.plan.assignment(self.epoch)[self.plan.rank][role]
        rng = np.random.default_rng([self.plan.seed, self.epoch, self.plan.rank, role])
        raw = _shuffled(_read_shards([self.paths[s] for s in shards]), self.plan.buffer, rng)
        images = EntityImages(self.out)
        for number in range(quota):
            chunk = [next(raw) for _ in range(self.plan.batch)]
            if number >= done:
                yield decode_batch(chunk, images, self.preprocess, self.hard_per_query, self.tokenize)


def _read_shards(paths) -> Iterator[tuple[bytes, bytes]]:
    """(json, target bytes) of every sample of `paths`, read sequentially (streamed from an object store)."""
    from .train_uri import open_tar

    for path in paths:
        with open_tar(path) as tar:
            pending: dict[str, dict[str, bytes]] = {}
            for member in tar:
                key, _, ext = member.name.partition(".")
                parts = pending.setdefault(key, {})
                parts[ext] = tar.extractfile(member).read()
                if len(parts) == 2:
                    del pending[key]
                    yield parts["json"], parts["img"]


def _shuffled(samples: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """A shuffle buffer of `size` samples (filled first, then one out for one in)."""
    buffer = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            pick = int(rng.integers(len(buffer)))
            buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
            yield buffer.pop()
    while buffer:
        pick = int(rng.integers(len(buffer)))
        buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
        yield buffer.pop()


def _decode(data: bytes | None, preprocess):
    from PIL import Image

    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return preprocess(image.convert("RGB"))
    except Exception:  # any decoder failure: the image is skipped and counted, never fatal
        return None


def decode_batch(chunk, images: EntityImages, preprocess, hard_per_query: int,
                 tokenize: QueryTokens | None = None) -> tuple[TrainBatch, dict]:
    """Decode and collate (and tokenize) one batch of raw samples; the counts of what could not be read."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    pixels: dict[str, torch.Tensor] = {}
    samples, bad = [], []
    for meta_bytes, target_bytes in chunk:
        meta = json.loads(meta_bytes)
        tensor = _decode(target_bytes, preprocess)
        if tensor is None:
            counts["undecodable_targets"] += 1
            bad.append(len(samples))
        else:
            pixels.setdefault(meta["target"], tensor)
        samples.append(meta)
    good = [n for n in range(len(samples)) if n not in set(bad)]
    if not good:
        raise InputError("no target image of a whole batch could be decoded; the prepared shards are damaged")
    for n in bad:  # a duplicate of a readable sample: the duplicate mask keeps it out of the negatives
        samples[n] = samples[good[n % len(good)]]
    out = []
    for meta in samples:
        entities = tuple(_load(i, images, preprocess, pixels, counts, "undecodable_entity_images")
                         for i in meta["entities"])
        hard = tuple(i for i in meta["hard"][:hard_per_query]
                     if _load(i, images, preprocess, pixels, counts, "undecodable_hard_negatives"))
        out.append(Sample(meta["query_id"], meta["masked_text"], entities, meta["target"], hard))
    return make_batch(out, _Pixels(pixels), hard_per_query, tokenize), counts


def _load(key, images, preprocess, pixels, counts, bad_key):
    if key is None:
        return None
    if key not in pixels:
        tensor = _decode(images.get(key), preprocess)
        if tensor is None:
            counts[bad_key] += 1
            return None
        pixels[key] = tensor
    return key


class _Pixels:
    """make_batch's image source: this batch's decoded tensors."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def pixels(self, ids) -> torch.Tensor:
        return torch.stack([self.tensors[i] for i in ids])


class StreamFeed:
    """This rank's batches, epoch after epoch; its position (epoch, batch) is saved in checkpoints."""

    def __init__(self, out, plan: StreamPlan, preprocess, hard_per_query: int, *, workers: int, pin: bool,
                 tokenize: QueryTokens | None = None):
        self.out, self.plan, self.preprocess, self.hard_per_query = out, plan, preprocess, hard_per_query
        self.loader_workers, self.pin, self.tokenize = workers, pin, tokenize
        self.epoch, self.batch = 0, 0
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self._iterator = None
        if plan.quota(0) == 0:
            raise ConfigError(f"the prepared data ({sum(plan.shards)} samples in {len(plan.shards)} shards) cannot "
                              f"fill one batch of {plan.batch} per worker for {plan.world_size} rank(s) x "
                              f"{plan.workers} worker(s); lower [optim] batch_size or [data] workers")

    def state(self) -> dict:
        """Where this rank is: the epoch and the batches of it already used."""
        return {"epoch": self.epoch, "batch": self.batch}

    def restore(self, state: dict) -> None:
        """Continue from a saved position (the next batch is the one after it)."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._iterator = None

    def next(self) -> TrainBatch:
        """The next local batch (a new epoch starts when this one is used up)."""
        while True:
            if self._iterator is None:
                dataset = ShardStream(self.out, self.plan, self.preprocess, self.hard_per_query, self.epoch,
                                      self.batch, self.tokenize)
                loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.loader_workers,
                                                     pin_memory=self.pin)
                self._iterator = iter(loader)
            try:
                batch, counts = next(self._iterator)
            except StopIteration:
                self.epoch, self.batch, self._iterator = self.epoch + 1, 0, None
                continue
            self.batch += 1
            for key, value in counts.items():
                self.counts[key] += int(value)
            return batch
