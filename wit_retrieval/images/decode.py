"""Validate, normalise, resize and re-encode fetched image bytes with Pillow.

Every failure is an `ImageRejected` carrying an error class (`not_an_image`, `decode_error`,
`too_many_pixels`, `unsupported_format`, `empty`) that becomes a manifest row; nothing here
raises anything else.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from ..errors import ConfigError

RESIZE_MODES = ("none", "keep-ratio", "center-crop")
ENCODINGS = ("jpeg", "webp", "png", "original")
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif", "BMP": "bmp"}
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
_MARKUP_PREFIXES = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"{", b"<svg")


_RESAMPLE = 3  # PIL.Image.Resampling.BICUBIC: close to Lanczos for photos, about half the cost


class ImageRejected(Exception):
    """Bytes that are not a usable image; `error` is the manifest's error class."""

    def __init__(self, error: str, detail: str = ""):
        super().__init__(f"{error}: {detail}" if detail else error)
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class DecodeConfig:
    """How fetched images are checked and stored."""

    resize: str = "none"  # none | keep-ratio (longest side <= size) | center-crop (size x size)
    size: int = 512
    encode: str = "jpeg"  # jpeg | webp | png | original (the fetched bytes, unchanged)
    quality: int = 90
    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb threshold

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"unknown resize mode {self.resize!r}; use one of: {', '.join(RESIZE_MODES)}")
        if self.encode not in ENCODINGS:
            raise ConfigError(f"unknown encoding {self.encode!r}; use one of: {', '.join(ENCODINGS)}")
        if self.encode == "original" and self.resize != "none":
            raise ConfigError("--encode original keeps the fetched bytes, so it needs --resize none")
        if self.size < 1 or not 1 <= self.quality <= 100 or self.max_pixels < 1:
            raise ConfigError("size and max_pixels must be positive and quality within 1..100")


@dataclass(frozen=True)
class StoredImage:
    """An image ready for a shard: its bytes, file extension, size and sha256 of the bytes."""

    data: bytes
    ext: str
    width: int
    height: int
    sha256: str


def _draft_size(width: int, height: int, resize: str, size: int) -> tuple[int, int] | None:
    """The smallest size a resize needs, so JPEG decoding can scale down in the DCT (much faster)."""
    if resize == "keep-ratio":
        scale = size / max(width, height)
    elif resize == "center-crop":
        scale = size / min(width, height)
    else:
        return None
    return (max(1, int(width * scale) + 1), max(1, int(height * scale) + 1)) if scale < 0.5 else None


def _open_checked(data: bytes, max_pixels: int, resize: str = "none", size: int = 0):
    """Open and verify `data`, refusing bombs before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected("empty", "zero bytes")
    head = data[:512].lstrip().lower()
    if b"<svg" in head:
        raise ImageRejected("unsupported_format", "SVG (fetch PNG renderings with --thumb-width)")
    if head.startswith(_MARKUP_PREFIXES):
        raise ImageRejected("not_an_image", "markup instead of an image")
    try:
        with warnings.catch_warnings():
            # our own max_pixels check below decides; Pillow's hard limit still raises
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            if probe.width * probe.height > max_pixels:
                raise ImageRejected("too_many_pixels", f"{probe.width}x{probe.height}")
            probe.verify()
            img = Image.open(io.BytesIO(data))
            draft = _draft_size(img.width, img.height, resize, size) if img.format == "JPEG" else None
            if draft is not None:
                img.draft("RGB", draft)
            img.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        # an image signature that does not parse is a damaged image, anything else is not one
        error = "decode_error" if data.startswith(_IMAGE_MAGIC) or data[8:12] == b"WEBP" else "not_an_image"
        raise ImageRejected(error, str(exc)[:200]) from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise ImageRejected("decode_error", str(exc)[:200]) from None
    return img


def to_rgb(img):
    """RGB of any Pillow mode: alpha composited onto white, CMYK and 16-bit scaled to 8-bit."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype("uint8"), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def resize_image(img, mode: str, size: int):
    """Resize per `mode`: keep-ratio shrinks the longest side to `size`; center-crop gives size x size."""

    if mode == "none":
        return img
    w, h = img.size
    if mode == "keep-ratio":
        scale = size / max(w, h)
        if scale >= 1:
            return img
        return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), _RESAMPLE, reducing_gap=3.0)
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), _RESAMPLE, reducing_gap=3.0 if scale < 1 else None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def process_image(data: bytes, config: DecodeConfig) -> StoredImage:
    """Validate `data` and turn it into the bytes to store (or raise ImageRejected)."""
    img = _open_checked(data, config.max_pixels, config.resize, config.size)
    if config.encode == "original":
        ext = EXTENSIONS.get(img.format or "", (img.format or "bin").lower())
        return StoredImage(data, ext, img.width, img.height, hashlib.sha256(data).hexdigest())
    try:
        out_img = resize_image(to_rgb(img), config.resize, config.size)
        buf = io.BytesIO()
        if config.encode == "png":
            out_img.save(buf, "PNG", optimize=False)
        else:
            fmt = "JPEG" if config.encode == "jpeg" else "WEBP"
            out_img.save(buf, fmt, quality=config.quality)
    except (OSError, ValueError) as exc:
        raise ImageRejected("decode_error", str(exc)[:200]) from None
    stored = buf.getvalue()
    ext = {"jpeg": "jpg", "webp": "webp", "png": "png"}[config.encode]
    return StoredImage(stored, ext, out_img.width, out_img.height, hashlib.sha256(stored).hexdigest())
