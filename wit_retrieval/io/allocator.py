"""Keep freed memory for reuse in processes that stream large buffers (glibc's malloc only).

A build reads each WIT shard as ~8 MB decompressed blocks and makes buffers of that size per
segment. glibc serves such sizes with mmap and gives them back on free, so every new block
starts as fresh pages the kernel must fault in and zero: measured, that doubled the CPU of
decompressing and segmenting a shard. Raising the mmap and trim thresholds makes those
blocks come from, and return to, the heap instead. The cost is that a process keeps up to
its peak heap instead of shrinking; build processes are bounded by their batch sizes anyway.
Elsewhere (musl, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the thresholds to this process (and the processes it forks later); True if applied."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
