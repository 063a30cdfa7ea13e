"""Image shards: atomic writes, random access by image_id, webdataset and Hugging Face datasets."""

from __future__ import annotations

import io
import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from wit_retrieval.images import open_store
from wit_retrieval.images.decode import DecodeConfig, process_image
from wit_retrieval.images.store import ShardWriter, done_shards, shard_paths
from wit_retrieval.schema import IMAGES_MANIFEST


def _png(color, size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _write(tmp_path, shard, n, failed=0):
    writer = ShardWriter(tmp_path, shard)
    for i in range(n):
        image_id = f"{shard:02d}{i:014x}"
        stored = process_image(_png((i * 40 % 256, 10, 200)), DecodeConfig(encode="png"))
        writer.add_ok(image_id, f"https://upload.wikimedia.org/x/{image_id}.png", stored, "http")
    for i in range(failed):
        writer.add_failed(f"{shard:02d}ff{i:012x}", f"https://upload.wikimedia.org/bad/{i}", "http_404", False)
    writer.commit({"shard": shard, "items": n + failed})
    return writer


def test_shards_read_back_by_id_and_in_order(tmp_path):
    _write(tmp_path, 0, 5, failed=2)
    _write(tmp_path, 1, 3)
    store = open_store(tmp_path)
    assert len(store) == 8 and done_shards(tmp_path) == [0, 1]
    manifest = store.manifest()
    assert manifest.schema == IMAGES_MANIFEST and manifest.num_rows == 10
    assert sorted(manifest.filter(pc.equal(manifest["status"], "failed"))["error"].to_pylist()) == ["http_404"] * 2
    image_id = "00" + f"{3:014x}"
    img = store.open(image_id)
    assert img.size == (24, 16) and img.getpixel((0, 0)) == (120, 10, 200)
    row = manifest.filter(pc.equal(manifest["image_id"], image_id)).to_pylist()[0]
    import hashlib

    assert hashlib.sha256(store.get(image_id)).hexdigest() == row["sha256"]
    items = list(store.iter_items())
    assert [k for k, _ in items] == sorted(store.ids()) and "ffff" not in store
    assert dict(items)[image_id] == store.get(image_id)


def test_unfinished_shards_are_invisible_and_aborts_leave_nothing(tmp_path):
    _write(tmp_path, 0, 2)
    writer = ShardWriter(tmp_path, 1)
    writer.add_ok("01" + "0" * 14, "u", process_image(_png((0, 0, 0)), DecodeConfig()), "http")
    # killed here: no done-marker, so the shard does not exist for readers
    assert len(open_store(tmp_path)) == 2
    writer.abort()
    assert not list(tmp_path.glob(".tmp-*"))
    shard_paths(tmp_path, 0)[2].unlink()  # a shard whose marker is gone reads as unfinished
    assert len(open_store(tmp_path)) == 0


def test_webdataset_reads_the_tars(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    _write(tmp_path, 0, 4)
    urls = [str(p) for p in sorted(tmp_path.glob("*.tar"))]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == 4
    first = samples[0]
    assert set(first) >= {"__key__", "png", "json"}
    assert first["png"].size == (24, 16) and first["json"]["image_id"] == first["__key__"]


def test_hf_datasets_image_feature(tmp_path):
    datasets = pytest.importorskip("datasets")
    _write(tmp_path / "store", 0, 3)
    ds = open_store(tmp_path / "store").to_hf_dataset(cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["image"], datasets.Image) and ds.num_rows == 3
    assert ds[1]["image"].size == (24, 16) and ds[1]["url"].endswith(ds[1]["image_id"] + ".png")


def test_sidecar_json_matches_manifest(tmp_path):
    _write(tmp_path, 0, 2)
    import tarfile

    with tarfile.open(shard_paths(tmp_path, 0)[0]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(names[1]).read())
    rows = pq.read_table(shard_paths(tmp_path, 0)[1]).to_pylist()
    assert names[0].endswith(".png") and names[1] == rows[0]["image_id"] + ".json"
    assert meta["sha256"] == rows[0]["sha256"] and meta["width"] == 24
