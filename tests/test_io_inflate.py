"""io.inflate: the decompressed blocks the TSV reader parses, against the gzip module."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from tests.conftest import WIT_FIXTURE_FILES, WIT_FIXTURES
from wit_retrieval.io import inflate


@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch):
    """Both inflaters: ISA-L (the dependency) and zlib (the fallback)."""
    if request.param == "zlib":
        monkeypatch.setattr(inflate, "_inflater", zlib)
    else:
        pytest.importorskip("isal")
    return request.param


def _content(path: Path, size: int) -> bytes:
    blocks = list(inflate.blocks(path, size))
    assert all(len(block) >= size for block in blocks[:-1])  # only the last block may be short
    return b"".join(blocks)


@pytest.mark.parametrize("size", [1, 1000, 1 << 22])
def test_blocks_equal_the_gzip_module_on_real_rows(inflater, tmp_path, size):
    fixtures = sorted(WIT_FIXTURES.glob("*.tsv"))
    assert [f.name for f in fixtures] == sorted(WIT_FIXTURE_FILES)  # a missing fixture fails, never passes empty
    for fixture in fixtures:
        raw = fixture.read_bytes()
        packed = tmp_path / (fixture.name + ".gz")
        packed.write_bytes(gzip.compress(raw))
        assert _content(packed, size) == raw == gzip.decompress(packed.read_bytes())
        assert _content(fixture, size) == raw  # a plain file passes through


def test_every_member_and_zero_padding_are_read(inflater, tmp_path):
    path = tmp_path / "joined.tsv.gz"
    members = [b"a\tb\n" * 50_000, b"", b"c\td\n" * 3, bytes(range(256)) * 4000]
    path.write_bytes(b"".join(gzip.compress(m) for m in members) + b"\0" * 100)
    assert _content(path, 4096) == b"".join(members) == gzip.decompress(path.read_bytes())


def test_a_truncated_file_raises_eof_and_damage_raises_oserror(inflater, tmp_path):
    data = gzip.compress(b"x\ty\n" * 200_000 + bytes(range(256)) * 1000)
    truncated = tmp_path / "truncated.tsv.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(EOFError, match="ended before"):
        list(inflate.blocks(truncated, 1 << 16))
    damaged = tmp_path / "damaged.tsv.gz"
    damaged.write_bytes(data[:20] + b"\xff" * 64 + data[84:])
    with pytest.raises(OSError, match="damaged gzip"):
        list(inflate.blocks(damaged, 1 << 16))
