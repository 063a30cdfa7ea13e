"""Index and search with real faiss: exact = brute force (ties too), chunking, MRL, quantisation, I/O, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wit_retrieval.cli import app
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.index import IndexConfig, build_index, check_index, choose_index, load_index, parse_memory
from wit_retrieval.io.embeddings import read_embeddings, read_embeddings_meta, write_embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ids(n: int, seed: int = 0) -> list[str]:
    """Hex ids like image ids, in no particular order."""
    rng = np.random.default_rng(seed)
    return [f"{v:016x}" for v in rng.integers(0, 2**63, n)]


def brute_force(queries, corpus, ids, k):
    """trec_eval's order by hand: score descending, then id descending."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    out = []
    for row in scores:
        ranked = sorted(zip(row.tolist(), ids), reverse=True)[:k]
        out.append(([s for s, _ in ranked], [i for _, i in ranked]))
    return out


@pytest.fixture(scope="module")
def tied():
    """Small integer vectors: every kernel computes their dot products exactly, and ties abound."""
    rng = np.random.default_rng(1)
    corpus = rng.integers(-1, 2, (1500, 12)).astype(np.float32)
    queries = rng.integers(-1, 2, (40, 12)).astype(np.float32)
    return corpus, queries, _ids(1500)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_exact_equals_brute_force_with_ties(tied, k):
    corpus, queries, ids = tied
    index = build_index(corpus, ids, IndexConfig(normalize="none"))
    expected = brute_force(queries, corpus, ids, k)
    scores, got = index.search(queries, k)
    for row, (exp_scores, exp_ids) in enumerate(expected):
        assert got[row] == exp_ids, row
        np.testing.assert_array_equal(scores[row], np.array(exp_scores, np.float32))
    # one query at a time takes faiss's non-BLAS path: same answer
    assert index.search(queries[:1], k)[1][0] == expected[0][1]


def test_chunked_equals_unchunked(tied):
    corpus, queries, ids = tied
    index = build_index(corpus, ids, IndexConfig(normalize="none"))
    whole = index.search(queries, 50, chunk=4096)
    chunked = index.search(queries, 50, chunk=7)
    np.testing.assert_array_equal(whole[0], chunked[0])
    assert whole[1] == chunked[1]


def test_k_larger_than_collection():
    x = _unit(np.random.default_rng(0).standard_normal((5, 8)))
    scores, ids = build_index(x, list("abcde")).search(x[:2], 100)
    assert scores.shape == (2, 5) and sorted(ids[0]) == list("abcde") and ids[1][0] == "b"


def test_truncation_renormalises_and_accepts_both_query_widths():
    rng = np.random.default_rng(2)
    corpus, queries = _unit(rng.standard_normal((800, 32))), _unit(rng.standard_normal((30, 32)))
    ids = _ids(800)
    index = build_index(corpus, ids, IndexConfig(dim=8))
    assert index.metadata["truncation"] == 8 and index.metadata["normalisation"]["renormalized"]
    short = _unit(corpus[:, :8])
    expected = [i for _, i in brute_force(_unit(queries[:, :8]), short, ids, 5)]
    assert index.search(queries, 5)[1] == expected
    assert index.search(queries[:, :8], 5)[1] == expected  # already truncated queries
    self_scores = index.search(corpus[:20], 1)[0]
    np.testing.assert_allclose(self_scores[:, 0], 1.0, atol=1e-5)  # stored vectors are unit length
    with pytest.raises(InputError, match="16 dimensions but the index expects 32"):
        index.search(queries[:, :16], 5)
    with pytest.raises(InputError, match="larger than"):
        build_index(corpus, ids, IndexConfig(dim=64))


