"""Deterministic file writing for the synth world: gzip without timestamps, Commons and wiki URLs."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from ..io.shards import atomic_path

# The same safe set as ids.normalize_url, so our URLs are already in normal form.
URL_SAFE = "/:@!$&'()*+,;=-._~"
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9/:@!$&'()*+,;=\-._~]")

# progress(stage, advance, stage_total): how generate_world reports work done.
ProgressFn = Callable[[str, int, int], None]


def commons_path(file_name: str) -> str:
    """Path of a Commons file under the upload host: wikipedia/commons/{h0}/{h0h1}/{name}."""
    name = file_name.replace(" ", "_")
    h = hashlib.md5(name.encode("utf-8")).hexdigest()
    return f"wikipedia/commons/{h[0]}/{h[:2]}/{name}"


def commons_url(file_name: str) -> str:
    """The real upload.wikimedia.org URL of a Commons file (percent-encoded like WIT)."""
    path = commons_path(file_name)
    if _NEEDS_QUOTING.search(path):  # most names are plain ASCII: skip the slow quote()
        path = quote(path, safe=URL_SAFE)
    return "https://upload.wikimedia.org/" + path


@lru_cache(maxsize=1 << 16)
def page_url(lang: str, title: str) -> str:
    """The real Wikipedia URL of a page title."""
    return f"https://{lang}.wikipedia.org/wiki/" + quote(title.replace(" ", "_"), safe=URL_SAFE)


@contextlib.contextmanager
def gzip_text(path: Path, compresslevel: int = 5) -> Iterator[io.TextIOWrapper]:
    """A UTF-8 text stream into a gzip file written atomically, with no name or time in its header."""
    # filename="" and mtime=0 keep the temp name and the clock out of the bytes.
    with (atomic_path(path) as tmp, open(tmp, "wb") as raw,
          gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0) as gz):
        # Big buffers: zlib is much faster on 1 MiB blocks than on the 8 KiB ones TextIOWrapper sends.
        buffered = io.BufferedWriter(gz, buffer_size=1 << 20)
        text = io.TextIOWrapper(buffered, encoding="utf-8", newline="")
        yield text
        text.flush()
        text.detach()
        buffered.flush()
        buffered.detach()
    os.chmod(path, 0o644)  # mkstemp made it private; these are files to serve and share


def write_file(path: Path, data: bytes) -> None:
    """Write bytes via a temp name then rename (cheaper than mkstemp for thousands of images)."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        tmp.write_bytes(data)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
    os.replace(tmp, path)

