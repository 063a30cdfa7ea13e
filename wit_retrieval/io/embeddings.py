"""Embedding files: parquet (`id` string, `embedding` fixed_size_list<float32>) or `.npy` + `.ids.txt`.

A parquet file keeps its metadata (model, revision, dimension, corpus revision, ...) in the
schema metadata under the key `wit_retrieval`; an `.npy` keeps it in a `.meta.json` beside it.
A folder of `part-*.parquet` files (what `models.embed` writes) reads as one file, parts in name
order; where the folder has a `manifest.json` (what `embed --out DIR` writes last), only the parts
it lists, in its order: a part without a manifest entry is unfinished or foreign. Embeddings may be
stored as float16 (half the disk); readers always return float32. Readers fill one preallocated
float32 matrix, so reading costs the matrix and one row group, never two copies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from .shards import atomic_path, write_text_atomic

META_KEY = b"wit_retrieval"
PARTS_MANIFEST = "manifest.json"
DTYPES = {"float32": (np.float32, pa.float32()), "float16": (np.float16, pa.float16())}


def _sidecars(path: Path) -> tuple[Path, Path]:
    stem = path.with_suffix("")
    return stem.with_name(stem.name + ".ids.txt"), stem.with_name(stem.name + ".meta.json")


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir() and (path / PARTS_MANIFEST).is_file():
        listed = json.loads((path / PARTS_MANIFEST).read_text(encoding="utf-8")).get("parts", [])
        files = [path / part["file"] for part in listed]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise InputError(f"{len(absent)} part(s) listed in {PARTS_MANIFEST} are missing, e.g. {absent[0]}; "
                             "re-run the embedding command to rewrite them", path=str(path))
        return files
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise InputError("folder holds no .parquet embedding files", path=str(path))
        return files
    return [path]


def read_embeddings_meta(path: str | Path) -> dict[str, Any]:
    """The metadata stored with an embedding file (empty when none was written)."""
    path = Path(path)
    if path.suffix == ".npy":
        meta_file = _sidecars(path)[1]
        return json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
    if not path.exists():
        raise InputError("embedding file not found", path=str(path))
    raw = (pq.read_schema(_parquet_files(path)[0]).metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read ids and a float32 [n, d] matrix from parquet (file or folder) or `.npy` + `.ids.txt`."""
    path = Path(path)
    if not path.exists():
        raise InputError("embedding file not found", path=str(path))
    if path.suffix == ".npy":
        return _read_npy(path)
    ids: list[str] = []
    matrix: np.ndarray | None = None
    total = count_embeddings(path)
    for block_ids, block in iter_embedding_blocks(path):
        if matrix is None:
            matrix = np.empty((total, block.shape[1]), dtype=np.float32)
        matrix[len(ids): len(ids) + len(block)] = block
        ids.extend(block_ids)
    if matrix is None:
        matrix = np.empty((0, 0), dtype=np.float32)
    return ids, matrix


def embedding_files(path: str | Path) -> list[Path]:
    """The parquet files of an embedding file or folder (a folder with a manifest: the parts it lists)."""
    path = Path(path)
    if not path.exists():
        raise InputError("embedding file not found", path=str(path))
    return _parquet_files(path)


def count_embeddings(path: str | Path) -> int:
    """Rows of a parquet embedding file or folder, from the files' footers (nothing else read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in _parquet_files(Path(path)))


def iter_embedding_blocks(path: str | Path) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 [rows, d]) one parquet row group at a time: memory holds one block, never the whole."""
    path = Path(path)
    if not path.exists():
        raise InputError("embedding file not found", path=str(path))
    row, dim = 0, None
    for file in _parquet_files(path):
        pf = pq.ParquetFile(file)
        missing = {"id", "embedding"} - set(pf.schema_arrow.names)
        if missing:
            raise InputError(f"missing column(s) {sorted(missing)}; expected `id` and `embedding`", path=str(file))
        for group in range(pf.num_row_groups):
            batch = pf.read_row_group(group, columns=["id", "embedding"])
            block = _embedding_block(batch.column("embedding"), file, row)
            if dim is not None and len(block) and block.shape[1] != dim:
                raise InputError(f"embedding at row {row} has {block.shape[1]} dims, earlier rows {dim}",
                                 path=str(file))
            if len(block):
                dim = block.shape[1]
                yield _id_column(batch.column("id"), file, row), block
            row += len(block)


