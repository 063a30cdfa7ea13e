"""Offline sources tried before the network: a folder tree, a parquet of image bytes, our own shards.

- `folder`: files at the URL's path (`wikipedia/commons/a/ab/Name.jpg`, with or without the
  `wikipedia/` or `wikipedia/commons/` prefix) or named by image_id (`{id}.jpg`, `{id[:2]}/{id}.jpg`).
- `parquet`: one file or a folder of parquet files keyed by URL (e.g. `wikimedia/wit_base`):
  a URL column (`image_url` or `url`) and the bytes as an `image` struct with `bytes`, or a
  binary column (`image`, `bytes`, `image_bytes`, `jpg`). An index image_id -> (file, row group,
  row) is built once per fetch, so each shard reads only the row groups holding its images.
- `shards`: an earlier store of ours (`open_store`).
Spell a kind explicitly as `KIND:PATH`; otherwise it is detected from the path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..ids import image_id as url_image_id
from ..io import fs

MIRROR_KINDS = ("folder", "parquet", "shards")
_URL_COLUMNS = ("image_url", "url")
_BYTES_COLUMNS = ("image", "bytes", "image_bytes", "jpg")
_ID_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif")


@dataclass(frozen=True)
class MirrorSpec:
    """A configured mirror: its kind, its path, and (parquet) the index built for this fetch."""

    kind: str
    path: str
    index: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_mirror(text: str) -> MirrorSpec:
    """`[KIND:]PATH` -> MirrorSpec, detecting the kind from what is at PATH when not given."""
    kind, sep, rest = text.partition(":")
    if sep and kind in MIRROR_KINDS:
        path = Path(rest)
    else:
        kind, path = "", Path(text)
    if not path.exists():
        raise ConfigError(f"mirror {text!r}: no such file or folder")
    if not kind:
        if path.is_file():
            kind = "parquet"
        elif any(path.glob("[0-9]*.done")):
            kind = "shards"
        elif _parquet_files(path):
            kind = "parquet"
        else:
            kind = "folder"
    return MirrorSpec(kind, str(path.resolve()))


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))


def _bytes_of(column: pa.ChunkedArray) -> list[bytes | None]:
    if pa.types.is_struct(column.type):
        column = pc.struct_field(column, "bytes")
    return column.to_pylist()


def _parquet_columns(path: Path) -> tuple[str, str]:
    names = pq.ParquetFile(path).schema_arrow.names
    url = next((c for c in _URL_COLUMNS if c in names), None)
    data = next((c for c in _BYTES_COLUMNS if c in names), None)
    if url is None or data is None:
        raise InputError(f"a parquet mirror needs a URL column ({' or '.join(_URL_COLUMNS)}) and an image "
                         f"bytes column ({', '.join(_BYTES_COLUMNS)}); found {', '.join(names)}", path=str(path))
    return url, data


def build_parquet_index(spec: MirrorSpec, cache_dir: Any) -> MirrorSpec:
    """Index a parquet mirror by image_id (cached by file names, sizes and times); returns the spec with it.

    `cache_dir` is the store's `_mirrors/` folder, on an object store too: every worker reads it."""
    files = _parquet_files(Path(spec.path))
    if not files:
        raise ConfigError(f"mirror {spec.path}: no parquet files")
    key = "\n".join(f"{f}|{f.stat().st_size}|{f.stat().st_mtime_ns}" for f in files)
    index_path = fs.path(cache_dir) / f"mirror-{hashlib.sha256(key.encode()).hexdigest()[:16]}.parquet"
    if not index_path.exists():
        ids, file_nos, groups, rows = [], [], [], []
        for file_no, path in enumerate(files):
            url_col, _ = _parquet_columns(path)
            reader = pq.ParquetFile(path)
            for group in range(reader.num_row_groups):
                urls = reader.read_row_group(group, columns=[url_col])[url_col].to_pylist()
                for row, url in enumerate(urls):
                    if url:
                        ids.append(url_image_id(url))
                        file_nos.append(file_no)
                        groups.append(group)
                        rows.append(row)
        table = pa.table({"image_id": ids, "file": pa.array(file_nos, pa.int32()),
                          "group": pa.array(groups, pa.int32()), "row": pa.array(rows, pa.int32())})
        from ..io.shards import write_parquet_atomic

        write_parquet_atomic(table.sort_by("image_id"), index_path, row_group_size=65536)
    return MirrorSpec(spec.kind, spec.path, str(index_path))


