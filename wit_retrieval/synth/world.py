"""The miniature world: entities (names, titles, QIDs, icons) and scenes (entities in a relation).

Everything is a pure function of the WorldConfig: random draws come from `random.Random`
seeded by strings ("{seed}:entities"), never from `hash()`, so runs are byte-identical.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from ..errors import ConfigError
from . import lexicon as lx
from .files import commons_url
from .lexicon import language

SPLIT_SHARES = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class WorldConfig:
    """What to generate: sizes, languages (WIT), dump languages, seed, images, WIT shards."""

    entities: int = 300
    scenes: int = 2000
    languages: tuple[str, ...] = ("en", "de")
    dump_languages: tuple[str, ...] | None = None  # None: every language
    seed: int = 0
    images: bool = True
    image_size: int = 128
    wit_shards: dict[str, int] = field(default_factory=lambda: {"train": 2, "val": 1, "test": 1})
    wit_sample: bool = False  # also write wit_v1.train.all-1percent_sample.tsv.gz (a copy of ~1% of train)
    # how many settings (backgrounds) scenes use: fewer make the masked text say less about the target,
    # so that only the entity images can tell the candidates apart (a harder, more MMIR-like world)
    settings: int = 10

    def __post_init__(self):
        object.__setattr__(self, "languages", tuple(self.languages))
        if self.dump_languages is not None:
            object.__setattr__(self, "dump_languages", tuple(self.dump_languages))
        object.__setattr__(self, "wit_shards", dict(self.wit_shards))
        self.validate()

    @property
    def dump_langs(self) -> tuple[str, ...]:
        """Languages that get Wikipedia dumps (all WIT languages unless restricted)."""
        return self.languages if self.dump_languages is None else self.dump_languages

    def validate(self) -> None:
        """Raise ConfigError naming the bad option."""
        if self.entities < 2:
            raise ConfigError("synth: --entities must be at least 2")
        if self.scenes < 0:
            raise ConfigError("synth: --scenes must be >= 0")
        if not self.languages or len(set(self.languages)) != len(self.languages):
            raise ConfigError("synth: --languages must name distinct languages, e.g. en,de")
        for code in self.languages:
            language(code)
        extra = set(self.dump_langs) - set(self.languages)
        if extra:
            raise ConfigError(f"synth: --dump-languages {sorted(extra)} are not in --languages")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError("synth: --image-size must be between 16 and 1024 pixels")
        if set(self.wit_shards) != {"train", "val", "test"} or min(self.wit_shards.values()) < 1:
            raise ConfigError("synth: --wit-shards needs train=N,val=N,test=N with N >= 1")
        if not 1 <= self.settings <= 10:
            raise ConfigError("synth: --settings must be between 1 and 10")
        if max(self.wit_shards.values()) > 99999:
            raise ConfigError("synth: at most 99999 WIT shards per split")

    def to_dict(self) -> dict:
        """JSON-able form (written into world.json)."""
        return {"entities": self.entities, "scenes": self.scenes, "languages": list(self.languages),
                "dump_languages": list(self.dump_langs), "seed": self.seed, "images": self.images,
                "image_size": self.image_size, "wit_shards": dict(self.wit_shards), "wit_sample": self.wit_sample,
                **({"settings": self.settings} if self.settings != 10 else {})}


class Visual(NamedTuple):
    """An icon design: indices into lexicon SHAPES, COLOURS, PATTERNS, ACCENTS."""

    shape: int
    colour: int
    pattern: int
    accent: int


class Entity(NamedTuple):
    """One entity: a QID with a page (title) per language, an icon and a canonical file."""

    index: int
    qid: str
    kind: int
    visual: Visual
    names: dict[str, str]       # unqualified name per language with a page
    titles: dict[str, str]      # page title (spaces) per language; may carry "(kind)"
    alias: str | None           # redirect alias, the same in every language
    file: str                   # canonical Commons file name (underscores)
    split: str                  # WIT split of the entity's own main-image rows
    image_prop: dict[str, str]  # per dump language: page_image_free | page_image | none
    main_row: dict[str, int]    # per language: 0 no WIT main-image row, 1 row, 2 row named after it


class Mention(NamedTuple):
    """A span of a caption naming an entity (character offsets)."""

    start: int
    end: int
    entity: int
    surface: str


class Caption(NamedTuple):
    """A scene's reference description in one language, its mentions and masked form."""

    language: str
    text: str
    mentions: tuple[Mention, ...]
    masked: str                 # [MASK_i] numbered by first occurrence of each distinct entity
    order: tuple[int, ...]      # entity index of [MASK_i]


class Scene(NamedTuple):
    """A scene image: 1-3 entities in a relation and a setting, in one WIT split."""

    index: int
    entities: tuple[int, ...]
    relation: str | None
    setting: str
    split: str
    larger: bool                # the first entity is drawn larger and the caption says so
    captions: tuple[Caption, ...]

    @property
    def file(self) -> str:
        """Commons file name of the scene image."""
        return f"Scene_{self.index:07d}.png"