def _id_column(column: pa.ChunkedArray, file: Path, first_row: int) -> list[str]:
    if column.null_count:
        bad = first_row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"row {bad} has no id", path=str(file))
    return [str(v) for v in column.to_pylist()]


def _embedding_block(column: pa.ChunkedArray, file: Path, first_row: int) -> np.ndarray:
    """One row group's embeddings as float32 [rows, d] (fixed or variable lists, any float type)."""
    column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)
            or pa.types.is_large_list(column.type)):
        raise InputError(f"column `embedding` has type {column.type}; expected a list of floats", path=str(file))
    if column.null_count:
        bad = first_row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"row {bad} has no embedding", path=str(file))
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
    else:
        lengths = pc.list_value_length(column).to_numpy()
        dim = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and (lengths != dim).any():
            bad = first_row + int(np.flatnonzero(lengths != dim)[0])
            raise InputError(f"row {bad} has {lengths[bad - first_row]} dims, row {first_row} has {dim}",
                             path=str(file))
    values = column.flatten()
    if values.null_count:
        raise InputError("an embedding holds null values", path=str(file))
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(column), dim)


def read_npy_ids(path: str | Path) -> list[str]:
    """The ids of an `.npy` embedding file (its `.ids.txt`), checked against its row count."""
    path = Path(path)
    ids_file = _sidecars(path)[0]
    if not ids_file.exists():
        raise InputError(f"ids file {ids_file.name} is missing beside it (one id per line)", path=str(path))
    matrix = np.load(path, mmap_mode="r")
    if matrix.ndim != 2:
        raise InputError(f"expected a 2-D array [n, d], got shape {matrix.shape}", path=str(path))
    ids = ids_file.read_text(encoding="utf-8").splitlines()
    if len(ids) != len(matrix):
        raise InputError(f"{len(ids)} ids for {len(matrix)} rows", path=str(ids_file))
    return ids


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    ids = read_npy_ids(path)
    return ids, np.ascontiguousarray(np.load(path, mmap_mode="r"), dtype=np.float32)


def write_embeddings(path: str | Path, ids: list[str], array: np.ndarray, meta: dict | None = None,
                     *, dtype: str = "float32") -> None:
    """Write ids and an [n, d] matrix as parquet (`.parquet`) or `.npy` + `.ids.txt`, atomically.

    `dtype` float16 halves the file (parquet only); readers return float32 either way.
    """
    path = Path(path)
    if dtype not in DTYPES:
        raise InputError(f"embedding dtype must be one of {', '.join(DTYPES)}, not {dtype!r}", path=str(path))
    if dtype != "float32" and path.suffix == ".npy":
        raise InputError("float16 storage is for parquet embeddings; use a .parquet path", path=str(path))
    np_type, arrow_type = DTYPES[dtype]
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or len(ids) != len(array):
        raise InputError(f"need one id per row of a 2-D array; got {len(ids)} ids, shape {array.shape}",
                         path=str(path))
    meta = dict(meta or {}, dim=int(array.shape[1]), dtype=dtype)
    if path.suffix == ".npy":
        ids_file, meta_file = _sidecars(path)
        if any("\n" in i for i in ids):
            raise InputError("ids must not contain newlines in an .ids.txt file", path=str(ids_file))
        write_text_atomic(ids_file, "".join(f"{i}\n" for i in ids))
        write_text_atomic(meta_file, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
        return
    values = pa.array(array.reshape(-1).astype(np_type, copy=False), arrow_type)
    table = pa.table({
        "id": pa.array([str(i) for i in ids], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(values, int(array.shape[1])),
    })
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=65536)
