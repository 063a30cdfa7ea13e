"""Build, search, save and load an index of embeddings with string ids.

Ids are sorted (byte order) at build time and faiss labels are positions in that order, so a
label maps back to its id by position and "id descending" (trec_eval's tie rule) is "label
descending". Exact fp32 search keeps the vectors in a numpy matrix searched with faiss's
blocked BLAS kernel (`faiss.knn`, the same code IndexFlatIP.search runs): the matrix is the
whole index, can be memory-mapped from `vectors.npy`, and is never copied into faiss.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..io.shards import atomic_path, write_json_atomic, write_parquet_atomic
from .config import IndexChoice, IndexConfig, choose_index, nlist_for
from .topk import exact_topk, sort_ties
from .vectors import VectorSpec

FORMAT = "wit-retrieval-index/1"
_BUILD_BLOCK = 65536  # rows prepared (checked, truncated, normalised) at a time


def _faiss():
    import faiss  # a core dependency, imported late so `import wit_retrieval` stays light

    return faiss


def _metric(name: str) -> int:
    faiss = _faiss()
    return faiss.METRIC_INNER_PRODUCT if name == "ip" else faiss.METRIC_L2


class _FlatBackend:
    """Exhaustive fp32 search over a (possibly memory-mapped) matrix."""

    exhaustive = True

    def __init__(self, vectors: np.ndarray, metric: str):
        self.vectors, self.metric = vectors, metric

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = _faiss().knn(queries, self.vectors, k, metric=_metric(self.metric))
        return (scores, labels) if self.metric == "ip" else (-scores, labels)

    def vector(self, label: int) -> np.ndarray:
        return np.asarray(self.vectors[label], np.float32)

    def save(self, directory: Path) -> None:
        with atomic_path(directory / "vectors.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.vectors)


class _FaissBackend:
    """Any faiss index (scalar-quantised exhaustive, HNSW, IVF, PQ)."""

    def __init__(self, index, metric: str, exhaustive: bool):
        self.index, self.metric, self.exhaustive = index, metric, exhaustive

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = self.index.search(queries, k)
        return (scores, labels) if self.metric == "ip" else (-scores, labels)

    def vector(self, label: int) -> np.ndarray:
        try:
            return self.index.reconstruct(label)
        except RuntimeError:  # an IVF index without its direct map: build it once
            _faiss().extract_index_ivf(self.index).make_direct_map()
            return self.index.reconstruct(label)

    def set_params(self, params: dict[str, int]) -> None:
        space = _faiss().ParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(self.index, name, value)

    def save(self, directory: Path) -> None:
        with atomic_path(directory / "index.faiss") as tmp:
            _faiss().write_index(self.index, str(tmp))


class Index:
    """A searchable index: string ids, the vector transformation, a faiss backend, metadata."""

    def __init__(self, backend, ids: pa.Array, spec: VectorSpec, metadata: dict[str, Any]):
        self._backend, self._ids, self.spec, self._metadata = backend, ids, spec, metadata

    @property
    def metadata(self) -> dict[str, Any]:
        """Model, dimension, metric, normalisation, truncation, corpus revision, index choice."""
        return dict(self._metadata)

    @property
    def ntotal(self) -> int:
        return len(self._ids)

    @property
    def exhaustive(self) -> bool:
        """True when every vector is compared (exact search, possibly over quantised codes)."""
        return self._backend.exhaustive

    def iter_search(self, queries: np.ndarray, k: int, chunk: int = 4096) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (first query row, scores [c, k], labels [c, k]) per chunk of queries."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        unnormalised = 0
        for start in range(0, len(queries), max(1, chunk)):
            block, off = self.spec.prepare(queries[start : start + chunk], "queries", start)
            unnormalised += off
            if self._backend.exhaustive:
                scores, labels = exact_topk(self._backend.search, block, k, self.ntotal)
            else:
                scores, labels = self._backend.search(block, min(k, self.ntotal))
                sort_ties(scores, labels)
            yield start, scores, labels
        self.spec.warn_unnormalised(unnormalised, len(queries), "query")

    def search_labels(self, queries: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Scores [n, k] float32 and int64 labels [n, k] (-1 where an ANN index found fewer)."""
        k_eff = min(k, self.ntotal)
        scores = np.empty((len(queries), k_eff), np.float32)
        labels = np.empty((len(queries), k_eff), np.int64)
        for start, s, lab in self.iter_search(queries, k, chunk):
            scores[start : start + len(s)], labels[start : start + len(s)] = s, lab
        return scores, labels

    def search(self, queries: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k scores [n, min(k, ntotal)] float32 and ids per query, best first, in chunks of queries."""
        scores = np.empty((len(queries), min(k, self.ntotal)), np.float32)
        ids: list[list[str]] = []
        for start, s, labels in self.iter_search(queries, k, chunk):
            scores[start : start + len(s)] = s
            ids.extend(self.ids_of(labels))  # per chunk: arrow temporaries stay chunk-sized
        return scores, ids

    def ids_of(self, labels: np.ndarray) -> list[list[str]]:
        """Map labels [n, k] to ids, dropping -1 (no result) entries."""
        if labels.size == 0:
            return [[] for _ in range(len(labels))]
        flat = self._ids.take(pa.array(np.maximum(labels.ravel(), 0))).to_pylist()
        k = labels.shape[1]
        rows = [flat[i * k : (i + 1) * k] for i in range(len(labels))]
        if (labels < 0).any():
            rows = [[d for d, lab in zip(row, lrow) if lab >= 0] for row, lrow in zip(rows, labels)]
        return rows

    def ids(self) -> pa.Array:
        """All ids in label order (sorted)."""
        return self._ids

    def vectors_of(self, ids: list[str | None]) -> list[np.ndarray | None]:
        """The indexed (prepared: truncated, normalised) vector of each id; None where not indexed.

        Exact indexes return their stored rows; ANN indexes their reconstruction (codes decoded,
        so approximate for quantised ones).
        """
        labels = pc.index_in(pa.array(ids, pa.string()), value_set=self._ids).to_numpy(zero_copy_only=False)
        out: list[np.ndarray | None] = []
        for label in labels:
            if label is None or np.isnan(label):
                out.append(None)
            else:
                out.append(self._backend.vector(int(label)))
        return out

    def save(self, directory: str | Path) -> None:
        """Write ids.parquet, vectors.npy or index.faiss, and index.json (last: marks completion)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "index.json").unlink(missing_ok=True)
        write_parquet_atomic(pa.table({"id": self._ids}), directory / "ids.parquet")
        self._backend.save(directory)
        write_json_atomic(directory / "index.json", self._metadata)


