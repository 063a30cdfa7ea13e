"""The released files' URLs, and a resumable, verified, atomic download of big files.

Files land under OUT at their URL path (OUT/gresearch/wit/..., OUT/enwiki/latest/...), the same
layout the miniature world uses, so a download folder can itself be served as a mirror.
A download goes to `NAME.part` with HTTP Range resume, is checked against Content-Length and
the published checksum (the dumps' md5sums files; a SHA256SUMS at the base when there is one),
then renamed into place. A `NAME.ok` note (size, mtime, checksum) lets a re-run skip a verified
file without hashing gigabytes again.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from .errors import ConfigError, DownloadError
from .io.shards import file_digest

WIT_BASE = "https://storage.googleapis.com/gresearch/wit/"
RELEASE_BASE = "https://storage.googleapis.com/gresearch/wit-retrieval/"
DUMPS_BASE = "https://dumps.wikimedia.org/"
DUMP_TABLES = ("page", "page_props", "redirect")
DATASETS = ("ei", "mmir", "wit", "dumps")
_DATED = re.compile(r"-\d{8}-")
SPLIT_ALIASES = {"validation": "val", "dev": "val"}
DEFAULT_USER_AGENT = (
    f"wit-retrieval/{__version__} (EI/MMIR benchmark toolkit; bulk download of the released files; "
    "pass --user-agent with your contact details)"
)


@dataclass(frozen=True)
class ReleaseFile:
    """One published file: its official URL and where it goes under the output folder."""

    url: str
    kind: str  # ei | mmir | wit | dumps

    @property
    def relpath(self) -> str:
        return urlsplit(self.url).path.lstrip("/")


def _shards(base: str, pattern: str, count: int) -> list[str]:
    return [base + pattern.format(i=i, n=count) for i in range(count)]


def release_files(dataset: str, *, splits=None, languages=None) -> list[ReleaseFile]:
    """The official files of `ei`, `mmir`, `wit` (splits train/val/test/sample) or `dumps` (per language)."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    splits = [SPLIT_ALIASES.get(s, s) for s in splits or ()]
    if dataset == "ei":
        return [ReleaseFile(RELEASE_BASE + "entity_image_dataset.tsv.gz", "ei")]
    if dataset == "dumps":
        if not languages:
            raise ConfigError("dumps need at least one --lang (e.g. --lang en --lang de)")
        return [ReleaseFile(f"{DUMPS_BASE}{lang}wiki/latest/{lang}wiki-latest-{table}.sql.gz", "dumps")
                for lang in languages for table in DUMP_TABLES]
    if dataset == "mmir":
        urls = {"train": _shards(RELEASE_BASE, "mmir_dataset_train-{i:05d}-of-{n:05d}.tsv.gz", 5),
                "val": [RELEASE_BASE + "mmir_dataset_validation.tsv.gz"],
                "test": [RELEASE_BASE + "mmir_dataset_test.tsv.gz"]}
    else:
        urls = {"train": _shards(WIT_BASE, "wit_v1.train.all-{i:05d}-of-{n:05d}.tsv.gz", 10),
                "val": _shards(WIT_BASE, "wit_v1.val.all-{i:05d}-of-{n:05d}.tsv.gz", 5),
                "test": _shards(WIT_BASE, "wit_v1.test.all-{i:05d}-of-{n:05d}.tsv.gz", 5),
                "sample": [WIT_BASE + "wit_v1.train.all-1percent_sample.tsv.gz"]}
    unknown = [s for s in splits if s not in urls]
    if unknown:
        raise ConfigError(f"{dataset} has no split {', '.join(unknown)}; splits: {', '.join(urls)}")
    chosen = splits or [s for s in ("train", "val", "test") if s in urls]
    return [ReleaseFile(url, dataset) for s in chosen for url in urls[s]]


@dataclass(frozen=True)
class DownloadConfig:
    """How to download: where to, from which mirror, and how politely."""

    out: Path
    base_url: str | None = None  # replaces scheme+host of every release URL (a mirror, a test server)
    host_aliases: dict[str, str] = field(default_factory=dict)
    user_agent: str = DEFAULT_USER_AGENT
    retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 60.0
    chunk_size: int = 1 << 20

    def route(self, url: str) -> str:
        """The URL actually requested: the mirror or host alias in place of the real host."""
        parts = urlsplit(url)
        if self.base_url:
            return self.base_url.rstrip("/") + parts.path
        alias = self.host_aliases.get(parts.netloc)
        return alias.rstrip("/") + parts.path if alias else url


@dataclass(frozen=True)
class DownloadResult:
    """What happened to one file."""

    url: str
    path: Path
    status: str  # downloaded | resumed | skipped
    size: int
    verification: str  # e.g. "sha256 ok", "md5 ok", "size only: no checksum published"


def _session(config: DownloadConfig):
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = config.user_agent
    return session


