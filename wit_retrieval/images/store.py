"""Image shards on disk: webdataset-compatible tar files plus a parquet manifest per shard.

A store folder holds, per shard `{n:05d}`: `.tar` (members `{image_id}.{ext}` and
`{image_id}.json`), `.parquet` (schema.IMAGES_MANIFEST: one row per input URL, ok or failed)
and `.done` (JSON summary). Each is written to a temporary name and renamed; the done-marker
comes last, so a shard without one is unfinished and readers ignore it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..io import fs
from ..io.shards import read_parquet, write_json_atomic, write_parquet_atomic
from ..schema import IMAGES_MANIFEST
from .decode import StoredImage

_TAR_BLOCK = 512


def shard_name(shard: int) -> str:
    """The five-digit name of shard number `shard`."""
    return f"{shard:05d}"


def shard_paths(directory: Path, shard: int) -> tuple[Path, Path, Path]:
    """(tar, manifest, done-marker) paths of one shard (ObjectPaths for a store on s3:// or gs://)."""
    base = fs.path(directory) / shard_name(shard)
    return tuple(base.with_name(f"{base.name}{ext}") for ext in (".tar", ".parquet", ".done"))


def done_shards(directory: Path) -> list[int]:
    """Numbers of the finished shards in a store folder, ascending."""
    stems = (p.name[: -len(".done")] for p in fs.glob(directory, "[0-9]*.done"))
    return sorted(int(stem) for stem in stems if stem.isdigit())


def read_done(directory: Path, shard: int) -> dict[str, Any] | None:
    """The done-marker of a shard, or None when the shard is unfinished."""
    path = shard_paths(directory, shard)[2]
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def manifest_row(image_id: str, url: str, shard: int, **fields: Any) -> dict[str, Any]:
    """One manifest row with every column of schema.IMAGES_MANIFEST."""
    row = {name: None for name in IMAGES_MANIFEST.names}
    row.update(image_id=image_id, url=url, shard=shard_name(shard), **fields)
    return row


class ShardWriter:
    """Writes one shard: tar members as images arrive, then manifest and done-marker on commit."""

    def __init__(self, directory: Path, shard: int):
        self.directory = Path(directory)
        self.shard = shard
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f".tmp-{shard_name(shard)}.*"):
            stale.unlink(missing_ok=True)  # left by an interrupted run of this shard
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{shard_name(shard)}.tar.", dir=self.directory)
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self._lock = threading.Lock()
        self.rows: list[dict[str, Any]] = []

    def _member(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0  # identical bytes on every run
        offset = self._tar.offset
        self._tar.addfile(info, io.BytesIO(data))
        return offset

    def add_ok(self, image_id: str, url: str, image: StoredImage, source: str, extra: dict | None = None):
        """Append an image and its JSON sidecar; record an `ok` row."""
        meta = {"image_id": image_id, "url": url, "width": image.width, "height": image.height,
                "sha256": image.sha256, "source": source, **(extra or {})}
        with self._lock:
            offset = self._member(f"{image_id}.{image.ext}", image.data)
            self._member(f"{image_id}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
            self.rows.append(manifest_row(
                image_id, url, self.shard, status="ok", retryable=False, width=image.width,
                height=image.height, sha256=image.sha256, offset=offset, source=source))

    def copy_ok(self, row: dict[str, Any], handle) -> None:
        """Copy a stored image and its sidecar from an older tar of this shard (retry-failed)."""
        name, data = read_member_at(handle, row["offset"])
        sidecar_offset = row["offset"] + _TAR_BLOCK + -(-len(data) // _TAR_BLOCK) * _TAR_BLOCK
        sidecar_name, sidecar = read_member_at(handle, sidecar_offset)
        with self._lock:
            offset = self._member(name, data)
            self._member(sidecar_name, sidecar)
            self.rows.append({**row, "offset": offset})

    def add_failed(self, image_id: str, url: str, error: str, retryable: bool, source: str | None = None):
        """Record a `failed` row with its error class."""
        with self._lock:
            self.rows.append(manifest_row(
                image_id, url, self.shard, status="failed", error=error, retryable=retryable, source=source))

    def commit(self, summary: dict[str, Any]) -> None:
        """Finish the tar, then write manifest and done-marker, each atomically, in that order."""
        tar_path, manifest_path, done_path = shard_paths(self.directory, self.shard)
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        done_path.unlink(missing_ok=True)  # from here until the new marker the shard reads as unfinished
        os.replace(self._tmp, tar_path)
        rows = sorted(self.rows, key=lambda r: r["image_id"])
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=IMAGES_MANIFEST), manifest_path)
        write_json_atomic(done_path, summary)

    def abort(self) -> None:
        """Drop the unfinished tar."""
        try:
            self._tar.close()
            self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def read_member_at(handle, offset: int) -> tuple[str, bytes]:
    """(name, bytes) of the tar member whose header starts at `offset` in an open tar file."""
    handle.seek(offset)
    header = handle.read(_TAR_BLOCK)
    info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    return info.name, handle.read(info.size)


def read_member_ranged(handle, offset: int, guess: int) -> bytes:
    """The bytes of the tar member at `offset` through positional reads of a pyarrow file (thread-safe):
    the header and `guess` bytes in one ranged request, the rest (if any) in a second."""
    head = handle.read_at(_TAR_BLOCK + guess, offset)
    size = tarfile.TarInfo.frombuf(head[:_TAR_BLOCK], "utf-8", "surrogateescape").size
    data = head[_TAR_BLOCK:_TAR_BLOCK + size]
    if len(data) < size:
        data += handle.read_at(size - len(data), offset + _TAR_BLOCK + len(data))
    return data


REMOTE_READ_GUESS = 256 << 10     # bytes read with a member's header on an object store (most images fit)


class ImageStore:
    """Random access by image_id (shard + offset) and iteration over a folder of image shards.

    The folder may be an s3:// or gs:// URI: images are then read by ranged requests (one per
    image under REMOTE_READ_GUESS bytes), nothing is downloaded whole.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = fs.path(directory)
        self._guess = REMOTE_READ_GUESS if fs.is_remote(self.directory) else 0
        if not self.directory.is_dir():
            raise InputError("no such image store folder", path=fs.redact(self.directory))
        self.shards = done_shards(self.directory)
        tables = [read_parquet(shard_paths(self.directory, s)[1]) for s in self.shards]
        self._manifest = pa.concat_tables(tables) if tables else IMAGES_MANIFEST.empty_table()
        ok = self._manifest.filter(pc.equal(self._manifest["status"], "ok"))
        self._where = dict(zip(ok["image_id"].to_pylist(),
                               zip(ok["shard"].to_pylist(), ok["offset"].to_pylist())))
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._where

    def ids(self) -> list[str]:
        """The image_ids stored (status ok), sorted."""
        return sorted(self._where)

    def disk_order(self, ids) -> list[str]:
        """`ids` (deduplicated) in the order their bytes lie on disk, ids not stored last, as given.

        Reading images in this order reads each tar shard front to back: sequential reads, never
        a seek per image across the whole store.
        """
        wanted = list(dict.fromkeys(ids))
        stored = sorted((i for i in wanted if i in self._where), key=self._where.__getitem__)
        return stored + [i for i in wanted if i not in self._where]

    def manifest(self) -> pa.Table:
        """Every finished shard's manifest rows (ok and failed)."""
        return self._manifest

    @property
    def remote(self) -> bool:
        """True on an object store: reads are requests, worth issuing from several threads."""
        return bool(self._guess)

    def get(self, image_id: str) -> bytes:
        """The stored bytes of one image (KeyError when not stored); thread-safe."""
        shard, offset = self._where[image_id]
        with self._lock:
            handle = self._handles.get(shard)
            if handle is None:
                handle = self._handles[shard] = fs.open_file(self.directory / f"{shard}.tar", "rb")
            if not self._guess:
                return read_member_at(handle, offset)[1]
        return read_member_ranged(handle, offset, self._guess)  # outside the lock: requests overlap

    def open(self, image_id: str):
        """The stored image as an RGB PIL image."""
        from PIL import Image

        return Image.open(io.BytesIO(self.get(image_id))).convert("RGB")

    def iter_items(self) -> Iterator[tuple[str, bytes]]:
        """(image_id, bytes) of every stored image, shard by shard, reading each tar sequentially."""
        for shard in self.shards:
            with fs.open_file(shard_paths(self.directory, shard)[0], "rb") as raw, \
                    tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if ext != "json" and key in self._where:
                        yield key, tar.extractfile(member).read()

    def to_hf_dataset(self, cache_dir: str | None = None):
        """A Hugging Face `datasets.Dataset` with columns image_id, url and image (an `Image` feature)."""
        import datasets

        features = datasets.Features({"image_id": datasets.Value("string"), "url": datasets.Value("string"),
                                      "image": datasets.Image()})
        # the state makes datasets' cache key change when shards are rewritten (resume, retry-failed)
        state = hashlib.sha256("".join(f"{s}:{shard_paths(self.directory, s)[2].stat().st_mtime_ns};"
                                       for s in self.shards).encode()).hexdigest()
        return datasets.Dataset.from_generator(
            _hf_rows, features=features, gen_kwargs={"directory": str(self.directory), "state": state},
            cache_dir=cache_dir)

    def close(self) -> None:
        """Close open tar handles."""
        with self._lock:
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _hf_rows(directory: str, state: str = "") -> Iterator[dict[str, Any]]:
    store = ImageStore(directory)
    urls = dict(zip(store.manifest()["image_id"].to_pylist(), store.manifest()["url"].to_pylist()))
    for image_id, data in store.iter_items():
        yield {"image_id": image_id, "url": urls[image_id], "image": {"bytes": data, "path": None}}


def open_store(directory: str | os.PathLike) -> ImageStore:
    """Open a folder of image shards for reading."""
    return ImageStore(directory)