def _search_params(config: IndexConfig, factory: str) -> dict[str, int]:
    params = {}
    if "IVF" in factory:
        nlist = int(factory.split("IVF", 1)[1].split(",")[0].split("_")[0])
        params["nprobe"] = config.nprobe or min(nlist, max(8, nlist // 8))
    if "HNSW" in factory:
        params["efSearch"] = config.ef_search or 128
    return params


def _sorted_ids(ids: list[str]) -> tuple[pa.Array, np.ndarray]:
    """Ids sorted by bytes and the permutation; duplicate ids are an error."""
    array = pa.array(ids, pa.large_string() if len(ids) > 50_000_000 else pa.string())
    if array.null_count:
        raise InputError("ids must not be null")
    order = pc.array_sort_indices(array).to_numpy()
    ordered = array.take(pa.array(order))
    if len(ordered) > 1:
        same = pc.equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False)
        if same.any():
            dups = sorted({ordered[int(i)].as_py() for i in np.flatnonzero(same)[:3]})
            raise InputError(f"{int(same.sum())} duplicate ids, e.g. {dups}: each vector needs its own id")
    return ordered, order


def build_index(
    embeddings: np.ndarray, ids: list[str], config: IndexConfig = IndexConfig(), metadata: dict | None = None
) -> Index:
    """Index embeddings [n, d] under string ids; `metadata` (model, corpus_revision, ...) is kept."""
    if not hasattr(embeddings, "shape"):  # a matrix-like with shape and row indexing (StagedMatrix) is kept
        embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise InputError(f"embeddings must be a non-empty 2-D array [n, d], got shape {embeddings.shape}")
    if len(ids) != len(embeddings):
        raise InputError(f"{len(ids)} ids for {len(embeddings)} embedding rows")
    n, d = embeddings.shape
    if config.dim is not None and config.dim > d:
        raise InputError(f"--dim {config.dim} is larger than the embeddings' {d} dimensions")
    spec = VectorSpec(input_dim=d, dim=config.dim or d, metric=config.metric, normalize=config.normalize)
    sorted_ids, order = _sorted_ids(ids)
    choice = choose_index(n, spec.dim, config)
    t0 = time.perf_counter()
    rows = lambda s: order[s : s + _BUILD_BLOCK]  # noqa: E731 - one block of the id-sorted order
    unnormalised = 0
    if choice.factory == "Flat":
        vectors = np.empty((n, spec.dim), np.float32)
        for s in range(0, n, _BUILD_BLOCK):
            vectors[s : s + _BUILD_BLOCK], off = spec.prepare(embeddings[rows(s)], "embeddings", s)
            unnormalised += off
        backend = _FlatBackend(vectors, config.metric)
    else:
        backend, unnormalised = _build_faiss(embeddings, order, spec, choice, config)
    spec.warn_unnormalised(unnormalised, n, "corpus")
    meta = _metadata(config, spec, choice, n, unnormalised, metadata or {}, time.perf_counter() - t0)
    return Index(backend, sorted_ids, spec, meta)


def _build_faiss(embeddings, order, spec: VectorSpec, choice: IndexChoice, config: IndexConfig):
    faiss = _faiss()
    index = faiss.index_factory(spec.dim, choice.factory, _metric(config.metric))
    if not index.is_trained:
        nlist = nlist_for(len(order))
        size = min(len(order), max(50 * nlist, 50_000))
        sample = np.sort(np.random.default_rng(0).choice(len(order), size, replace=False))
        index.train(spec.prepare(embeddings[order[sample]], "embeddings")[0])
    unnormalised = 0
    for s in range(0, len(order), _BUILD_BLOCK):
        block, off = spec.prepare(embeddings[order[s : s + _BUILD_BLOCK]], "embeddings", s)
        index.add(block)
        unnormalised += off
    backend = _FaissBackend(index, config.metric, choice.exhaustive)
    backend.set_params(_search_params(config, choice.factory))
    return backend, unnormalised


def _metadata(config, spec, choice, n, unnormalised, extra, seconds) -> dict[str, Any]:
    from .. import __version__

    meta = {
        "format": FORMAT,
        "toolkit_version": __version__,
        "kind": config.kind,
        "factory": choice.factory,
        "exhaustive": choice.exhaustive,
        "choice": list(choice.reasons),
        "estimated_bytes": choice.memory_bytes,
        "metric": config.metric,
        "count": n,
        "input_dim": spec.input_dim,
        "dim": spec.dim,
        "truncation": spec.dim if spec.truncated else None,
        "quantize": config.quantize,
        "normalisation": {"mode": config.normalize, "renormalized": spec.renormalizes,
                          "unnormalised_rows": unnormalised},
        "search_params": _search_params(config, choice.factory),
        "build_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": extra.get("model"),
        "corpus_revision": extra.get("corpus_revision"),
    }
    meta["source"] = {k: v for k, v in extra.items() if k not in ("model", "corpus_revision")}
    return meta


def load_index(directory: str | Path, *, mmap: bool = False, device: str | None = None) -> Index:
    """Load a saved index; `mmap=True` maps exact fp32 vectors from disk instead of reading them.

    `device` (cuda, cuda:N; cpu for tests): exact fp32 search runs in torch on that device, with
    the same results and tie order as faiss (index/torch_exact.py); ANN indexes stay on faiss.
    """
    directory = Path(directory)
    meta_file = directory / "index.json"
    if not meta_file.exists():
        raise InputError("not an index folder (index.json missing); build one with `wit-retrieval index "
                         "build`", path=str(directory))
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise InputError(f"index format {meta.get('format')!r} is not {FORMAT!r}; rebuild it", path=str(meta_file))
    ids = pq.read_table(directory / "ids.parquet").column("id").combine_chunks()
    spec = VectorSpec(meta["input_dim"], meta["dim"], meta["metric"], meta["normalisation"]["mode"])
    if meta["factory"] == "Flat":
        vectors = np.load(directory / "vectors.npy", mmap_mode="r" if mmap else None)
        if device:
            from .torch_exact import TorchFlatBackend

            backend = TorchFlatBackend(vectors, meta["metric"], device)
        else:
            backend = _FlatBackend(vectors, meta["metric"])
    else:
        backend = _FaissBackend(_faiss().read_index(str(directory / "index.faiss")), meta["metric"],
                                meta["exhaustive"])
        backend.set_params(meta.get("search_params") or {})
    if len(ids) != meta["count"]:
        raise InputError(f"ids.parquet has {len(ids)} ids, index.json says {meta['count']}", path=str(directory))
    return Index(backend, ids, spec, meta)
