"""Training data: MMIR queries of a build, their images, deterministic batches.

A batch holds every distinct image it needs (targets, entity images, hard negatives) once;
the image tower embeds them together so entity images and targets share one tower. The loaders
also tokenize the batch's queries (QueryTokens), the stream in its worker processes, so that the
training step does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..ids import image_id
from ..io.shards import read_table_dir
from ..layout import DataRoot
from .fusion import tokenize_queries

QUERY_COLUMNS = ["query_id", "masked_text", "entity_ids", "entity_image_urls", "target_image_id", "language"]


@dataclass(frozen=True)
class Sample:
    """One training query: masked text, entity image ids (None when missing), target, hard negatives."""

    query_id: str
    masked_text: str
    entity_images: tuple[str | None, ...]
    target: str
    hard_negatives: tuple[str, ...] = ()

    @property
    def key(self) -> tuple:
        """Identity of the query for the duplicate mask (same text and same entities)."""
        return (self.masked_text, self.entity_images)


@dataclass
class TrainBatch:
    """Tensors of one micro-batch; indexes point into `pixels` (-1: missing)."""

    pixels: torch.Tensor
    target_index: torch.Tensor
    entity_index: torch.Tensor
    hard_index: torch.Tensor | None
    masked_texts: list[str]
    query_keys: list[tuple]
    target_keys: list[str]
    query_ids: list[str] | None = None
    tokens: torch.Tensor | None = None   # [b, L] the queries tokenized by the loader (QueryTokens), or None
    slots: torch.Tensor | None = None    # [b, L] with tokens in the placeholder mode (inject)
    text_mode: str | None = None         # the fusion text mode `tokens` were made for

    def pin_memory(self) -> TrainBatch:
        """The batch's tensors in page-locked memory (DataLoader pin_memory; faster copies to CUDA)."""
        self.pixels = self.pixels.pin_memory()
        if self.tokens is not None:
            self.tokens = self.tokens.pin_memory()
        if self.slots is not None:
            self.slots = self.slots.pin_memory()
        return self


