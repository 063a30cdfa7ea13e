"""The ratings table: one row per (item, rater) judgement, whatever tool collected it."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..io.shards import write_parquet_atomic

RATINGS = pa.schema([
    ("item_id", pa.string()),
    ("task_kind", pa.string()),
    ("rater", pa.string()),
    ("label", pa.string()),
    ("is_gold", pa.bool_()),
    ("gold_label", pa.string()),     # null unless is_gold
    ("language", pa.string()),
    ("query_type", pa.string()),
    ("source", pa.string()),         # app | label-studio | csv | simulated
    ("rated_at", pa.string()),       # ISO 8601 UTC
])
SOURCES = ("app", "label-studio", "csv", "simulated")


def now_iso() -> str:
    """The current UTC time as ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ratings_table(rows: list[dict]) -> pa.Table:
    """A ratings table from row dicts (missing columns are null)."""
    return pa.Table.from_pylist([{name: row.get(name) for name in RATINGS.names} for row in rows], schema=RATINGS)


def write_ratings(table: pa.Table, path: str | Path) -> None:
    """Write the ratings table as one parquet file, atomically."""
    write_parquet_atomic(table.select(RATINGS.names).cast(RATINGS), path)


def read_ratings_parquet(path: str | Path) -> pa.Table:
    """Read a ratings parquet file, checking its columns."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable parquet file: {exc}", path=str(path)) from None
    missing = [c for c in RATINGS.names if c not in table.column_names]
    if missing:
        raise InputError(f"not a ratings table: missing columns {', '.join(missing)}", path=str(path))
    return table.select(RATINGS.names).cast(RATINGS)
