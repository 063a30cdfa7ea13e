"""mine-negatives: top candidates minus positives, duplicates and likely false negatives, as parquet."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_models_world import make_world, one_torch_thread, write_store  # noqa: F401
from wit_retrieval.errors import ConfigError
from wit_retrieval.images import open_store
from wit_retrieval.io.shards import read_table_dir
from wit_retrieval.models.mining import HARD_NEGATIVES, MineConfig, _duplicates, mine_negatives

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("mining")
    made = make_world(base / "data", entities=6, scenes={"train": 40}, size=24)
    write_store(made.store, base / "data" / "images")
    return base


@pytest.fixture(scope="module")
def encoder():
    from wit_retrieval.models import load_encoder

    return load_encoder("open_clip:wit-tiny-vit:random", device="cpu")


def _mine(world, encoder, name, **kw):
    config = MineConfig(data=str(world / "data"), out=str(world / name), model="open_clip:wit-tiny-vit:random",
                        fusion="sum", depth=20, keep=10, progress=False, batch_size=16, workers=1, **kw)
    return mine_negatives(config, encoder=encoder), pq.read_table(world / name)


def test_negatives_exclude_positives_and_respect_the_false_negative_rule(world, encoder):
    summary, table = _mine(world, encoder, "hn.parquet")
    assert table.schema.equals(HARD_NEGATIVES)
    qrels = read_table_dir(world / "data" / "qrels" / "split=train").to_pylist()
    target = {r["query_id"]: r["image_id"] for r in qrels}
    rows = table.to_pylist()
    assert len(rows) == 40 == summary["queries"]
    for row in rows:
        assert target[row["query_id"]] not in row["image_ids"]
        assert len(row["image_ids"]) == len(row["scores"]) <= 10
        assert row["scores"] == sorted(row["scores"], reverse=True)
    meta = json.loads(pq.read_metadata(world / "hn.parquet").metadata[b"wit_retrieval"])
    assert meta["fusion"] == "sum" and meta["config"]["false_negative_ratio"] == 0.95
    # with the rule off, nothing is dropped as a likely false negative and at least as much is kept
    summary_all, table_all = _mine(world, encoder, "hn-all.parquet", false_negative_ratio=0.0)
    assert summary_all.get("dropped_likely_false_negatives", 0) == 0
    assert summary_all["negatives"] >= summary["negatives"]
    assert summary["negatives"] + summary.get("dropped_likely_false_negatives", 0) >= summary_all["negatives"]
    # the first-pass embeddings were cached as folders of parts: a second run re-embeds nothing
    assert list((world / "data" / "embeddings").glob("parts-*/train-corpus/manifest.json"))


def test_duplicates_are_targets_of_identical_queries_and_same_bytes(world):
    store = open_store(world / "data" / "images")
    ids = store.ids()
    queries = [{"query_id": "a", "masked_text": "[MASK_0] at sea", "entity_image_urls": []},
               {"query_id": "b", "masked_text": "[MASK_0] at sea", "entity_image_urls": []},
               {"query_id": "c", "masked_text": "other", "entity_image_urls": []}]
    positives = {"a": {ids[0]: 1}, "b": {ids[1]: 1}, "c": {ids[2]: 1}}
    dups = _duplicates(queries, positives, store)
    assert dups["a"] == dups["b"] == {ids[0], ids[1]} and dups["c"] == {ids[2]}


def test_bad_settings_are_one_clear_error():
    with pytest.raises(ConfigError, match="keep"):
        MineConfig(data="d", out="o", model="m", depth=5, keep=10)
    with pytest.raises(ConfigError, match="false_negative_ratio"):
        MineConfig(data="d", out="o", model="m", false_negative_ratio=1.5)
    assert pa.types.is_list(HARD_NEGATIVES.field("image_ids").type)


@pytest.mark.slow
def test_training_reads_the_mined_file(world, encoder):
    from wit_retrieval.models.train import train
    from wit_retrieval.models.train_config import config_from_dict
    from wit_retrieval.models.train_shards import read_hard_negatives

    _, table = _mine(world, encoder, "hn-train.parquet")
    mined = read_hard_negatives(world / "hn-train.parquet")
    assert mined == dict(zip(table["query_id"].to_pylist(), table["image_ids"].to_pylist()))
    config = config_from_dict({
        "model": {"base": "open_clip:wit-tiny-vit:random", "fusion": "inject"},
        "data": {"root": str(world / "data")},
        "optim": {"steps": 2, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1},
        "loss": {"hard_negatives": str(world / "hn-train.parquet"), "hard_negatives_per_query": 2},
        "run": {"out": str(world / "train-out"), "checkpoint_every": 0, "eval_every": 0, "log_every": 1,
                "threads": 1}})
    train(config)
    log = (world / "train-out" / "train_log.jsonl").read_text().splitlines()
    assert len([line for line in log if '"loss"' in line]) == 2
