"""export released|hf|mbeir: side by side on one world, from a build root and from a `released import` root.

The hf folder is read by `datasets.load_dataset` and by mteb's own RetrievalDatasetLoader (offline);
the M-BEIR folder by UniIR's own dataset classes (vendored in tests/fixtures/uniir, MIT).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_models_world import make_world, write_store
from wit_retrieval.cli import app
from wit_retrieval.io.shards import read_table_dir

UNIIR = Path(__file__).parent / "fixtures" / "uniir"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    built = make_world(base / "root", entities=6, scenes={"val": 6, "test": 14}, size=32)
    write_store(built.store, base / "root" / "images")
    return built


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_released_export_and_the_build_export_alias(world, tmp_path):
    _run("export", "released", world.root.root, "--out", tmp_path / "rel", "--train-shards", "2")
    names = sorted(p.name for p in (tmp_path / "rel").iterdir())
    assert names == ["mmir_dataset_test.tsv.gz", "mmir_dataset_validation.tsv.gz"]
    _run("build", "export", world.root.root)
    assert (world.root.exports / "mmir_dataset_test.tsv.gz").read_bytes() == \
        (tmp_path / "rel" / "mmir_dataset_test.tsv.gz").read_bytes()


@pytest.mark.parametrize("images", ["urls", "embed"])
def test_hf_export_loads_with_datasets_and_mteb(world, tmp_path, images):
    import datasets

    out = tmp_path / f"hf-{images}"
    _run("export", "hf", world.root.root, "--out", out, "--images", images)
    assert datasets.get_dataset_config_names(str(out)) == ["corpus", "queries", "qrels"]
    queries = datasets.load_dataset(str(out), "queries", split="test", cache_dir=str(tmp_path / "c"))
    source = read_table_dir(world.root.table_split("queries", "test")).to_pylist()
    assert queries["id"] == [q["query_id"] for q in source] and queries["text"] == [q["masked_text"] for q in source]
    card = (out / "README.md").read_text()
    assert "license: cc-by-sa-3.0" in card and "- eng" in card and "hf upload" in card and "@article" in card
    if images == "embed":
        assert isinstance(queries.features["image"], datasets.List)
        first = queries[0]
        assert len(first["image"]) == source[0]["num_entities"]
        assert first["image"][0].tobytes() == world.store.images[first["entity_image_ids"][0]].tobytes()
        corpus = datasets.load_dataset(str(out), "corpus", split="validation", cache_dir=str(tmp_path / "c"))
        assert isinstance(corpus.features["image"], datasets.Image) and corpus.num_rows == 6
        assert "an entity image is stored again in every query" in card
    else:
        assert "image" not in queries.features and "image_store=" in card
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalDatasetLoader

    loaded = RetrievalDatasetLoader(str(out), revision="local", split="test").load()
    assert len(loaded["queries"]) == 14 and len(loaded["corpus"]) == 14
    assert sum(len(v) for v in loaded["relevant_docs"].values()) == 14


def test_hf_export_of_a_released_import_root_writes_nulls(world, tmp_path):
    import datasets

    from wit_retrieval.io.released import import_released

    _run("export", "released", world.root.root, "--out", tmp_path / "rel")
    import_released(sorted((tmp_path / "rel").iterdir()), tmp_path / "imported")
    _run("export", "hf", tmp_path / "imported", "--out", tmp_path / "hf")
    queries = datasets.load_dataset(str(tmp_path / "hf"), "queries", split="test", cache_dir=str(tmp_path / "c"))
    assert queries.num_rows == 14 and set(queries["query_type"]) == {"single", "multi"}
    _run("export", "mbeir", tmp_path / "imported", "--out", tmp_path / "mb")
    assert (tmp_path / "mb" / "query" / "test" / "mbeir_wit_test.jsonl").exists()


def test_hf_export_refuses_too_little_space_and_bad_options(world, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    result = CliRunner().invoke(app, ["export", "hf", str(world.root.root), "--out", str(tmp_path / "x"),
                                      "--images", "png"])
    assert result.exit_code == 1 and "--images must be one of urls, embed" in result.output
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(100, 99, 1))
    result = CliRunner().invoke(app, ["export", "hf", str(world.root.root), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "only 1.0 B is free" in result.output
    assert not (tmp_path / "x").exists()


def test_hf_export_shards_large_splits(world, tmp_path):
    from wit_retrieval.exports.hf import HfExportConfig, export_hf

    stats = export_hf(HfExportConfig(root=str(world.root.root), out=str(tmp_path / "hf"), images="embed",
                                     shard_rows=5, batch_rows=5, progress=False))
    assert stats.files["queries/test"] == [f"queries/test-0000{k}.parquet" for k in range(3)]
    assert stats.rows["queries/test"] == 14 and stats.images_embedded > stats.rows["corpus/test"]


def _uniir():
    pytest.importorskip("typeguard")
    pytest.importorskip("torchvision")
    sys.path.insert(0, str(UNIIR))
    try:
        from data.mbeir_dataset import MBEIRCandidatePoolDataset, MBEIRMainDataset, Mode
        from data.preprocessing.utils import hash_did, hash_qid
    finally:
        sys.path.remove(str(UNIIR))
    return MBEIRMainDataset, MBEIRCandidatePoolDataset, Mode, hash_qid, hash_did


def test_mbeir_export_reads_in_uniirs_loader(world, tmp_path, monkeypatch):
    import wit_retrieval.exports.mbeir as mbeir

    monkeypatch.setattr(mbeir, "PER_DATASET", 8)  # 14 test queries spread over dataset ids 10 and 11
    out = tmp_path / "mb"
    _run("export", "mbeir", world.root.root, "--out", out)
    jsonl = sorted(str(p.relative_to(out)) for p in out.rglob("*.jsonl"))
    assert jsonl == ["cand_pool/local/mbeir_wit_test_cand_pool.jsonl", "cand_pool/local/mbeir_wit_val_cand_pool.jsonl",
                     "query/test/mbeir_wit_test.jsonl", "query/val/mbeir_wit_val.jsonl"]
    assert all(p.stat().st_size > 0 for p in out.rglob("*") if p.is_file())
    main_cls, pool_cls, mode, hash_qid, hash_did = _uniir()
    queries = main_cls(str(out), "query/test/mbeir_wit_test.jsonl", "cand_pool/local/mbeir_wit_test_cand_pool.jsonl",
                       "instructions/query_instructions.tsv", None, mode=mode.EVAL, print_config=False)
    assert len(queries) == 14
    items = [queries[i] for i in range(len(queries))]
    assert {q["qid"] // 500_000 for q in items} == {10, 11}
    assert len({q["qid"] for q in items}) == 14 and items[0]["query"]["img"].size == (32, 32)
    pool = pool_cls(str(out), "cand_pool/local/mbeir_wit_test_cand_pool.jsonl", None, print_config=False)
    assert len({pool[i]["did"] for i in range(len(pool))}) == 14
    id_map = [line.split("\t") for line in (out / "id_map.tsv").read_text().splitlines()[1:]]
    ours = {(s, k, m): i for s, k, m, i in id_map}
    source = {q["query_id"]: q for q in read_table_dir(world.root.table_split("queries", "test")).to_pylist()}
    rows = [json.loads(line) for line in (out / "query/test/mbeir_wit_test.jsonl").read_text().splitlines()]
    qrels = [line.split() for line in (out / "qrels/test/mbeir_wit_test_qrels.txt").read_text().splitlines()]
    assert all(r[1] == "0" and r[4] == "7" for r in qrels) and len(qrels) == 14
    for row in rows:
        query = source[ours[("test", "query", row["qid"])]]
        src = json.loads(row["query_src_content"])
        assert len(src["entity_image_paths"]) == query["num_entities"] and row["query_img_path"] == src["entity_image_paths"][0]
        assert ours[("test", "candidate", row["pos_cand_list"][0])] == query["target_image_id"]
        assert hash_did(row["pos_cand_list"][0]) // 10_000_000 in (10, 11)


def test_card_lists_languages_without_an_mteb_code():
    from wit_retrieval.exports.hf import HfExportConfig, HfExportStats
    from wit_retrieval.exports.hf_card import body, front_matter

    stats = HfExportStats(rows={"queries/test": 3}, files={"queries/test": ["queries/test-00000.parquet"]},
                          languages={"de": 1, "zh-TW": 1, "xx-nowhere": 1})
    config = HfExportConfig(root="r", out="o")
    head = front_matter(stats, config)
    assert "- deu\n- zho\n" in head and "xx-nowhere" not in head and "- multilingual" in head
    assert "Without a mapping (left out of the per-language\nMTEB tasks): xx-nowhere." in body(None, config, stats)