@pytest.mark.parametrize("quantize, min_recall, atol", [("fp16", 0.98, 2e-3), ("int8", 0.85, 3e-2)])
def test_quantised_close_to_exact(quantize, min_recall, atol):
    rng = np.random.default_rng(3)
    corpus, queries = _unit(rng.standard_normal((3000, 64))), _unit(rng.standard_normal((50, 64)))
    ids = _ids(3000)
    exact = build_index(corpus, ids)
    quant = build_index(corpus, ids, IndexConfig(quantize=quantize))
    assert quant.exhaustive and quant.metadata["factory"] == {"fp16": "SQfp16", "int8": "SQ8"}[quantize]
    report = check_index(quant, exact, queries, 10)
    assert report["recall@10"] >= min_recall
    np.testing.assert_allclose(quant.search(queries, 10)[0], exact.search(queries, 10)[0], atol=atol)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    corpus, queries = _unit(rng.standard_normal((600, 16))), _unit(rng.standard_normal((10, 16)))
    ids = _ids(600)
    meta = {"model": "tiny-clip", "corpus_revision": "2026-11-01", "revision": "abc"}
    for kind in ("exact", "HNSW16"):
        index = build_index(corpus, ids, IndexConfig(kind=kind, quantize="fp16" if kind == "exact" else None),
                            metadata=meta)
        index.save(tmp_path / kind)
        for mmap in (False, True):
            loaded = load_index(tmp_path / kind, mmap=mmap)
            assert loaded.metadata == index.metadata
            assert loaded.metadata["model"] == "tiny-clip" and loaded.metadata["corpus_revision"] == "2026-11-01"
            assert loaded.metadata["source"] == {"revision": "abc"}
            np.testing.assert_array_equal(loaded.search(queries, 7)[0], index.search(queries, 7)[0])
            assert loaded.search(queries, 7)[1] == index.search(queries, 7)[1]
    flat = build_index(corpus, ids)
    flat.save(tmp_path / "flat")
    assert (tmp_path / "flat" / "vectors.npy").exists() and not (tmp_path / "flat" / "index.faiss").exists()
    assert load_index(tmp_path / "flat", mmap=True).search(queries, 3)[1] == flat.search(queries, 3)[1]
    with pytest.raises(InputError, match="index.json missing"):
        load_index(tmp_path / "nothing")


def test_string_ids_map_back():
    rng = np.random.default_rng(5)
    corpus = _unit(rng.standard_normal((50, 8)))
    ids = [f"Bild_{i}_é" if i % 2 else f"{i:03d}" for i in range(50)][::-1]
    index = build_index(corpus, ids)
    _, found = index.search(corpus, 1)
    assert [row[0] for row in found] == ids
    assert index.ids().to_pylist() == sorted(ids, key=lambda s: s.encode())  # labels = byte order
    with pytest.raises(InputError, match="duplicate ids"):
        build_index(corpus[:3], ["a", "b", "a"])


def test_input_validation():
    rng = np.random.default_rng(6)
    corpus = _unit(rng.standard_normal((20, 8)))
    bad = corpus.copy()
    bad[7, 3] = np.nan
    with pytest.raises(InputError, match=r"row \d+ .*NaN"):
        build_index(bad, _ids(20))
    index = build_index(corpus, _ids(20))
    with pytest.raises(InputError, match="NaN"):
        index.search(bad[5:9], 3)
    with pytest.raises(InputError, match="ids for"):
        build_index(corpus, _ids(19))
    with pytest.warns(UserWarning, match="20 of 20 corpus vectors are not unit length"):
        build_index(corpus * 3, _ids(20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalised = build_index(corpus * 3, _ids(20), IndexConfig(normalize="l2"))
    np.testing.assert_allclose(normalised.search(corpus[:4], 1)[0][:, 0], 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="quantize"):
        IndexConfig(quantize="int4")


def test_check_index_hnsw_and_ivf_on_clusters():
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((40, 32)) * 3
    corpus = _unit(centers[rng.integers(0, 40, 4000)] + rng.standard_normal((4000, 32)))
    queries = _unit(centers[rng.integers(0, 40, 100)] + rng.standard_normal((100, 32)))
    ids = _ids(4000)
    exact = build_index(corpus, ids)
    hnsw = check_index(build_index(corpus, ids, IndexConfig(kind="HNSW32")), exact, queries, 10)
    assert hnsw["recall@10"] >= 0.9 and hnsw["top1_in_10"] >= 0.95
    narrow = check_index(build_index(corpus, ids, IndexConfig(kind="IVF64,Flat", nprobe=1)), exact, queries, 10)
    assert narrow["recall@10"] < hnsw["recall@10"]  # one probed list misses neighbours: check shows it
    assert check_index(exact, exact, queries, 10)["recall@10"] == 1.0


def test_auto_choice_under_memory_budget():
    assert choose_index(1000, 64, IndexConfig(kind="auto")).factory == "Flat"
    roomy = choose_index(1_000_000, 512, IndexConfig(kind="auto", memory_budget_gb=4))
    assert roomy.factory == "Flat" and roomy.exhaustive
    tight = choose_index(11_500_000, 512, IndexConfig(kind="auto", memory_budget_gb=4))
    assert tight.factory.startswith("OPQ") and "PQ" in tight.factory and not tight.exhaustive
    assert any("Flat" in r and "> budget" in r for r in tight.reasons) and "chosen" in tight.reasons[-1]
    sq8 = choose_index(1_000_000, 512, IndexConfig(kind="auto", memory_budget_gb=0.6))
    assert sq8.factory.endswith(",SQ8")
    with pytest.raises(ConfigError, match="raise --memory-budget"):
        choose_index(11_500_000, 512, IndexConfig(kind="auto", memory_budget_gb=0.01))
    assert choose_index(10, 8, IndexConfig(kind="HNSW32", quantize="int8")).factory == "HNSW32,SQ8"
    with pytest.raises(ConfigError, match="codec"):
        choose_index(10, 8, IndexConfig(kind="IVF16,PQ4", quantize="fp16"))
    assert parse_memory("4GB") == 4.0 and parse_memory("512MB") == 0.512
    assert parse_memory("1GiB") == pytest.approx(1.073741824)
    with pytest.raises(ConfigError):
        parse_memory("lots")


def test_embedding_files_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    ids = _ids(30)
    for name in ("e.parquet", "e.npy"):
        write_embeddings(tmp_path / name, ids, x, {"model": "m"})
        got_ids, got = read_embeddings(tmp_path / name)
        assert got_ids == ids and np.array_equal(got, x)
        assert read_embeddings_meta(tmp_path / name) == {"model": "m", "dim": 6, "dtype": "float32"}
    parts = tmp_path / "parts"
    write_embeddings(parts / "part-00000.parquet", ids[:10], x[:10])
    write_embeddings(parts / "part-00001.parquet", ids[10:], x[10:])
    assert read_embeddings(parts)[0] == ids and np.array_equal(read_embeddings(parts)[1], x)
    variable = pa.table({"id": ["a", "b"], "embedding": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float64()))})
    pq.write_table(variable, tmp_path / "ragged.parquet")
    with pytest.raises(InputError, match="row 1 has 1 dims"):
        read_embeddings(tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "noemb.parquet")
    with pytest.raises(InputError, match="missing column"):
        read_embeddings(tmp_path / "noemb.parquet")
    (tmp_path / "e.ids.txt").unlink()
    with pytest.raises(InputError, match="ids file"):
        read_embeddings(tmp_path / "e.npy")


