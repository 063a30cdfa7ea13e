"""Data-parallel plumbing: who am I (torchrun, SLURM or alone), the process group, and collectives.

- `world_from_env()` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, ...) or SLURM's
  (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, with MASTER_ADDR/MASTER_PORT exported
  by the batch script), as open_clip's `world_info_from_env` does; neither means one process.
- `process_group(world)` starts gloo (CPU) or nccl (CUDA) and tears it down; a failure on any
  rank is published in the rendezvous store and a watchdog thread on every other rank ends its
  process at once with that rank's one-line error, so no rank waits for the collective timeout.
- `gather_with_grad` is open_clip's gather-with-grad: every rank gets the whole global batch and
  gradients flow back to the rank that computed each row (losses are then computed on local rows
  only, "local loss", so memory stays linear in the global batch).

torch is imported lazily: `import wit_retrieval.distributed` costs nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .errors import ConfigError

ERROR_KEY = "wit_retrieval/error"
POLL_SECONDS = 0.5
TIMEOUT_MINUTES = 30          # collectives; errors end the run long before through the watchdog


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    launcher: str = "single"       # single | torchrun | slurm

    @property
    def distributed(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, validates and writes checkpoints."""
        return self.rank == 0


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not an integer") from None


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The World described by the launcher's environment variables (torchrun first, then SLURM)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        size = _int(env, "WORLD_SIZE")
        local_size = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else size
        return World(_int(env, "RANK"), size, _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
                     local_size, _int(env, "GROUP_RANK") if "GROUP_RANK" in env else 0, "torchrun")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        size = _int(env, "SLURM_NTASKS")
        nodes = _int(env, "SLURM_NNODES") if "SLURM_NNODES" in env else 1
        world = World(_int(env, "SLURM_PROCID"), size, _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
                      max(1, size // max(1, nodes)), _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0,
                      "slurm")
        if world.distributed and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
            raise ConfigError("SLURM runs need MASTER_ADDR and MASTER_PORT: export them in the batch script "
                              "(see docs/training.md, 'SLURM')")
        return world
    return World()


def device_for(world: World) -> str:
    """cuda:LOCAL_RANK when CUDA is available, else cpu."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{world.local_rank % torch.cuda.device_count()}"
    return "cpu"


@contextlib.contextmanager
def process_group(world: World, device: str, timeout_minutes: float = TIMEOUT_MINUTES) -> Iterator[ErrorRelay | None]:
    """Start the process group for `world` (nothing for one process); yields its ErrorRelay.

    `timeout_minutes` bounds a collective's wait: a batch job whose ranks may finish their blocks
    far apart (embedding) waits longer at its final barrier than a training step does.
    """
    if not world.distributed:
        yield None
        return
    import torch
    import torch.distributed as dist

    if world.launcher == "slurm":  # env:// reads these; torchrun sets them itself
        os.environ.update(RANK=str(world.rank), WORLD_SIZE=str(world.world_size),
                          LOCAL_RANK=str(world.local_rank))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", rank=world.rank, world_size=world.world_size,
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    relay = ErrorRelay(world)
    relay.start()
    try:
        yield relay
    except BaseException as exc:
        relay.publish(exc)
        raise
    else:
        relay.stop()
        dist.barrier()
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def one_line(exc: BaseException) -> str:
    """An exception as one line: the message of our errors, `Type: message` of any other."""
    from .errors import WitRetrievalError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc) if isinstance(exc, WitRetrievalError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:2000]


class ErrorRelay:
    """Publishes this rank's fatal error in the rendezvous store; ends this process when another rank's appears."""

    def __init__(self, world: World):
        import torch.distributed as dist

        self.world = world
        self.store = dist.distributed_c10d._get_default_store()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="wit-error-watchdog", daemon=True)

    def start(self) -> None:
        """Begin watching for other ranks' errors."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the run is ending normally, or this rank is the one failing)."""
        self._stop.set()

    def publish(self, exc: BaseException) -> None:
        """Tell every other rank that this one failed, and why.

        When another rank failed first, this failure follows from it (a collective that rank left,
        which can break before the watchdog's next look): end here with that rank's error instead.
        """
        self.stop()
        first = None
        with contextlib.suppress(Exception):
            if self.store.check([ERROR_KEY]):
                first = self.store.get(ERROR_KEY).decode("utf-8", "replace")
            else:
                self.store.set(ERROR_KEY, f"rank {self.world.rank}: {one_line(exc)}")
            # rank 0 may host the store: stay a moment so the others can read the message
            if self.world.rank == 0:
                time.sleep(3 * POLL_SECONDS)
        if first is not None and not isinstance(exc, KeyboardInterrupt):
            _die(f"stopping rank {self.world.rank} because {first}")

    def _watch(self) -> None:
        failures = 0
        while not self._stop.wait(POLL_SECONDS):
            try:
                found = self.store.check([ERROR_KEY])
                failures = 0
            except Exception:  # the store went away: its host (rank 0 or the launcher) has ended
                failures += 1
                if failures >= 3 and not self._stop.is_set():
                    _die(f"rank {self.world.rank}: lost the rendezvous store (another rank or the launcher "
                         "ended); stopping")
                continue
            if found and not self._stop.is_set():
                message = self.store.get(ERROR_KEY).decode("utf-8", "replace")
                _die(f"stopping rank {self.world.rank} because {message}")


def _die(message: str) -> None:
    """End this process now (its main thread may be blocked inside a collective)."""
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(1)


def rank_prefixed_warnings(world: World) -> None:
    """Prefix this rank's Python warnings and log records with its rank (rank 0's stay as they are)."""
    if world.is_main:
        return
    import logging
    import warnings

    logging.basicConfig(format=f"[rank {world.rank}] %(levelname)s %(name)s: %(message)s", force=True)

    original = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        return f"[rank {world.rank}] " + original(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


def _gather_autograd():
    import torch
    import torch.distributed as dist

    class GatherWithGrad(torch.autograd.Function):
        """all_gather whose backward sends each rank the summed gradient of its own rows."""

        @staticmethod
        def forward(ctx, tensor):
            tensor = tensor.contiguous()
            ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
            parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, tensor)
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous()
            if dist.get_backend() == "nccl":
                out = torch.empty((ctx.rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
                dist.reduce_scatter_tensor(out, grad)
                return out
            dist.all_reduce(grad)  # gloo has no reduce_scatter: sum everything, keep our rows
            return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]

    return GatherWithGrad


_GATHER = None


def gather_with_grad(tensor, world: World):
    """Rows of every rank concatenated in rank order; gradients reach each rank's own rows."""
    global _GATHER
    if not world.distributed:
        return tensor
    if _GATHER is None:
        _GATHER = _gather_autograd()
    return _GATHER.apply(tensor)


def gather(tensor, world: World):
    """Rows of every rank concatenated in rank order, without gradient."""
    if not world.distributed:
        return tensor
    import torch
    import torch.distributed as dist

    tensor = tensor.detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(world.world_size)]
    dist.all_gather(parts, tensor)
    return torch.cat(parts)


def all_reduce_sum(tensor, world: World):
    """The element-wise sum over ranks (in place; returned)."""
    if world.distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def all_reduce_gradients(parameters, world: World, bucket_bytes: int = 32 << 20) -> None:
    """Sum the gradients of `parameters` over ranks, in flat buckets (missing gradients count as zero)."""
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:  # a part unused on this rank must still join the sum
            p.grad = torch.zeros_like(p)
    bucket: list = []
    size = 0
    for p in params + [None]:
        if p is not None:
            bucket.append(p.grad)
            size += p.grad.numel() * p.grad.element_size()
        if bucket and (p is None or size >= bucket_bytes):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            for grad, summed in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                grad.copy_(summed)
            bucket, size = [], 0


def broadcast_parameters(module, world: World) -> None:
    """Rank 0's parameters and buffers on every rank (same start even if initialisation differed)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast_object(value, world: World):
    """Rank 0's `value` on every rank (a small picklable object)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value, world: World) -> list:
    """Every rank's `value` (small, picklable), gathered on every rank, to compare them."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    out: list = [None] * world.world_size
    dist.all_gather_object(out, value)
    return out


def barrier(world: World) -> None:
    """Wait for every rank."""
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()
