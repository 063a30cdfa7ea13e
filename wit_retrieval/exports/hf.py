"""`export hf`: a folder laid out as a Hugging Face dataset repository (and as MTEB's retrieval loader reads).

    DIR/README.md                  YAML front matter (configs + data card) and the card text
    DIR/corpus/{split}-NNNNN.parquet    id, image_url[, image]
    DIR/queries/{split}-NNNNN.parquet   id, text, entity_image_urls, entity_image_ids, entity_ids, language,
                                        query_type, num_entities, page_title, page_url[, image]
    DIR/qrels/{split}-NNNNN.parquet     query-id, corpus-id, score

Split names are the Hub's (train, validation, test). With `images="embed"` the corpus `image` is an
`Image()` and the queries' `image` a `List(Image())` (one per [MASK_i]) read from the image store;
an entity image is stored again in every query that uses it (the card gives the size). With
`images="urls"` no image bytes are written; `wit_retrieval.mteb.tasks(DIR, image_store=...)` opens
the images from a store by `entity_image_ids` / corpus `id`. Shards are bounded in bytes and rows,
written batch by batch after a free-space check, so memory stays flat on a 9M-query split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ..errors import ConfigError, InputError
from ..ids import image_id
from ..layout import DataRoot
from .parquet_shards import ShardedParquet
from .source import HF_SPLITS, check_free_space, data_root, iter_batches, num_rows, progress, splits

IMAGE_MODES = ("urls", "embed")
QUERY_TEXT_COLUMNS = ("entity_ids", "language", "query_type", "num_entities", "page_title", "page_url")
_URL_ROW_BYTES = 600  # a query or corpus row without image bytes, compressed (measured on the demo world: ~300)


@dataclass(frozen=True)
class HfExportConfig:
    """Where from, where to, images embedded or as URLs, how big a shard may grow."""

    root: str
    out: str
    images: str = "urls"
    image_store: str = ""            # default ROOT/images (embed only)
    shard_bytes: int = 500 << 20
    shard_rows: int = 1_000_000
    batch_rows: int = 2_000
    progress: bool = True

    def __post_init__(self):
        if self.images not in IMAGE_MODES:
            raise ConfigError(f"--images must be one of {', '.join(IMAGE_MODES)}, not {self.images!r}")


@dataclass
class HfExportStats:
    """What was written: rows per split and table, image bytes, rows dropped for missing images."""

    rows: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    bytes: int = 0
    image_bytes: int = 0
    images_embedded: int = 0
    distinct_images: int = 0
    languages: dict = field(default_factory=dict)
    dropped_queries: int = 0
    dropped_corpus: int = 0


def features(table: str, embed: bool):
    """The `datasets.Features` of one config."""
    import datasets

    string, strings = datasets.Value("string"), datasets.List(datasets.Value("string"))
    if table == "qrels":
        return datasets.Features({"query-id": string, "corpus-id": string, "score": datasets.Value("int32")})
    if table == "corpus":
        cols = {"id": string, "image_url": string}
        return datasets.Features({**cols, **({"image": datasets.Image()} if embed else {})})
    cols = {"id": string, "text": string, "entity_image_urls": strings, "entity_image_ids": strings,
            "entity_ids": strings, "language": string, "query_type": string, "num_entities": datasets.Value("int32"),
            "page_title": string, "page_url": string}
    return datasets.Features({**cols, **({"image": datasets.List(datasets.Image())} if embed else {})})


def export_hf(config: HfExportConfig) -> HfExportStats:
    """Write the dataset repository folder; returns what was written."""
    from .hf_card import write_readme

    root = data_root(config.root)
    out = Path(config.out)
    store = _open_store(root, config) if config.images == "embed" else None
    check_free_space(out, _estimate_bytes(root, store))
    stats = HfExportStats()
    embed = store is not None
    schemas = {t: features(t, embed).arrow_schema for t in ("corpus", "queries", "qrels")}
    total = sum(num_rows(root, t, s) for s in splits(root) for t in ("queries", "corpus", "qrels"))
    with progress(config.progress, "export hf", total) as advance:
        for split in splits(root):
            name = HF_SPLITS[split]
            dropped: set[str] = set()
            for table, rows in (("corpus", _corpus(root, split, store, stats, config)),
                                ("queries", _queries(root, split, store, stats, config, dropped)),
                                ("qrels", _qrels(root, split, store, dropped, config))):
                writer = ShardedParquet(out / table, name, schemas[table], max_bytes=config.shard_bytes,
                                        max_rows=config.shard_rows)
                for batch, seen in rows:
                    writer.write(pa.Table.from_pylist(batch, schemas[table]))
                    advance(seen)
                stats.files[f"{table}/{name}"] = [str(p.relative_to(out)) for p in writer.close()]
                stats.rows[f"{table}/{name}"] = writer.rows
                stats.bytes += sum(p.stat().st_size for p in writer.paths)
    stats.distinct_images = len(store) if store is not None else 0
    write_readme(out, root, config, stats)
    return stats


def _open_store(root: DataRoot, config: HfExportConfig):
    from ..images import open_store

    path = Path(config.image_store) if config.image_store else root.images
    if not path.is_dir():
        raise InputError("--images embed needs an image store (run `images fetch`, or pass --image-store); "
                         "or use --images urls", path=str(path))
    return open_store(path)


def _estimate_bytes(root: DataRoot, store) -> int:
    """Rows times a row size, plus (embed) every image use times the store's mean image size."""
    rows = sum(num_rows(root, t, s) for s in splits(root) for t in ("queries", "corpus", "qrels"))
    if store is None or not len(store):
        return rows * _URL_ROW_BYTES
    from ..images.store import shard_paths

    tars = sum(shard_paths(store.directory, s)[0].stat().st_size for s in store.shards)
    per_image = tars / len(store)
    uses = 0
    for split in splits(root):
        uses += num_rows(root, "corpus", split)
        for batch in iter_batches(root, "queries", split, ["num_entities"]):
            uses += sum(n or 0 for n in batch.column(0).to_pylist())
    return int(rows * _URL_ROW_BYTES + uses * per_image)


