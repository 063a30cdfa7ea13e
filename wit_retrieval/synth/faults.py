"""Injected faults for the loopback server: what can go wrong when fetching from Wikimedia.

A FaultPlan picks at most one fault per URL path, deterministically from its seed, so a test
(or a benchmark) sees the same failures on every run and can tell a retry from a first try.
Rules with explicit paths win over fraction rules; fraction rules share one uniform draw per
path, so their fractions are disjoint slices of the paths (their sum must be at most 1).
"""

from __future__ import annotations

import hashlib
import random
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote

from ..errors import ConfigError

FAULT_KINDS = (
    "timeout",  # hold the request without answering, then drop it
    "slow",  # answer, but trickle the body over `delay_s` seconds
    "http_429",  # Too Many Requests with Retry-After (seconds or an HTTP date)
    "http_503",  # Service Unavailable with Retry-After seconds
    "http_404",  # Not Found although the file exists
    "truncated",  # full Content-Length announced, half the body sent, connection closed
    "reset",  # TCP reset (RST) instead of an answer
    "corrupt_image",  # right magic bytes and Content-Type, undecodable rest
    "zero_bytes",  # 200 with an empty body
    "html",  # 200 text/html error page instead of the image
    "redirect_allowed",  # 302 to the same file on the same host (following it succeeds)
    "redirect_disallowed",  # 302 to a host outside any allow-list (`.invalid` never resolves)
    "redirect_loop",  # 302 to itself forever
    "huge_dimensions",  # a valid PNG header declaring 60000x60000: a decompression bomb
)
RETRY_AFTER_STYLES = ("seconds", "date", "mixed")
DISALLOWED_REDIRECT_HOST = "http://redirect-target.invalid"


def normalize_path(path: str) -> str:
    """The key faults and attempt counts use: percent-decoded, no query, one leading slash."""
    path = unquote(path.split("?", 1)[0].split("#", 1)[0])
    return "/" + path.lstrip("/")


@dataclass(frozen=True)
class FaultRule:
    """One kind of fault, for a fraction of the paths (under a prefix) or for explicit paths.

    `transient_attempts=n` makes the fault clear after n hits of a path (then the file is
    served); None keeps it forever (until the plan is replaced or lifted).
    """

    kind: str
    fraction: float = 0.0
    paths: tuple[str, ...] = ()
    transient_attempts: int | None = None
    under: str = ""  # fraction rules only touch paths starting with this prefix
    delay_s: float | None = None  # timeout: how long to hold (10 s); slow: trickle time (2 s)
    retry_after_s: int = 1  # for http_429 / http_503 and the rate limiter
    retry_after: str = "seconds"  # http_429: "seconds", "date" or "mixed" (per path)

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"fault {self.kind}: fraction {self.fraction} is not within [0, 1]")
        if self.transient_attempts is not None and self.transient_attempts < 1:
            raise ConfigError(f"fault {self.kind}: transient_attempts must be >= 1 or None")
        if self.retry_after not in RETRY_AFTER_STYLES:
            raise ConfigError(f"fault {self.kind}: retry_after must be one of {RETRY_AFTER_STYLES}")
        object.__setattr__(self, "paths", tuple(normalize_path(p) for p in self.paths))


@dataclass(frozen=True)
class FaultPlan:
    """Which paths fail and how; `choose(path)` is a pure function of (seed, path)."""

    seed: int = 0
    rules: tuple[FaultRule, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(self.rules))
        total = sum(r.fraction for r in self.rules if not r.paths)
        if total > 1.0 + 1e-9:
            raise ConfigError(f"fault fractions add up to {total:.3f} > 1; lower them")

    def draw(self, path: str) -> float:
        """A uniform number in [0, 1) fixed by (seed, path)."""
        digest = hashlib.sha256(f"{self.seed}\0{normalize_path(path)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def choose(self, path: str) -> FaultRule | None:
        """The rule that applies to `path`, or None (served normally)."""
        key = normalize_path(path)
        for rule in self.rules:
            if rule.paths and key in rule.paths:
                return rule
        u, start = self.draw(key), 0.0
        for rule in self.rules:
            if rule.paths or rule.fraction <= 0.0:
                continue
            if start <= u < start + rule.fraction and key.startswith(normalize_path(rule.under) if rule.under else "/"):
                return rule
            start += rule.fraction
        return None


def parse_fault_spec(spec: str, **options) -> FaultRule:
    """Parse the CLI's `KIND=FRACTION` (e.g. `http_429=0.05`) into a FaultRule."""
    kind, sep, value = spec.partition("=")
    if not sep:
        raise ConfigError(f"--fault {spec!r}: expected KIND=FRACTION, e.g. http_429=0.05")
    try:
        fraction = float(value)
    except ValueError:
        raise ConfigError(f"--fault {spec!r}: {value!r} is not a number") from None
    return FaultRule(kind.strip(), fraction=fraction, **options)


def retry_after_value(rule: FaultRule, path: str, seed: int) -> str:
    """Retry-After header: delta seconds, or an HTTP date `retry_after_s` from now."""
    style = rule.retry_after
    if style == "mixed":
        digest = hashlib.sha256(f"{seed}\0retry\0{path}".encode()).digest()
        style = "date" if digest[0] & 1 else "seconds"
    if style == "date":
        return formatdate(time.time() + rule.retry_after_s, usegmt=True)
    return str(rule.retry_after_s)


def corrupt_bytes(body: bytes, path: str) -> bytes:
    """Keep the magic bytes (so sniffing passes) and replace the rest with seeded noise."""
    keep = min(16, len(body) // 4)
    noise = random.Random(path).randbytes(max(len(body) - keep, 64))
    return body[:keep] + noise


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = 60000, height: int = 60000) -> bytes:
    """A well-formed PNG header declaring width x height (RGB), with one tiny IDAT: a bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * min(width, 4096)), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Wikimedia Error</title></head>"
    b"<body><h1>Error</h1><p>Our servers are currently under maintenance or experiencing a technical "
    b"problem. Please try again in a few minutes.</p></body></html>\n"
)


class TokenBucket:
    """Rate limiter: `rate` tokens per second, at most `burst` saved up; thread-safe.

    Deliberately separate from the fetcher's bucket (images/ratelimit.py): the server checks the
    client's politeness, so a shared bug must not cancel out on both sides.
    """

    def __init__(self, rate: float, burst: float | None = None):
        if rate <= 0:
            raise ConfigError(f"rate limit must be > 0 requests/s, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate
