"""The shard function: fetch one shard's URLs (mirrors first, then polite HTTP) into its files.

`fetch_shard(task)` is one picklable function of one shard, run by wit_retrieval.engine on local
processes or on Ray (run.py hands the shards out). The task carries this worker's share of the
global per-host rate (rate / W, see ratelimit.py). Every planned URL ends in exactly one
manifest row; a shard is written whole or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import EngineConfig
from ..io import fs
from ..io.locks import file_lock
from ..io.shards import read_parquet
from .decode import DecodeConfig, ImageRejected, StoredImage, process_image
from .http import RETRYABLE_ERRORS, HttpConfig, HttpFetcher, thumbnail_url
from .mirrors import MirrorSpec, open_mirror
from .sources import plan_items
from .store import ShardWriter, read_done, shard_paths

_SAMPLES_PER_ERROR = 3
_THUMB_FALLBACK = frozenset({"http_4xx", "http_5xx"})


@dataclass(frozen=True)
class FetchConfig:
    """Everything a fetch needs; written to `{out}/_fetch.json` so status and retry reuse it."""

    out: str
    http: HttpConfig = field(default_factory=HttpConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    mirrors: tuple[MirrorSpec, ...] = ()
    shard_size: int = 1000
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(workers=1))


@dataclass(frozen=True)
class ShardTask:
    """One shard to (re)fetch, with this worker's share of the per-host rate."""

    config: FetchConfig
    shard: int
    rate: float | None
    retry: bool = False
    progress: Any = None  # a queue of (ok, failed) increments, or None


@dataclass(frozen=True)
class ItemOutcome:
    """What happened to one URL."""

    image_id: str
    url: str
    image: StoredImage | None = None
    source: str | None = None
    error: str | None = None
    retryable: bool = False
    detail: str = ""


# One per worker process, reused across its shards: pooled connections stay open and the token
# bucket paces the worker continuously instead of restarting at every shard.
_WORKER_SOURCES: dict[tuple, _Sources] = {}


def _worker_sources(task: ShardTask) -> _Sources:
    key = (task.config.http, task.config.decode, task.config.mirrors, task.rate)
    if key not in _WORKER_SOURCES:
        close_worker_sources()
        _WORKER_SOURCES[key] = _Sources(task)
    return _WORKER_SOURCES[key]


def close_worker_sources() -> None:
    """Close the sessions this process keeps between shards."""
    while _WORKER_SOURCES:
        _WORKER_SOURCES.popitem()[1].close()


class _Sources:
    """Mirrors then HTTP for one worker; turns any per-item problem into an outcome."""

    def __init__(self, task: ShardTask):
        self.config = task.config
        self.mirrors = [open_mirror(spec) for spec in task.config.mirrors]
        self.fetcher = HttpFetcher(task.config.http, task.rate)

    def fetch(self, item: tuple[str, str]) -> ItemOutcome:
        """Fetch and decode one (image_id, url); never raises."""
        image_id, url = item
        try:
            return self._fetch(image_id, url)
        except Exception as exc:  # a bug must cost one URL (retryable), not the shard
            return ItemOutcome(image_id, url, error="internal_error", retryable=True, detail=repr(exc)[:200])

    def _fetch(self, image_id: str, url: str) -> ItemOutcome:
        for mirror in self.mirrors:
            try:
                data = mirror.lookup(image_id, url)
                if data:
                    return ItemOutcome(image_id, url, process_image(data, self.config.decode), "mirror")
            except (ImageRejected, OSError):
                continue  # a bad mirror copy falls through to the next source
        thumb = thumbnail_url(url, self.config.http.thumb_width)
        result = self.fetcher.fetch(thumb)
        if thumb != url and result.error in _THUMB_FALLBACK:
            # Wikimedia refuses some thumbnails (wider than the original, odd formats): take the original
            result = self.fetcher.fetch(url)
        if not result.ok:
            return ItemOutcome(image_id, url, error=result.error, retryable=result.retryable, detail=result.detail)
        try:
            return ItemOutcome(image_id, url, process_image(result.data, self.config.decode), "http")
        except ImageRejected as exc:
            return ItemOutcome(image_id, url, error=exc.error, retryable=exc.error in RETRYABLE_ERRORS,
                               detail=exc.detail, source="http")

    def close(self) -> None:
        self.fetcher.close()


def _outcomes(sources: _Sources, items: list[tuple[str, str]], threads: int) -> Iterator[ItemOutcome]:
    """Outcomes in completion order, keeping at most 2 x threads items in flight (flat memory)."""
    pending = iter(items)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch") as pool:
        running = {pool.submit(sources.fetch, item) for item in _take(pending, 2 * threads)}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            running |= {pool.submit(sources.fetch, item) for item in _take(pending, len(done))}
            for future in done:
                yield future.result()


