"""ids.image_id / ids.query_id for whole batches, with a fast path for already-normal URLs.

`ids.normalize_url` parses and re-quotes every URL (urllib), which costs more than linking a
row. A URL of https scheme, lower-case host, no query or fragment, no `%` and only
characters `quote` leaves alone is its own normal form, so its hash is computed directly;
every other URL goes through `ids.normalize_url`. tests/test_build_ids.py checks both
paths against `ids` itself.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote_to_bytes

from ..ids import normalize_url

NORMAL_FORM = re.compile(r"https://[a-z0-9.\-]+/[A-Za-z0-9/:@!$&'()*+,;=\-._~]*")
# percent escapes of non-ASCII bytes, upper-case: quote(unquote(x)) gives them back if they are UTF-8
_ENCODED = re.compile(r"https://[a-z0-9.\-]+/(?:[A-Za-z0-9/:@!$&'()*+,;=\-._~]|%[89A-F][0-9A-F])*")


def normal_url(url: str) -> str:
    """normalize_url(url), skipping the parse when the URL is already normal."""
    if NORMAL_FORM.fullmatch(url):
        return url
    if _ENCODED.fullmatch(url):
        try:
            unquote_to_bytes(url).decode("utf-8")
            return url
        except UnicodeDecodeError:
            pass
    return normalize_url(url)


def image_id(url: str) -> str:
    """Equal to ids.image_id(url)."""
    return normal_image_id(normal_url(url))


def normal_image_id(normal: str) -> str:
    """ids.image_id of a URL already in normal form."""
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()[:16]


def query_id(split: str, normal_image_url: str, page_url: str, text: str) -> str:
    """Equal to ids.query_id(split, url, page_url, text) given normal_url(url)."""
    key = "\x1f".join((split, normal_image_url, page_url, text))
    return f"{split}-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
