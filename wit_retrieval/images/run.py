"""Running a fetch: plan, check, then hand the shards to an engine; retry-failed; the stored config.

The per-host `rate` is a global budget. Workers (processes or Ray tasks) do not talk to each
other, so each of the W workers that run at once gets rate / W (ratelimit.worker_rate), and at
most W run at once (a process pool of W; on Ray a window of W tasks in flight, W = the cluster's
CPUs with --workers 0): the host never sees more than `rate`, whatever --workers, --engine or
cluster size. Near the end of a run, when fewer shards than workers remain, the host sees less
than the budget, never more.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..engine import EngineConfig, run_shards
from ..errors import ConfigError, InputError
from ..io import fs
from .decode import DecodeConfig
from .fetch import FetchConfig, ShardTask, close_worker_sources, fetch_shard
from .http import HttpConfig, check_politeness
from .mirrors import MirrorSpec, prepare_specs
from .sources import PLAN_FILE, make_plan, plan_hosts, read_plan
from .store import done_shards, read_done, read_each

CONFIG_FILE = "_fetch.json"


def resolve_config(config: FetchConfig) -> FetchConfig:
    """Do the once-per-fetch preparation (mirror indexes) and return the config workers use."""
    mirrors = prepare_specs(config.mirrors, fs.join(config.out, "_mirrors")) if config.mirrors else ()
    return FetchConfig(config.out, config.http, config.decode, mirrors, config.shard_size, config.engine)


def _read_config(out: Any) -> dict[str, Any] | None:
    try:
        return json.loads(fs.join(out, CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _check_same_decode(config: FetchConfig) -> None:
    """Resuming with other resize/encode settings would mix two kinds of images in one store."""
    before = (_read_config(config.out) or {}).get("decode", {})
    if before and DecodeConfig(**before) != config.decode:
        changed = ", ".join(k for k, v in asdict(config.decode).items() if before.get(k) != v)
        raise ConfigError(f"{fs.redact(config.out)} was fetched with other image settings ({changed}); "
                          "resume with the same --resize/--image-size/--encode/--quality or use another --out")


def write_config(config: FetchConfig) -> None:
    """Record the resolved fetch config next to the shards."""
    from ..io.shards import write_json_atomic

    # the store's URI without user:secret@ (User-Agents hold URLs too: only locations are redacted)
    raw = asdict(config)
    raw["out"] = fs.redact(config.out)
    raw["mirrors"] = [{**m, "index": m["index"] and fs.redact(m["index"])} for m in raw["mirrors"]]
    write_json_atomic(fs.join(config.out, CONFIG_FILE), raw)


def fetch_images(config: FetchConfig, urls: Iterable[str], *, show_progress: bool = False) -> dict[str, Any]:
    """Plan, then fetch every shard not finished yet; returns totals over the whole store."""
    out = fs.path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(urls, out, config.shard_size)
    check_politeness(config.http, plan_hosts(out))  # before any request
    _check_same_decode(config)
    config = resolve_config(config)
    write_config(config)
    finished = set(done_shards(out))  # one listing, not a request per shard, on an object store
    pending = [s for s in range(plan.shards) if s not in finished]
    total = sum(min(plan.shard_size, plan.items - s * plan.shard_size) for s in pending)
    _run(config, pending, retry=False, show_progress=show_progress, total=total)
    return _finish(out)


def _finish(out: Any) -> dict[str, Any]:
    """The store's status; on an object store, first delete temporary keys a crashed write left."""
    from .status import store_status

    if fs.is_remote(out):
        fs.sweep(out)
        fs.sweep(fs.join(out, PLAN_FILE).parent)
    return store_status(out)


def retry_failed(config: FetchConfig, *, show_progress: bool = False) -> dict[str, Any]:
    """Fetch again the retryable failures of finished shards (rewriting them atomically) and any unfinished shard."""
    out = fs.path(config.out)
    plan = read_plan(out)
    if plan is None:
        raise InputError("no fetch here (no _plan/plan.parquet); run `images fetch` first", path=fs.redact(out))
    check_politeness(config.http, plan_hosts(out))
    config = resolve_config(config)
    shards, total = [], 0
    for shard, done in enumerate(read_each(out, read_done, list(range(plan.shards)))):
        if done is None:
            shards.append(shard)
            total += min(plan.shard_size, plan.items - shard * plan.shard_size)
        elif done.get("retryable", 0):
            shards.append(shard)
            total += done["retryable"]
    _run(config, shards, retry=True, show_progress=show_progress, total=total)
    return _finish(out)


