"""What to fetch: URLs of a build or a file, deduplicated by image_id, cut into deterministic shards."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.ids import image_id
from wit_retrieval.images.http import thumbnail_url
from wit_retrieval.images.sources import build_urls, file_urls, make_plan, plan_items, read_plan
from wit_retrieval.io.shards import write_table_dir
from wit_retrieval.layout import DataRoot
from wit_retrieval.schema import ENTITIES, QUERIES

U = "https://upload.wikimedia.org/wikipedia/commons"


def _query(qid, target, entity_urls):
    row = {name: None for name in QUERIES.names}
    row.update(query_id=qid, split="test", target_image_url=target, entity_image_urls=entity_urls,
               entity_ids=[f"Q{i}" for i in range(len(entity_urls))], mentions=[])
    return row


def test_build_urls_reads_queries_and_entities(tmp_path):
    root = DataRoot(tmp_path)
    for split, rows in (("train", [_query("a", f"{U}/a/ab/T1.jpg", [f"{U}/1/12/E1.jpg", f"{U}/2/23/E2.jpg"])]),
                        ("test", [_query("b", f"{U}/c/cd/T2.jpg", [f"{U}/1/12/E1.jpg"])])):
        write_table_dir(root.table_split("queries", split), [pa.Table.from_pylist(rows, schema=QUERIES)], QUERIES)
    entity = {name: None for name in ENTITIES.names}
    entity.update(entity_id="Q1", image_url=f"{U}/3/34/E3.png")
    write_table_dir(root.table("entities"), [pa.Table.from_pylist([entity], schema=ENTITIES)], ENTITIES)
    urls = sorted(build_urls(tmp_path))
    assert len(urls) == 6 and len(set(urls)) == 5
    plan = make_plan(urls, tmp_path / "images", shard_size=2)
    assert (plan.items, plan.shards) == (5, 3)
    with pytest.raises(InputError, match="data root"):
        list(build_urls(tmp_path / "empty"))


def test_plan_is_deterministic_and_guards_its_folder(tmp_path):
    urls = [f"{U}/0/0{i % 10}/F{i}.jpg" for i in range(23)]
    a = make_plan(urls + urls[:5], tmp_path / "a", shard_size=5)
    b = make_plan(list(reversed(urls)), tmp_path / "b", shard_size=5)
    assert a == b and a.shards == 5
    items = [item for s in range(a.shards) for item in plan_items(tmp_path / "a", s)]
    assert [i for i, _ in items] == sorted(image_id(u) for u in urls)
    assert plan_items(tmp_path / "a", 1) == plan_items(tmp_path / "b", 1)
    assert make_plan(urls, tmp_path / "a", shard_size=5) == read_plan(tmp_path / "a")  # a rerun resumes
    with pytest.raises(ConfigError, match="another URL list"):
        make_plan(urls[:-1], tmp_path / "a", shard_size=5)
    # the same URL spelled percent-encoded or raw is one image
    assert make_plan([f"{U}/x/xy/Caf%C3%A9.jpg", f"{U}/x/xy/Café.jpg"], tmp_path / "c", 10).items == 1


def test_url_files(tmp_path):
    tsv = tmp_path / "urls.tsv.gz"
    with gzip.open(tsv, "wt", encoding="utf-8") as handle:
        handle.write("language\timage_url\nen\thttps://a/1.jpg\nde\t\nfr\thttps://a/2.jpg\n")
    assert list(file_urls(tsv, "image_url")) == ["https://a/1.jpg", "https://a/2.jpg"]
    csv = tmp_path / "urls.csv"
    csv.write_text('url,note\n"https://a/3.jpg","x, y"\n', encoding="utf-8")
    assert list(file_urls(csv, "url")) == ["https://a/3.jpg"]
    pq.write_table(pa.table({"u": ["https://a/4.jpg", None]}), tmp_path / "urls.parquet")
    assert list(file_urls(tmp_path / "urls.parquet", "u")) == ["https://a/4.jpg"]
    with pytest.raises(InputError, match="no column 'image_url'"):
        list(file_urls(csv, "image_url"))


def test_thumbnail_rewriting():
    assert thumbnail_url(f"{U}/a/ab/Cat.jpg", 512) == f"{U}/thumb/a/ab/Cat.jpg/512px-Cat.jpg"
    assert thumbnail_url(f"{U}/a/ab/Map.svg", 300) == f"{U}/thumb/a/ab/Map.svg/300px-Map.svg.png"
    assert thumbnail_url(f"{U}/a/ab/Scan.tif", 300).endswith("/Scan.tif/lossy-page1-300px-Scan.tif.jpg")
    en = "https://upload.wikimedia.org/wikipedia/en/5/5f/Logo.png"
    assert thumbnail_url(en, 100) == "https://upload.wikimedia.org/wikipedia/en/thumb/5/5f/Logo.png/100px-Logo.png"
    thumb = f"{U}/thumb/a/ab/Cat.jpg/512px-Cat.jpg"
    assert thumbnail_url(thumb, 256) == thumb  # already a thumbnail
    assert thumbnail_url("https://example.org/a/ab/Cat.jpg", 256) == "https://example.org/a/ab/Cat.jpg"
    assert thumbnail_url(f"{U}/a/ab/Cat.jpg", None) == f"{U}/a/ab/Cat.jpg"
