"""Paths and URIs as (pyarrow.fs filesystem, path): local disk, `file://`, `s3://`, `gs://`.

Every stage that opens a data file goes through here, so one data root may live on a local
disk, a shared filesystem or an object store. `path(x)` gives a `pathlib.Path` for local
paths and `file://` URIs, and an `ObjectPath` (the part of pathlib's API the stages use) for
`s3://` and `gs://`, so code written against Path keeps working on object stores.

Endpoints, credentials and redaction live in io/uri.py.

Object stores have no rename: an atomic write uploads a finished local file to a temporary
key `.tmp-NAME.XXXX` beside its target, copies it onto the target and deletes the temporary
key, so readers never see a half-written object; `sweep` removes temporaries a crash left.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .uri import GCS_ENDPOINT_ENV, REMOTE_SCHEMES, redact, redact_all, remote_filesystem, scheme_of

if TYPE_CHECKING:  # imported where used: local paths never need it (score reads local files)
    import pyarrow.fs as pafs

__all__ = ["GCS_ENDPOINT_ENV", "REMOTE_SCHEMES", "TEMP_PREFIX", "redact", "redact_all", "scheme_of", "is_remote", "resolve", "path",
           "join", "ObjectPath", "open_stream", "open_file", "exists", "listdir", "glob", "makedirs", "walk_files",
           "commit_local_file", "atomic_write", "sweep", "remove_tree", "move", "local_tree", "local_copy"]

TEMP_PREFIX = ".tmp-"


def is_remote(target: Any) -> bool:
    """True for an object-store URI (s3://, gs://)."""
    return isinstance(target, ObjectPath) or scheme_of(target) in REMOTE_SCHEMES


def resolve(target: Any) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it of a local path or a file://, s3:// or gs:// URI."""
    import pyarrow.fs as pafs

    if isinstance(target, ObjectPath):
        target = target.uri
    text = os.fspath(target) if isinstance(target, os.PathLike) else str(target)
    scheme = scheme_of(text)
    if scheme in ("", "file"):
        local = unquote(urlsplit(text).path) if scheme == "file" else text
        return pafs.LocalFileSystem(), os.path.abspath(local)
    return remote_filesystem(text)


def path(target: Any) -> Path | ObjectPath:
    """A Path for a local path or file:// URI, an ObjectPath for s3:// and gs://."""
    if isinstance(target, (Path, ObjectPath)):
        return target
    text = os.fspath(target) if isinstance(target, os.PathLike) else str(target)
    scheme = scheme_of(text)
    if scheme == "file":
        return Path(unquote(urlsplit(text).path))
    if scheme:
        resolve(text)  # unknown schemes fail here, with their one-line message
        return ObjectPath(text)
    return Path(text)


def join(base: Any, *parts: str) -> Path | ObjectPath:
    """`base / part / ...` for a path or URI."""
    out = path(base)
    for part in parts:
        out = out / part
    return out


class ObjectPath:
    """An object-store location with the part of pathlib.Path the stages use.

    It has no __fspath__ on purpose: code that hands it to open() or a C reader fails loudly
    instead of writing a local folder named 's3:'.
    """

    __slots__ = ("uri",)

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/") if not uri.endswith("://") else uri

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"ObjectPath({redact(self.uri)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.uri < other.uri

    def __truediv__(self, part: Any) -> ObjectPath:
        return ObjectPath(f"{self.uri}/{str(part).strip('/')}")

    @property
    def _location(self) -> tuple[pafs.FileSystem, str]:
        return resolve(self.uri)

    @property
    def name(self) -> str:
        return PurePosixPath(urlsplit(self.uri).path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> ObjectPath:
        head, _, _ = self.uri.rpartition("/")
        return ObjectPath(head) if "://" in head and not head.endswith(":/") else self

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def _info(self) -> pafs.FileInfo:
        fs, key = self._location
        return fs.get_file_info(key)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.File

    def stat_size(self) -> int:
        return self._info().size or 0

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Nothing: a prefix exists through its keys (pyarrow would write empty marker keys)."""

    def iterdir(self) -> Iterator[ObjectPath]:
        import pyarrow.fs as pafs

        fs, key = self._location
        infos = fs.get_file_info(pafs.FileSelector(key, allow_not_found=True))
        for info in sorted(infos, key=lambda i: i.path):
            yield self / PurePosixPath(info.path).name

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """Entries directly in this folder whose names match `pattern` (no '**')."""
        return (child for child in self.iterdir() if fnmatch.fnmatchcase(child.name, pattern))

    def open(self, mode: str = "rb", encoding: str = "utf-8") -> IO:
        return open_file(self, mode, encoding=encoding)

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        from .shards import write_bytes_atomic

        write_bytes_atomic(self, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        fs, key = self._location
        try:
            fs.delete_file(key)
        except FileNotFoundError:
            if not missing_ok:
                raise


def open_stream(target: Any) -> IO:
    """A file read front to back: the local file, or one streaming GET with a 4 MiB buffer (no seeks,
    no copy): tar shards read in order, downloads."""
    target = path(target)
    if isinstance(target, Path):
        return open(target, "rb")  # noqa: SIM115 (returned open)
    fs, key = resolve(target)
    return fs.open_input_stream(key, compression=None, buffer_size=1 << 22)


def open_file(target: Any, mode: str = "rb", *, encoding: str = "utf-8", compression: str | None = None) -> IO:
    """Open a local or remote file: 'rb', 'wb', 'rt', 'wt'; compression 'gzip' or None.

    A remote 'w' stream is not atomic (an object store commits what a closed stream holds):
    use `atomic_write` or io.shards' write_*_atomic for outputs.
    """
    target = path(target)
    if isinstance(target, Path):
        if "w" in mode:
            target.parent.mkdir(parents=True, exist_ok=True)
        raw: Any = open(target, "wb" if "w" in mode else "rb")  # noqa: SIM115 (returned open)
    else:
        fs, key = resolve(target)
        raw = fs.open_output_stream(key, compression=None) if "w" in mode else fs.open_input_file(key)
    if compression == "gzip":
        import gzip

        raw = gzip.GzipFile(fileobj=raw, mode="wb" if "w" in mode else "rb")
    if "t" in mode:
        return io.TextIOWrapper(raw, encoding=encoding, newline="" if "w" in mode else None)
    return raw


def exists(target: Any) -> bool:
    return path(target).exists()


def listdir(target: Any) -> list[str]:
    """Names directly under a folder or prefix, sorted ([] when it does not exist)."""
    target = path(target)
    if isinstance(target, Path):
        return sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    return [child.name for child in target.iterdir()]


def glob(target: Any, pattern: str) -> list[Path | ObjectPath]:
    """Entries directly under a folder whose names match `pattern`, sorted."""
    target = path(target)
    if isinstance(target, Path):
        return sorted(target.glob(pattern))
    return sorted(target.glob(pattern))


def makedirs(target: Any) -> None:
    path(target).mkdir(parents=True, exist_ok=True)


def walk_files(target: Any) -> list[str]:
    """Every file under a folder or prefix, as paths relative to it, sorted."""
    import pyarrow.fs as pafs

    fs, key = resolve(target)
    infos = fs.get_file_info(pafs.FileSelector(key, recursive=True, allow_not_found=True))
    return sorted(i.path[len(key):].lstrip("/") for i in infos if i.type == pafs.FileType.File)


def commit_local_file(local: Path, target: ObjectPath) -> None:
    """Upload a finished local file onto `target` atomically: to a temporary key, then copy, then delete."""
    fs, key = resolve(target)
    parent, _, name = key.rpartition("/")
    temp = f"{parent}/{TEMP_PREFIX}{name}.{secrets.token_hex(4)}"
    try:
        with open(local, "rb") as source, fs.open_output_stream(temp, compression=None) as sink:
            shutil.copyfileobj(source, sink, 1 << 22)
        fs.copy_file(temp, key)
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(temp)


@contextlib.contextmanager
def atomic_write(target: ObjectPath) -> Iterator[Path]:
    """Yield a local temporary path; on success commit it onto the remote `target`."""
    with tempfile.TemporaryDirectory(prefix="wit-retrieval-") as folder:
        local = Path(folder) / target.name
        yield local
        if local.exists():
            commit_local_file(local, target)


def sweep(target: Any, recursive: bool = False) -> int:
    """Delete the temporary files (.tmp-*) a crashed write left in a folder; returns how many."""
    import pyarrow.fs as pafs

    fs, key = resolve(target)
    infos = fs.get_file_info(pafs.FileSelector(key, recursive=recursive, allow_not_found=True))
    stale = [i.path for i in infos if i.type == pafs.FileType.File and i.base_name.startswith(TEMP_PREFIX)]
    for item in stale:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(item)
    return len(stale)


def remove_tree(target: Any) -> None:
    """Delete a folder or prefix and everything under it (nothing when it does not exist)."""
    import pyarrow.fs as pafs

    target = path(target)
    if isinstance(target, Path):
        shutil.rmtree(target, ignore_errors=True)
        return
    fs, key = resolve(target)
    if fs.get_file_info(key).type != pafs.FileType.NotFound:
        with contextlib.suppress(FileNotFoundError):  # emptied meanwhile: a prefix ends with its last key
            fs.delete_dir(key)


def move(source: Any, target: Any) -> None:
    """Move one file (a rename locally, copy + delete on an object store)."""
    import pyarrow.fs as pafs

    src, dst = path(source), path(target)
    if isinstance(src, Path) and isinstance(dst, Path):
        os.replace(src, dst)
        return
    fs, src_key = resolve(src)
    fs_to, dst_key = resolve(dst)
    if fs is fs_to:
        fs.copy_file(src_key, dst_key)
        fs.delete_file(src_key)
    else:
        pafs.copy_files(src_key, dst_key, source_filesystem=fs, destination_filesystem=fs_to)
        fs.delete_file(src_key)


@contextlib.contextmanager
def local_tree(target: Any, pattern: str = "*") -> Iterator[Path]:
    """A local folder holding the files under `target` whose names match `pattern` (kept at their
    relative paths): the folder itself when local, a temporary download when remote."""
    target = path(target)
    if isinstance(target, Path):
        yield target
        return
    fs, key = resolve(target)
    with tempfile.TemporaryDirectory(prefix="wit-retrieval-") as folder:
        for relative in walk_files(target):
            if fnmatch.fnmatchcase(PurePosixPath(relative).name, pattern):
                local = Path(folder) / relative
                local.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(f"{key}/{relative}", compression=None) as source, open(local, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 22)
        yield Path(folder)


@contextlib.contextmanager
def local_copy(target: Any) -> Iterator[Path]:
    """A local path holding the file: itself when local, a temporary download when remote
    (for readers that need a real file: mmap, C readers)."""
    target = path(target)
    if isinstance(target, Path):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="wit-retrieval-") as folder:
        local = Path(folder) / target.name
        with open_stream(target) as source, open(local, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 22)
        yield local
