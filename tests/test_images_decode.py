"""Decoding and validation of fetched bytes: modes, bombs, resize, re-encoding."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from wit_retrieval.errors import ConfigError
from wit_retrieval.images.decode import DecodeConfig, ImageRejected, process_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_rgba_alpha_goes_onto_white():
    img = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))
    out = process_image(_encode(img, "PNG"), DecodeConfig(encode="png"))
    decoded = _decoded(out.data)
    assert decoded.mode == "RGB" and (out.width, out.height) == (40, 30)
    assert decoded.getpixel((10, 10)) == (255, 255, 255)
    assert decoded.getpixel((0, 0)) == (0, 0, 255)
    assert out.sha256 == hashlib.sha256(out.data).hexdigest() and out.ext == "png"


def test_palette_with_transparency_cmyk_and_16bit():
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.info["transparency"] = 1
    out = _decoded(process_image(_encode(pal, "PNG", transparency=1), DecodeConfig(encode="png")).data)
    assert out.getpixel((3, 3)) == (255, 255, 255)

    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = _decoded(process_image(_encode(cmyk, "JPEG"), DecodeConfig(encode="png")).data)
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60

    deep = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))
    out = _decoded(process_image(_encode(deep, "PNG"), DecodeConfig(encode="png")).data)
    assert out.getpixel((5, 5)) == (255, 255, 255)


def test_resize_modes():
    data = _encode(Image.new("RGB", (400, 200), (9, 9, 9)), "PNG")
    keep = process_image(data, DecodeConfig(resize="keep-ratio", size=100))
    assert (keep.width, keep.height) == (100, 50) and keep.ext == "jpg"
    crop = process_image(data, DecodeConfig(resize="center-crop", size=64, encode="webp"))
    assert (crop.width, crop.height) == (64, 64) and _decoded(crop.data).format == "WEBP"
    small = process_image(_encode(Image.new("RGB", (20, 10)), "PNG"), DecodeConfig(resize="keep-ratio", size=100))
    assert (small.width, small.height) == (20, 10)  # never upscaled


def test_original_bytes_are_kept():
    data = _encode(Image.new("RGB", (12, 12), (1, 2, 3)), "PNG")
    out = process_image(data, DecodeConfig(encode="original"))
    assert out.data == data and out.ext == "png" and out.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(ConfigError):
        DecodeConfig(encode="original", resize="keep-ratio")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>Error</body></html>", "not_an_image"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "decode_error"),
        (b"plain text, not an image at all", "not_an_image"),
    ],
)
def test_rejections_are_classified(data, error):
    with pytest.raises(ImageRejected) as info:
        process_image(data, DecodeConfig())
    assert info.value.error == error


def test_corrupt_body_and_pixel_cap():
    good = _encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageRejected) as info:
        process_image(good[:20] + bytes(len(good) - 20), DecodeConfig())
    assert info.value.error == "decode_error"
    with pytest.raises(ImageRejected) as info:
        process_image(good, DecodeConfig(max_pixels=64 * 63))
    assert info.value.error == "too_many_pixels"
