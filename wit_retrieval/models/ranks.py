"""The process world of a batch job (embedding): rank, size, device and a barrier, from torchrun's variables.

Under `torchrun`, RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT are set; a gloo group
carries the barriers only (no tensors cross processes here), so it works beside CUDA too. One
process without those variables is a world of one with no barrier.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes."""

    rank: int
    size: int
    local_rank: int
    device: str | None
    barrier: Callable[[], None] | None


# a rank that finishes its block early waits at the final barrier for the slowest one: embedding a
# block can take hours. A rank that fails ends the job sooner: torchrun stops every other rank.
BARRIER_TIMEOUT = timedelta(hours=24)


def _device(device: str, local_rank: int) -> str | None:
    if device and device != "cuda":
        return device
    import torch

    if device == "cuda" or torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return device or None


@contextlib.contextmanager
def embedding_world(device: str = "") -> Iterator[World]:
    """The world from torchrun's environment (a process group for the barriers), torn down on exit."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        yield World(0, 1, 0, device or None, None)
        return
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield World(rank, size, local_rank, _device(device, local_rank), dist.barrier)
    finally:
        dist.destroy_process_group()
