"""Image shards: webdataset-compatible tar files plus a parquet manifest per shard.

A store folder (a local path, or an s3:// / gs:// prefix through io.fs) holds, per shard
`{n:05d}`: `.tar` (members `{image_id}.{ext}` and `{image_id}.json`), `.parquet`
(schema.IMAGES_MANIFEST: one row per input URL, ok or failed) and `.done` (JSON summary). Each
is written to a temporary name and renamed (on an object store: the tar is written in local
scratch, uploaded to a temporary key and copied onto its name); the done-marker comes last, so
a shard without one is unfinished and readers ignore it. Readers of a remote store read the
manifests whole and images by ranged reads of the tars.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
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
_WINDOW = 1 << 20  # bytes per ranged read of a remote tar: a few thumbnails, one round trip
_WINDOWS_KEPT = 8


def shard_name(shard: int) -> str:
    """The five-digit name of shard number `shard`."""
    return f"{shard:05d}"


def shard_paths(directory: Any, shard: int) -> tuple[Any, Any, Any]:
    """(tar, manifest, done-marker) paths of one shard: Paths, or io.fs.ObjectPaths on a store."""
    folder, name = fs.path(directory), shard_name(shard)
    return folder / f"{name}.tar", folder / f"{name}.parquet", folder / f"{name}.done"


def done_shards(directory: Any) -> list[int]:
    """Numbers of the finished shards in a store folder, ascending (one listing on an object store)."""
    stems = (p.name[: -len(".done")] for p in fs.glob(directory, "[0-9]*.done"))
    return sorted(int(stem) for stem in stems if stem.isdigit())


def read_done(directory: Any, shard: int) -> dict[str, Any] | None:
    """The done-marker of a shard, or None when the shard is unfinished."""
    try:
        text = shard_paths(directory, shard)[2].read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


def read_each(directory: Any, fn: Callable[[Any, int], Any], shards: list[int]) -> list[Any]:
    """`fn(directory, shard)` for each shard, in order; on an object store 16 at a time, since each
    is a round trip (done-markers and manifests of thousands of shards)."""
    if not fs.is_remote(directory) or len(shards) < 2:
        return [fn(directory, s) for s in shards]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16, thread_name_prefix="store-read") as pool:
        return list(pool.map(lambda s: fn(directory, s), shards))


def read_manifest(directory: Any, shard: int) -> pa.Table:
    """The manifest rows of one shard."""
    return read_parquet(shard_paths(directory, shard)[1])


def manifest_row(image_id: str, url: str, shard: int, **fields: Any) -> dict[str, Any]:
    """One manifest row with every column of schema.IMAGES_MANIFEST."""
    row = {name: None for name in IMAGES_MANIFEST.names}
    row.update(image_id=image_id, url=url, shard=shard_name(shard), **fields)
    return row


class ShardWriter:
    """Writes one shard: tar members as images arrive, then manifest and done-marker on commit.

    The tar grows in a temporary file beside its target, or in local scratch (the temp folder)
    when the store is on an object store, which has no append and no rename."""

    def __init__(self, directory: Any, shard: int):
        self.directory = fs.path(directory)
        self.shard = shard
        self.remote = fs.is_remote(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.remote:  # on a store, a listing per shard would cost more: the run's end sweeps them
            for stale in self.directory.glob(f".tmp-{shard_name(shard)}.*"):
                stale.unlink(missing_ok=True)  # left by an interrupted run of this shard
        scratch = None if self.remote else self.directory
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{shard_name(shard)}.tar.", dir=scratch)
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
        if self.remote:
            fs.commit_local_file(self._tmp, tar_path)  # a temporary key, copied onto the name
            self._tmp.unlink()
        else:
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


def _windowed(handle, offset: int, window: tuple[int, bytes] | None) -> tuple[bytes, tuple[int, bytes]]:
    """(member bytes, window) of the member at `offset` of a tar on an object store: one ranged GET
    of a window (header, image and whatever follows) unless the last window holds it, so images
    read in disk order cost one GET per window rather than two per image."""
    start, block = window or (0, b"")
    if not start <= offset <= start + len(block) - _TAR_BLOCK:
        start, block = offset, handle.read_at(_WINDOW, offset)
    at = offset - start
    size = tarfile.TarInfo.frombuf(block[at:at + _TAR_BLOCK], "utf-8", "surrogateescape").size
    if at + _TAR_BLOCK + size > len(block):  # larger than what the window holds
        start, block, at = offset, handle.read_at(max(_WINDOW, _TAR_BLOCK + size), offset), 0
    return block[at + _TAR_BLOCK:at + _TAR_BLOCK + size], (start, block)


def read_member_at(handle, offset: int) -> tuple[str, bytes]:
    """(name, bytes) of the tar member whose header starts at `offset` in an open tar file."""
    handle.seek(offset)
    header = handle.read(_TAR_BLOCK)
    info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    return info.name, handle.read(info.size)


class ImageStore:
    """Random access by image_id (shard + offset) and iteration over a folder of image shards.

    The folder may be an s3:// or gs:// URI: images are then read by ranged requests (a window of
    the shard around each one, kept for the next read), nothing is downloaded whole.
    """

    def __init__(self, directory: Any):
        self.directory = fs.path(directory)
        _check_store_location(directory, self.directory)
        self.shards = done_shards(self.directory)
        tables = read_each(self.directory, read_manifest, self.shards)
        self._manifest = pa.concat_tables(tables) if tables else IMAGES_MANIFEST.empty_table()
        ok = self._manifest.filter(pc.equal(self._manifest["status"], "ok"))
        self._where = dict(zip(ok["image_id"].to_pylist(),
                               zip(ok["shard"].to_pylist(), ok["offset"].to_pylist())))
        self._handles: dict[str, Any] = {}
        # per shard (start, bytes) of the last ranged read, on an object store only (insertion order: LRU)
        self._windows: dict[str, tuple[int, bytes]] | None = {} if fs.is_remote(self.directory) else None
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
        return self._windows is not None

    def get(self, image_id: str) -> bytes:
        """The stored bytes of one image (KeyError when not stored); thread-safe."""
        shard, offset = self._where[image_id]
        with self._lock:
            handle = self._handles.get(shard)
            if handle is None:  # on an object store: a random-access file, each read a ranged GET
                handle = self._handles[shard] = fs.open_file(self.directory / f"{shard}.tar", "rb")
            if self._windows is None:
                return read_member_at(handle, offset)[1]
            window = self._windows.get(shard)
        # outside the lock: threads read other images meanwhile (read_at is positional, thread-safe)
        data, window = _windowed(handle, offset, window)
        with self._lock:
            self._windows.pop(shard, None)
            self._windows[shard] = window
            while len(self._windows) > _WINDOWS_KEPT:  # bounded memory: the shards read last
                self._windows.pop(next(iter(self._windows)))
        return data

    def open(self, image_id: str):
        """The stored image as an RGB PIL image."""
        from PIL import Image

        return Image.open(io.BytesIO(self.get(image_id))).convert("RGB")

    def iter_items(self) -> Iterator[tuple[str, bytes]]:
        """(image_id, bytes) of every stored image, shard by shard, reading each tar sequentially."""
        for shard in self.shards:
            with fs.open_stream(shard_paths(self.directory, shard)[0]) as handle, \
                    tarfile.open(fileobj=handle, mode="r|") as tar:
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
        state = hashlib.sha256("".join(f"{s}:{_mtime_ns(shard_paths(self.directory, s)[2])};"
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
            if self._windows is not None:
                self._windows.clear()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_store_location(given: Any, directory: Any) -> None:
    """One line for a store that is not there, and for a URI a Path-typed option has mangled."""
    text = str(given)
    if re.match(r"^(s3|gs|gcs|file):/[^/]", text):
        raise InputError("an object-store URI lost a slash (it went through a local-path option); "
                         "pass it as s3://BUCKET/PREFIX to a command that takes URIs", path=text)
    if not directory.is_dir():
        raise InputError("no such image store folder (a local folder or an s3:// / gs:// prefix "
                         "holding NNNNN.tar/.parquet/.done shards)", path=fs.redact(directory))


def _mtime_ns(target: Any) -> int:
    filesystem, key = fs.resolve(target)
    return filesystem.get_file_info(key).mtime_ns or 0


def _hf_rows(directory: str, state: str = "") -> Iterator[dict[str, Any]]:
    store = ImageStore(directory)
    urls = dict(zip(store.manifest()["image_id"].to_pylist(), store.manifest()["url"].to_pylist()))
    for image_id, data in store.iter_items():
        yield {"image_id": image_id, "url": urls[image_id], "image": {"bytes": data, "path": None}}


def open_store(directory: Any) -> ImageStore:
    """Open a folder (or s3:// / gs:// prefix) of image shards for reading."""
    return ImageStore(directory)
