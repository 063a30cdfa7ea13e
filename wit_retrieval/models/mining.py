"""Hard-negative mining for training (`wit-retrieval mine-negatives`).

A first-pass model embeds the split's corpus and entity images (folders of parts, resumable:
models/embed_corpus.py), the corpus is indexed (streamed from the parts: index/stream.py), and
the split's queries are embedded and searched a chunk at a time. Each query keeps its top
candidates minus
- its positives (qrels),
- duplicates of a positive: the targets of queries with the same text and entities (Gemini
  Embedding's duplicate key), and images whose stored bytes equal a positive's (same sha256);
- likely false negatives: candidates whose first-pass similarity is above `false_negative_ratio`
  times the positive's (NV-Retriever's "TopK-PercPos" rule; 0.95 by default, 0 keeps all).

The output is the hard-negatives file training reads: parquet `query_id`, `image_ids`
list<string>, `scores` list<float> (the first-pass similarities, kept for inspection and for the
false-negative rule; training weighs negatives by its own model's similarity), with the mining
settings and counts in its metadata.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError
from ..io.shards import atomic_path, read_table_dir
from ..layout import DataRoot

HARD_NEGATIVES = pa.schema([("query_id", pa.string()), ("image_ids", pa.list_(pa.string())),
                            ("scores", pa.list_(pa.float32()))])


@dataclass(frozen=True)
class MineConfig:
    """What to mine: model and fusion, split, how deep to search, how many to keep, the false-negative rule."""

    data: str
    out: str
    model: str
    fusion: str = ""                   # default: the model's native fusion
    split: str = "train"
    images: str = ""                   # default: DATA/images
    cache_dir: str = ""                # default: DATA/embeddings (the first-pass embeddings, resumable)
    depth: int = 100                   # candidates searched per query
    keep: int = 32                     # hard negatives kept per query
    false_negative_ratio: float = 0.95  # drop candidates above this fraction of the positive's score
    index: str = "exact"
    query_chunk: int = 4096
    batch_size: int = 64
    workers: int = 4
    device: str = ""
    max_queries: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.keep < 1 or self.depth < self.keep:
            raise ConfigError(f"need 1 <= keep ({self.keep}) <= depth ({self.depth})")
        if not 0 <= self.false_negative_ratio <= 1:
            raise ConfigError("false_negative_ratio must be in [0, 1] (0 keeps every candidate)")


def mine_negatives(config: MineConfig, *, encoder=None, store=None) -> dict[str, Any]:
    """Mine hard negatives for every query of the split; writes `config.out`, returns counts."""
    from ..images import open_store
    from ..index.stream import build_index_from_files
    from ..metrics import load_qrels
    from . import load_encoder
    from .train_data import read_queries

    root = DataRoot(config.data)
    encoder = encoder or load_encoder(config.model, device=config.device or None)
    fusion = config.fusion or encoder.native_fusion
    store = store if store is not None else open_store(config.images or root.images)
    queries = read_queries(root.root, config.split, config.max_queries)
    corpus = read_table_dir(root.table_split("corpus", config.split), columns=["image_id"])["image_id"].to_pylist()
    folder = _parts_folder(config, root, encoder)
    _embed(encoder, store, corpus, folder / f"{config.split}-corpus", config)
    from ..index import IndexConfig

    index = build_index_from_files(folder / f"{config.split}-corpus", IndexConfig(kind=config.index))
    entities = _entity_embeddings(encoder, store, queries, folder / f"{config.split}-entities", config, fusion)
    positives = load_qrels(root.root, config.split)
    excluded = _duplicates(queries, positives, store)
    counts = defaultdict(int)
    with atomic_path(config.out) as tmp, pq.ParquetWriter(tmp, HARD_NEGATIVES, compression="zstd") as writer:
        for chunk in _chunks(queries, config.query_chunk, config.progress):
            rows = _mine_chunk(encoder, index, chunk, entities, positives, excluded, fusion, config, counts)
            writer.write_table(pa.Table.from_pylist(rows, HARD_NEGATIVES))
        writer.add_key_value_metadata({"wit_retrieval": json.dumps(
            {"model": encoder.metadata.to_dict(), "fusion": fusion, "config": asdict(config), "counts": counts},
            default=str)})
    return {"out": config.out, "queries": len(queries), "corpus": index.ntotal, **counts}


def _parts_folder(config: MineConfig, root: DataRoot, encoder) -> Path:
    from .embed import cache_key

    return Path(config.cache_dir or root.embeddings) / f"parts-{cache_key(encoder.metadata)}"


def _embed(encoder, store, ids: Sequence[str], out: Path, config: MineConfig) -> None:
    from .embed import EmbedConfig
    from .embed_corpus import embed_to_folder

    embed = EmbedConfig(batch_size=config.batch_size, workers=config.workers, progress=config.progress)
    embed_to_folder(encoder, store, ids, out, embed)


def _entity_embeddings(encoder, store, queries, out: Path, config: MineConfig, fusion: str) -> dict[str, np.ndarray]:
    """Entity image id -> embedding (empty when the fusion reads no images)."""
    from ..io.embeddings import read_embeddings
    from .fusion import get_fusion
    from .train_data import entity_image_ids

    if not get_fusion(fusion).uses_images:
        return {}
    wanted = sorted({i for q in queries for i in entity_image_ids(q) if i})
    _embed(encoder, store, wanted, out, config)
    ids, matrix = read_embeddings(out)
    return dict(zip(ids, matrix))


def _duplicates(queries, positives: dict[str, dict[str, int]], store) -> dict[str, set[str]]:
    """Per query, images that answer it as well as its target: targets of identical queries, same-byte images."""
    from .train_data import entity_image_ids

    by_key: dict[tuple, set[str]] = defaultdict(set)
    for q in queries:
        by_key[(q["masked_text"], entity_image_ids(q))].update(positives.get(q["query_id"], {}))
    sha_of, same_bytes = _sha_groups(store)
    out = {}
    for q in queries:
        answers = set(by_key[(q["masked_text"], entity_image_ids(q))])
        for image in list(answers):
            answers |= same_bytes.get(sha_of.get(image), set())
        out[q["query_id"]] = answers
    return out


def _sha_groups(store) -> tuple[dict[str, str], dict[str, set[str]]]:
    """image id -> sha256 of its stored bytes, and sha256 -> the ids sharing it (only groups of 2+)."""
    manifest = store.manifest() if hasattr(store, "manifest") else None
    if manifest is None or "sha256" not in manifest.column_names:
        return {}, {}
    ok = manifest.filter(pa.compute.equal(manifest["status"], "ok"))
    sha_of = dict(zip(ok["image_id"].to_pylist(), ok["sha256"].to_pylist()))
    groups: dict[str, set[str]] = defaultdict(set)
    for image, sha in sha_of.items():
        groups[sha].add(image)
    return sha_of, {sha: ids for sha, ids in groups.items() if len(ids) > 1}


def _chunks(queries: list, size: int, progress: bool):
    from ..progress import progress_task

    if not progress:
        yield from (queries[s: s + size] for s in range(0, len(queries), size))
        return
    with progress_task("mining hard negatives", len(queries)) as advance:
        for start in range(0, len(queries), size):
            yield queries[start: start + size]
            advance(len(queries[start: start + size]))


def _mine_chunk(encoder, index, chunk, entities, positives, excluded, fusion, config, counts) -> list[dict]:
    from .train_data import entity_image_ids

    dim = encoder.metadata.dim
    missing = np.full(dim, np.nan, np.float32)
    entity = [np.stack([entities.get(i, missing) if i else missing for i in entity_image_ids(q)])
              if entity_image_ids(q) else np.zeros((0, dim), np.float32) for q in chunk]
    emb = encoder.encode_query_embeddings([q["masked_text"] for q in chunk], entity, fusion=fusion)
    scores, ids = index.search(np.ascontiguousarray(emb, dtype=np.float32), min(config.depth, index.ntotal))
    positive_score = _positive_scores(index, emb, chunk, positives)
    rows = []
    for q, row_ids, row_scores, pos in zip(chunk, ids, scores, positive_score):
        skip = excluded.get(q["query_id"], set())
        kept_ids, kept_scores = [], []
        for image, score in zip(row_ids, row_scores):
            if image in skip:
                counts["dropped_duplicates_or_positives"] += 1
            elif config.false_negative_ratio and pos is not None and score > config.false_negative_ratio * pos:
                counts["dropped_likely_false_negatives"] += 1
            elif len(kept_ids) < config.keep:
                kept_ids.append(image)
                kept_scores.append(float(score))
        counts["negatives"] += len(kept_ids)
        rows.append({"query_id": q["query_id"], "image_ids": kept_ids, "scores": kept_scores})
    return rows


def _positive_scores(index, emb: np.ndarray, chunk, positives) -> list[float | None]:
    """Each query's best first-pass similarity to one of its positives (None when none is indexed)."""
    vectors = index.vectors_of([next(iter(positives.get(q["query_id"], {})), None) for q in chunk])
    prepared = index.spec.prepare(np.ascontiguousarray(emb, dtype=np.float32), "queries")[0]
    out = []
    for query, vector in zip(prepared, vectors):
        out.append(None if vector is None else float(np.dot(query, vector)))
    return out
