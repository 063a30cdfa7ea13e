"""Offline mirrors: folder trees (Commons paths or image_id names), parquet of bytes, our own shards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_images_support import commons_path, make_world, png_bytes
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.ids import image_id
from wit_retrieval.images.mirrors import open_mirror, parse_mirror, prepare_specs


def test_folder_mirror_by_commons_path_and_by_image_id(tmp_path):
    urls = make_world(tmp_path / "commons", 3)
    spec = parse_mirror(str(tmp_path / "commons"))
    assert spec.kind == "folder"
    mirror = open_mirror(spec)
    assert mirror.lookup(image_id(urls[1]), urls[1]) == png_bytes(1)
    # the same tree without the wikipedia/commons prefix, and files named by image_id
    bare = tmp_path / "bare" / commons_path("Img_00002.png").removeprefix("wikipedia/commons/")
    bare.parent.mkdir(parents=True)
    bare.write_bytes(b"x")
    assert open_mirror(parse_mirror(str(tmp_path / "bare"))).lookup(image_id(urls[2]), urls[2]) == b"x"
    by_id = tmp_path / "byid" / image_id(urls[0])[:2] / f"{image_id(urls[0])}.jpg"
    by_id.parent.mkdir(parents=True)
    by_id.write_bytes(b"y")
    assert open_mirror(parse_mirror(f"folder:{tmp_path / 'byid'}")).lookup(image_id(urls[0]), urls[0]) == b"y"
    assert mirror.lookup("0" * 16, "https://upload.wikimedia.org/nope.png") is None


@pytest.mark.parametrize("layout", ["struct", "binary"])
def test_parquet_mirror_like_wit_base(tmp_path, layout):
    urls = [f"https://upload.wikimedia.org/{commons_path(f'P_{i}.png')}" for i in range(10)]
    images = [png_bytes(i) for i in range(10)]
    if layout == "struct":  # wikimedia/wit_base: image struct {bytes, path}
        column = pa.array([{"bytes": b, "path": None} for b in images],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        column = pa.array(images, pa.binary())
    folder = tmp_path / "wit_base" / "data"
    folder.mkdir(parents=True)
    for part in range(2):
        table = pa.table({"image": column[part * 5:(part + 1) * 5], "image_url": urls[part * 5:(part + 1) * 5]})
        pq.write_table(table, folder / f"train-{part:05d}.parquet", row_group_size=2)
    spec = parse_mirror(str(tmp_path / "wit_base"))
    assert spec.kind == "parquet"
    (spec,) = prepare_specs((spec,), tmp_path / "cache")
    mirror = open_mirror(spec)
    wanted = [(image_id(u), u) for u in urls[3:8]] + [("f" * 16, "https://upload.wikimedia.org/missing.png")]
    mirror.prepare(wanted)
    for i in range(3, 8):
        assert mirror.lookup(image_id(urls[i]), urls[i]) == images[i]
    assert mirror.lookup(image_id(urls[0]), urls[0]) is None  # not in this shard's items
    assert mirror.lookup("f" * 16, "x") is None
    assert prepare_specs((parse_mirror(str(tmp_path / "wit_base")),), tmp_path / "cache")[0].index == spec.index


def test_bad_mirrors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such"):
        parse_mirror(str(tmp_path / "missing"))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="URL column"):
        prepare_specs((parse_mirror(str(tmp_path / "bad.parquet")),), tmp_path / "cache")