def _corpus(root, split, store, stats, config) -> Iterator[tuple[list[dict], int]]:
    for batch in iter_batches(root, "corpus", split, ["image_id", "image_url"], config.batch_rows):
        rows = []
        for r in batch.to_pylist():
            row = {"id": r["image_id"], "image_url": r["image_url"]}
            if store is not None:
                if r["image_id"] not in store:
                    stats.dropped_corpus += 1
                    continue
                row["image"] = _image(store, r["image_id"], stats)
            rows.append(row)
        yield rows, batch.num_rows


def _queries(root, split, store, stats, config, dropped: set[str]) -> Iterator[tuple[list[dict], int]]:
    columns = ["query_id", "masked_text", "entity_image_urls", *QUERY_TEXT_COLUMNS]
    for batch in iter_batches(root, "queries", split, columns, config.batch_rows):
        rows = []
        for r in batch.to_pylist():
            urls = r["entity_image_urls"] or []
            ids = [image_id(u) for u in urls]
            if store is not None and not all(i in store for i in ids):
                stats.dropped_queries += 1
                dropped.add(r["query_id"])
                continue
            row = {"id": r["query_id"], "text": r["masked_text"] or "", "entity_image_urls": urls,
                   "entity_image_ids": ids, **{c: r[c] for c in QUERY_TEXT_COLUMNS}}
            if store is not None:
                row["image"] = [_image(store, i, stats) for i in ids]
            stats.languages[r["language"] or ""] = stats.languages.get(r["language"] or "", 0) + 1
            rows.append(row)
        yield rows, batch.num_rows


def _qrels(root, split, store, dropped: set[str], config) -> Iterator[tuple[list[dict], int]]:
    for batch in iter_batches(root, "qrels", split, ["query_id", "image_id", "relevance"], config.batch_rows):
        rows = [{"query-id": q, "corpus-id": d, "score": s if s is not None else 1}
                for q, d, s in zip(*(batch.column(i).to_pylist() for i in range(3)))
                if q not in dropped and (store is None or d in store)]
        yield rows, batch.num_rows


def _image(store, key: str, stats: HfExportStats) -> dict:
    data = store.get(key)
    stats.image_bytes += len(data)
    stats.images_embedded += 1
    return {"bytes": data, "path": None}

