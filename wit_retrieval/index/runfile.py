"""Search a batch of query embeddings and stream the results into a run file, chunk by chunk.

io/runs.py's `write_trec` takes a whole run in memory; 1M queries x k=100 is 100M rows, so
here each chunk of queries is appended as it is searched (TREC text or parquet), written to a
temporary name and renamed at the end. The TREC layout is the one `write_trec` writes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ..errors import InputError
from ..io.shards import atomic_path
from .core import Index

RUN_SCHEMA = pa.schema([("query_id", pa.string()), ("image_id", pa.string()), ("score", pa.float64())])


def _chunk_table(index: Index, query_ids: list[str], start: int, scores: np.ndarray, labels: np.ndarray) -> pa.Table:
    keep = labels >= 0
    per_query = keep.sum(axis=1)
    rows = np.repeat(np.arange(start, start + len(labels)), per_query)
    return pa.table({
        "query_id": pa.array(query_ids, pa.string()).take(pa.array(rows)),
        "image_id": index.ids().take(pa.array(labels[keep])).cast(pa.string()),
        "score": pa.array(scores[keep].astype(np.float64)),
        "rank": pa.array(np.arange(len(rows)) - np.repeat(np.cumsum(per_query) - per_query, per_query) + 1),
    })


def write_search_run(
    index: Index, query_ids: list[str], queries: np.ndarray, path: str | Path, *, k: int = 100,
    chunk: int = 4096, tag: str = "wit-retrieval", fmt: str | None = None,
) -> dict[str, Any]:
    """Search `queries` and write the top k per query to `path` (TREC, or parquet by suffix)."""
    path = Path(path)
    fmt = fmt or ("parquet" if path.suffix == ".parquet" else "trec")
    if fmt not in ("trec", "parquet"):
        raise InputError(f"run format {fmt!r}: use trec or parquet")
    if not re.fullmatch(r"\S+", tag):
        raise InputError(f"run tag {tag!r} must be one word without spaces")
    if len(query_ids) != len(queries):
        raise InputError(f"{len(query_ids)} query ids for {len(queries)} query embeddings")
    if len(set(query_ids)) != len(query_ids):
        raise InputError("query ids repeat; a run needs one id per query")
    counted = {"rows": 0}

    def tables():
        for start, scores, labels in index.iter_search(queries, k, chunk):
            table = _chunk_table(index, query_ids, start, scores, labels)
            counted["rows"] += table.num_rows
            yield table

    with atomic_path(path) as tmp:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, RUN_SCHEMA, compression="zstd") as writer:
                for table in tables():
                    writer.write_table(table.select(RUN_SCHEMA.names))
        else:
            options = pcsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
            with open(tmp, "wb") as sink:
                for table in tables():
                    n = table.num_rows
                    trec = pa.table({"q": table["query_id"], "q0": pa.array(["Q0"] * n), "d": table["image_id"],
                                     "rank": table["rank"], "score": table["score"], "tag": pa.array([tag] * n)})
                    pcsv.write_csv(trec, sink, options)
    return {"queries": len(query_ids), "rows": counted["rows"], "k": k, "format": fmt, "path": str(path)}
