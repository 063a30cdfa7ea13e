"""Where a run's batches come from: the streamed prepared shards, or every sample in memory.

Both give each rank its share of the global micro-batch and a position for checkpoints; the
ranks check they read the same data before the first step.
"""

from __future__ import annotations

from .. import distributed as dist
from ..errors import ConfigError
from ..io import fs
from .checkpoint import Built
from .distill import load_teacher
from .fusion import get_fusion
from .train_config import TrainConfig
from .train_data import ImageLoader, IndexFeed, QueryTokens, load_samples


def make_feed(config: TrainConfig, store, built: Built, world: dist.World, device: str):
    """(feed, data counts, teacher cache or None) for `config`'s [data] loader."""
    return (_memory_feed if config.data.loader == "memory" else _stream_feed)(config, store, built, world, device)


def _memory_feed(config: TrainConfig, store, built: Built, world: dist.World, device: str):
    """Every sample in a list, images cached once decoded (small worlds; the equivalence tests)."""
    import hashlib

    from .train_shards import read_hard_negatives

    hard = read_hard_negatives(config.loss.hard_negatives) if config.loss.hard_negatives else None
    samples, counts = load_samples(config.data.root, config.data.train_split, store,
                                   max_queries=config.data.max_train_queries, hard_negatives=hard,
                                   per_query=config.loss.hard_negatives_per_query)
    if len(samples) < config.optim.batch_size:
        raise ConfigError(f"{len(samples)} training queries is fewer than one batch "
                          f"({config.optim.batch_size}); lower [optim] batch_size")
    digest = hashlib.sha256()
    for s in samples:
        digest.update(repr((s.query_id, s.target, s.entity_images, s.hard_negatives)).encode("utf-8"))
    _check_same_data((len(samples), digest.hexdigest()[:16]), world)
    loader = ImageLoader(store, built.preprocess, workers=config.data.workers)
    feed = IndexFeed(samples, loader, config.optim.batch_size, config.run.seed, world,
                     config.loss.hard_negatives_per_query if config.loss.hard_negatives else 0,
                     _tokens(config, built, cache=True))
    return feed, counts, load_teacher(config.distill, samples)


def _stream_feed(config: TrainConfig, store, built: Built, world: dist.World, device: str):
    """Batches streamed from prepared shards (prepared here on first use, one preparer at a time)."""
    from ..layout import DataRoot
    from .teacher_store import open_teacher_store
    from .train_shards import PrepareInputs, ensure_prepared, read_prepared
    from .train_stream import StreamFeed, StreamPlan

    inputs = PrepareInputs(config.data.root, config.data.train_split, config.data.max_train_queries,
                           config.loss.hard_negatives, config.loss.hard_negatives_per_query)
    # without a store object, the folder: the store's index of every image is opened only to prepare
    source = store if store is not None else (config.data.images or DataRoot(config.data.root).images)
    folder = ensure_prepared(inputs, source, config.data.prepared or None)
    manifest = read_prepared(folder)
    from .train_uri import local_entity_store

    local_entity_store(folder)  # a URI's entity store: copied to this node once, before the loader workers start
    _check_same_data((manifest["key"], manifest["counts"]["samples"], len(manifest["shards"])), world)
    plan = StreamPlan(tuple(s["samples"] for s in manifest["shards"]), config.run.seed, world.world_size, world.rank,
                      max(1, config.data.workers), config.optim.batch_size // world.world_size,
                      config.data.shuffle_buffer)
    feed = StreamFeed(folder, plan, built.preprocess,
                      config.loss.hard_negatives_per_query if config.loss.hard_negatives else 0,
                      workers=config.data.workers, pin=device.startswith("cuda"), tokenize=_tokens(config, built))
    # the teacher is converted once into an id-keyed store (beside the shards, or in this node's cache
    # for shards on an object store) and read by id per batch
    teacher = open_teacher_store(config.distill, folder, progress=world.is_main)
    counts = {**manifest["counts"], "prepared": fs.redact(folder)}
    return feed, counts, teacher


def _tokens(config: TrainConfig, built: Built, *, cache: bool = False) -> QueryTokens:
    """The loaders tokenize the queries (the stream in its worker processes): the step does not.

    The memory feed keeps each text's tokens (its samples are in memory anyway); the stream, at
    any scale, does not.
    """
    return QueryTokens(get_fusion(config.model.fusion).text_mode, built.tokenizer, {} if cache else None)


def _check_same_data(fingerprint, world: dist.World) -> None:
    """Every rank must read the same training data (same root, same build): compare fingerprints."""
    if not world.distributed:
        return
    found = dist.gather_objects(fingerprint, world)
    if len(set(map(repr, found))) > 1:
        listing = ", ".join(f"rank {r}: {f}" for r, f in enumerate(found))
        raise ConfigError(f"the ranks read different training data ({listing}); give every node the same "
                          "--data root and build")
