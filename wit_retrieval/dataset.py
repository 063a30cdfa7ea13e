"""`load_dataset`: one table of a build, or of released files, as a Hugging Face `datasets.Dataset`.

The rows are streamed once into an Arrow file in a cache and memory-mapped by `datasets`, so a
9M-query table does not have to fit in memory. Released TSV files are first imported (once per
version of the files, keyed by their size and modification time) into a cache data root.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from .errors import ConfigError, InputError
from .io.shards import atomic_path, read_manifest
from .layout import DataRoot
from .schema import SPLIT_TABLES, SPLITS, TABLES

SPLIT_ALIASES = {"validation": "val", "dev": "val"}
_RELEASED_SUFFIXES = (".tsv", ".tsv.gz")


def cache_home() -> Path:
    """Where imported released files and Arrow caches live ($WIT_RETRIEVAL_CACHE or ~/.cache/wit-retrieval)."""
    env = os.environ.get("WIT_RETRIEVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "wit-retrieval"


def _released_files(path: Path) -> list[Path]:
    """A released TSV file itself; or the released EI/MMIR files in (or below) a folder that is no build."""
    from .io.roles import kind_from_name

    if path.is_file():
        return [path] if path.name.endswith(_RELEASED_SUFFIXES) else []
    if not path.is_dir() or any((path / t).is_dir() for t in TABLES):
        return []
    for pattern in ("*", "**/*"):  # a download folder keeps them at gresearch/wit-retrieval/
        found = sorted(p for p in path.glob(pattern) if p.name.endswith(_RELEASED_SUFFIXES) and kind_from_name(p))
        if found:
            return found
    return []


def released_root(files: list[Path]) -> Path:
    """A data root holding the import of `files` (imported now unless an import of this version exists)."""
    from .io.released import import_released

    key = hashlib.sha256(json.dumps(
        [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]).encode()).hexdigest()[:16]
    root = cache_home() / "released" / key
    if not (DataRoot(root).config / "released_import.json").exists():
        import_released(files, root)
    return root


def _fingerprint(folders: list[Path]) -> str:
    manifests = [read_manifest(f) for f in folders]
    if any(m is None for m in manifests):
        unfinished = [str(f) for f, m in zip(folders, manifests) if m is None]
        raise InputError(f"unfinished table (no manifest): {', '.join(unfinished)}; rebuild it")
    text = json.dumps([[str(f.resolve()), m.get("written_at"), m.get("rows")] for f, m in zip(folders, manifests)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _table_folders(root: DataRoot, table: str, split: str | None) -> list[Path]:
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; tables: {', '.join(sorted(TABLES))}")
    if table not in SPLIT_TABLES:
        if split is not None:
            raise ConfigError(f"table {table!r} has no splits; leave split out")
        folders = [root.table(table)]
    elif split is not None:
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        folders = [root.table_split(table, split)]
    else:
        folders = sorted(p for p in root.table(table).glob("split=*") if p.is_dir())
    present = [f for f in folders if f.is_dir()]
    if not present:
        have = sorted(t for t in TABLES if root.table(t).is_dir())
        raise InputError(f"no {table} table{f' for split {split}' if split else ''} here; tables present: "
                         f"{', '.join(have) or 'none'}", path=str(root.root))
    return present


def load_dataset(root: str | os.PathLike, table: str = "queries", split: str | None = None):
    """One table (optionally one split) of a build root, released TSV file or folder, as a `datasets.Dataset`."""
    import datasets

    path = Path(root)
    if not path.exists():
        raise InputError("no such file or folder", path=str(path))
    released = _released_files(path)
    data_root = DataRoot(released_root(released) if released else path)
    split = SPLIT_ALIASES.get(split, split)
    folders = _table_folders(data_root, table, split)
    where = hashlib.sha256(str(data_root.root.resolve()).encode()).hexdigest()[:12]
    prefix = f"{where}-{table}-{split or 'all'}-"
    cache = cache_home() / "arrow" / f"{prefix}{_fingerprint(folders)}.arrow"
    if not cache.exists():
        for stale in cache.parent.glob(f"{prefix}*.arrow"):  # caches of earlier versions of this table
            stale.unlink(missing_ok=True)
        schema = TABLES[table]
        # The manifests' files only (never a stray temp file); hive partitioning restores `split`
        # should a writer have left it out of the files.
        files = [str(f / part["file"]) for f in folders for part in read_manifest(f)["files"]]
        scanner = pads.dataset(files, format="parquet", schema=schema, partitioning="hive",
                               partition_base_dir=str(data_root.table(table)))
        with atomic_path(cache) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
                pa.ipc.new_stream(sink, schema) as writer:
            for batch in scanner.to_batches():
                writer.write_batch(batch)
    return datasets.Dataset.from_file(str(cache))
