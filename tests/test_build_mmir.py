"""`build mmir`: linking, masking, filters with counts, splits, stable ids, tables, export, engines."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow.dataset as ds
import pytest

from tests.test_build_inputs import wit_row, write_dumps, write_wit
from wit_retrieval.build import EntitiesConfig, FilterConfig, MmirConfig, build_entities, build_mmir
from wit_retrieval.build.mmir import read_split_table
from wit_retrieval.build.names import commons_url
from wit_retrieval.engine import EngineConfig
from wit_retrieval.errors import ConfigError
from wit_retrieval.ids import image_id, query_id
from wit_retrieval.io.shards import read_table_dir

PAGES = ["Paris", "Berlin", "Angela_Merkel", "Eiffel_Tower", "Rome", "London"]


def make_world(tmp_path):
    write_dumps(tmp_path / "dumps", "en", [(i + 1, 0, t, False) for i, t in enumerate(PAGES)],
                [p for i, t in enumerate(PAGES) for p in ((i + 1, "page_image_free", f"{t}.jpg"),
                                                          (i + 1, "wikibase_item", f"Q{i + 1}"))])
    train = [
        wit_row("en", "Trip", "t1.jpg", "Angela Merkel visits Paris and Berlin in spring"),
        wit_row("en", "Trip", "t2.jpg", "Paris at night, seen from Paris outskirts"),
        wit_row("en", "Trip", "t3.jpg", "A quiet street"),
        wit_row("en", "Trip", "t4.jpg", "Paris"),
        {**wit_row("en", "Trip", "x", "Paris skyline at dusk"), "image_url": commons_url("Paris.jpg")},
        wit_row("en", "Trip", "t6.jpg", "Paris, Berlin, Rome, London, Eiffel Tower and Angela Merkel all here"),
        wit_row("en", "Trip", "t7.jpg", None),
        wit_row("en", "Trip", "t2.jpg", "Paris at night, seen from Paris outskirts"),
    ]
    files = [write_wit(tmp_path / "wit" / "wit_v1.train.all-00000-of-00001.tsv", train)]
    with open(files[0], "a", encoding="utf-8") as f:
        f.write("en\tbroken row\twith three fields\n")
    files.append(write_wit(tmp_path / "wit" / "wit_v1.val.all-00000-of-00001.tsv.gz",
                           [wit_row("en", "City", "v1.jpg", "The Eiffel Tower of Paris by night")]))
    files.append(write_wit(tmp_path / "wit" / "wit_v1.test.all-00000-of-00001.tsv.gz", [
        wit_row("fr", "Tour Eiffel", "main.jpg", None, main=True),
        wit_row("fr", "Nuit", "n1.jpg", "La Tour Eiffel la nuit"),
    ]))
    root = tmp_path / "root"
    build_entities(EntitiesConfig(out=str(root), wit=tuple(map(str, files)), dumps=str(tmp_path / "dumps")))
    return root, tuple(map(str, files))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mmir")
    root, files = make_world(tmp_path)
    stats = build_mmir(MmirConfig(out=str(root), wit=files, engine=EngineConfig(workers=1), train_shards=2))
    return root, files, stats


def queries_by_text(root, split):
    return {q["original_text"]: q for q in read_split_table(root, "queries", split).to_pylist()}


def test_masks_numbering_and_query_types(world):
    root, _, _ = world
    train = queries_by_text(root, "train")
    multi = train["Angela Merkel visits Paris and Berlin in spring"]
    assert multi["masked_text"] == "[MASK_0] visits [MASK_1] and [MASK_2] in spring"
    assert multi["entity_ids"] == ["Q3", "Q1", "Q2"] and multi["query_type"] == "multi"
    assert multi["entity_image_urls"] == [commons_url("Angela_Merkel.jpg"), commons_url("Paris.jpg"),
                                          commons_url("Berlin.jpg")]
    single = train["Paris at night, seen from Paris outskirts"]
    assert single["masked_text"] == "[MASK_0] at night, seen from [MASK_0] outskirts"
    assert single["query_type"] == "single" and single["num_entities"] == 1
    assert [(m["start"], m["end"], m["surface"]) for m in single["mentions"]] == [(0, 5, "Paris"), (26, 31, "Paris")]


def test_each_filter_counted(world):
    _, _, stats = world
    train = stats["splits"]["train"]
    assert train["dropped"] == {"no_entity": 1, "target_is_entity_image": 1, "too_few_words": 1,
                                "too_many_entities": 1}
    assert train["queries"] == 2 and train["duplicates"] == 1
    assert train["with_reference"] == 7 and train["rows_read"] == 8
    assert train["by_query_type"] == {"multi": 1, "single": 1}


def test_filters_are_configurable(tmp_path):
    root, files = make_world(tmp_path)
    filters = FilterConfig(max_entities=6, min_context_words=0, drop_target_is_entity_image=False)
    stats = build_mmir(MmirConfig(out=str(root), wit=files[:1], filters=filters, engine=EngineConfig(workers=1),
                                  export=False))
    assert stats["splits"]["train"]["dropped"] == {"no_entity": 1}
    assert stats["splits"]["train"]["queries"] == 5


def test_bad_rows_reported_with_file_and_line(world):
    _, files, stats = world
    assert stats["bad_rows"]["count"] == 1
    sample = stats["bad_rows"]["samples"][0]
    assert sample["path"] == files[1] or sample["path"].endswith(".train.all-00000-of-00001.tsv")
    assert sample["line"] == 10


def test_splits_from_file_names_and_wit_only_language(world):
    root, _, stats = world
    assert sorted(stats["splits"]) == ["test", "train", "val"]
    test = queries_by_text(root, "test")["La Tour Eiffel la nuit"]
    assert test["entity_ids"] == ["fr:Tour_Eiffel"] and test["masked_text"] == "La [MASK_0] la nuit"
    assert test["split"] == "test"
    with pytest.raises(ConfigError, match="split"):
        MmirConfig(out=str(root), wit=(str(root / "entities" / "_manifest.json"),))


def test_stable_ids_corpus_and_qrels(world):
    root, _, _ = world
    val = read_split_table(root, "queries", "val").to_pylist()[0]
    url = "https://upload.wikimedia.org/wikipedia/commons/a/ab/v1.jpg"
    assert val["query_id"] == query_id("val", url, "https://en.wikipedia.org/wiki/City", val["original_text"])
    assert val["target_image_id"] == image_id(url)
    corpus = read_split_table(root, "corpus", "train").to_pylist()
    assert [c["image_id"] for c in corpus] == sorted({image_id(u) for u in (
        "https://upload.wikimedia.org/wikipedia/commons/a/ab/t1.jpg",
        "https://upload.wikimedia.org/wikipedia/commons/a/ab/t2.jpg")})
    qrels = read_split_table(root, "qrels", "train").to_pylist()
    assert {(q["query_id"], q["image_id"], q["relevance"]) for q in qrels} == {
        (q["query_id"], q["target_image_id"], 1) for q in queries_by_text(root, "train").values()}


def test_hive_partitioned_tables_read_back(world):
    root, _, _ = world
    table = ds.dataset(str(root / "queries"), format="parquet", partitioning="hive").to_table()
    assert sorted(set(table["split"].to_pylist())) == ["test", "train", "val"]
    assert table.num_rows == 4
    ei = read_table_dir(root / "ei").to_pylist()
    assert {e["entity_id"]: e["num_queries"] for e in ei} == {"Q1": 3, "Q2": 1, "Q3": 1, "Q4": 1,
                                                            "fr:Tour_Eiffel": 1}
    assert json.loads((root / "config" / "build_mmir.json").read_text())["filters"]["max_entities"] == 5


def test_export_in_released_layout(world):
    root, _, _ = world
    names = sorted(p.name for p in (root / "exports").iterdir())
    assert names == ["entity_image_dataset.tsv.gz", "mmir_dataset_test.tsv.gz",
                     "mmir_dataset_train-00000-of-00002.tsv.gz", "mmir_dataset_train-00001-of-00002.tsv.gz",
                     "mmir_dataset_validation.tsv.gz"]
    with gzip.open(root / "exports" / "mmir_dataset_validation.tsv.gz", "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows[0]["masked_text"] == "The [MASK_0] of [MASK_1] by night"
    assert json.loads(rows[0]["entity_names"]) == ["Eiffel Tower", "Paris"]
    assert json.loads(rows[0]["entity_image_urls"])[1] == commons_url("Paris.jpg")


def test_same_output_whatever_the_worker_count(world, tmp_path):
    root, files, _ = world
    other, _ = make_world(tmp_path)
    build_mmir(MmirConfig(out=str(other), wit=files, engine=EngineConfig(workers=2), train_shards=2))
    for name in ("queries", "corpus", "qrels"):
        assert read_split_table(root, name).equals(read_split_table(other, name))
    for export in (root / "exports").iterdir():
        assert export.read_bytes() == (other / "exports" / export.name).read_bytes()


def test_background_reads_only_with_a_spare_core(world, monkeypatch):
    """Workers on every core read in their own thread; a build with a core to spare reads ahead."""
    from wit_retrieval.build.mmir import plan_tasks

    root, files, _ = world
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    flags = {workers: {t.background_reads for t in plan_tasks(MmirConfig(
        out=str(root), wit=files, engine=EngineConfig(workers=workers)))} for workers in (1, 2, 0)}
    assert flags == {1: {True}, 2: {False}, 0: {False}}


def test_spans_linker(world, tmp_path):
    root, files, _ = world
    text = "A quiet street"
    row_id = query_id("train", "https://upload.wikimedia.org/wikipedia/commons/a/ab/t3.jpg",
                      "https://en.wikipedia.org/wiki/Trip", text)
    spans = tmp_path / "spans.jsonl"
    spans.write_text(json.dumps({"row_id": row_id, "start": 8, "end": 14, "entity_id": "Q5"}) + "\n")
    other, _ = make_world(tmp_path)
    stats = build_mmir(MmirConfig(out=str(other), wit=files[:1], linker="spans", spans=str(spans),
                                  engine=EngineConfig(workers=1), export=False))
    assert stats["splits"]["train"]["queries"] == 1
    assert queries_by_text(other, "train")[text]["masked_text"] == "A quiet [MASK_0]"


@pytest.mark.slow
def test_local_and_ray_give_identical_tables(world, tmp_path):
    ray = pytest.importorskip("ray")
    root, files, _ = world
    other, _ = make_world(tmp_path)
    try:
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        build_mmir(MmirConfig(out=str(other), wit=files, engine=EngineConfig(name="ray", workers=2), train_shards=2))
    finally:
        ray.shutdown()
    for name in ("queries", "corpus", "qrels"):
        assert read_split_table(root, name).equals(read_split_table(other, name))
    assert read_table_dir(root / "ei").equals(read_table_dir(other / "ei"))


def test_gazetteer_cached_beside_entity_names(world):
    from wit_retrieval.build.linker import GAZETTEER_CACHE, Gazetteer, LinkerSpec

    root, _, _ = world
    spec = LinkerSpec(names_path=str(root / "entity_names"))
    text = "Angela Merkel visits Paris"
    expected = Gazetteer(spec).link(text, "en")
    cached = list((root / "entity_names" / GAZETTEER_CACHE).glob("en-*.keys.arrow"))
    assert len(cached) == 1 and expected == [(0, 13, "Q3"), (21, 26, "Q1")]
    assert Gazetteer(spec).link(text, "en") == expected  # loaded from the cache
    cached[0].write_bytes(b"not an arrow file")
    assert Gazetteer(spec).link(text, "en") == expected  # a damaged cache is rebuilt


def test_real_wit_rows_and_an_unclosed_quote(world, wit_fixtures, tmp_path):
    root, _, _ = world
    files = (str(wit_fixtures / "wit_train_sample.tsv"), str(wit_fixtures / "wit_test_truncated.tsv"))
    other, _ = make_world(tmp_path)
    stats = build_mmir(MmirConfig(out=str(other), wit=files, engine=EngineConfig(workers=1), export=False))
    assert stats["splits"]["train"]["rows_read"] == 3
    assert stats["splits"]["train"]["with_reference"] == 0  # the real rows have empty reference descriptions
    assert stats["bad_rows"]["count"] == 1
    bad = stats["bad_rows"]["samples"][0]
    assert bad["path"].endswith("wit_test_truncated.tsv") and bad["line"] == 2


def test_entity_uses_sum_the_same_compacted_or_not():
    """Counts summed once at the end, or compacted after each split, give the same totals."""
    import pyarrow as pa

    from wit_retrieval.build.mmir import EntityUses

    parts = [pa.table({"entity_id": ["Q1", "Q2"], "count": [2, 1]}),
             pa.table({"entity_id": ["Q2", "Q3"], "count": [4, 1]}),
             pa.table({"entity_id": ["Q1"], "count": [1]})]
    once, compacted = EntityUses(), EntityUses()
    for number, part in enumerate(parts):
        once.add(part)
        compacted.add(part)
        if number == 1:
            compacted.subtract(["Q3"])  # a repeated query taken back: its entity is used no more
            once.subtract(["Q3"])
            compacted.compact()
    compacted.compact()
    expected = {"Q1": 3, "Q2": 5}
    for uses in (once, compacted):
        totals = uses.totals()
        assert dict(zip(totals["entity_id"].to_pylist(), totals["count"].to_pylist())) == expected
    assert EntityUses().totals().num_rows == 0
