"""What to fetch: image URLs of a build or of a URL file, deduplicated by image_id, planned into shards.

The plan is a parquet file (`_plan/plan.parquet`: image_id, url, shard) sorted by image_id with one
row group per shard, so a worker reads exactly its shard and a rerun over the same URLs makes
exactly the same shards (resume and retry depend on that).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..ids import image_id
from ..io import fs
from ..io.shards import parquet_file

# in a subfolder: readers that glob the store for "*.parquet" manifests must not see it
PLAN_FILE = "_plan/plan.parquet"
PLAN_SCHEMA = pa.schema([("image_id", pa.string()), ("url", pa.string()), ("shard", pa.int32())])


def _dataset(path):
    import pyarrow.dataset as ds

    filesystem, key = fs.resolve(path)
    return ds.dataset(key, filesystem=filesystem, format="parquet", partitioning="hive",
                      ignore_prefixes=[".", "_"])


def build_urls(root: str | Path) -> Iterator[str]:
    """Every target and entity image URL of a build (a path or URI): queries and entities tables (streamed)."""
    from ..layout import DataRoot

    data = DataRoot(root)
    found = False
    for table, columns in (("queries", ("target_image_url", "entity_image_urls")), ("entities", ("image_url",))):
        folder = data.table(table)
        if not folder.is_dir():
            continue
        found = True
        dataset = _dataset(folder)
        present = [c for c in columns if c in dataset.schema.names]
        for batch in dataset.to_batches(columns=present, batch_size=65536):
            for name in present:
                column = batch.column(name)
                if pa.types.is_list(column.type):
                    column = pc.list_flatten(column)
                yield from (u for u in column.to_pylist() if u)
    if not found:
        raise InputError("neither queries/ nor entities/ found: is this a build's data root?", path=fs.redact(root))


def file_urls(path: str | Path, column: str) -> Iterator[str]:
    """URLs from one column of a TSV/CSV (optionally .gz) or parquet file (streamed; a path or URI)."""
    path = fs.path(path)
    shown = fs.redact(path)
    if not path.is_file():
        raise InputError("no such URL file", path=shown)
    if path.suffix == ".parquet":
        reader = parquet_file(path)
        if column not in reader.schema_arrow.names:
            raise InputError(f"no column {column!r}; columns: {', '.join(reader.schema_arrow.names)}", path=shown)
        for batch in reader.iter_batches(columns=[column], batch_size=65536):
            yield from (u for u in batch.column(0).to_pylist() if u)
        return
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    delimiter = "," if name.endswith(".csv") else "\t"
    compression = "gzip" if path.name.endswith(".gz") else None
    with fs.open_file(path, "rt", compression=compression) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None or column not in header:
            raise InputError(f"no column {column!r} in the header; columns: {', '.join(header or [])}",
                             path=shown, line=1)
        index = header.index(column)
        for row in reader:
            if index < len(row) and row[index].strip():
                yield row[index].strip()


@dataclass(frozen=True)
class Plan:
    """A deterministic shard plan: how many items and shards, and a digest of the ids."""

    items: int
    shards: int
    shard_size: int
    digest: str


def make_plan(urls: Iterable[str], out: Any, shard_size: int) -> Plan:
    """Deduplicate URLs by image_id, sort by image_id, cut into shards and write the plan file."""
    if shard_size < 1:
        raise ConfigError("--shard-size must be at least 1")
    # Arrow buffers, not Python dicts: 11.5M URLs stay a few GiB, deduplicated in C++.
    parts = [pa.table({"image_id": [image_id(u) for u in chunk], "url": chunk}) for chunk in _chunks(urls)]
    table = pa.concat_tables(parts) if parts else pa.table({"image_id": pa.array([], pa.string()),
                                                           "url": pa.array([], pa.string())})
    table = table.group_by("image_id", use_threads=False).aggregate([("url", "first")])
    table = table.select(["image_id", "url_first"]).rename_columns(["image_id", "url"]).sort_by("image_id")
    shards = np.arange(table.num_rows, dtype=np.int32) // shard_size
    table = table.append_column("shard", pa.array(shards, pa.int32())).cast(PLAN_SCHEMA)
    digest = hashlib.sha256()
    for chunk in table["image_id"].chunks:
        digest.update("".join(chunk.to_pylist()).encode())  # ids are fixed-width: chunking is irrelevant
    plan = Plan(table.num_rows, -(-table.num_rows // shard_size), shard_size, digest.hexdigest()[:32])
    existing = read_plan(out)
    if existing is not None:
        if existing != plan:
            raise ConfigError(f"{out} holds a fetch of another URL list or shard size ({existing.items} images "
                              f"in {existing.shards} shards of {existing.shard_size}); use another --out")
        return existing
    _write_plan(table, out, plan)
    return plan


def _chunks(urls: Iterable[str], size: int = 65536) -> Iterator[list[str]]:
    chunk: list[str] = []
    for url in urls:
        chunk.append(url)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_plan(table: pa.Table, out: Any, plan: Plan) -> None:
    from ..io.shards import atomic_path

    meta = {b"items": str(plan.items).encode(), b"shards": str(plan.shards).encode(),
            b"shard_size": str(plan.shard_size).encode(), b"digest": plan.digest.encode()}
    table = table.replace_schema_metadata(meta)
    with atomic_path(fs.join(out, PLAN_FILE)) as tmp:
        pq.write_table(table, tmp, row_group_size=plan.shard_size, compression="zstd")


def read_plan(out: str | Path) -> Plan | None:
    """The plan stored in a store folder, or None."""
    path = fs.join(out, PLAN_FILE)
    if not path.exists():
        return None
    with _plan_file(out) as plan:
        meta = plan.schema_arrow.metadata or {}
    return Plan(int(meta[b"items"]), int(meta[b"shards"]), int(meta[b"shard_size"]), meta[b"digest"].decode())


def plan_items(out: str | Path, shard: int) -> list[tuple[str, str]]:
    """(image_id, url) pairs of one shard of the plan."""
    with _plan_file(out) as plan:
        table = plan.read_row_group(shard, columns=["image_id", "url"])
    return list(zip(table["image_id"].to_pylist(), table["url"].to_pylist()))


def plan_hosts(out: str | Path) -> set[str]:
    """The distinct hosts of the plan's URLs (for the politeness check before any request)."""
    from urllib.parse import urlsplit

    hosts: set[str] = set()
    with _plan_file(out) as plan:
        for batch in plan.iter_batches(columns=["url"], batch_size=65536):
            hosts.update((urlsplit(u).hostname or "").lower() for u in batch.column(0).to_pylist())
    return hosts


@contextlib.contextmanager
def _plan_file(out: Any) -> Iterator[pq.ParquetFile]:
    """The plan, opened locally or on an object store, and closed (a store's stream too)."""
    plan = parquet_file(fs.join(out, PLAN_FILE))
    try:
        yield plan
    finally:
        plan.close(force=True)
