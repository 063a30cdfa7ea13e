"""Scenes: 1-3 entities in a relation and a setting, with captions that name them.

Captions are built so masked text alone cannot identify a scene: every relation x setting
pair recurs across many scenes with different entities; only the entities' images tell
the scenes apart.
"""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from itertools import accumulate

from . import lexicon as lx
from .world import Caption, Entity, Mention, Scene, WorldConfig, split_assigner

_FIELD = re.compile(r"\{(\w+)\}")
_VERTICAL = frozenset({"above", "below"})
_SLOTS = ("A", "B", "C")
_MASKS = ("[MASK_0]", "[MASK_1]", "[MASK_2]")


def build_scenes(config: WorldConfig, entities: list[Entity]) -> list[Scene]:
    """All scenes of the world, in index order (entities drawn with a Zipf-like popularity)."""
    rng = random.Random(f"{config.seed}:scenes")
    order = list(range(len(entities)))
    random.Random(f"{config.seed}:popularity").shuffle(order)
    popularity = [0.0] * len(entities)
    for rank, e in enumerate(order):
        popularity[e] = 1.0 / (rank + 1) ** 0.6
    pools = {}
    for code in config.languages:
        pool = [e.index for e in entities if code in e.titles]
        pools[code] = (pool, list(accumulate(popularity[e] for e in pool)))
    langs = [code for code in config.languages if pools[code][0]]
    split_of = split_assigner(config.scenes, f"{config.seed}:scene-split")
    templates = {code: _Templates(code) for code in langs}
    scenes, seen = [], set()
    for i in range(config.scenes):
        for _ in range(10):  # redraw a scene that would picture the same thing as an earlier one
            code = langs[rng.randrange(len(langs))]
            r = rng.random()
            picked = _pick(rng, *pools[code], n=1 if r < 0.35 else (2 if r < 0.8 else 3))
            relation = lx.RELATIONS[rng.randrange(len(lx.RELATIONS))] if len(picked) >= 2 else None
            setting = lx.SETTINGS[rng.randrange(config.settings)]
            larger = len(picked) >= 2 and rng.random() < 0.1
            key = picture_key(picked, relation, setting, larger)
            if key not in seen:
                break
        seen.add(key)
        codes = [code]
        if len(langs) > 1 and rng.random() < 0.2:
            others = [c for c in langs if c != code and all(c in entities[e].titles for e in picked)]
            if others:
                codes.append(others[rng.randrange(len(others))])
        ents = [entities[e] for e in picked]
        captions = tuple(templates[c].render(ents, relation, setting, larger, rng) for c in codes)
        scenes.append(Scene(i, tuple(picked), relation, setting, split_of(i), larger, captions))
    return scenes


def picture_key(picked: list[int], relation: str | None, setting: str, larger: bool) -> tuple:
    """What a scene pictures: "A left of B" and "B right of A" are one picture, as are both orders of "next to"."""
    a = picked[0]
    pair = list(picked[:2])
    if relation in ("right of", "below"):
        pair.reverse()
        relation = "left of" if relation == "right of" else "above"
    elif relation == "next to":
        pair.sort()
    return (*pair, *picked[2:], relation, setting, a if larger else -1)


def _pick(rng: random.Random, pool: list[int], cum: list[float], n: int) -> list[int]:
    """n distinct entities of the pool, by popularity."""
    n = min(n, len(pool))
    picked: list[int] = []
    total = cum[-1]
    for _ in range(20 * n):
        e = pool[bisect_right(cum, rng.random() * total)]
        if e not in picked:
            picked.append(e)
            if len(picked) == n:
                return picked
    return picked + [e for e in pool if e not in picked][: n - len(picked)]


def _surface(e: Entity, code: str, rng: random.Random) -> str:
    """How a caption names an entity: mostly its unqualified name, sometimes alias or full title."""
    r = rng.random()
    if e.alias and r < 0.25:
        return e.alias
    if e.titles[code] != e.names[code] and r > 0.9:
        return e.titles[code]
    return e.names[code]


class _Templates:
    """One language's caption templates, resolved once per (entities, larger, relation, setting)."""

    def __init__(self, code: str):
        self.code = code
        self.words = words = lx.language(code)
        self.parts = {}
        for n, template in enumerate((words.single, words.pair, words.triple), start=1):
            for larger in (False, True):
                self.parts[n, larger] = _FIELD.split(template + (words.larger if larger else ""))
        self._segments: dict[tuple, list] = {}

    def segments(self, n: int, larger: bool, relation: str | None, setting: str) -> list:
        """Literal text and slot numbers, alternating: [text, slot, text, slot, ..., text]."""
        key = (n, larger, relation, setting)
        if (found := self._segments.get(key)) is not None:
            return found
        words = self.words
        values = {"setting": words.settings[setting]}
        if relation:
            values["rel"] = words.relations[relation]
            values["extra"] = words.extra_vertical if relation in _VERTICAL else words.extra_horizontal
            if words.rel2:
                values["rel2"] = words.rel2[relation]
        out, literal = [], ""
        for k, piece in enumerate(self.parts[n, larger]):
            # The split alternates literal text (even k) and field names (odd k).
            if k % 2 and piece in _SLOTS:
                out += [literal, _SLOTS.index(piece)]
                literal = ""
            else:
                literal += values[piece] if k % 2 else piece
        out.append(literal)
        self._segments[key] = out
        return out

    def render(self, picked: list[Entity], relation: str | None, setting: str, larger: bool,
               rng: random.Random) -> Caption:
        """The reference description of a scene, with the spans of its mentions."""
        code = self.code
        seg = self.segments(len(picked), larger, relation, setting)
        surfaces = [_surface(e, code, rng) for e in picked]
        text, masked, mentions, order, pos = [seg[0]], [seg[0]], [], [], len(seg[0])
        for k in range(1, len(seg), 2):
            slot, literal = seg[k], seg[k + 1]
            e, surface = picked[slot].index, surfaces[slot]
            mentions.append(Mention(pos, pos + len(surface), e, surface))
            if e not in order:
                order.append(e)
            text += (surface, literal)
            masked += (_MASKS[order.index(e)], literal)
            pos += len(surface) + len(literal)
        return Caption(code, "".join(text), tuple(mentions), "".join(masked), tuple(order))


def render_caption(code: str, picked: list[Entity], relation: str | None, setting: str, larger: bool,
                   rng: random.Random) -> Caption:
    """The reference description of a scene in one language, with the spans of its mentions."""
    return _Templates(code).render(picked, relation, setting, larger, rng)


def mask_caption(caption: Caption) -> tuple[str, list[int]]:
    """Masked text ([MASK_i] by first occurrence of each distinct entity) and entities by mask id."""
    order: list[int] = []
    out, pos = [], 0
    for m in sorted(caption.mentions):
        if m.entity not in order:
            order.append(m.entity)
        out.append(caption.text[pos:m.start])
        out.append(f"[MASK_{order.index(m.entity)}]")
        pos = m.end
    out.append(caption.text[pos:])
    return "".join(out), order
