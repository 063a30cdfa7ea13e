"""Fingerprints of strings: equal strings get equal fingerprints whatever array they sit in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wit_retrieval.fingerprint import fingerprint


@pytest.mark.parametrize("width", [0, 1, 3, 7, 8, 9, 15, 16, 17, 24, 33])
def test_a_strings_fingerprint_depends_on_the_string_alone(width):
    """One width (the strided fast path) and mixed widths (the general path) give the same values,
    for slices, chunks, large strings and binary alike."""
    rng = np.random.default_rng(width)
    values = ["".join(rng.choice(list("0123456789abcdef"), width)) for _ in range(600)]
    alone = fingerprint(pa.array(values))
    assert len(np.unique(alone)) == len(set(values))
    for other in ("", "a", "x" * (width + 1), "a much longer string than any of the others" * 2):
        assert np.array_equal(fingerprint(pa.array(values + [other]))[:-1], alone), other
        assert np.array_equal(fingerprint(pa.array([other] + values))[1:], alone), other
    array = pa.array(values)
    assert np.array_equal(fingerprint(array.slice(5, 300)), alone[5:305])
    assert np.array_equal(fingerprint(pa.chunked_array([array.slice(0, 7), array.slice(7)])), alone)
    assert np.array_equal(fingerprint(pa.array(values, pa.large_string())), alone)
    assert np.array_equal(fingerprint(pa.array([v.encode() for v in values], pa.binary())), alone)


def test_chunks_of_different_widths_agree():
    ids = ["d1", "d22", "image-0000000000000000000042", "d1"]
    chunked = pa.chunked_array([pa.array(ids[:2]), pa.array(ids[2:])])
    fp = fingerprint(chunked)
    assert fp[0] == fp[3] and len(set(fp.tolist())) == 3
    assert fp[0] == fingerprint(pa.array(["d1"]))[0]
