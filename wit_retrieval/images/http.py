"""Polite HTTP for image fetching: routing and allow-lists, one pooled session, classified results.

Every request goes through `HttpFetcher.fetch(url)`, which never raises for a per-URL problem:
it returns a `FetchResult` whose `error` is a class (`timeout`, `connection`, `truncated`,
`http_429`, `http_5xx`, `http_404`, `http_4xx`, `too_large`, `disallowed_host`,
`redirect_loop`, ...) and whether a later retry may succeed. Redirects are followed by hand so
each hop is checked against the allow-list, rate-limited and counted.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, urljoin, urlsplit

from ..errors import ConfigError
from .ratelimit import HostLimiter, HostPolicy

WIKIMEDIA_UPLOAD = "upload.wikimedia.org"
WIKIMEDIA_DOMAINS = ("wikimedia.org", "wikipedia.org", "wikidata.org", "mediawiki.org", "wikimediacommons.org")
RETRYABLE_ERRORS = frozenset({"timeout", "connection", "truncated", "http_429", "http_5xx", "empty"})
_CONTACT = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+|https?://[\w-]+(\.[\w-]+)+")
_THUMB_PATH = re.compile(r"^/wikipedia/([\w-]+)/([0-9a-f])/([0-9a-f]{2})/([^/]+)$")


def _version() -> str:
    from .. import __version__

    return __version__


@dataclass(frozen=True)
class HttpConfig:
    """How the fetcher talks to hosts. `rate` is the global per-host budget (requests/s)."""

    user_agent: str = ""
    rate: float | None = 10.0
    concurrency: int = 16
    timeout: float = 30.0  # whole request, body included (a trickling server is a timeout)
    connect_timeout: float = 10.0
    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0  # a longer Retry-After ends the URL as a retryable failure
    max_bytes: int = 50_000_000
    max_redirects: int = 5
    thumb_width: int | None = None
    allow_hosts: tuple[str, ...] = ()
    host_aliases: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "allow_hosts", tuple(h.strip().lower() for h in self.allow_hosts if h.strip()))
        object.__setattr__(self, "host_aliases", tuple(sorted(dict(self.host_aliases).items())))
        if self.rate is not None and self.rate < 0:
            raise ConfigError("--rate must be >= 0 requests/s (0: unlimited)")
        if self.concurrency < 1 or self.timeout <= 0 or self.connect_timeout <= 0 or self.max_retries < 0:
            raise ConfigError("concurrency and timeouts must be positive and max-retries >= 0")
        if self.thumb_width is not None and self.thumb_width < 1:
            raise ConfigError("--thumb-width must be a positive number of pixels")
        for host, base in self.host_aliases:
            target = urlsplit(base)
            if target.scheme not in ("http", "https") or not target.hostname:
                raise ConfigError(f"--host-alias {host}={base}: the target must be an http(s) URL")
            if not self.allows(target.hostname, target.port, explicit_only=True):
                raise ConfigError(f"--host-alias {host}={base}: also allow the target with "
                                  f"--allow-host {target.hostname}")

    @property
    def full_user_agent(self) -> str:
        """The User-Agent sent: the user's agent (with contact), then this library and version."""
        own = f"wit-retrieval/{_version()}"
        return f"{self.user_agent.strip()} {own}" if self.user_agent.strip() else own

    @property
    def has_contact(self) -> bool:
        """Whether the user's agent names a contact (an email address or a URL)."""
        return bool(_CONTACT.search(self.user_agent))

    def alias_for(self, host: str) -> str | None:
        """The base URL a host is aliased to, if any."""
        return dict(self.host_aliases).get(host)

    def allows(self, host: str, port: int | None = None, *, explicit_only: bool = False) -> bool:
        """Whether a host may be contacted: the Wikimedia upload host, or one named by --allow-host.

        Private, loopback and link-local addresses pass only when named explicitly (never by
        the default or a `*.domain` pattern), so a redirect cannot reach the local network.
        """
        host = (host or "").lower().rstrip(".")
        named = {host, f"{host}:{port}" if port else host}
        if named & set(self.allow_hosts):
            return True
        if _is_private(host):
            return False
        if not explicit_only and host == WIKIMEDIA_UPLOAD:
            return True
        return any(p.startswith("*.") and host.endswith(p[1:]) for p in self.allow_hosts)


