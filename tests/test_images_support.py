"""Shared helpers for the images tests (no tests here): a folder of Commons-style PNGs."""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path

from PIL import Image

UPLOAD = "https://upload.wikimedia.org"
AGENT = "wit-retrieval-tests/1.0 (https://example.org/wit-tests; tests@example.org)"


def commons_path(name: str) -> str:
    """The upload.wikimedia.org path of a Commons file name."""
    h = hashlib.md5(name.encode()).hexdigest()
    return f"wikipedia/commons/{h[0]}/{h[:2]}/{name}"


@functools.cache
def png_bytes(i: int, size=(32, 24)) -> bytes:
    """A small PNG; 64 distinct colours, cycled (drawing thousands is slower than serving them)."""
    i %= 64
    buf = io.BytesIO()
    Image.new("RGB", size, (i * 37 % 256, i * 11 % 256, 90)).save(buf, "PNG")
    return buf.getvalue()


def make_world(root: Path, n: int, prefix: str = "Img") -> list[str]:
    """Write n PNGs at Commons paths under root; return their real upload.wikimedia.org URLs."""
    urls = []
    for i in range(n):
        path = commons_path(f"{prefix}_{i:05d}.png")
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png_bytes(i))
        urls.append(f"{UPLOAD}/{path}")
    return urls