@dataclass(frozen=True)
class QueryTokens:
    """Tokenizes a batch's masked texts as the run's fusion reads them (fusion.tokenize_queries).

    The loaders call it while they assemble a batch, the stream inside its DataLoader worker
    processes (which inherit it by fork), so that the training step gets its tokens ready made.
    Training passes no entity names, so the `names` mode fills masks with the neutral word, as
    the step did when it tokenized. With a `cache` (the memory feed's, which tokenizes in the
    training process and draws the same samples every epoch) each distinct text is tokenized
    once; a text's rows do not depend on its batch (every row is padded to the context length).
    """

    text_mode: str
    tokenizer: object
    cache: dict | None = field(default=None, compare=False)

    def __call__(self, masked_texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cache is None:
            return tokenize_queries(self.text_mode, self.tokenizer, masked_texts)
        todo = list(dict.fromkeys(t for t in masked_texts if t not in self.cache))
        if todo:
            tokens, slots = tokenize_queries(self.text_mode, self.tokenizer, todo)
            for n, text in enumerate(todo):
                self.cache[text] = (tokens[n], None if slots is None else slots[n])
        rows = [self.cache[t] for t in masked_texts]
        slots = None if rows[0][1] is None else torch.stack([r[1] for r in rows])
        return torch.stack([r[0] for r in rows]), slots


def read_queries(root: str | Path, split: str, max_queries: int = 0) -> list[dict]:
    """Rows of the queries table of `split` (the columns training and evaluation use)."""
    folder = DataRoot(root).table_split("queries", split)
    table = read_table_dir(folder, columns=QUERY_COLUMNS)
    rows = table.to_pylist()
    return rows[:max_queries] if max_queries else rows


def entity_image_ids(row: dict) -> tuple[str | None, ...]:
    """The image id of each mask's entity image (None where the URL is missing)."""
    return tuple(image_id(u) if u else None for u in (row.get("entity_image_urls") or []))


def load_samples(root: str | Path, split: str, store, *, max_queries: int = 0,
                 hard_negatives: dict[str, list[str]] | None = None, per_query: int = 1
                 ) -> tuple[list[Sample], dict[str, int]]:
    """Samples whose target image is in the store; counts of what was dropped or missing."""
    samples, counts = [], {"queries": 0, "dropped_no_target_image": 0, "missing_entity_images": 0}
    for row in read_queries(root, split, max_queries):
        counts["queries"] += 1
        if row["target_image_id"] not in store:
            counts["dropped_no_target_image"] += 1
            continue
        entities = tuple(i if i is not None and i in store else None for i in entity_image_ids(row))
        counts["missing_entity_images"] += sum(e is None for e in entities)
        hard = ()
        if hard_negatives:
            ranked = hard_negatives.get(row["query_id"], [])
            hard = tuple([i for i in ranked if i != row["target_image_id"] and i in store][:per_query])
        samples.append(Sample(row["query_id"], row["masked_text"], entities, row["target_image_id"], hard))
    if not samples:
        raise InputError(f"no {split} query has its target image in the image store; fetch the images first",
                         path=str(DataRoot(root).table_split("queries", split)))
    return samples, counts


def hard_negatives_from_run(path: str | Path) -> dict[str, list[str]]:
    """Ranked image ids per query from a first-pass run file (TREC, JSON or parquet)."""
    from ..io.runs import read_run

    return {qid: [doc for doc, _ in ranked] for qid, ranked in read_run(Path(path)).items()}


def batch_indices(num_samples: int, batch_size: int, seed: int, micro_step: int) -> np.ndarray:
    """Sample indexes of global micro-batch `micro_step` (epochs reshuffled from (seed, epoch))."""
    per_epoch = max(1, num_samples // batch_size)
    epoch, position = divmod(micro_step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return order[position * batch_size: (position + 1) * batch_size]


class ImageLoader:
    """Preprocessed image tensors by id, decoded in threads, optionally kept in memory."""

    def __init__(self, store, preprocess, *, cache: bool = True, workers: int = 0):
        self.store = store
        self.preprocess = preprocess
        self.cache: dict[str, torch.Tensor] | None = {} if cache else None
        self.pool = ThreadPoolExecutor(workers) if workers > 0 else None

    def _load(self, key: str) -> torch.Tensor:
        return self.preprocess(self.store.open(key))

    def pixels(self, ids: Sequence[str]) -> torch.Tensor:
        """[N, 3, H, W] for `ids` in order."""
        todo = [i for i in ids if self.cache is None or i not in self.cache]
        loaded = list(self.pool.map(self._load, todo)) if self.pool else [self._load(i) for i in todo]
        fresh = dict(zip(todo, loaded))
        if self.cache is not None:
            self.cache.update(fresh)
            fresh = self.cache
        return torch.stack([fresh[i] for i in ids])


def make_batch(samples: Sequence[Sample], loader: ImageLoader, hard_per_query: int = 0,
               tokenize: QueryTokens | None = None) -> TrainBatch:
    """Collect the distinct images of `samples` and index targets, entities and hard negatives
    (and, given `tokenize`, the queries' tokens)."""
    position: dict[str, int] = {}

    def slot(key: str | None) -> int:
        return -1 if key is None else position.setdefault(key, len(position))

    target_index = torch.tensor([slot(s.target) for s in samples])
    width = max(1, max(len(s.entity_images) for s in samples))
    entity_index = torch.full((len(samples), width), -1, dtype=torch.long)
    for row, sample in enumerate(samples):
        for col, key in enumerate(sample.entity_images):
            entity_index[row, col] = slot(key)
    hard_index = None
    if hard_per_query:
        hard_index = torch.full((len(samples), hard_per_query), -1, dtype=torch.long)
        for row, sample in enumerate(samples):
            for col, key in enumerate(sample.hard_negatives[:hard_per_query]):
                hard_index[row, col] = slot(key)
    pixels = loader.pixels(list(position))
    texts = [s.masked_text for s in samples]
    tokens, slots = tokenize(texts) if tokenize is not None else (None, None)
    return TrainBatch(pixels, target_index, entity_index, hard_index, texts, [s.key for s in samples],
                      [s.target for s in samples], [s.query_id for s in samples], tokens, slots,
                      tokenize.text_mode if tokenize is not None else None)


class IndexFeed:
    """In-memory samples in global micro-batches from (seed, micro-batch number); this rank takes its share.

    Every rank draws the same global batch, so any world size sees the same samples (what the
    equivalence tests need); the position is the micro-batch counter.
    """

    def __init__(self, samples: list[Sample], loader: ImageLoader, batch: int, seed: int, world, hard_per_query: int,
                 tokenize: QueryTokens | None = None):
        self.samples, self.loader, self.batch, self.seed = samples, loader, batch, seed
        self.world, self.hard_per_query, self.tokenize = world, hard_per_query, tokenize
        self.micro = 0
        self.counts: dict[str, int] = {}

    def state(self) -> dict:
        """The number of global micro-batches used."""
        return {"micro_batch": self.micro}

    def restore(self, state: dict) -> None:
        """Continue after `state`'s micro-batch."""
        self.micro = int(state["micro_batch"])

    def next(self) -> TrainBatch:
        """This rank's share of the next global micro-batch."""
        index = batch_indices(len(self.samples), self.batch, self.seed, self.micro)
        share = self.batch // self.world.world_size
        mine = index[self.world.rank * share:(self.world.rank + 1) * share]
        self.micro += 1
        return make_batch([self.samples[i] for i in mine], self.loader, self.hard_per_query, self.tokenize)