def _take(iterator: Iterator, n: int) -> list:
    return [x for _, x in zip(range(n), iterator)]


def _lock_path(out: Any, shard: int) -> Path:
    """Beside the shards locally; for a store on an object store, in this machine's temp folder
    (keyed by the store's URI): object stores have no locks, and the orphans this guards against
    are the worker processes of a run killed on this machine."""
    if not fs.is_remote(out):
        return Path(out) / f".lock-{shard:05d}"
    folder = Path(tempfile.gettempdir()) / "wit-retrieval-locks"
    folder.mkdir(exist_ok=True)
    return folder / f"{hashlib.sha256(str(out).encode()).hexdigest()[:16]}-{shard:05d}.lock"


@contextlib.contextmanager
def _shard_lock(out: Any, shard: int) -> Iterator[None]:
    """Hold an exclusive lock on a shard: an orphaned worker of a killed run finishes before we redo it."""
    with file_lock(_lock_path(out, shard)):
        yield


def fetch_shard(task: ShardTask) -> dict[str, Any]:
    """Fetch (or, with task.retry, re-fetch the retryable failures of) one shard; returns its summary."""
    out = fs.path(task.config.out)
    with _shard_lock(out, task.shard):
        done = read_done(out, task.shard)
        if done is not None and not task.retry:
            return {**done, "skipped": True}
        started = time.time()
        writer = ShardWriter(out, task.shard)
        try:
            # retrying a shard a killed run left unfinished means fetching all of it
            retry = task.retry and done is not None
            items = _retry_items(writer, out, task.shard) if retry else plan_items(out, task.shard)
            counts = _run_items(task, writer, items)
            summary = _summary(task, writer, counts, started, len(items))
            writer.commit(summary)
        except BaseException:
            writer.abort()
            raise
    return summary


def _retry_items(writer: ShardWriter, out: Any, shard: int) -> list[tuple[str, str]]:
    """Copy what a shard keeps into the new writer; return the retryable failures to fetch again."""
    tar_path, manifest_path, _ = shard_paths(out, shard)
    rows = read_parquet(manifest_path).to_pylist()
    retry = [(r["image_id"], r["url"]) for r in rows if r["status"] == "failed" and r["retryable"]]
    with fs.open_file(tar_path, "rb") as handle:
        for row in rows:
            if row["status"] == "ok":
                writer.copy_ok(row, handle)
            elif not row["retryable"]:
                writer.rows.append(row)
    return retry


def _run_items(task: ShardTask, writer: ShardWriter, items: list[tuple[str, str]]) -> dict[str, Any]:
    counts: dict[str, Any] = {"samples": {}, "sources": Counter()}
    if not items:
        return counts
    sources = _worker_sources(task)
    for mirror in sources.mirrors:
        mirror.prepare(items)
    unreported = [0, 0]
    for outcome in _outcomes(sources, items, task.config.http.concurrency):
        if outcome.image is not None:
            writer.add_ok(outcome.image_id, outcome.url, outcome.image, outcome.source)
            counts["sources"][outcome.source] += 1
            unreported[0] += 1
        else:
            writer.add_failed(outcome.image_id, outcome.url, outcome.error, outcome.retryable, outcome.source)
            samples = counts["samples"].setdefault(outcome.error, [])
            if len(samples) < _SAMPLES_PER_ERROR:
                samples.append({"url": outcome.url, "detail": outcome.detail})
            unreported[1] += 1
        if task.progress is not None and sum(unreported) >= 16:
            task.progress.put(tuple(unreported))
            unreported = [0, 0]
    if task.progress is not None and sum(unreported):
        task.progress.put(tuple(unreported))
    return counts


def _summary(task: ShardTask, writer: ShardWriter, counts: dict, started: float, fetched: int) -> dict:
    statuses = Counter(r["status"] for r in writer.rows)
    errors = Counter(r["error"] for r in writer.rows if r["status"] == "failed")
    return {
        "shard": task.shard, "items": len(writer.rows), "ok": statuses["ok"], "failed": statuses["failed"],
        "retryable": sum(1 for r in writer.rows if r["status"] == "failed" and r["retryable"]),
        "errors": dict(sorted(errors.items())), "samples": counts["samples"],
        "sources": dict(counts["sources"]), "fetched": fetched, "retry": task.retry,
        "fetched_ok": sum(counts["sources"].values()),
        "started": started, "finished": time.time(), "seconds": round(time.time() - started, 3),
    }