def test_cli_build_check_search(tmp_path):
    rng = np.random.default_rng(9)
    corpus, queries = _unit(rng.standard_normal((500, 16))), _unit(rng.standard_normal((12, 16)))
    ids, qids = _ids(500), [f"q{i}" for i in range(12)]
    write_embeddings(tmp_path / "images.parquet", ids, corpus, {"model": "tiny"})
    write_embeddings(tmp_path / "queries.npy", qids, queries)
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", "--embeddings", str(tmp_path / "images.parquet"),
                              "--out", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    assert "indexed 500 vectors" in res.output
    res = runner.invoke(app, ["index", "build", "--embeddings", str(tmp_path / "images.parquet"),
                              "--out", str(tmp_path / "hnsw"), "--kind", "HNSW16"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["index", "check", "--index", str(tmp_path / "hnsw"), "--embeddings",
                              str(tmp_path / "images.parquet"), "--queries", str(tmp_path / "queries.npy"),
                              "--k", "10", "--out", str(tmp_path / "check.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "check.json").read_text())["recall@10"] > 0.8
    for out in ("run.trec", "run.parquet"):
        res = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "--queries",
                                  str(tmp_path / "queries.npy"), "--k", "5", "--out", str(tmp_path / out),
                                  "--chunk", "5"])
        assert res.exit_code == 0, res.output
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert len(lines) == 60
    expected = brute_force(queries, corpus, ids, 5)
    first = [line.split() for line in lines[:5]]
    assert [f[0] for f in first] == ["q0"] * 5 and [f[3] for f in first] == ["1", "2", "3", "4", "5"]
    assert [f[2] for f in first] == expected[0][1] and first[0][5] == "wit-retrieval"
    table = pq.read_table(tmp_path / "run.parquet")
    assert table.num_rows == 60 and table.column("image_id").to_pylist()[:5] == expected[0][1]
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "--queries",
                              str(tmp_path / "images.parquet"), "--out", str(tmp_path / "x.trec"), "--k", "3"])
    assert res.exit_code == 0  # images as queries works (same width)
    write_embeddings(tmp_path / "wide.npy", qids, rng.standard_normal((12, 20)).astype(np.float32))
    res = runner.invoke(app, ["search", "--index", str(tmp_path / "idx"), "--queries", str(tmp_path / "wide.npy"),
                              "--out", str(tmp_path / "y.trec")])
    assert res.exit_code == 1 and "20 dimensions but the index expects 16" in res.output
