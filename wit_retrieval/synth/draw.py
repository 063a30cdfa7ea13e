"""Images of the miniature world: entity icons (shape x colour x pattern) and composed scenes.

Icons stay tellable apart at 32-64 px: twelve shapes, twelve far-apart colours, and
patterns with strokes about an eighth of the icon wide. Scenes paste 1-3 icons onto a
setting's background at the places the caption's relation says.
"""

from __future__ import annotations

import io
import math
import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageOps

from . import lexicon as lx
from .world import Scene, Visual

BACKGROUND = (246, 246, 242)
SS = 2  # draw at twice the size, then downsample: smooth edges at small sizes


def _polygon(shape: str, s: float) -> list[tuple[float, float]] | None:
    """Outline of a polygonal shape inside an s x s box (None for round shapes)."""
    c, r = s / 2, s * 0.44

    def regular(n, start=-math.pi / 2, radius=r):
        return [(c + radius * math.cos(start + 2 * math.pi * k / n), c + radius * math.sin(start + 2 * math.pi * k / n))
                for k in range(n)]

    if shape == "Star":
        outer, inner = regular(5), regular(5, -math.pi / 2 + math.pi / 5, r * 0.45)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "Diamond":
        return [(c, c - r), (c + r * 0.7, c), (c, c + r), (c - r * 0.7, c)]
    if shape == "Triangle":
        return regular(3, radius=r * 1.05)
    if shape == "Square":
        return regular(4, -math.pi / 4, r * 1.2)
    if shape == "Hexagon":
        return regular(6, 0)
    if shape == "Cross":
        a, b = r * 0.33, r
        return [(c - a, c - b), (c + a, c - b), (c + a, c - a), (c + b, c - a), (c + b, c + a), (c + a, c + a),
                (c + a, c + b), (c - a, c + b), (c - a, c + a), (c - b, c + a), (c - b, c - a), (c - a, c - a)]
    if shape == "Arrow":
        return [(c - r, c - r * 0.25), (c + r * 0.1, c - r * 0.25), (c + r * 0.1, c - r * 0.7), (c + r, c),
                (c + r * 0.1, c + r * 0.7), (c + r * 0.1, c + r * 0.25), (c - r, c + r * 0.25)]
    if shape == "Shield":
        return [(c - r * 0.8, c - r), (c + r * 0.8, c - r), (c + r * 0.8, c + r * 0.1), (c, c + r),
                (c - r * 0.8, c + r * 0.1)]
    if shape == "Heart":
        pts = [(16 * math.sin(t) ** 3, 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
               for t in (2 * math.pi * k / 48 for k in range(48))]
        return [(c + x * r / 17, c - y * r / 17 - r * 0.05) for x, y in pts]
    return None


def _shape_mask(shape: str, s: int) -> Image.Image:
    """An L-mode mask of the shape (255 inside)."""
    mask = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(mask)
    c, r = s / 2, s * 0.44
    poly = _polygon(shape, s)
    if poly:
        d.polygon(poly, fill=255)
    elif shape == "Disc":
        d.ellipse((c - r, c - r, c + r, c + r), fill=255)
    elif shape == "Ring":
        d.ellipse((c - r, c - r, c + r, c + r), fill=255)
        d.ellipse((c - r * 0.5, c - r * 0.5, c + r * 0.5, c + r * 0.5), fill=0)
    elif shape == "Crescent":
        d.ellipse((c - r, c - r, c + r, c + r), fill=255)
        d.ellipse((c - r * 0.35, c - r * 1.05, c + r * 1.25, c + r * 0.75), fill=0)
    return mask


def _pattern(pattern: str, s: int, colour, accent) -> Image.Image:
    """The fill of an icon: its colour with the pattern in the accent colour."""
    img = Image.new("RGB", (s, s), colour)
    d = ImageDraw.Draw(img)
    w = max(2, s // 16)  # stroke width: about an eighth of the icon at 2x supersampling
    step = max(4, s // 6)
    if pattern == "stripes":
        for y in range(0, s, step):
            d.rectangle((0, y, s, y + w), fill=accent)
    elif pattern == "bars":
        for x in range(0, s, step):
            d.rectangle((x, 0, x + w, s), fill=accent)
    elif pattern == "diagonal":
        for k in range(-s, s, step):
            d.line((k, 0, k + s, s), fill=accent, width=w)
    elif pattern == "dots":
        for y in range(step // 2, s, step):
            for x in range(step // 2, s, step):
                d.ellipse((x - w, y - w, x + w, y + w), fill=accent)
    elif pattern == "checks":
        for y in range(0, s, step):
            for x in range(0, s, step):
                if (x // step + y // step) % 2:
                    d.rectangle((x, y, x + step - 1, y + step - 1), fill=accent)
    elif pattern == "grid":
        for k in range(0, s, step):
            d.rectangle((k, 0, k + w // 2, s), fill=accent)
            d.rectangle((0, k, s, k + w // 2), fill=accent)
    elif pattern == "rings":
        for radius in range(step, s, step):
            d.ellipse((s / 2 - radius, s / 2 - radius, s / 2 + radius, s / 2 + radius), outline=accent, width=w)
    return img


@lru_cache(maxsize=8192)
def icon(visual: Visual, size: int) -> Image.Image:
    """The entity's icon as RGBA (transparent outside the shape), size x size."""
    s = size * SS
    shape = lx.SHAPES[visual.shape][0]
    colour = lx.COLOURS[visual.colour][2]
    fill = _pattern(lx.PATTERNS[visual.pattern], s, colour, lx.ACCENTS[visual.accent])
    mask = _shape_mask(shape, s)
    out = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    out.paste(fill, (0, 0), mask)
    # A thin dark outline keeps light icons visible on light backgrounds.
    edge = ImageDraw.Draw(out)
    if (poly := _polygon(shape, s)) is not None:
        edge.polygon(poly, outline=(40, 40, 40, 255), width=max(1, s // 64))
    return out.resize((size, size), Image.LANCZOS)


def entity_image(visual: Visual, size: int) -> bytes:
    """PNG bytes of an entity's canonical image: its icon on a light background."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    ic = icon(visual, size)
    img.paste(ic, (0, 0), ic)
    return _png(img)


_SETTING_COLOURS = {
    "dusk": ((250, 140, 60), (70, 40, 110)), "night": ((10, 15, 45), (30, 35, 80)),
    "snow": ((235, 240, 250), (200, 210, 225)), "forest": ((120, 170, 110), (30, 80, 35)),
    "desert": ((250, 220, 150), (220, 170, 90)), "sea": ((150, 200, 240), (20, 80, 150)),
    "fog": ((200, 200, 200), (170, 170, 175)), "dawn": ((255, 200, 210), (255, 235, 160)),
    "meadow": ((170, 215, 245), (110, 190, 70)), "city": ((180, 190, 200), (90, 95, 105)),
}


@lru_cache(maxsize=64)
def background(setting: str, size: int) -> Image.Image:
    """The setting's background: a vertical gradient plus a few marks (stars, trees, flakes...)."""
    top, bottom = _SETTING_COLOURS[setting]
    grad = Image.linear_gradient("L").resize((size, size))
    img = ImageOps.colorize(grad, top, bottom)
    d = ImageDraw.Draw(img)
    rng = random.Random(f"background:{setting}")
    if setting in ("night", "snow"):
        dot = (255, 255, 230) if setting == "night" else (255, 255, 255)
        for _ in range(size // 3):
            x, y = rng.randrange(size), rng.randrange(size)
            d.ellipse((x, y, x + max(1, size // 100), y + max(1, size // 100)), fill=dot)
    elif setting == "forest":
        for k in range(6):
            x = k * size // 5
            d.polygon([(x - size // 12, size), (x, size * 2 // 3), (x + size // 12, size)], fill=(20, 60, 25))
    elif setting == "city":
        for k in range(7):
            h = rng.randrange(size // 8, size // 3)
            d.rectangle((k * size // 7, size - h, k * size // 7 + size // 9, size), fill=(70, 70, 80))
    elif setting == "sea":
        for y in range(size * 2 // 3, size, max(3, size // 16)):
            d.line((0, y, size, y), fill=(200, 230, 255), width=1)
    return img


def _slots(scene: Scene, size: int, rng: random.Random) -> list[tuple[float, float]]:
    """Icon centres (fractions of the image) for the scene's entities, as its relation says."""
    n, rel = len(scene.entities), scene.relation
    if n == 1:
        return [(0.5, 0.5)]
    pair = {"left of": [(0.27, 0.5), (0.73, 0.5)], "right of": [(0.73, 0.5), (0.27, 0.5)],
            "above": [(0.5, 0.27), (0.5, 0.73)], "below": [(0.5, 0.73), (0.5, 0.27)],
            "next to": [(0.27, 0.5), (0.73, 0.5)]}[rel]
    if rel == "next to" and rng.random() < 0.5:
        pair = pair[::-1]
    if n == 2:
        return pair
    if rel in ("above", "below"):  # the third entity stands to the right of the column
        return [(x - 0.17, y) for x, y in pair] + [(0.78, 0.5)]
    return [(x, y + 0.17) for x, y in pair] + [(0.5, 0.22)]


def scene_image(scene: Scene, visuals: list[Visual], size: int) -> bytes:
    """PNG bytes of a scene: its entities' icons placed on the setting's background."""
    rng = random.Random(f"scene:{scene.index}")
    img = background(scene.setting, size).copy()
    base = int(size * (0.3 if len(scene.entities) == 3 else 0.36))
    for k, (fx, fy) in enumerate(_slots(scene, size, rng)):
        s = int(base * 1.3) if (k == 0 and scene.larger) else base
        ic = icon(visuals[k], s)
        jx, jy = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
        x, y = int((fx + jx) * size - s / 2), int((fy + jy) * size - s / 2)
        img.paste(ic, (max(0, min(size - s, x)), max(0, min(size - s, y))), ic)
    return _png(img)


def locator_map(seed_text: str, size: int) -> bytes:
    """PNG bytes of a plain locator map: a beige land shape with a red dot (rows without captions)."""
    rng = random.Random(f"map:{seed_text}")
    img = Image.new("RGB", (size, size), (170, 205, 230))
    d = ImageDraw.Draw(img)
    pts = [(size / 2 + size * 0.4 * math.cos(a) * rng.uniform(0.6, 1.0),
            size / 2 + size * 0.4 * math.sin(a) * rng.uniform(0.6, 1.0)) for a in
           (2 * math.pi * k / 9 for k in range(9))]
    d.polygon(pts, fill=(235, 225, 190), outline=(120, 110, 90))
    x, y = rng.uniform(0.35, 0.65) * size, rng.uniform(0.35, 0.65) * size
    r = max(2, size // 30)
    d.ellipse((x - r, y - r, x + r, y + r), fill=(210, 20, 20))
    return _png(img)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # zlib level 1: 4x faster, files ~20% larger
    return buf.getvalue()