@dataclass
class World:
    """The generated world: config, entities, scenes and ambiguous surfaces per language."""

    config: WorldConfig
    entities: list[Entity]
    scenes: list[Scene]
    ambiguous: dict[str, dict[str, list[int]]]  # lang -> unqualified name -> entity indices

    @cached_property
    def entity_urls(self) -> list[str]:
        """Canonical image URL of each entity (computed once: every scene row needs some)."""
        return [commons_url(e.file) for e in self.entities]

    @cached_property
    def scene_urls(self) -> list[str]:
        """Image URL of each scene."""
        return [commons_url(s.file) for s in self.scenes]

    def page_languages(self, entity: Entity) -> list[str]:
        """Languages (config order) in which the entity has a page."""
        return [code for code in self.config.languages if code in entity.titles]


def split_assigner(total: int, salt: str) -> Callable[[int], str]:
    """`split(i)` for i in range(total): exact 80/10/10 over a seeded permutation of the items."""
    n_val = n_test = max(1, round(total * 0.1)) if total >= 3 else 0
    n_train = total - n_val - n_test
    rng = random.Random(f"{salt}:perm:{total}")
    # An affine map modulo total is a bijection when the step is coprime with total.
    step = rng.randrange(1, max(2, total)) | 1
    while math.gcd(step, total) != 1:
        step += 2
    offset = rng.randrange(max(1, total))

    def split(i: int) -> str:
        rank = (i * step + offset) % total
        return "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")

    return split


def _all_visuals(seed: int) -> list[Visual]:
    """Every distinct icon design, in a seeded order (plain icons ignore the accent)."""
    out = [Visual(s, c, 0, 0) for s in range(len(lx.SHAPES)) for c in range(len(lx.COLOURS))]
    out += [Visual(s, c, p, a) for s in range(len(lx.SHAPES)) for c in range(len(lx.COLOURS))
            for p in range(1, len(lx.PATTERNS)) for a in range(len(lx.ACCENTS)) if _contrast(c, a)]
    random.Random(f"{seed}:visuals").shuffle(out)
    return out


def _contrast(colour: int, accent: int) -> bool:
    """Whether a pattern in this accent stays visible on this colour (RGB distance)."""
    a, b = lx.COLOURS[colour][2], lx.ACCENTS[accent]
    return sum((x - y) ** 2 for x, y in zip(a, b)) > 130**2


_VOWELS = frozenset("AEIOUÅÉaeiou")


def _variant(code: str, colour: int, shape: int, k: int, rotation: int) -> str:
    """The k-th name of a colour-shape group in one language: base, adjective, place, both, numerals."""
    words = lx.language(code)
    name = words.base.format(colour=words.colours[colour], shape=words.shapes[shape])
    if k == 0:
        return name
    n_adj, n_place = len(lx.ADJECTIVES), len(lx.PLACES)
    block = n_adj + n_place + n_adj * n_place
    numeral, within = divmod(k - 1, block)
    within = (within + rotation) % block
    adjective = place = None
    if within < n_adj:
        adjective = within
    elif within < n_adj + n_place:
        place = within - n_adj
    else:
        adjective, place = divmod(within - n_adj - n_place, n_place)
    if adjective is not None:
        name = words.adjectives[adjective].format(name)
    if place is not None:
        p = lx.PLACES[place]
        form = words.of_place_vowel if (words.of_place_vowel and p[0] in _VOWELS) else words.of_place
        name = form.format(name=name, place=p)
    if numeral:
        suffix = lx.ROMAN[(numeral - 1) % len(lx.ROMAN)] + ("" if numeral <= len(lx.ROMAN) else f"-{numeral}")
        name = f"{name} {suffix}"
    return name


def _alias(i: int) -> str:
    """An invented one-word alias, unique per entity index (syllables in base 20)."""
    n, parts = i * 7 + 401, []
    while n:
        n, digit = divmod(n, len(lx.SYLLABLES))
        parts.append(lx.SYLLABLES[digit])
    return "".join(parts).capitalize()


def _kind_noun(code: str, kind: int) -> str:
    return lx.language(code).kinds[kind][0]


