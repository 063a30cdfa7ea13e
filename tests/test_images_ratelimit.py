"""Token buckets, per-host concurrency, Retry-After pauses and the global rate split over workers."""

from __future__ import annotations

import threading
import time

from wit_retrieval.images.ratelimit import HostLimiter, HostPolicy, TokenBucket, worker_rate


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_bucket_never_exceeds_rate_in_any_window():
    clock = FakeClock()
    bucket = TokenBucket(20.0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(200):
        bucket.acquire()
        times.append(clock.now)
    assert 200 / 20.0 - 1 <= times[-1] <= 200 / 20.0 + 0.1
    for i, start in enumerate(times):  # any one-second window holds at most rate + burst
        assert sum(1 for t in times[i:] if t < start + 1.0) <= 20 + bucket.capacity


def test_bucket_pause_holds_tokens():
    clock = FakeClock()
    bucket = TokenBucket(100.0, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.pause_until(5.0)
    bucket.acquire()
    assert clock.now >= 5.0


def test_host_limiter_caps_concurrency_per_host():
    limiter = HostLimiter(HostPolicy(rate=None, concurrency=3))
    inflight, peak, lock = [0], [0], threading.Lock()

    def work():
        with limiter.request("a.example"):
            with lock:
                inflight[0] += 1
                peak[0] = max(peak[0], inflight[0])
            time.sleep(0.02)
            with lock:
                inflight[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 3


def test_host_pause_delays_every_thread():
    limiter = HostLimiter(HostPolicy(rate=1000.0, concurrency=4))
    limiter.pause("a.example", 0.2)
    start = time.monotonic()
    with limiter.request("a.example"):
        pass
    assert time.monotonic() - start >= 0.19
    start = time.monotonic()
    with limiter.request("b.example"):  # other hosts are not held
        pass
    assert time.monotonic() - start < 0.1


def test_worker_share_of_global_rate():
    assert worker_rate(10.0, 4) == 2.5
    assert worker_rate(None, 4) is None and worker_rate(0, 2) is None
