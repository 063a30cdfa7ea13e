"""Reading a data root for an export: splits present, batches in the canonical schema, free space.

Part files are read batch by batch (never a whole split in memory); a column the root lacks
(a `released import` root has no original text, for one) comes back as nulls.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..io.shards import read_manifest
from ..layout import DataRoot
from ..schema import SPLITS, TABLES

HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def data_root(root: str | Path) -> DataRoot:
    """The root, checked to hold at least one finished queries split."""
    found = DataRoot(root)
    if not found.root.is_dir():
        raise InputError("no such data root", path=str(found.root))
    if not splits(found):
        raise InputError("no finished queries table here; run `build mmir` or `released import` first",
                         path=str(found.root))
    return found


def splits(root: DataRoot) -> list[str]:
    """Splits whose queries, corpus and qrels tables are all finished, in train/val/test order."""
    return [s for s in SPLITS
            if all(read_manifest(root.table_split(t, s)) is not None for t in ("queries", "corpus", "qrels"))]


def num_rows(root: DataRoot, table: str, split: str) -> int:
    """Rows of one split table, from its manifest."""
    return int(read_manifest(root.table_split(table, split))["rows"])


def iter_batches(root: DataRoot, table: str, split: str, columns: list[str] | None = None,
                 batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Record batches of one split table in the canonical schema (missing columns as nulls)."""
    schema = TABLES[table]
    wanted = columns or schema.names
    folder = root.table_split(table, split)
    for part in read_manifest(folder)["files"]:
        handle = pq.ParquetFile(folder / part["file"])
        have = set(handle.schema_arrow.names)
        for batch in handle.iter_batches(batch_size=batch_rows, columns=[c for c in wanted if c in have]):
            arrays = []
            for name in wanted:
                field = schema.field(name)
                if name == "split" and name not in have:  # hive-partitioned: the folder names it
                    arrays.append(pa.array([split] * batch.num_rows, field.type))
                elif name in have:
                    arrays.append(batch.column(name).cast(field.type))
                else:
                    arrays.append(pa.nulls(batch.num_rows, field.type))
            yield pa.RecordBatch.from_arrays(arrays, names=list(wanted))


def check_free_space(out: Path, needed: int, *, margin: float = 1.1) -> None:
    """Raise InputError when the disk holding `out` has less than `needed` bytes (plus a margin) free."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed * margin:
        raise InputError(f"the export needs about {_human(needed)} and only {_human(free)} is free; "
                         "free some space or choose another --out", path=str(out))


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def progress(enabled: bool, description: str, total: int):
    """A progress bar's `advance(n)`, or a no-op when disabled."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(lambda n=1: None)
    from ..progress import progress_task

    return progress_task(description, total)
