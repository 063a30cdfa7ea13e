"""Export a build as gzipped TSVs in the released layout (header row, lists as JSON).

Files (under DataRoot.exports): `entity_image_dataset.tsv.gz`,
`mmir_dataset_train-0000K-of-0000N.tsv.gz`, `mmir_dataset_validation.tsv.gz`,
`mmir_dataset_test.tsv.gz`. The first column is an image URL, as in the released files.
Quoting follows the WIT dialect: a field holding a tab, newline or quote is double-quoted
with `""` for a quote. Gzip headers carry no time stamp, so equal builds give equal bytes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..io.shards import atomic_path, read_manifest, read_table_dir
from ..layout import DataRoot

MMIR_COLUMNS = ("target_image_url", "masked_text", "entity_image_urls", "entity_names", "entity_ids", "language",
                "page_url", "page_title", "query_type", "query_id")
EI_COLUMNS = ("image_url", "entity_name", "entity_id", "language", "num_queries")
RELEASED_SPLITS = {"train": "train", "val": "validation", "test": "test"}
_LISTS = frozenset({"entity_image_urls", "entity_ids", "entity_names"})


def export_all(root: str | DataRoot, *, train_shards: int = 5) -> list[Path]:
    """Write every export file a build has tables for; returns their paths."""
    from ..io.shards import write_json_atomic
    from .mmir import read_split_table

    root = root if isinstance(root, DataRoot) else DataRoot(root)
    write_json_atomic(root.config / "build_export.json", {"train_shards": train_shards})
    written = []
    if read_manifest(root.table("ei")) is not None:
        written.append(export_ei(root))
    names = _entity_names(root)
    for split, released in RELEASED_SPLITS.items():
        if read_manifest(root.table_split("queries", split)) is None:
            continue
        queries = read_split_table(root.root, "queries", split)
        if split == "train":
            shards = max(1, train_shards)
            size = -(-queries.num_rows // shards) if queries.num_rows else 0
            for k in range(shards):
                path = root.exports / f"mmir_dataset_train-{k:05d}-of-{shards:05d}.tsv.gz"
                part = queries.slice(k * size, size) if size else queries.slice(0, 0)
                written.append(write_tsv_gz(path, MMIR_COLUMNS, _mmir_rows(part, names)))
        else:
            path = root.exports / f"mmir_dataset_{released}.tsv.gz"
            written.append(write_tsv_gz(path, MMIR_COLUMNS, _mmir_rows(queries, names)))
    return written


def export_ei(root: DataRoot) -> Path:
    """entity_image_dataset.tsv.gz from the `ei` table."""
    table = read_table_dir(root.table("ei"))
    rows = (
        (r["image_url"], r["page_title"], r["entity_id"], r["language"], r["num_queries"])
        for r in table.to_pylist()
    )
    return write_tsv_gz(root.exports / "entity_image_dataset.tsv.gz", EI_COLUMNS, rows)


def _entity_names(root: DataRoot) -> dict[str, str]:
    if read_manifest(root.table("entities")) is None:
        return {}
    table = read_table_dir(root.table("entities"), columns=["entity_id", "page_title"])
    return dict(zip(table["entity_id"].to_pylist(), table["page_title"].to_pylist()))


def _mmir_rows(queries: pa.Table, names: dict[str, str]) -> Iterator[tuple]:
    for batch in queries.to_batches(max_chunksize=65536):
        for row in batch.to_pylist():
            row["entity_names"] = [names.get(e, "") for e in row["entity_ids"]]
            yield tuple(json.dumps(row[c], ensure_ascii=False) if c in _LISTS else row[c] for c in MMIR_COLUMNS)


def write_tsv_gz(path: Path, header: tuple[str, ...], rows) -> Path:
    """Write a header and rows as a gzipped TSV, atomically and byte-reproducibly."""
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
    ):
        text = io.TextIOWrapper(gz, encoding="utf-8", newline="")
        writer = csv.writer(text, delimiter="\t", quotechar='"', lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
        text.flush()
        text.detach()
    return path