def _run(config: FetchConfig, shards: list[int], *, retry: bool, show_progress: bool, total: int) -> None:
    from .ratelimit import worker_rate

    if not shards:
        return
    workers = min(_concurrent_tasks(config.engine), len(shards))
    if config.http.rate and config.http.rate / workers < 0.01:
        raise ConfigError(f"--rate {config.http.rate} shared by {workers} workers is under 0.01/s each; "
                          "use fewer --workers")
    rate = worker_rate(config.http.rate, workers)
    with _progress_queue(config.engine, show_progress, total) as (queue, per_shard):
        tasks = [ShardTask(config, s, rate, retry, queue) for s in shards]
        try:
            for summary in run_shards(fetch_shard, tasks, config.engine, window=workers):
                if per_shard is not None:
                    ok = summary.get("fetched_ok", 0)
                    per_shard(ok, summary.get("fetched", ok) - ok)
        finally:
            close_worker_sources()  # inline runs keep them in this process


def _concurrent_tasks(engine: EngineConfig) -> int:
    """W, the shards fetched at once, each with rate / W. On Ray, `--workers 0` means one task per
    CPU of the cluster (not of this machine), and run_shards keeps at most W tasks in flight
    whatever the cluster's size: the host never sees more than the rate."""
    if engine.name == "ray" and not engine.workers:
        from ..engine import cluster_cpus

        return cluster_cpus(engine)
    return engine.num_workers


@contextlib.contextmanager
def _progress_queue(engine: EngineConfig, show: bool, total: int) -> Iterator[Any]:
    """(queue, None): workers report (ok, failed) increments to the queue, drained into a progress bar;
    (None, advance) on Ray, whose workers cannot reach the queue: the bar moves once per shard."""
    from .status import fetch_progress

    if not show:
        yield None, None
        return
    if engine.name == "ray":
        with fetch_progress(total) as advance:
            yield None, advance
        return
    import queue as queue_module
    import threading

    manager = None
    if engine.num_workers > 1:
        import multiprocessing

        manager = multiprocessing.get_context("forkserver").Manager()
        q = manager.Queue()
    else:
        q = queue_module.Queue()
    stop = threading.Event()
    with fetch_progress(total) as advance:

        def drain():
            while not stop.is_set() or not q.empty():
                try:
                    ok, failed = q.get(timeout=0.2)
                except (queue_module.Empty, EOFError, OSError):
                    continue
                advance(ok, failed)

        thread = threading.Thread(target=drain, name="fetch-progress", daemon=True)
        thread.start()
        try:
            yield q, None
        finally:
            stop.set()
            thread.join(timeout=5)
            if manager is not None:
                manager.shutdown()



def load_config(out: str | Path, **overrides: Any) -> FetchConfig:
    """The config a store was fetched with (`_fetch.json`), with HTTP/engine fields overridden."""
    raw = _read_config(out)
    if raw is None:
        raise InputError("no fetch here (no _fetch.json); run `images fetch` first",
                         path=fs.redact(fs.join(out, CONFIG_FILE)))
    http = {**raw["http"], "allow_hosts": tuple(raw["http"]["allow_hosts"]),
            "host_aliases": tuple(tuple(p) for p in raw["http"]["host_aliases"])}
    engine = raw["engine"]
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("name", "workers", "ray_address"):
            engine[key] = value
        elif key in ("allow_hosts", "host_aliases"):
            http[key] = tuple(http[key]) + tuple(value)
        else:
            http[key] = value
    return FetchConfig(
        out=str(out), http=HttpConfig(**http), decode=DecodeConfig(**raw["decode"]),
        mirrors=tuple(MirrorSpec(m["kind"], m["path"]) for m in raw["mirrors"]),
        shard_size=raw["shard_size"], engine=EngineConfig(**engine))
