"""Index builds streamed from a folder of parts, and exact search in torch equal to faiss (tie order included)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_index import _ids, _unit
from wit_retrieval.errors import InputError
from wit_retrieval.index import IndexConfig, build_index, load_index
from wit_retrieval.index import stream as stream_module
from wit_retrieval.index.stream import build_index_from_files
from wit_retrieval.io.embeddings import write_embeddings


def _parts(folder, ids, x, rows=700, dtype="float32"):
    for n, start in enumerate(range(0, len(ids), rows)):
        write_embeddings(folder / f"part-{n:05d}.parquet", ids[start: start + rows], x[start: start + rows],
                         {"model": "m"}, dtype=dtype)


@pytest.mark.parametrize("kind", ["exact", "IVF16,Flat", "HNSW16"])
def test_streamed_build_equals_the_in_memory_build(tmp_path, kind):
    rng = np.random.default_rng(3)
    x = _unit(rng.standard_normal((3000, 32)).astype(np.float32))
    ids = _ids(3000, seed=1)
    _parts(tmp_path / "parts", ids, x)
    config = IndexConfig(kind=kind)
    streamed = build_index_from_files(tmp_path / "parts", config, scratch=tmp_path)
    direct = build_index(x, ids, config)
    queries = _unit(x[:50] + 0.01)
    s1, i1 = streamed.search(queries, 10)
    s2, i2 = direct.search(queries, 10)
    assert i1 == i2
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert not list(tmp_path.glob("wit-index-*"))  # the staging file is gone


def test_staging_needs_room_and_says_where(tmp_path, monkeypatch):
    x = np.eye(8, dtype=np.float32)
    _parts(tmp_path / "parts", _ids(8), x, rows=4)
    monkeypatch.setattr(stream_module, "_free_bytes", lambda folder: 10)
    with pytest.raises(InputError, match="--scratch"):
        build_index_from_files(tmp_path / "parts", IndexConfig(), scratch=tmp_path)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_torch_exact_search_equals_faiss_with_ties(tmp_path, metric):
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    # small integers: every product is exact in fp32, so tied scores are exactly tied on both sides
    x = rng.integers(-3, 4, (2500, 16)).astype(np.float32)
    x[1000:1100] = x[0]  # a tie group of 101 identical vectors straddling any cut
    ids = _ids(2500, seed=2)
    build_index(x, ids, IndexConfig(kind="exact", metric=metric, normalize="none")).save(tmp_path / "idx")
    cpu = load_index(tmp_path / "idx")
    gpu_like = load_index(tmp_path / "idx", device="cpu")
    from wit_retrieval.index import torch_exact

    gpu_like._backend.corpus_chunk = 600  # several corpus blocks merged, as on a big corpus
    assert isinstance(gpu_like._backend, torch_exact.TorchFlatBackend)
    queries = np.concatenate([x[:1], rng.integers(-3, 4, (40, 16)).astype(np.float32)])
    for k in (1, 10, 150):
        s1, i1 = cpu.search(queries, k)
        s2, i2 = gpu_like.search(queries, k)
        assert i1 == i2, k
        np.testing.assert_array_equal(s1, s2)
