"""A Wikimedia-like HTTP server on loopback: serves a folder at the real hosts' URL paths.

The synth world's relative paths are the URL paths of storage.googleapis.com (WIT and the
released files), dumps.wikimedia.org and upload.wikimedia.org, so one server stands in for all
three; clients reach it through host aliases. It speaks HTTP/1.1 with keep-alive (pooled
clients reuse connections), answers HEAD, single Range requests and If-None-Match, renders
`/wikipedia/commons/thumb/...` thumbnails with Pillow, and can inject faults (faults.py) and
enforce a rate limit, counting everything in `stats()` so tests can assert on politeness.
"""

from __future__ import annotations

import math
import re
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote

from ..errors import InputError
from .faults import FaultPlan, FaultRule, TokenBucket, normalize_path
from .responses import Resource, file_resource, parse_range, thumbnail_resource

# The hosts whose paths the served folder mirrors (printed as --host-alias hints).
REAL_HOSTS = ("upload.wikimedia.org", "dumps.wikimedia.org", "storage.googleapis.com")
THUMB_RE = re.compile(r"^/wikipedia/commons/thumb/([0-9a-f])/([0-9a-f]{2})/([^/]+)/(\d+)px-([^/]+)$")
_STREAM_CHUNK = 1 << 16


class _Stats:
    """Thread-safe counters behind LocalServer.stats()."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.over_limit = 0
        self.bytes_sent = 0
        self.by_status: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "requests": self.requests,
                "over_limit": self.over_limit,
                "bytes_sent": self.bytes_sent,
                "by_status": dict(self.by_status),
                "faults": dict(self.faults),
                "attempts": dict(self.attempts),
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    server_version = "wit-retrieval-synth"
    server: _HTTPServer

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without this Nagle adds 40 ms stalls.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - quiet: stats() is the record
        pass

    def send_response(self, code, message=None):
        with self.server.owner._stats.lock:
            self.server.owner._stats.by_status[code] += 1
        super().send_response(code, message)

    def do_GET(self):
        self._serve(head=False)

    def do_HEAD(self):
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        raw_path, _, query_string = self.path.partition("?")
        path = normalize_path(raw_path)
        query = parse_qs(query_string)
        owner._count_request(path)
        wait = owner._bucket.take() if owner._bucket is not None else 0.0
        if wait > 0.0:
            with owner._stats.lock:
                owner._stats.over_limit += 1
            self._send_simple(429, b"rate limit exceeded\n", {"Retry-After": str(max(1, math.ceil(wait)))})
            return
        if ".." in path.split("/") or "\0" in path or "\\" in path:
            self._send_simple(403, b"path traversal refused\n")
            return
        resource = owner._resolve(path)
        if isinstance(resource, tuple):
            self._send_simple(resource[0], resource[1].encode() + b"\n")
            return
        rule = None if "redirected" in query else owner._fault_for(path)
        if rule is not None:
            with owner._stats.lock:
                owner._stats.faults[rule.kind] += 1
            if self._apply_fault(rule, path, query, resource, head):
                return
        self._send_resource(resource, head)

    # -- plain answers -------------------------------------------------------------------------

    def _send_simple(self, code: int, body: bytes, headers: dict | None = None, ctype="text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._finish(body, head=self.command == "HEAD")

    def _finish(self, body: bytes, head: bool, length: int | None = None) -> None:
        """Content-Length, end of headers and the body in one write (one packet when small)."""
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self._headers_buffer.append(b"\r\n")
        if not head:
            self._headers_buffer.append(body)
        self.flush_headers()
        self._count_bytes(0 if head else len(body))

    def _count_bytes(self, n: int) -> None:
        with self.server.owner._stats.lock:
            self.server.owner._stats.bytes_sent += n

    def _send_resource(self, res: Resource, head: bool) -> None:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match and (if_none_match.strip() == "*" or res.etag in if_none_match):
            self.send_response(304)
            self.send_header("ETag", res.etag)
            self._finish(b"", head=True, length=None)
            return
        span = parse_range(self.headers.get("Range"), res.size)
        if span == "unsatisfiable":
            self._send_simple(416, b"", {"Content-Range": f"bytes */{res.size}"})
            return
        start, end = span if span is not None else (0, res.size - 1)
        self.send_response(206 if span is not None else 200)
        self.send_header("Content-Type", res.content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", res.etag)
        self.send_header("Last-Modified", formatdate(res.mtime, usegmt=True))
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{res.size}")
        length = max(0, end - start + 1)
        if res.body is not None or head:
            body = res.body[start : end + 1] if res.body is not None else b""
            self._finish(body, head=head, length=length)
            return
        self._finish(b"", head=True, length=length)
        with open(res.file, "rb") as fh:
            sent = self.connection.sendfile(fh, offset=start, count=length)
        self._count_bytes(sent)

    # -- faults --------------------------------------------------------------------------------

    def _apply_fault(self, rule: FaultRule, path: str, query: dict, res: Resource, head: bool) -> bool:
        """Answer with the fault; False when the fault only changes the body (then sent normally)."""
        from . import faults as f

        owner = self.server.owner
        kind = rule.kind
        if kind == "timeout":
            owner._closing.wait(10.0 if rule.delay_s is None else rule.delay_s)
            self.close_connection = True
        elif kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.server.mark_reset(self.connection)
            self.close_connection = True
        elif kind in ("http_429", "http_503"):
            seed = owner._plan.seed if owner._plan else 0
            after = f.retry_after_value(rule, path, seed) if kind == "http_429" else str(rule.retry_after_s)
            code = 429 if kind == "http_429" else 503
            self._send_simple(code, f"{code} injected fault\n".encode(), {"Retry-After": after})
        elif kind == "http_404":
            self._send_simple(404, b"not found (injected fault)\n")
        elif kind == "html":
            self._send_simple(200, f.HTML_ERROR_PAGE, ctype="text/html; charset=utf-8")
        elif kind in ("zero_bytes", "corrupt_image", "huge_dimensions"):
            body = {"zero_bytes": b"", "huge_dimensions": f.huge_png()}.get(kind)
            if body is None:
                body = f.corrupt_bytes(res.read(), path)
            ctype = "image/png" if kind == "huge_dimensions" else res.content_type
            self._send_simple(200, body, ctype=ctype)
        elif kind.startswith("redirect_"):
            self._send_simple(302, b"", {"Location": self._redirect_target(kind, path, query)})
        elif kind == "truncated":
            self._send_truncated(res, head)
        elif kind == "slow":
            self._send_slow(res, head, 2.0 if rule.delay_s is None else rule.delay_s)
        else:  # pragma: no cover - FaultRule validates kinds
            return False
        return True

    def _redirect_target(self, kind: str, path: str, query: dict) -> str:
        from .faults import DISALLOWED_REDIRECT_HOST

        here = f"http://{self.headers.get('Host') or self.server.owner.url.split('//', 1)[1]}"
        quoted = quote(path, safe="/()!$&'*+,;=:@~")
        if kind == "redirect_allowed":
            return f"{here}{quoted}?redirected=1"
        if kind == "redirect_disallowed":
            return f"{DISALLOWED_REDIRECT_HOST}{quoted}"
        hop = int(query.get("loop", ["0"])[0] or 0) + 1
        return f"{here}{quoted}?loop={hop}"

    def _send_truncated(self, res: Resource, head: bool) -> None:
        body = res.read()
        self.send_response(200)
        self.send_header("Content-Type", res.content_type)
        self._finish(body[: len(body) // 2], head=head, length=len(body))
        self.close_connection = True

    def _send_slow(self, res: Resource, head: bool, seconds: float) -> None:
        body = res.read()
        self.send_response(200)
        self.send_header("Content-Type", res.content_type)
        self._finish(b"", head=True, length=len(body))
        if head:
            return
        pieces = 20
        step = max(1, math.ceil(len(body) / pieces))
        for i in range(0, len(body), step):
            if self.server.owner._closing.wait(seconds / pieces):
                break
            self.wfile.write(body[i : i + step])
            self._count_bytes(len(body[i : i + step]))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # never wait for a held (timeout fault) connection on close
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address, owner: LocalServer):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        self._resets: set[socket.socket] = set()
        self._resets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def mark_reset(self, sock: socket.socket) -> None:
        with self._resets_lock:
            self._resets.add(sock)

    def shutdown_request(self, request):
        with self._resets_lock:
            reset = request in self._resets
            self._resets.discard(request)
        if reset:  # close without shutdown(SHUT_WR): with SO_LINGER 0 the peer gets an RST
            request.close()
        else:
            super().shutdown_request(request)

    def handle_error(self, request, client_address):
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # clients hang up (timeouts, resets); that is their business
        super().handle_error(request, client_address)


@dataclass(frozen=True)
class ServerConfig:
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    rate_limit: float | None = None


class LocalServer:
    """A running loopback server; a context manager (also .start() / .close())."""

    def __init__(self, config: ServerConfig, faults: FaultPlan | None = None):
        root = Path(config.root).resolve()
        if not root.is_dir():
            raise InputError("is not a folder; serve a folder written by `wit-retrieval synth`", path=str(root))
        self.config = ServerConfig(root, config.host, config.port, config.rate_limit)
        self._plan = faults
        self._bucket = TokenBucket(config.rate_limit) if config.rate_limit else None
        self._stats = _Stats()
        self._fault_hits: Counter[str] = Counter()
        self._closing = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def root(self) -> Path:
        return self.config.root

    def start(self) -> LocalServer:
        """Bind and serve in a daemon thread (idempotent)."""
        if self._httpd is None:
            self._closing.clear()
            self._httpd = _HTTPServer((self.config.host, self.config.port), self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                name=f"wit-retrieval-server-{self.port}",
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port; held (timeout) requests are dropped."""
        if self._httpd is None:
            return
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def host_aliases(self) -> dict[str, str]:
        """{real host: this server's URL} for fetchers and downloaders."""
        return {host: self.url for host in REAL_HOSTS}

    def stats(self) -> dict:
        """Counters: requests, by_status, over_limit, faults by kind, attempts per path, bytes_sent."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero all counters (the fault plan's transient hit counts are kept)."""
        self._stats = _Stats()

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Replace the fault plan (None lifts all faults); transient hit counts restart."""
        with self._stats.lock:
            self._plan = plan
            self._fault_hits = Counter()

    def _count_request(self, path: str) -> None:
        with self._stats.lock:
            self._stats.requests += 1
            self._stats.attempts[path] += 1

    def _fault_for(self, path: str) -> FaultRule | None:
        plan = self._plan
        rule = plan.choose(path) if plan is not None else None
        if rule is None or rule.transient_attempts is None:
            return rule
        with self._stats.lock:
            self._fault_hits[path] += 1
            return rule if self._fault_hits[path] <= rule.transient_attempts else None

    def _resolve(self, path: str) -> Resource | tuple[int, str]:
        match = THUMB_RE.match(path)
        if match:
            return thumbnail_resource(self.root, match)
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root):
            return 403, "path traversal refused"
        if not target.is_file():
            return 404, "not found"
        return file_resource(target)


def serve_directory(
    root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultPlan | None = None,
    rate_limit: float | None = None,
) -> LocalServer:
    """Serve `root` at the real hosts' paths on loopback; returns the started LocalServer."""
    return LocalServer(ServerConfig(Path(root), host, port, rate_limit), faults).start()
