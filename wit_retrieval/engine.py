"""Engines that run one shard function over many shard tasks: local processes or Ray.

Stages (building MMIR, fetching images) express their work as a picklable function of one
task; the engine only decides where it runs. Results come back in task order so outputs are
identical whatever the engine or worker count.

Ray: `connect` is the one place that starts or joins Ray (docs/cluster.md). With no address
(neither `--ray-address` nor `RAY_ADDRESS`) it starts a local Ray sized by `workers`; with one it
joins that cluster as Ray documents (`auto`, `HOST:PORT`, `ray://...`; token authentication from
`RAY_AUTH_TOKEN` / the token file, which Ray itself reads) and never sizes it. Each task asks for
one CPU and is retried by Ray when its worker or node dies (`RAY_MAX_RETRIES`): shard functions
write atomically and are pure functions of their task, so a retried shard gives the same result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError, WitRetrievalError, require

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")
RAY_ADDRESS_HELP = ("With --engine ray: the cluster to join (auto, HOST:PORT, ray://...); "
                    "default RAY_ADDRESS, else a local Ray.")
RAY_MAX_RETRIES = 3  # a task whose worker process or node dies is run again, up to this many times


class ClusterError(WitRetrievalError):
    """A Ray cluster could not be reached, or lost the work it was running."""


class RayAddress(str):
    """A Ray address that never shows its secrets: a `ray://user:token@host` URL or a `?token=`
    query would otherwise land in the configs written beside the outputs (`asdict` deep-copies
    leaves, so this redacts there) and in logs (`repr`). Connecting uses the full value."""

    def redacted(self) -> str:
        return redact_address(str(self))

    def __repr__(self) -> str:
        return repr(self.redacted())

    def __deepcopy__(self, memo) -> str:
        return self.redacted()

    def __reduce__(self):  # pickled to workers and back as the full value
        return (RayAddress, (str(self),))


def redact_address(address: str) -> str:
    """`address` without user info, query or fragment (where credentials go in a URL)."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in address:
        return address.rpartition("@")[2]
    parts = urlsplit(address)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class EngineConfig:
    """Where shard functions run: `local` (processes; workers=1 runs inline) or `ray`."""

    name: str = "local"
    workers: int = 0  # 0: one per CPU
    ray_address: str | None = None  # None: RAY_ADDRESS if set, else start a local Ray

    def __post_init__(self):
        if self.ray_address is not None and not isinstance(self.ray_address, RayAddress):
            object.__setattr__(self, "ray_address", RayAddress(self.ray_address) if self.ray_address else None)
        if self.name not in ENGINES:
            raise ConfigError(f"unknown engine {self.name!r}; use one of: {', '.join(ENGINES)}")
        if self.workers < 0:
            raise ConfigError("workers must be 0 (one per CPU) or more")

    @property
    def num_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def address(self) -> str | None:
        """The cluster to join: `--ray-address`, else `RAY_ADDRESS` (Ray's own variable), else None."""
        return str(self.ray_address) if self.ray_address else os.environ.get("RAY_ADDRESS") or None


def run_shards(
    fn: Callable[[T], R], tasks: Sequence[T], engine: EngineConfig = EngineConfig(),
    preload: Callable[[], None] | None = None, window: int | None = None,
) -> Iterator[R]:
    """Yield fn(task) for each task, in task order.

    `preload` loads, in this process, the read-only state every task needs (imports, models,
    lookup tables). Local workers are then forked from it and share that state copy-on-write,
    instead of each loading its own copy; without it they start from a fork server, which
    inherits nothing (no threads, no open connections). Ray workers load for themselves.
    `window` caps the Ray tasks in flight (local pools are already capped by their workers).
    """
    if not tasks:
        return
    if engine.name == "ray":
        yield from _run_ray(fn, tasks, engine, window)
    elif engine.num_workers == 1 or len(tasks) == 1:
        if preload is not None:
            preload()
        for task in tasks:
            yield fn(task)
    else:
        import multiprocessing

        method = "fork" if preload is not None and "fork" in multiprocessing.get_all_start_methods() else "forkserver"
        initializer = None
        if method == "fork":
            import gc

            preload()
            # the inherited objects live as long as the worker: keep its collector from walking
            # (and so copying) their pages
            initializer = gc.freeze
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=min(engine.num_workers, len(tasks)), mp_context=ctx,
                                 initializer=initializer) as pool:
            yield from pool.map(fn, tasks)


def connect(engine: EngineConfig = EngineConfig(name="ray")):
    """Start or join Ray once per process and return the `ray` module.

    Joining an existing cluster passes no num_cpus (Ray refuses it: the cluster is already
    sized); an unreachable cluster is one ClusterError line naming the address, not a traceback.
    """
    ray = require("ray", "ray")
    if ray.is_initialized():
        return ray
    address = engine.address
    options: dict[str, Any] = dict(log_to_driver=False, configure_logging=False)
    if address is None:
        options.update(num_cpus=engine.num_workers, include_dashboard=False)
    else:
        _check_reachable(address)
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... by cause
        where = f"the Ray cluster at {redact_address(address)}" if address else "a local Ray"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"could not connect to {where}: {redact_address(reason)[:300]}; check that "
                           "`ray status` works there, the address (--ray-address / RAY_ADDRESS) and, "
                           "with token authentication, RAY_AUTH_TOKEN or the token file") from None
    return ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast when nothing listens at a HOST:PORT address (Ray itself retries for minutes)."""
    import socket
    from urllib.parse import urlsplit

    if address == "auto" or address.startswith("local"):
        return
    netloc = urlsplit(address if "://" in address else f"ray://{address}").netloc.rpartition("@")[2]
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad Ray address {redact_address(address)!r}: use auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"could not connect to the Ray cluster at {redact_address(address)}: nothing answers "
                           f"there ({exc.strerror or exc}); check the address (--ray-address / RAY_ADDRESS) and "
                           "that `ray status` works on the head node") from None


def cluster_cpus(engine: EngineConfig) -> int:
    """How many one-CPU tasks Ray can run at once: the CPUs of the cluster joined or started."""
    ray = connect(engine)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _run_ray(fn: Callable[[T], R], tasks: Sequence[T], engine: EngineConfig,
             window: int | None = None) -> Iterator[R]:
    """Run tasks on Ray with at most `window` in flight (None: all submitted at once), in order.

    A bounded window is what makes "W tasks at once" true on any cluster size (images: the per-host
    rate is split over W); results that finish early wait in `done` until their turn.
    """
    ray = connect(engine)
    remote = ray.remote(num_cpus=1, max_retries=RAY_MAX_RETRIES)(fn)
    limit = len(tasks) if window is None else max(1, window)
    pending: dict[Any, int] = {}
    done: dict[int, Any] = {}
    submitted = 0
    for index in range(len(tasks)):
        while submitted < len(tasks) and len(pending) < limit:
            pending[remote.remote(tasks[submitted])] = submitted
            submitted += 1
        while index not in done:
            ready, _ = ray.wait(list(pending), num_returns=1)
            done[pending.pop(ready[0])] = ready[0]
        yield _get(ray, done.pop(index), index)


def _get(ray, ref, index: int):
    """The result of task `index`, or a ClusterError when Ray gave up on it (retries spent)."""
    try:
        return ray.get(ref)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError, ray.exceptions.RaySystemError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"shard task {index} was lost by the cluster after {RAY_MAX_RETRIES} retries "
                           f"({type(exc).__name__}: {reason[:200]}); run the same command again "
                           "(a fetch resumes from the shards it stored; a build starts over)") from None