def _is_private(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local or address.is_reserved


def is_wikimedia(host: str) -> bool:
    """Whether a host belongs to Wikimedia (its User-Agent policy applies)."""
    host = (host or "").lower()
    return any(host == d or host.endswith("." + d) for d in WIKIMEDIA_DOMAINS)


def check_politeness(config: HttpConfig, hosts: set[str]) -> None:
    """Refuse (ConfigError) to contact a Wikimedia host without a User-Agent that names a contact."""
    contacted = sorted(h for h in hosts if is_wikimedia(h) and config.alias_for(h) is None)
    if contacted and not config.has_contact:
        raise ConfigError(
            f"{contacted[0]} requires a descriptive User-Agent with contact details "
            "(https://meta.wikimedia.org/wiki/User-Agent_policy); pass e.g. "
            "--user-agent 'my-lab-wit-fetch/1.0 (https://lab.example.org; me@example.org)'")


def thumbnail_url(url: str, width: int | None) -> str:
    """The Wikimedia thumbnail URL of an original upload URL (SVG, TIFF, PDF as rendered raster)."""
    if not width:
        return url
    parts = urlsplit(url)
    if parts.hostname != WIKIMEDIA_UPLOAD:
        return url
    match = _THUMB_PATH.match(parts.path)
    if not match:  # already a thumbnail, an archive path, or not an upload path
        return url
    project, h0, h01, name = match.groups()
    lower = unquote(name).lower()
    if lower.endswith(".svg"):
        thumb = f"{width}px-{name}.png"
    elif lower.endswith((".tif", ".tiff")):
        thumb = f"lossy-page1-{width}px-{name}.jpg"
    elif lower.endswith((".pdf", ".djvu")):
        thumb = f"page1-{width}px-{name}.jpg"
    else:
        thumb = f"{width}px-{name}"
    path = f"/wikipedia/{project}/thumb/{h0}/{h01}/{name}/{thumb}"
    return parts._replace(path=path).geturl()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class FetchResult:
    """Outcome of fetching one URL: bytes, or an error class and whether a retry may succeed."""

    data: bytes | None = None
    error: str | None = None
    retryable: bool = False
    detail: str = ""
    attempts: int = 1
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _failed(error: str, detail: str = "", retry_after: float | None = None) -> FetchResult:
    return FetchResult(error=error, retryable=error in RETRYABLE_ERRORS, detail=detail[:200],
                       retry_after=retry_after)


def status_error(status: int) -> str:
    """The error class of a non-success HTTP status."""
    if status == 429:
        return "http_429"
    if status == 408:
        return "timeout"
    if status in (404, 410):
        return "http_404"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"


class HttpFetcher:
    """One worker's pooled session with per-host limits, retries, backoff and manual redirects."""

    def __init__(self, config: HttpConfig, rate: float | None):
        import requests
        from requests.adapters import HTTPAdapter

        self.config = config
        self.limiter = HostLimiter(HostPolicy(rate=rate or None, concurrency=config.concurrency))
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=config.concurrency, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": config.full_user_agent, "Accept": "image/*,*/*;q=0.5"})
        if not any(k.lower().endswith("_proxy") for k in os.environ):
            self.session.trust_env = False  # else requests re-reads the environment on every request
        self._rng = random.Random()

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def route(self, url: str) -> tuple[str | None, str]:
        """(URL to request, host key) after aliasing; None with an error class when not allowed."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        base = self.config.alias_for(host)
        if base is not None:
            target = base.rstrip("/") + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            tparts = urlsplit(target)
            if not self.config.allows(tparts.hostname or "", tparts.port, explicit_only=True):
                return None, "disallowed_host"
            return target, tparts.netloc
        if parts.scheme not in ("http", "https") or not self.config.allows(host, parts.port):
            return None, "disallowed_host"
        if is_wikimedia(host) and not self.config.has_contact:
            return None, "user_agent_policy"
        return url, parts.netloc

    def fetch(self, url: str) -> FetchResult:
        """Fetch a URL with retries; honours Retry-After by pausing the host for all threads."""
        result = _failed("connection")
        for attempt in range(self.config.max_retries + 1):
            result = self._fetch_once(url)
            if result.ok or not result.retryable or attempt == self.config.max_retries:
                break
            wait = result.retry_after
            if wait is not None and wait > self.config.max_retry_after:
                break
            if wait is None:  # exponential backoff with jitter, so threads do not retry in step
                wait = min(self.config.backoff_max, self.config.backoff_base * 2**attempt)
                wait *= 0.5 + self._rng.random()
            host = urlsplit(self.route(url)[0] or url).netloc
            if result.error in ("http_429", "http_5xx"):
                self.limiter.pause(host, wait)  # the host asked everyone to slow down
            else:
                time.sleep(wait)
        return FetchResult(result.data, result.error, result.retryable, result.detail, attempt + 1,
                           result.retry_after)

    def _fetch_once(self, url: str) -> FetchResult:
        seen = {url}
        current = url
        for _ in range(self.config.max_redirects + 1):
            target, host = self.route(current)
            if target is None:
                return _failed(host, current)
            result, location = self._request(target, host)
            if location is None:
                return result
            current = urljoin(current, location)
            if current in seen:
                return _failed("redirect_loop", current)
            seen.add(current)
        return _failed("redirect_loop", f"more than {self.config.max_redirects} redirects")

    def _request(self, target: str, host: str) -> tuple[FetchResult, str | None]:
        """One HTTP exchange: (result, None), or (_, Location) for a redirect to follow."""
        import requests

        cfg = self.config
        with self.limiter.request(host):
            start = time.monotonic()
            try:
                response = self.session.get(target, stream=True, allow_redirects=False,
                                            timeout=(cfg.connect_timeout, cfg.timeout))
            except requests.exceptions.Timeout as exc:
                return _failed("timeout", str(exc)), None
            except requests.exceptions.RequestException as exc:
                return _failed("connection", str(exc)), None
            try:
                return self._response(response, start)
            except requests.exceptions.ChunkedEncodingError as exc:
                return _failed("truncated", str(exc)), None
            except requests.exceptions.ConnectionError as exc:
                error = "timeout" if "timed out" in str(exc).lower() else "connection"
                return _failed(error, str(exc)), None
            except requests.exceptions.RequestException as exc:
                return _failed("connection", str(exc)), None
            finally:
                response.close()

    def _response(self, response, start: float) -> tuple[FetchResult, str | None]:
        cfg = self.config
        status = response.status_code
        if 300 <= status < 400 and response.headers.get("Location"):
            return _failed("redirect_loop"), quote(response.headers["Location"], safe=":/?#[]@!$&'()*+,;=%-._~")
        if status != 200 and status != 203:
            error = status_error(status) if status >= 300 else "empty"
            return _failed(error, f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After"))), None
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
            return _failed("too_large", f"Content-Length {declared}"), None
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml", "application/json"):
            return _failed("not_an_image", f"Content-Type {kind}"), None
        chunks, total = [], 0
        for chunk in response.iter_content(65536):
            total += len(chunk)
            if total > cfg.max_bytes:
                return _failed("too_large", f"more than {cfg.max_bytes} bytes"), None
            if time.monotonic() - start > cfg.timeout:
                return _failed("timeout", f"body not complete after {cfg.timeout}s"), None
            chunks.append(chunk)
        if declared and declared.isdigit() and total < int(declared):
            return _failed("truncated", f"{total} of {declared} bytes"), None
        if total == 0:
            return _failed("empty", "zero bytes"), None
        return FetchResult(data=b"".join(chunks)), None
