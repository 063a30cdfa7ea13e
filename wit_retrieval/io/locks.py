"""One exclusive lock file per job, across the processes of this machine (fcntl.flock).

Used where one process must do a piece of work while the others wait and then reuse it
(preparing training shards, converting a teacher, caching a remote store) and where a killed
run's orphaned worker must finish before its shard is redone. Object stores have no locks: a
remote output's lock lives on local disk, so it holds per machine (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created with its folder); others wait here."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
