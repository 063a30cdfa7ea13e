"""load_dataset on a build root (hive-partitioned parquet) and on released TSV files."""

from __future__ import annotations

import gzip
import os

import pyarrow as pa
import pytest

import wit_retrieval
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.io.shards import write_table_dir
from wit_retrieval.layout import DataRoot
from wit_retrieval.schema import CORPUS, EI

COMMONS = "https://upload.wikimedia.org/wikipedia/commons/a/ab"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WIT_RETRIEVAL_CACHE", str(tmp_path / "cache"))


def _corpus(split: str, n: int, with_split_column: bool = True) -> pa.Table:
    table = pa.table({"image_id": [f"{split}{i}" for i in range(n)], "image_url": [f"{COMMONS}/{i}.jpg" for i in range(n)],
                      "split": [split] * n}, schema=CORPUS)
    return table if with_split_column else table.drop_columns(["split"])


def test_build_root_tables_and_splits(tmp_path):
    root = DataRoot(tmp_path / "build")
    write_table_dir(root.table_split("corpus", "train"), [_corpus("train", 5)], CORPUS)
    write_table_dir(root.table_split("corpus", "val"), [_corpus("val", 3)], CORPUS)
    ei = {"entity_id": ["Q1"], "language": ["en"], "page_title": ["Bern"], "image_url": [f"{COMMONS}/B.jpg"],
          "image_id": ["b"], "num_queries": [4]}
    write_table_dir(root.table("ei"), [pa.table(ei, schema=EI)], EI)
    val = wit_retrieval.load_dataset(root.root, "corpus", split="validation")
    assert len(val) == 3 and set(val["split"]) == {"val"}
    everything = wit_retrieval.load_dataset(root.root, "corpus")
    assert sorted(everything["split"]) == ["train"] * 5 + ["val"] * 3
    assert wit_retrieval.load_dataset(root.root, "ei")[0]["num_queries"] == 4
    # a rebuilt table is not served from the old cache
    write_table_dir(root.table_split("corpus", "val"), [_corpus("val", 2)], CORPUS)
    assert len(wit_retrieval.load_dataset(root.root, "corpus", split="val")) == 2
    caches = sorted(p.name.split("-")[1:3] for p in (tmp_path / "cache" / "arrow").iterdir())
    assert caches == [["corpus", "all"], ["corpus", "val"], ["ei", "all"]]  # the old val cache was replaced


def test_split_restored_from_partition_folder(tmp_path):
    root = DataRoot(tmp_path / "b")
    folder = root.table_split("corpus", "test")
    folder.mkdir(parents=True)
    import pyarrow.parquet as pq

    from wit_retrieval.io.shards import write_json_atomic

    pq.write_table(_corpus("test", 2, with_split_column=False), folder / "part-00000.parquet")
    write_json_atomic(folder / "_manifest.json", {"files": [{"file": "part-00000.parquet", "rows": 2}], "rows": 2})
    assert wit_retrieval.load_dataset(root.root, "corpus", split="test")["split"] == ["test", "test"]


def test_errors(tmp_path):
    root = DataRoot(tmp_path / "b")
    write_table_dir(root.table_split("corpus", "val"), [_corpus("val", 1)], CORPUS)
    with pytest.raises(InputError, match="no queries table"):
        wit_retrieval.load_dataset(root.root, "queries")
    with pytest.raises(ConfigError, match="unknown split"):
        wit_retrieval.load_dataset(root.root, "corpus", split="dev2")
    with pytest.raises(ConfigError, match="unknown table"):
        wit_retrieval.load_dataset(root.root, "nope")
    with pytest.raises(InputError, match="no such file"):
        wit_retrieval.load_dataset(tmp_path / "absent")


def test_released_file_and_folder(tmp_path):
    folder = tmp_path / "released"
    folder.mkdir()
    lines = ["img\tq\tents"] + [
        f"{COMMONS}/T{i}.jpg\t[MASK_0] next to [MASK_1] {i}\t{COMMONS}/E{i}.jpg|{COMMONS}/F{i}.jpg" for i in range(7)
    ]
    path = folder / "mmir_dataset_test.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    queries = wit_retrieval.load_dataset(path, "queries", split="test")
    assert len(queries) == 7 and queries[0]["query_type"] == "multi"
    assert queries[0]["entity_image_urls"] == [f"{COMMONS}/E0.jpg", f"{COMMONS}/F0.jpg"]
    assert len(wit_retrieval.load_dataset(folder, "qrels")) == 7
    imports = tmp_path / "cache" / "released"
    assert len(list(imports.iterdir())) == 1  # the file and the folder of only it: one import
    os.utime(path, ns=(1, 1))  # a changed file is imported again
    assert len(wit_retrieval.load_dataset(folder, "corpus", split="test")) == 7
    assert len(list(imports.iterdir())) == 2
    assert len(wit_retrieval.load_dataset(tmp_path, "queries")) == 7  # found below a download folder
