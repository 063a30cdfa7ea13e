"""Parquet files written in shards of bounded size, each atomically (a temp name, renamed when closed)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class ShardedParquet:
    """`{folder}/{prefix}-00000.parquet`, ... : a new shard once `max_bytes` or `max_rows` is reached."""

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema, *, max_bytes: int = 500 << 20,
                 max_rows: int = 1_000_000):
        self.folder, self.prefix, self.schema = Path(folder), prefix, schema
        self.max_bytes, self.max_rows = max_bytes, max_rows
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f"{prefix}-*.parquet*"):  # an earlier, interrupted or longer export
            stale.unlink()
        self.paths: list[Path] = []
        self.rows = 0
        self.bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._shard_bytes = 0
        self._shard_rows = 0

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Append rows (already in `schema`); rolls over to a new shard when the current one is full."""
        if self._writer is None:
            self._open()
        table = table if isinstance(table, pa.Table) else pa.Table.from_batches([table])
        self._writer.write_table(table, row_group_size=max(1, min(table.num_rows, 10_000)))
        self._shard_bytes += table.nbytes
        self._shard_rows += table.num_rows
        self.rows += table.num_rows
        self.bytes += table.nbytes
        if self._shard_bytes >= self.max_bytes or self._shard_rows >= self.max_rows:
            self._close()

    def close(self) -> list[Path]:
        """Finish the last shard (an empty split still gets one file, so readers see the schema)."""
        if self._writer is None and not self.paths:
            self._open()
        self._close()
        return self.paths

    def _open(self) -> None:
        path = self.folder / f"{self.prefix}-{len(self.paths):05d}.parquet"
        self._tmp = path.with_name(path.name + ".tmp")
        self._writer = pq.ParquetWriter(str(self._tmp), self.schema, compression="zstd")
        self.paths.append(path)
        self._shard_bytes = self._shard_rows = 0

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self._tmp, self.paths[-1])
            self._writer = None