def _retry_after_s(value: str) -> float:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); 0 when absent."""
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


def _request(session, method: str, url: str, config: DownloadConfig, headers=None, stream=False):
    """One HTTP request with retries (backoff and jitter) on 5xx, 429 and connection errors."""
    import requests

    for attempt in range(config.retries + 1):
        wait = config.backoff_s * 2**attempt * (0.5 + random.random())
        try:
            response = session.request(method, url, headers=headers, stream=stream, timeout=config.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as exc:
            problem = f"{type(exc).__name__}"
        else:
            if response.status_code < 400 or response.status_code == 416:
                return response
            problem = f"HTTP {response.status_code} {response.reason}"
            if response.status_code != 429 and response.status_code < 500:
                response.close()
                raise DownloadError(f"{problem}: {url}")
            wait = max(wait, _retry_after_s(response.headers.get("Retry-After", "")))
            response.close()
        if attempt < config.retries:
            time.sleep(wait)
    raise DownloadError(f"{problem} after {config.retries + 1} attempts: {url}")


def fetch_text(session, url: str, config: DownloadConfig, *, missing_ok: bool = False) -> str | None:
    """A small text file (checksum lists); None when `missing_ok` and the server has none."""
    try:
        response = _request(session, "GET", url, config)
    except DownloadError as exc:
        if missing_ok and str(exc).startswith("HTTP 4"):
            return None
        raise
    return response.text


def parse_checksums(text: str) -> dict[str, str]:
    """`<hex>  <name>` lines (sha256sum / md5sum output) to {name: hex}; `*name` binary marks allowed."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def published_checksums(files: list[ReleaseFile], session, config: DownloadConfig) -> dict[str, tuple[str, str]]:
    """{relpath: (algorithm, hex)} from SHA256SUMS at the base (if any) and the dumps' md5sums files."""
    found: dict[str, tuple[str, str]] = {}
    dump_dirs = sorted({f.relpath.rsplit("/", 1)[0] for f in files if f.kind == "dumps"})
    for directory in dump_dirs:
        wiki = directory.split("/", 1)[0]
        text = fetch_text(session, config.route(f"{DUMPS_BASE}{directory}/{wiki}-latest-md5sums.txt"), config,
                          missing_ok=True)
        for name, digest in parse_checksums(text or "").items():
            # the list names dated files (enwiki-20240601-page.sql.gz); `latest` links to them
            found[f"{directory}/{_DATED.sub('-latest-', name, count=1)}"] = ("md5", digest)
    roots = {config.route(f"{urlsplit(f.url).scheme}://{urlsplit(f.url).netloc}/SHA256SUMS") for f in files}
    for url in sorted(roots):
        for name, digest in parse_checksums(fetch_text(session, url, config, missing_ok=True) or "").items():
            found[name.lstrip("./")] = ("sha256", digest)
    return found


