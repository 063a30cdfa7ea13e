"""build.keys: repeats and the corpus on integer ids equal the string kernels they replace."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wit_retrieval.build.fast_ids import image_id
from wit_retrieval.build.keys import (
    hex_tails,
    is_normal_url,
    part_images,
    repeats,
    sorted_tails,
    split_images,
    unique_images,
)
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


@pytest.mark.parametrize("seed", range(5))
def test_a_split_merged_from_sorted_parts_equals_one_pass(seed):
    """Workers sort their parts (part_images); the merged corpus equals one pass over all rows."""
    rng = np.random.default_rng(seed)
    urls = [URLS[i] for i in rng.integers(0, len(URLS), 300)]
    table = pa.table({"image_id": [image_id(u) for u in urls], "image_url": urls})
    cuts = sorted(rng.choice(np.arange(1, 300), 4, replace=False))
    parts = [table.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, 300])]
    sorted_parts = [part_images(p["image_id"], p["image_url"]) for p in parts]
    assert all("image_number" in p.column_names for p in sorted_parts)
    for part in sorted_parts:
        numbers = part["image_number"].to_numpy()
        assert (numbers[1:] >= numbers[:-1]).all()
    assert split_images(sorted_parts, SCHEMA).equals(_reference(table))
    for range_rows in (1, 2, 7):  # merged a range of numbers at a time: some ranges empty, some one image
        assert split_images(sorted_parts, SCHEMA, range_rows=range_rows).equals(_reference(table))
    unnumbered = [part_images(pa.array([f"x{i}" for i in range(3)]), pa.array(URLS[:3]))]  # no hex tails
    assert "image_number" not in unnumbered[0].column_names
    assert split_images(unnumbered + sorted_parts, SCHEMA).num_rows == 3 + _reference(table).num_rows
    assert split_images([], SCHEMA).num_rows == 0
    assert split_images([part.slice(0, 0) for part in sorted_parts], SCHEMA).equals(SCHEMA.empty_table())


def test_a_large_split_merged_by_ranges_equals_one_pass():
    """Many distinct images (hex tails spread over the whole range), merged in several ranges."""
    rng = np.random.default_rng(7)
    urls = [f"https://upload.wikimedia.org/wikipedia/commons/a/ab/Scene_{n}.png" for n in rng.integers(0, 3000, 5000)]
    table = pa.table({"image_id": [image_id(u) for u in urls], "image_url": urls})
    parts = [part_images(table["image_id"][a:a + 1000], table["image_url"][a:a + 1000]) for a in range(0, 5000, 1000)]
    expected = _reference(table)
    for range_rows in (65536, 500, 37):
        assert split_images(parts, SCHEMA, range_rows=range_rows).equals(expected)


def test_repeats_on_sorted_runs():
    ids = pa.array([f"train-{n:016x}" for n in (9, 3, 7, 1, 5)])
    runs = [sorted_tails(ids.slice(0, 3)), sorted_tails(ids.slice(3))]
    assert not repeats(None, np.concatenate(runs))
    assert repeats(None, np.concatenate(runs + [sorted_tails(ids.slice(4))]))


def test_normal_urls_are_the_fast_ids_ones():
    assert is_normal_url(pa.array(URLS + [None])).to_pylist() == [True, False, False, False, True, False]


def test_repeats_and_hex_tails():
    ids = pa.array([f"train-{image_id(u)}" for u in URLS[:2]] * 2)
    assert repeats(ids) and not repeats(ids.slice(0, 2))
    assert not repeats(pa.array(["a", "b"])) and repeats(pa.array(["x", "x"]))  # not hex: string kernel
    tails = hex_tails(pa.chunked_array([ids.slice(0, 2), ids.slice(2)]))
    assert tails.dtype == np.uint64 and list(tails[:2]) == [int(i[-16:], 16) for i in ids.to_pylist()[:2]]
    assert hex_tails(pa.array(["train-xyz"])) is None


TRICKY_URLS = URLS + [
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/A%20B.jpg",  # an escape of ASCII: not normal
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/%E2%82%AC.jpg",  # UTF-8 escapes, upper-case
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/%e2%82%ac.jpg",  # lower-case escapes
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/%E2%82.jpg",  # a cut UTF-8 sequence
    "https://Upload.wikimedia.org/x.jpg", "https://upload.wikimedia.org", "https:///x.jpg",
    "https://upload.wikimedia.org/x.jpg?width=100", "https://upload.wikimedia.org/x y.jpg", "",
]


@pytest.mark.parametrize("pure", [False, True])
def test_normal_url_flags_are_sound_in_c_and_re2(pure, monkeypatch):
    """True only where fast_ids.normal_url gives the URL back; C passes what RE2 passes, and more."""
    from wit_retrieval.build.fast_ids import normal_url

    monkeypatch.setenv("WIT_RETRIEVAL_PURE_PYTHON", "1" if pure else "0")
    flags = is_normal_url(pa.array(TRICKY_URLS)).to_pylist()
    for url, flag in zip(TRICKY_URLS, flags):
        if flag:
            assert normal_url(url) == url, url
    monkeypatch.setenv("WIT_RETRIEVAL_PURE_PYTHON", "1")
    re2 = is_normal_url(pa.array(TRICKY_URLS)).to_pylist()
    assert all(flag for flag, by_re2 in zip(flags, re2) if by_re2)
    assert flags[TRICKY_URLS.index("https://upload.wikimedia.org/wikipedia/commons/a/ab/%E2%82%AC.jpg")] is (not pure)


@pytest.mark.parametrize("seed", range(4))
def test_hex_tails_in_c_equal_numpy(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    good = [f"train-{int(n):016x}" for n in rng.integers(0, 2**63, 50)]
    cases = [good, [g.replace("a", "A") for g in good], good[:3] + ["train-0123"], good[:3] + ["x" + good[3]],
             [f"{int(n):016x}" for n in rng.integers(0, 2**63, 20)], ["0" * 15], good[:2] + ["train-00000000000000g0"]]
    for ids in cases:
        array = pa.array(ids).slice(1)  # an offset into the buffers, as a sliced column has
        monkeypatch.setenv("WIT_RETRIEVAL_PURE_PYTHON", "0")
        c = hex_tails(array)
        monkeypatch.setenv("WIT_RETRIEVAL_PURE_PYTHON", "1")
        reference = hex_tails(array)
        assert (c is None) == (reference is None), ids[:3]
        if c is not None:
            assert c.dtype == np.uint64 and (c == reference).all() and c.flags.writeable
