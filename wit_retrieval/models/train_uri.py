"""Training data and run outputs on object stores: where `prepare` and `train` meet io/fs.py.

The training modules keep working on paths; this module holds what differs for an s3:// or
gs:// data root, prepared folder or run output (see docs/storage.md, "Training"):
- locks are local files (one preparer per node; nodes do not lock each other);
- image-store reads during preparation are ranged requests issued from a few threads;
- sample shards are streamed (pyarrow input streams), never copied whole;
- the prepared entity-image store (images.bin + its index) is copied once per node into the
  local cache ($WIT_RETRIEVAL_CACHE or ~/.cache/wit-retrieval), since it is read at random;
- checkpoints are written locally, then uploaded file by file, each atomically, with the file
  that marks a folder complete last (trainer_state.pt for a step, retriever.json for model/).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tarfile
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.fs as pafs

from ..io import fs
from ..io.locks import file_lock

FETCH_THREADS = 16               # concurrent ranged reads of a remote image store
ENTITY_FILES = ("images.idx.npy", "images.bin")


def _digest(target) -> str:
    return hashlib.sha256(fs.redact(target).encode("utf-8")).hexdigest()[:16]


def cache_root() -> Path:
    from ..dataset import cache_home

    return cache_home()


def fingerprint(paths: Iterable) -> list:
    """[name, size, mtime_ns] of each existing file (local path or URI)."""
    out = []
    for item in paths:
        filesystem, key = fs.resolve(item)
        info = filesystem.get_file_info(key)
        if info.type == pafs.FileType.File:
            out.append([info.base_name, info.size, info.mtime_ns])
    return out


def _files(folder) -> list[pafs.FileInfo]:
    filesystem, key = fs.resolve(folder)
    infos = filesystem.get_file_info(pafs.FileSelector(key, allow_not_found=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def listing_fingerprint(folder, suffix: str) -> list:
    """[name, size, mtime_ns] of the files of `folder` ending in `suffix`, from one listing."""
    return [[i.base_name, i.size, i.mtime_ns] for i in _files(folder) if i.base_name.endswith(suffix)]


def folder_bytes(folder) -> int:
    """Bytes of the files directly in a folder or prefix."""
    return sum(i.size for i in _files(folder))


def lock_file(out) -> Path:
    """The local lock file of a prepared folder: beside it on disk, in the local cache for a URI."""
    out = fs.path(out)
    if isinstance(out, Path):
        return out.parent / f".{out.name}.lock"
    return cache_root() / "locks" / f"prepare-{_digest(out)}.lock"


def staging_need(needed: int) -> int:
    """Local temporary space an object-store preparation needs out of the whole estimate: the entity
    store (at most a third of it, see estimate_bytes) is written locally before its upload."""
    return needed // 3


def fetch_ordered(store, ids: list[str], threads: int = FETCH_THREADS) -> Iterator[tuple[str, bytes]]:
    """(id, bytes) of the ids in `store`, in order; a remote store is read by `threads` concurrent
    ranged requests with a bounded window (memory: window x image size)."""
    wanted = [i for i in ids if i in store]
    if not getattr(store, "remote", False):
        yield from ((i, store.get(i)) for i in wanted)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="wit-fetch") as pool:
        window: deque = deque()
        for image_id in wanted:
            window.append((image_id, pool.submit(store.get, image_id)))
            if len(window) >= threads * 4:
                key, future = window.popleft()
                yield key, future.result()
        while window:
            key, future = window.popleft()
            yield key, future.result()


@contextlib.contextmanager
def open_tar(target) -> Iterator[tarfile.TarFile]:
    """A tar file read sequentially: local, or streamed from an object store (one GET, no copy)."""
    with fs.open_stream(target) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        yield tar


def node_cache(out) -> Path:
    """This node's local folder for what a remote prepared folder `out` needs on local disk."""
    return cache_root() / "train_shards" / _digest(out)


def local_entity_store(out) -> Path:
    """A local folder with the prepared entity store of `out`: `out` itself on disk; for a URI, this
    node's copy in the cache, downloaded on first use under a file lock (the other local processes wait)."""
    out = fs.path(out)
    if isinstance(out, Path):
        return out
    local = node_cache(out)
    remote = {i.base_name: i.size for i in _files(out) if i.base_name in ENTITY_FILES}
    marker = local / "source.json"
    expected = {"source": fs.redact(out), "sizes": remote}
    if _marker_matches(marker, expected):
        return local
    with file_lock(local.parent / f".{local.name}.lock"):
        if not _marker_matches(marker, expected):
            local.mkdir(parents=True, exist_ok=True)
            marker.unlink(missing_ok=True)
            _check_cache_space(local, sum(remote.values()))
            for name in ENTITY_FILES:
                _download(out / name, local / name)
            marker.write_text(json.dumps(expected), encoding="utf-8")
    return local