def _twin_groups(n: int, rng: random.Random) -> list[list[int]]:
    """Groups of entities that share one unqualified name: pairs (one per ~50) and a triple."""
    if n < 6:
        return []
    pairs = max(1, n // 50)
    members = rng.sample(range(n), k=2 * pairs + (3 if n >= 30 else 0))
    groups = [members[i:i + 2] for i in range(0, 2 * pairs, 2)]
    if n >= 30:
        groups.append(members[2 * pairs:])
    return groups


def _entity_visuals(n: int, seed: int, groups: list[list[int]]) -> list[Visual]:
    """Distinct icons while they last; twins share colour and shape (differ in pattern)."""
    pool = _all_visuals(seed)
    visuals = [pool[i % len(pool)] for i in range(n)]
    used = set(visuals[: len(pool)])
    for group in groups:
        lead = visuals[group[0]]
        for j, member in enumerate(group[1:], start=1):
            pattern = 1 + (lead.pattern + j * 2) % (len(lx.PATTERNS) - 1)
            for accent in range(len(lx.ACCENTS)):
                candidate = Visual(lead.shape, lead.colour, pattern, (lead.accent + j + accent) % len(lx.ACCENTS))
                if _contrast(candidate.colour, candidate.accent) and (candidate not in used or n > len(pool)):
                    break
            used.add(candidate)
            visuals[member] = candidate
    return visuals


def build_entities(config: WorldConfig) -> tuple[list[Entity], dict[str, dict[str, list[int]]]]:
    """All entities of the world and, per language, the unqualified names several entities share."""
    n, seed = config.entities, config.seed
    rng = random.Random(f"{seed}:entities")
    groups = _twin_groups(n, rng)
    twin_of = {m: g for g in groups for m in g}
    visuals = _entity_visuals(n, seed, groups)
    split_of = split_assigner(n, f"{seed}:entity-split")
    group_count: dict[tuple[int, int], int] = {}
    entities = []
    for i in range(n):
        vis = visuals[i]
        kind = rng.randrange(len(lx.KINDS))
        group = twin_of.get(i)
        key = (vis.colour, vis.shape)
        if group and i != group[0]:
            k = None  # takes the group leader's name below
        else:
            k = group_count.get(key, 0)
            group_count[key] = k + 1
        entities.append(_make_entity(config, rng, i, kind, vis, k, twin=group is not None, split=split_of(i)))
    for group in groups:
        _merge_twins(entities, group)
    twins = {m for g in groups for m in g}
    singles = [i for i in rng.sample(range(n), k=min(n, max(1, n // 50) + len(twins))) if i not in twins]
    for j, i in enumerate(singles[: max(1, n // 50)]):
        # Unique titles qualified by a place; the first is "Port d'Amber" so every world has a quote.
        entities[i] = _qualify(entities[i], lx.PLACES[(16 + 3 * j) % len(lx.PLACES)])
    ambiguous: dict[str, dict[str, list[int]]] = {code: {} for code in config.languages}
    for group in groups:
        for code in config.languages:
            members = [m for m in group if code in entities[m].names]
            if len(members) > 1:
                ambiguous[code][entities[members[0]].names[code]] = members
    return entities, ambiguous


def _make_entity(config: WorldConfig, rng: random.Random, i: int, kind: int, vis: Visual,
                 k: int | None, *, twin: bool, split: str) -> Entity:
    rotation = vis.colour * 31 + vis.shape * 7
    own = {code: _variant(code, vis.colour, vis.shape, k or 0, rotation) for code in config.languages}
    english = own.get("en") or _variant("en", vis.colour, vis.shape, k or 0, rotation)
    if rng.random() < 0.15:
        own["de"] = english  # a loan title: the German page keeps the English name
    if "fr" in config.languages and rng.random() < 0.1:  # drawn only for French: en/de worlds stay as they were
        own["fr"] = english
    langs = [code for j, code in enumerate(config.languages) if rng.random() < (0.92 if j == 0 else 0.7)]
    if twin:
        langs = list(config.languages)  # twins exist in every language so their names collide there
    if not langs:
        langs = [config.languages[rng.randrange(len(config.languages))]]
    names = {code: own[code] for code in langs}
    alias = _alias(i) if rng.random() < 0.2 else None
    props = {}
    for code in config.dump_langs:
        r = rng.random()
        props[code] = "page_image_free" if r < 0.85 else ("page_image" if r < 0.95 else "none")
    main_row = {}
    for code in config.languages:
        r = rng.random()
        # Without a dump the canonical image can only come from the WIT main-image row.
        must = code not in config.dump_langs or props.get(code) == "none"
        main_row[code] = 0 if (r < 0.15 and not must) else (2 if r > 0.7 else 1)
    return Entity(i, f"Q{4_000_000 + i * 13}", kind, vis, names, dict(names), alias, "", split, props, main_row)


def _merge_twins(entities: list[Entity], group: list[int]) -> None:
    """Give the group the leader's names, each member a title qualified by its kind."""
    lead = entities[group[0]]
    for j, m in enumerate(group):
        e = entities[m]
        names = {code: lead.names.get(code, name) for code, name in e.names.items()}
        kind = (lead.kind + j) % len(lx.KINDS)  # distinct kinds: distinct qualified titles
        entities[m] = _qualify(e._replace(names=names, kind=kind))


def _qualify(e: Entity, qualifier: str | None = None) -> Entity:
    """Title "Name (qualifier)" in every language; the qualifier defaults to the entity's kind."""
    titles = {code: f"{name} ({qualifier or _kind_noun(code, e.kind)})" for code, name in e.names.items()}
    return e._replace(titles=titles)


def with_files(entities: list[Entity]) -> list[Entity]:
    """Fill in canonical file names (after titles are final): '{first title} icon.png'."""
    out = []
    for e in entities:
        first = next(iter(e.titles.values()))
        out.append(e._replace(file=f"{first} icon.png".replace(" ", "_")))
    return out