def _verify(path: Path, size: int | None, checksum: tuple[str, str] | None) -> str:
    """Check size and checksum; returns a note, raises DownloadError on a mismatch."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{path.name}: {actual} bytes on disk, the server announced {size}")
    if checksum is None:
        return "size only: no checksum published"
    algorithm, expected = checksum
    got = file_digest(path, algorithm)
    if got != expected:
        raise DownloadError(f"{path.name}: {algorithm} mismatch (expected {expected}, got {got})")
    return f"{algorithm} ok"


def _note_matches(note: Path, dest: Path, size: int | None, checksum) -> str | None:
    """The verification note of an already verified, unchanged file, else None."""
    try:
        saved = json.loads(note.read_text())
    except (OSError, ValueError):
        return None
    stat = dest.stat()
    same = saved.get("size") == stat.st_size and saved.get("mtime_ns") == stat.st_mtime_ns
    same = same and (size is None or size == stat.st_size) and saved.get("checksum") == (list(checksum) if checksum else None)
    return saved.get("verification") if same else None


def _stream_into(session, url: str, part: Path, size: int | None, config: DownloadConfig, advance) -> None:
    """Fill `part` up to `size` bytes, resuming with Range after every interruption."""
    import requests

    for attempt in range(config.retries + 1):
        start = part.stat().st_size if part.exists() else 0
        if size is not None and start == size:
            return
        if size is not None and start > size:
            part.unlink()
            start = 0
        response = _request(session, "GET", url, config, headers={"Range": f"bytes={start}-"} if start else None,
                            stream=True)
        if response.status_code == 416 or (start and response.status_code != 206):
            response.close()
            part.unlink(missing_ok=True)  # the server cannot resume this: start over
            advance(-start)
            continue
        try:
            with response, open(part, "ab" if start else "wb") as f:
                for chunk in response.iter_content(config.chunk_size):
                    f.write(chunk)
                    advance(len(chunk))
            if size is None or part.stat().st_size == size:
                return
        except (requests.RequestException, OSError):
            pass  # interrupted: resume from what was written
        time.sleep(config.backoff_s * 2**attempt * random.random())
    raise DownloadError(f"{part.name}: incomplete after {config.retries + 1} attempts: {url}")


def _transfer(session, url: str, part: Path, name: str, size: int | None, checksum, config: DownloadConfig,
              on_start) -> tuple[int, str]:
    """Fill and verify the local `.part` file (resuming what it holds); returns (bytes resumed, note)."""
    resumed = part.stat().st_size if part.exists() else 0
    advance = on_start(name, size, resumed) if on_start else (lambda n: None)
    _stream_into(session, url, part, size, config, advance)
    try:
        return resumed, _verify(part, size, checksum)
    except DownloadError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{exc}; the download was removed, run again to fetch it anew") from None


def download_file(
    file: ReleaseFile,
    session,
    config: DownloadConfig,
    checksum: tuple[str, str] | None,
    on_start: Callable[[str, int | None, int], Callable[[int], None]] | None = None,
) -> DownloadResult:
    """Download one file into place (resumable, verified, atomic); skip it when already verified."""
    from .io import fs
    from .io.shards import write_json_atomic

    url = config.route(file.url)
    try:
        length = _request(session, "HEAD", url, config).headers.get("Content-Length")
    except DownloadError as exc:
        if not str(exc).startswith("HTTP 405"):
            raise
        length = None  # a server without HEAD: the size check is left to the transfer itself
    size = int(length) if length and length.isdigit() else None
    if fs.is_remote(config.out):
        return _download_to_store(file, session, config, checksum, url, size, on_start)
    dest = Path(config.out) / file.relpath
    part, note = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".ok")
    if dest.exists():
        known = _note_matches(note, dest, size, checksum)
        if known:
            return DownloadResult(file.url, dest, "skipped", dest.stat().st_size, known)
        try:
            verification = _verify(dest, size, checksum)
            status = "skipped"
        except DownloadError:
            dest.unlink()  # stale or damaged: fetch it again
            verification = None
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        resumed, verification = _transfer(session, url, part, dest.name, size, checksum, config, on_start)
        part.replace(dest)
        status = "resumed" if resumed else "downloaded"
    stat = dest.stat()
    write_json_atomic(note, {"url": file.url, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                             "checksum": list(checksum) if checksum else None, "verification": verification})
    return DownloadResult(file.url, dest, status, stat.st_size, verification)


def _download_to_store(file: ReleaseFile, session, config: DownloadConfig, checksum, url: str, size: int | None,
                       on_start) -> DownloadResult:
    """download_file into an object store: the transfer resumes in a local `.part` file (kept under
    the temp folder between runs), is verified there, then committed atomically (io.fs); a note
    `NAME.ok` beside the object records its verified size and checksum, so a re-run skips it."""
    import hashlib
    import tempfile

    from .io import fs
    from .io.shards import write_json_atomic

    dest, note = fs.join(config.out, file.relpath), fs.join(config.out, file.relpath + ".ok")
    if dest.exists():
        try:
            saved = json.loads(note.read_text())
        except (OSError, ValueError):
            saved = {}
        actual = dest.stat_size()
        if saved.get("size") == actual and (size is None or size == actual) and \
                saved.get("checksum") == (list(checksum) if checksum else None):
            return DownloadResult(file.url, dest, "skipped", actual, saved.get("verification"))
        dest.unlink()  # stale, damaged or unverified: fetch it again
    staging = Path(tempfile.gettempdir()) / "wit-retrieval-downloads" / hashlib.sha256(
        fs.redact(config.out).encode()).hexdigest()[:16]
    part = staging / (file.relpath + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    resumed, verification = _transfer(session, url, part, dest.name, size, checksum, config, on_start)
    actual = part.stat().st_size
    fs.commit_local_file(part, dest)
    part.unlink()
    write_json_atomic(note, {"url": file.url, "size": actual, "checksum": list(checksum) if checksum else None,
                             "verification": verification})
    return DownloadResult(file.url, dest, "resumed" if resumed else "downloaded", actual, verification)


def download_release(
    dataset: str, config: DownloadConfig, *, splits=None, languages=None, progress: bool = True
) -> list[DownloadResult]:
    """Download every file of a dataset (see `release_files`) with a progress bar; returns what happened."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from .progress import console

    files = release_files(dataset, splits=splits, languages=languages)
    session = _session(config)
    checksums = published_checksums(files, session, config)
    results = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) if progress else contextlib.nullcontext() as bar:

        def on_start(name: str, size: int | None, done: int):
            task = bar.add_task(name, total=size, completed=done)
            return lambda n: bar.update(task, advance=n)

        for file in files:
            checksum = checksums.get(file.relpath)
            results.append(download_file(file, session, config, checksum, on_start if progress else None))
    return results