def _check_cache_space(local: Path, needed: int) -> None:
    from ..errors import InputError

    free = shutil.disk_usage(local).free + sum(p.stat().st_size for p in local.glob("images.*"))
    if free < needed:
        raise InputError(f"caching the prepared entity images needs {needed / 1e9:.2f} GB but only {free / 1e9:.2f} GB "
                         "is free; set WIT_RETRIEVAL_CACHE to a bigger local disk", path=str(local))


def _marker_matches(marker: Path, expected: dict) -> bool:
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == expected
    except (FileNotFoundError, ValueError):
        return False


def _download(source, target: Path) -> None:
    from ..io.shards import atomic_path

    with atomic_path(target) as tmp, fs.open_stream(source) as raw, open(tmp, "wb") as sink:
        shutil.copyfileobj(raw, sink, 1 << 22)


# ---- run outputs --------------------------------------------------------------------------------

def step_folders(out, marker: str) -> list:
    """Step folders under out/checkpoints holding `marker` (finished), oldest first."""
    base = fs.path(out) / "checkpoints"
    if isinstance(base, Path):
        return sorted(p.parent for p in base.glob(f"step-*/{marker}"))
    done = {f.split("/")[0] for f in fs.walk_files(base) if f.count("/") == 1 and f.endswith(f"/{marker}")}
    return [base / name for name in sorted(done) if name.startswith("step-")]


def publish_folder(local: Path, target, last: str) -> None:
    """Upload a local folder's files onto a prefix, each atomically; `last` (the file readers take as the
    mark of a complete folder) is deleted first and written last, so no reader sees a mixed folder."""
    target = fs.path(target)
    (target / last).unlink(missing_ok=True)
    for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name != last):
        fs.commit_local_file(path, fs.join(target, *path.relative_to(local).parts))
    fs.commit_local_file(local / last, target / last)


def publish_checkpoint(local: Path, out, state_name: str, keep: int) -> None:
    """A step folder written locally onto out/checkpoints/NAME (its trainer state last), then onto out/model
    (retriever.json last); only the newest `keep` step folders are kept, and what a killed upload left (step
    folders without their trainer state, .tmp-* keys) is deleted: rank 0 is the only writer of `out`."""
    base = fs.path(out) / "checkpoints"
    publish_folder(local, base / local.name, state_name)
    with tempfile.TemporaryDirectory(prefix="wit-retrieval-model-") as folder:
        model = Path(folder) / "model"
        shutil.copytree(local, model, ignore=shutil.ignore_patterns(state_name))
        publish_folder(model, fs.path(out) / "model", "retriever.json")
    finished = step_folders(out, state_name)
    unfinished = [p for p in base.iterdir() if p.name.startswith("step-") and p not in finished]
    for old in finished[:-keep] + unfinished:
        fs.remove_tree(old)
    fs.sweep(base, recursive=True)
    fs.sweep(fs.path(out) / "model")


class RunLog:
    """The JSONL log of a run: appended locally; for an object-store output it lives in the local cache
    and `publish` uploads it (at each checkpoint and at the end)."""

    def __init__(self, out, name: str = "train_log.jsonl"):
        self.target = fs.path(out) / name
        if isinstance(self.target, Path):
            self.path = self.target
            return
        self.path = cache_root() / "runs" / _digest(self.target.parent) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the output's own log (up to its last checkpoint) replaces whatever this node had
        self.path.unlink(missing_ok=True)
        if self.target.exists():
            self.path.write_bytes(self.target.read_bytes())

    def write(self, record: dict) -> None:
        import time

        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def publish(self) -> None:
        if self.path is not self.target and self.path.exists():
            fs.commit_local_file(self.path, self.target)


def local_checkpoint(directory) -> Path:
    """A checkpoint folder on disk: itself, or this node's cached copy of one on an object store (`evaluate
    --checkpoint s3://...`), downloaded again only when the folder's files change."""
    directory = fs.path(directory)
    if isinstance(directory, Path):
        return directory
    filesystem, key = fs.resolve(directory)
    infos = filesystem.get_file_info(pafs.FileSelector(key, recursive=True, allow_not_found=True))
    files = sorted((i.path[len(key):].lstrip("/"), i.size, i.mtime_ns) for i in infos
                   if i.type == pafs.FileType.File)
    if not files:
        from ..errors import InputError

        raise InputError("no checkpoint files under this URI", path=fs.redact(directory))
    local = cache_root() / "checkpoints" / _digest(json.dumps([fs.redact(directory), files]))
    marker = local / ".complete"
    if not marker.exists():
        with file_lock(local.parent / f".{local.name}.lock"):
            if not marker.exists():
                for name, _, _ in files:
                    _download(directory / name, local / name)
                marker.write_text("", encoding="utf-8")
    return local
