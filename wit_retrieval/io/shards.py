"""Parquet shards with manifests, and atomic file writes (write to a temp name, then rename)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import fs

MANIFEST = "_manifest.json"


def _default_mode() -> int:
    # mkstemp creates 0600 files; published data should get the usual umask-derived mode
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    A crash leaves only a `.tmp-*` file that readers ignore, never a half-written target. On an
    object store (s3://, gs://) the temporary path is local and is committed through a
    temporary key (io.fs.atomic_write).
    """
    if fs.is_remote(path):
        with fs.atomic_write(fs.path(path)) as local:
            yield local
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file (any hashlib algorithm), read in 4 MiB blocks."""
    digest = hashlib.new(algorithm)
    with fs.open_file(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8) atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (indented, UTF-8, sorted keys) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n")


# parquet options for columns unique per row (ids, URLs, text): dictionaries and statistics
# cost write time and pay nothing back there
UNIQUE_COLUMNS = {"use_dictionary": False, "write_statistics": False}


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike, **kwargs) -> None:
    """Write one parquet file atomically (zstd by default)."""
    import pyarrow.parquet as pq  # lazy: it pulls in pyarrow.fs and ssl (~50 ms), which scoring never needs

    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_arrow_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    """Write an Arrow IPC file atomically (uncompressed: for `read_arrow`, a hand-off between processes)."""
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_arrow(path: str | os.PathLike) -> pa.Table:
    """An Arrow IPC file, memory-mapped: its columns are the file's pages, copied nowhere
    (read whole when it is on an object store)."""
    if fs.is_remote(path):
        with fs.open_file(path, "rb") as source:
            return pa.ipc.open_file(source).read_all()
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _clear_table_dir(directory: str | os.PathLike) -> Path | fs.ObjectPath:
    """Empty a table folder of its parts and manifest (the manifest first: a reader never trusts
    a folder whose parts are going)."""
    directory = fs.path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    for old in fs.glob(directory, "part-*.parquet"):
        old.unlink(missing_ok=True)
    return directory


def write_table_dir(
    directory: str | os.PathLike,
    parts: Iterable[pa.Table],
    schema: pa.Schema,
    *,
    meta: dict[str, Any] | None = None,
    rows_per_file: int = 1_000_000,
    **parquet: Any,
) -> dict[str, Any]:
    """Replace `directory` with parquet part files of `parts` plus a manifest; returns it.

    `parquet`: options for pyarrow.parquet.write_table (as use_dictionary, write_statistics).

    Parts are cast to `schema` and re-chunked into files of at most `rows_per_file` rows.
    The manifest is written last, so a folder without one is an unfinished write.
    """
    directory = _clear_table_dir(directory)
    files, total = [], 0
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush():
        nonlocal pending, pending_rows, total
        if not pending:
            return
        table = pa.concat_tables(pending)
        for start in range(0, table.num_rows, rows_per_file):
            piece = table.slice(start, rows_per_file)
            name = f"part-{len(files):05d}.parquet"
            write_parquet_atomic(piece, directory / name, **parquet)
            files.append({"file": name, "rows": piece.num_rows})
            total += piece.num_rows
        pending, pending_rows = [], 0

    for part in parts:
        part = part.select(schema.names).cast(schema) if part.schema != schema else part
        pending.append(part)
        pending_rows += part.num_rows
        if pending_rows >= rows_per_file:
            flush()
    flush()
    if not files:  # an empty table still gets one file, so readers see the schema
        write_parquet_atomic(schema.empty_table(), directory / "part-00000.parquet")
        files.append({"file": "part-00000.parquet", "rows": 0})
    manifest = {
        "files": files,
        "rows": total,
        "columns": schema.names,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(meta or {}),
    }
    write_json_atomic(directory / MANIFEST, manifest)
    fs.sweep(directory)  # temporaries a crashed earlier write left: a finished folder holds none
    return manifest


def publish_table_dir(
    directory: str | os.PathLike,
    files: list[tuple[str, int]],
    schema: pa.Schema,
    *,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Replace `directory` with parquet files written elsewhere (moved in, in order) plus a manifest.

    For tables whose parts were written by workers in parallel: `files` are (path, rows) on
    the same file system, each already in `schema`. The manifest is written last, as in
    write_table_dir, so a folder without one is an unfinished write.
    """
    directory = _clear_table_dir(directory)
    listed = []
    for number, (path, rows) in enumerate(files):
        name = f"part-{number:05d}.parquet"
        fs.move(path, directory / name)
        listed.append({"file": name, "rows": rows})
    if not listed:  # an empty table still gets one file, so readers see the schema
        write_parquet_atomic(schema.empty_table(), directory / "part-00000.parquet")
        listed.append({"file": "part-00000.parquet", "rows": 0})
    manifest = {
        "files": listed,
        "rows": sum(item["rows"] for item in listed),
        "columns": schema.names,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(meta or {}),
    }
    write_json_atomic(directory / MANIFEST, manifest)
    fs.sweep(directory)  # temporaries a crashed earlier write left: a finished folder holds none
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a table folder, or None if the folder was never finished."""
    path = fs.path(directory) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def read_table_dir(directory: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Read the part files a manifest lists (never stray temp files)."""
    from ..errors import InputError

    directory = fs.path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise InputError("no manifest: this table was never finished; rebuild it", path=str(directory))
    # ParquetFile, not pq.read_table: the same table without pyarrow.dataset's import (~0.4 s of
    # start-up in every build worker)
    tables = [read_parquet(directory / f["file"], columns) for f in manifest["files"]]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def parquet_file(path: str | os.PathLike | fs.ObjectPath):
    """A pyarrow ParquetFile, local or on an object store (opened through the store's filesystem)."""
    import pyarrow.parquet as pq  # here: it pulls in ssl, which scoring never needs

    path = fs.path(path)
    return pq.ParquetFile(path if isinstance(path, Path) else fs.open_file(path, "rb"))


def read_parquet(path: str | os.PathLike | fs.ObjectPath, columns: list[str] | None = None) -> pa.Table:
    """One parquet file, local or on an object store."""
    source = parquet_file(path)
    try:
        return source.read(columns=columns)
    finally:
        source.close(force=True)  # a store's stream too, not only a file pyarrow opened itself
