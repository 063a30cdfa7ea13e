"""build.keys: repeats and the corpus on integer ids equal the string kernels they replace."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wit_retrieval.build.fast_ids import image_id
from wit_retrieval.build.keys import hex_tails, is_normal_url, repeats, unique_images
from wit_retrieval.schema import CORPUS

SCHEMA = pa.schema([f for f in CORPUS if f.name != "split"])
URLS = [
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/Paris.jpg",
    "https://upload.wikimedia.org/wikipedia/commons/c/cd/K%C3%B6ln.jpg",
    "https://upload.wikimedia.org/wikipedia/commons/c/cd/Köln.jpg",  # the same image, another spelling
    "http://upload.wikimedia.org/wikipedia/commons/a/ab/Paris.jpg",  # and another
    "https://upload.wikimedia.org/wikipedia/commons/e/ef/Rome.jpg",
]


def _reference(table: pa.Table) -> pa.Table:
    """The string kernels: group by id, smallest URL, sorted by id."""
    grouped = table.group_by("image_id").aggregate([("image_url", "min")])
    return grouped.rename_columns(["image_id", "image_url"]).sort_by("image_id").select(SCHEMA.names)


@pytest.mark.parametrize("seed", range(5))
def test_unique_images_equals_group_by(seed):
    rng = np.random.default_rng(seed)
    urls = [URLS[i] for i in rng.integers(0, len(URLS), 200)]
    table = pa.table({"image_id": [image_id(u) for u in urls], "image_url": urls})
    chunked = pa.concat_tables([table.slice(0, 70), table.slice(70)])  # as the parts arrive
    normal = is_normal_url(table["image_url"]).to_numpy(zero_copy_only=False)
    expected = _reference(table)
    assert expected.num_rows == 3  # the spellings of one image are one corpus row
    for result in (unique_images(chunked, SCHEMA), unique_images(chunked, SCHEMA, normal)):
        assert result.equals(expected)


def test_normal_urls_are_the_fast_ids_ones():
    assert is_normal_url(pa.array(URLS + [None])).to_pylist() == [True, False, False, False, True, False]


def test_repeats_and_hex_tails():
    ids = pa.array([f"train-{image_id(u)}" for u in URLS[:2]] * 2)
    assert repeats(ids) and not repeats(ids.slice(0, 2))
    assert not repeats(pa.array(["a", "b"])) and repeats(pa.array(["x", "x"]))  # not hex: string kernel
    tails = hex_tails(pa.chunked_array([ids.slice(0, 2), ids.slice(2)]))
    assert tails.dtype == np.uint64 and list(tails[:2]) == [int(i[-16:], 16) for i in ids.to_pylist()[:2]]
    assert hex_tails(pa.array(["train-xyz"])) is None
