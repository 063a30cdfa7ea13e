"""Engines that run one shard function over many shard tasks: local processes or Ray.

Stages (building MMIR, fetching images) express their work as a picklable function of one
task; the engine only decides where it runs. Results come back in task order so outputs are
identical whatever the engine or worker count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError, require

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineConfig:
    """Where shard functions run: `local` (processes; workers=1 runs inline) or `ray`."""

    name: str = "local"
    workers: int = 0  # 0: one per CPU
    ray_address: str | None = None  # None: start or join a local Ray

    def __post_init__(self):
        if self.name not in ENGINES:
            raise ConfigError(f"unknown engine {self.name!r}; use one of: {', '.join(ENGINES)}")
        if self.workers < 0:
            raise ConfigError("workers must be 0 (one per CPU) or more")

    @property
    def num_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)


def run_shards(
    fn: Callable[[T], R], tasks: Sequence[T], engine: EngineConfig = EngineConfig(),
    preload: Callable[[], None] | None = None,
) -> Iterator[R]:
    """Yield fn(task) for each task, in task order.

    `preload` loads, in this process, the read-only state every task needs (imports, models,
    lookup tables). Local workers are then forked from it and share that state copy-on-write,
    instead of each loading its own copy; without it they start from a fork server, which
    inherits nothing (no threads, no open connections). Ray workers load for themselves.
    """
    if not tasks:
        return
    if engine.name == "ray":
        yield from _run_ray(fn, tasks, engine)
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


def connect(engine: EngineConfig):
    """Join (or start) Ray for `engine` and return the ray module."""
    ray = require("ray", "ray")
    if not ray.is_initialized():
        ray.init(
            address=engine.ray_address,
            num_cpus=None if engine.ray_address else engine.num_workers,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
            configure_logging=False,
        )
    return ray


def _run_ray(fn: Callable[[T], R], tasks: Sequence[T], engine: EngineConfig) -> Iterator[R]:
    ray = connect(engine)
    remote = ray.remote(fn)
    refs: list[Any] = [remote.remote(task) for task in tasks]
    for ref in refs:  # in task order
        yield ray.get(ref)
