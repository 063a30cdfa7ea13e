"""Prepared shards and the streaming loader: layout, resume, locks, determinism, splits, bad images."""

from __future__ import annotations

import json
import threading
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torchvision.transforms.functional as TF  # imported here so forked loader workers inherit it
from PIL import Image  # noqa: F401
from typer.testing import CliRunner

from tests.test_models_world import make_world, write_store
from wit_retrieval.errors import InputError
from wit_retrieval.models.train_shards import (
    EntityImages,
    PrepareInputs,
    check_free_space,
    ensure_prepared,
    read_hard_negatives,
    read_prepared,
)
from wit_retrieval.models.train_stream import StreamFeed, StreamPlan


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("stream"), entities=6, scenes={"train": 40, "val": 4}, size=32)


def _preprocess(image):
    return TF.to_tensor(image.resize((8, 8)))


def _feed(folder, *, rank=0, world_size=1, workers=0, batch=4, seed=0):
    manifest = read_prepared(folder)
    plan = StreamPlan(tuple(s["samples"] for s in manifest["shards"]), seed, world_size, rank, max(1, workers),
                      batch, 5)
    return StreamFeed(folder, plan, _preprocess, 0, workers=workers, pin=False)


def test_prepare_layout_resume_and_lock(world, tmp_path):
    inputs = PrepareInputs(str(world.root.root), "train")
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_prepared(inputs, world.store, progress=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    folder = results[0]
    assert results[0] == results[1] and folder.parent.name == "train_shards"
    manifest = read_prepared(folder)
    assert manifest["counts"]["samples"] == 40 and sum(s["samples"] for s in manifest["shards"]) == 40
    assert manifest["entity_images"] == 6 and manifest["bytes"] > 0
    # every entity image is stored once and found by id
    images = EntityImages(folder)
    some = next(iter(world.store.ids()))
    assert images.get("not-an-image") is None
    assert (images.get(some) is None) or images.get(some) == world.store.get(some)
    # an interrupted preparation (a shard and the manifest gone) is finished, the rest kept
    (folder / "manifest.json").unlink()
    (folder / "samples-00003.json").unlink()
    kept = (folder / "samples-00001.tar").stat().st_mtime_ns
    assert ensure_prepared(inputs, world.store, progress=False) == folder
    assert (folder / "samples-00001.tar").stat().st_mtime_ns == kept
    assert read_prepared(folder)["counts"] == manifest["counts"]
    # another input (a cap on the queries) is another key, another folder
    other = ensure_prepared(PrepareInputs(str(world.root.root), "train", max_queries=10), world.store,
                            progress=False)
    assert other != folder and read_prepared(other)["counts"]["samples"] == 10


def test_disk_check_and_hard_negative_formats(tmp_path):
    with pytest.raises(InputError, match="GB is free"):
        check_free_space(tmp_path, 1 << 62)
    table = pa.table({"query_id": ["q1", "q2"], "image_ids": [["a", "b"], ["c"]], "scores": [[0.9, 0.5], [0.3]]})
    pq.write_table(table, tmp_path / "hard.parquet")
    assert read_hard_negatives(tmp_path / "hard.parquet") == {"q1": ["a", "b"], "q2": ["c"]}
    (tmp_path / "hard.trec").write_text("q1 Q0 b 1 0.9 run\nq1 Q0 a 2 0.5 run\n")
    assert read_hard_negatives(tmp_path / "hard.trec") == {"q1": ["b", "a"]}


def _ids(feed, count):
    return [tuple(feed.next().query_ids) for _ in range(count)]


def test_stream_is_deterministic_split_and_resumes_exactly(world):
    folder = ensure_prepared(PrepareInputs(str(world.root.root), "train"), world.store, progress=False)
    quota = _feed(folder, workers=2).plan.quota(0)
    first = _ids(_feed(folder, workers=2), 2 * quota + 3)      # more than one epoch
    assert first == _ids(_feed(folder, workers=2), 2 * quota + 3)
    assert first[:2 * quota] != first[2 * quota:4 * quota] or quota < 2  # epochs reshuffle
    assert _ids(_feed(folder, workers=2, seed=1), 3) != first[:3]
    epoch = [q for batch in first[:2 * quota] for q in batch]
    assert len(epoch) == len(set(epoch))                       # no sample twice in an epoch
    # resumed at every position of the epoch: the same batches follow
    for position in (1, 2, 3, 2 * quota - 1):
        feed = _feed(folder, workers=2)
        feed.restore({"epoch": 0, "batch": position})
        assert _ids(feed, 3) == first[position:position + 3], position
    # two ranks read disjoint samples
    ranks = [{q for batch in _ids(_feed(folder, rank=r, world_size=2), _feed(folder, rank=r, world_size=2)
                                  .plan.quota(0)) for q in batch} for r in range(2)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]


def test_undecodable_images_are_counted_and_skipped(tmp_path):
    world = make_world(tmp_path / "root", entities=4, scenes={"train": 16}, size=32)
    broken = sorted(world.store.ids())[:3]

    class Broken(type(world.store)):
        def get(self, image_id):
            return b"not an image" if image_id in broken else super().get(image_id)

    store = Broken(world.store.images)
    folder = ensure_prepared(PrepareInputs(str(world.root.root), "train"), store, progress=False)
    feed = _feed(folder, batch=4)
    batches = [feed.next() for _ in range(feed.plan.quota(0))]
    assert all(len(b.query_ids) == 4 for b in batches)
    assert sum(feed.counts.values()) > 0, feed.counts


def test_prepare_command_and_deprecated_key(tmp_path):
    from wit_retrieval.cli import app
    from wit_retrieval.models.train_config import config_from_dict

    world = make_world(tmp_path / "root", entities=4, scenes={"train": 12}, size=32)
    write_store(world.store, world.root.images)
    result = CliRunner().invoke(app, ["prepare", "baselines/inject-mini.toml", "--data", str(world.root.root),
                                      "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["samples"] == 12 and answer["out"] == str(tmp_path / "prepared")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = config_from_dict({"data": {"cache_images": True, "root": "x"}})
    assert config.data.root == "x" and any("cache_images is deprecated" in str(w.message) for w in caught)


def test_stream_workers_tokenize_the_queries(world):
    """Batches from forked loader workers carry the fusion's tokens of their own texts."""
    import re

    import open_clip
    import torch

    from wit_retrieval.models.encoders import register_tiny_configs
    from wit_retrieval.models.inject import tokenize_with_slots
    from wit_retrieval.models.train_data import QueryTokens

    register_tiny_configs()
    tokenizer = open_clip.get_tokenizer("wit-tiny-vit")
    folder = ensure_prepared(PrepareInputs(str(world.root.root), "train"), world.store, progress=False)
    manifest = read_prepared(folder)
    plan = StreamPlan(tuple(s["samples"] for s in manifest["shards"]), 0, 1, 0, 1, 4, 5)
    for mode in ("placeholder", "neutral"):
        feed = StreamFeed(folder, plan, _preprocess, 0, workers=1, pin=False, tokenize=QueryTokens(mode, tokenizer))
        for _ in range(3):
            batch = feed.next()
            assert batch.text_mode == mode
            if mode == "placeholder":
                tokens, slots = tokenize_with_slots(tokenizer, batch.masked_texts)
                assert torch.equal(batch.tokens, tokens) and torch.equal(batch.slots, slots)
                assert (slots >= 0).any()
            else:
                neutral = [re.sub(r"\[MASK_\d+\]", "something", t) for t in batch.masked_texts]
                assert torch.equal(batch.tokens, tokenizer(neutral)) and batch.slots is None
    if torch.cuda.is_available():  # the DataLoader pins the tokens with the pixels (pin_memory)
        feed = StreamFeed(folder, plan, _preprocess, 0, workers=1, pin=True,
                          tokenize=QueryTokens("placeholder", tokenizer))
        batch = feed.next()
        assert batch.pixels.is_pinned() and batch.tokens.is_pinned() and batch.slots.is_pinned()