class FolderMirror:
    """Image files in a folder tree, by URL path or by image_id."""

    def __init__(self, spec: MirrorSpec):
        self.root = Path(spec.path)
        self.label = spec.label

    def candidates(self, image_id: str, url: str) -> list[Path]:
        """Paths where this mirror may hold the image."""
        path = unquote(urlsplit(url).path).lstrip("/")
        out = [self.root / path]
        for prefix in ("wikipedia/commons/", "wikipedia/"):
            if path.startswith(prefix):
                out.append(self.root / path[len(prefix):])
        for folder in (self.root, self.root / image_id[:2]):
            out.extend(folder / f"{image_id}.{ext}" for ext in _ID_EXTENSIONS)
        return out

    def prepare(self, items: list[tuple[str, str]]) -> None:
        """Nothing to preload: files are looked up one by one."""

    def lookup(self, image_id: str, url: str) -> bytes | None:
        """The image's bytes, or None when the mirror lacks it."""
        for candidate in self.candidates(image_id, url):
            if candidate.is_file():
                return candidate.read_bytes()
        return None


class ParquetMirror:
    """Image bytes in parquet files, read per shard through the prebuilt image_id index."""

    def __init__(self, spec: MirrorSpec):
        if spec.index is None:
            raise ValueError("parquet mirrors need build_parquet_index first")
        self.spec = spec
        self.label = spec.label
        self.files = _parquet_files(Path(spec.path))
        self._found: dict[str, bytes] = {}

    def prepare(self, items: list[tuple[str, str]]) -> None:
        """Load the bytes of every item of a shard this mirror holds, one row group at a time."""
        wanted = [i for i, _ in items]
        if not wanted:
            return
        lo, hi = min(wanted), max(wanted)
        filesystem, key = fs.resolve(self.spec.index)
        index = pq.read_table(key, filesystem=filesystem, filters=[("image_id", ">=", lo), ("image_id", "<=", hi)])
        index = index.filter(pc.is_in(index["image_id"], pa.array(wanted)))
        by_group: dict[tuple[int, int], list[tuple[int, str]]] = {}
        for iid, f, g, r in zip(*(index[c].to_pylist() for c in ("image_id", "file", "group", "row"))):
            by_group.setdefault((f, g), []).append((r, iid))
        self._found = {}
        for (f, g), hits in sorted(by_group.items()):
            _, data_col = _parquet_columns(self.files[f])
            column = pq.ParquetFile(self.files[f]).read_row_group(g, columns=[data_col])[data_col]
            values = _bytes_of(column.take(pa.array([r for r, _ in hits])))
            self._found.update((iid, data) for (_, iid), data in zip(hits, values) if data)

    def lookup(self, image_id: str, url: str) -> bytes | None:
        """The image's bytes, or None when the mirror lacks it."""
        return self._found.get(image_id)


class ShardsMirror:
    """An earlier image store of ours."""

    def __init__(self, spec: MirrorSpec):
        from .store import open_store

        self.store = open_store(spec.path)
        self.label = spec.label

    def prepare(self, items: list[tuple[str, str]]) -> None:
        """Nothing to preload: the store reads by offset."""

    def lookup(self, image_id: str, url: str) -> bytes | None:
        """The image's bytes, or None when the store lacks it."""
        return self.store.get(image_id) if image_id in self.store else None


def open_mirror(spec: MirrorSpec):
    """A mirror reader for a spec (in the worker that uses it)."""
    kinds = {"folder": FolderMirror, "parquet": ParquetMirror, "shards": ShardsMirror}
    return kinds[spec.kind](spec)


def prepare_specs(specs: tuple[MirrorSpec, ...], cache_dir: Any) -> tuple[MirrorSpec, ...]:
    """Do the once-per-fetch work for each mirror (index parquet mirrors)."""
    fs.makedirs(cache_dir)
    return tuple(build_parquet_index(s, cache_dir) if s.kind == "parquet" else s for s in specs)
