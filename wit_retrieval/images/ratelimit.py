"""Per-host politeness: a token bucket for the request rate, a cap on requests in flight, and a
shared pause when the host says `Retry-After`.

The rate is a *global* budget per host. A fetch runs W workers (processes or Ray tasks) that do
not talk to each other, so each worker gets `rate / W` and its own bucket: the sum over workers
never exceeds the budget, with no coordination service. The bucket holds a quarter second of
tokens (at least one), so a worker never bursts above what a server enforcing the same rate
with a one-second burst allows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class TokenBucket:
    """A thread-safe token bucket: `acquire()` blocks until one request may start."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError("rate must be > 0 (use no bucket for an unlimited rate)")
        self.rate = float(rate)
        # A burst of a quarter second of tokens keeps every short window under the rate a
        # server checks, even when network jitter bunches requests up on arrival.
        self.capacity = max(1.0, float(burst) if burst is not None else self.rate / 4)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 1.0  # start nearly empty: a restarted worker must not burst
        self._last = clock()
        self._paused_until = 0.0

    def pause_until(self, when: float) -> None:
        """Stop handing out tokens until the monotonic time `when` (a host's Retry-After)."""
        with self._lock:
            if when > self._paused_until:
                self._paused_until = when
                self._tokens = min(self._tokens, 1.0)

    def _reserve(self) -> float:
        """Take one token now, or return how long to wait before trying again."""
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0 - 1e-9:  # tolerance: float sums may stop just short of 1
                self._tokens = max(0.0, self._tokens - 1.0)
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def acquire(self) -> None:
        """Block until a token is available, then take it."""
        while True:
            wait = self._reserve()
            if wait <= 0:
                return
            self._sleep(wait)


@dataclass(frozen=True)
class HostPolicy:
    """Limits for every host a worker contacts: requests/s (None: unlimited) and requests in flight."""

    rate: float | None = None
    concurrency: int = 16


class HostLimiter:
    """Rate and concurrency limits per host, for the threads of one worker."""

    def __init__(self, policy: HostPolicy):
        self.policy = policy
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket | None] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._paused: dict[str, float] = {}

    def _get(self, host: str) -> tuple[TokenBucket | None, threading.BoundedSemaphore]:
        with self._lock:
            if host not in self._slots:
                rate = self.policy.rate
                self._buckets[host] = TokenBucket(rate) if rate else None
                self._slots[host] = threading.BoundedSemaphore(max(1, self.policy.concurrency))
            return self._buckets[host], self._slots[host]

    def pause(self, host: str, seconds: float) -> None:
        """Hold every request to `host` for `seconds` (honouring Retry-After for all threads)."""
        until = time.monotonic() + max(0.0, seconds)
        bucket, _ = self._get(host)
        with self._lock:
            self._paused[host] = max(until, self._paused.get(host, 0.0))
        if bucket is not None:
            bucket.pause_until(until)

    def _wait_pause(self, host: str) -> None:
        while True:
            with self._lock:
                left = self._paused.get(host, 0.0) - time.monotonic()
            if left <= 0:
                return
            time.sleep(left)

    @contextmanager
    def request(self, host: str) -> Iterator[None]:
        """Hold a concurrency slot and one rate token for `host` while the body runs."""
        bucket, slots = self._get(host)
        with slots:
            self._wait_pause(host)
            if bucket is not None:
                bucket.acquire()
            yield


def worker_rate(rate: float | None, workers: int) -> float | None:
    """The share of a global per-host rate one of `workers` workers may use."""
    if not rate:
        return None
    return rate / max(1, workers)
