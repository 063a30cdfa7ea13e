"""Stable identifiers: image ids are a hash of the normalised image URL."""

from __future__ import annotations

import hashlib
from urllib.parse import quote, unquote, urlsplit, urlunsplit


def normalize_url(url: str) -> str:
    """Canonical form of an image URL: https, lower-case host, one percent-encoding.

    WIT writes some URLs percent-encoded and others raw; released files may differ again.
    Decoding then re-encoding with one safe set makes both spell the same URL.
    """
    url = url.strip()
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("http", "https", "") else parts.scheme
    path = quote(unquote(parts.path), safe="/:@!$&'()*+,;=-._~")
    return urlunsplit((scheme, parts.netloc.lower(), path, parts.query, ""))


def image_id(url: str) -> str:
    """The corpus `image_id` of an image URL: 16 hex digits of SHA-256 of the normalised URL."""
    return hashlib.sha256(normalize_url(url).encode("utf-8")).hexdigest()[:16]


def query_id(split: str, image_url: str, page_url: str, text: str) -> str:
    """A stable query id from what identifies a WIT row's reference description."""
    key = "\x1f".join((split, normalize_url(image_url), page_url, text))
    return f"{split}-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
