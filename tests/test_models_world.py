"""A tiny MMIR world for the model tests: icon entities, scenes of 1-3 icons, a relation and a setting.

The masked text names the relation and the setting but not the entities, so the entity images
are needed to find the target scene. Tables are written in the canonical schemas under a data
root; images live in an in-memory store with the image store's methods (open, get, ids, ...).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import pyarrow as pa
import pytest
from PIL import Image, ImageDraw

from wit_retrieval.ids import image_id
from wit_retrieval.io.shards import write_table_dir
from wit_retrieval.layout import DataRoot
from wit_retrieval.schema import CORPUS, ENTITIES, ENTITY_NAMES, QRELS, QUERIES

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (20, 160, 40), "yellow": (235, 200, 20),
           "purple": (140, 40, 170), "orange": (245, 130, 20), "black": (20, 20, 20), "cyan": (20, 200, 210)}
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "bar")
# A second visual attribute, so that a world can have more than 6 x 8 = 48 entities: kinds in these
# styles are appended after the 48 plain ones only when more are asked for, so every smaller world
# stays exactly what it was.
STYLES = ("dotted", "small")
SETTINGS = {"in a forest": (120, 190, 120), "at sea": (140, 170, 235)}
RELATIONS = {1: ["[MASK_0] {s}"], 2: ["[MASK_0] left of [MASK_1] {s}", "[MASK_0] above [MASK_1] {s}"],
             3: ["[MASK_0], [MASK_1] and [MASK_2] in a row {s}"]}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and on a busy machine by far (no spinning barriers)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class DictStore:
    """An in-memory image store with the methods of wit_retrieval.images.ImageStore that models use."""

    def __init__(self, images: dict[str, Image.Image]):
        self.images = images
        self.opened = 0

    def open(self, image_id: str) -> Image.Image:
        self.opened += 1
        return self.images[image_id].copy()

    def get(self, image_id: str) -> bytes:
        buffer = io.BytesIO()
        self.images[image_id].save(buffer, format="PNG")
        return buffer.getvalue()

    def ids(self) -> list[str]:
        return sorted(self.images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.images

    def __len__(self) -> int:
        return len(self.images)

    def iter_items(self):
        for key in self.ids():
            yield key, self.get(key)


@dataclass(frozen=True)
class World:
    root: DataRoot
    store: DictStore
    num_entities: int


def _draw_icon(draw: ImageDraw.ImageDraw, shape: str, colour, box, style: str = "") -> None:
    if style == "small":  # half the size, same centre
        x0, y0, x1, y1 = box
        qx, qy = (x1 - x0) // 4, (y1 - y0) // 4
        box = (x0 + qx, y0 + qy, x1 - qx, y1 - qy)
    _draw_shape(draw, shape, colour, box)
    if style == "dotted":  # a white dot on the centre (inside every shape)
        x0, y0, x1, y1 = box
        cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, max(1, min(x1 - x0, y1 - y0) // 6)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0 + w / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(x0 + w / 2, y0), (x1, y0 + h / 2), (x0 + w / 2, y1), (x0, y0 + h / 2)], fill=colour)
    elif shape == "cross":
        draw.rectangle((x0 + w / 3, y0, x1 - w / 3, y1), fill=colour)
        draw.rectangle((x0, y0 + h / 3, x1, y1 - h / 3), fill=colour)
    else:  # bar
        draw.rectangle((x0, y0 + h / 3, x1, y1 - h / 3), fill=colour)


def entity_image(shape: str, colour, size: int = 64, style: str = "") -> Image.Image:
    image = Image.new("RGB", (size, size), (250, 250, 250))
    _draw_icon(ImageDraw.Draw(image), shape, colour, (8, 8, size - 8, size - 8), style)
    return image


def _positions(template: str, count: int, size: int, rng: random.Random):
    icon = size // 3 if count > 1 else size // 2
    jitter = lambda: rng.randint(-2, 2)  # noqa: E731
    if count == 1:
        centres = [(size / 2, size / 2)]
    elif "above" in template:
        centres = [(size / 2, size * 0.27), (size / 2, size * 0.73)]
    elif "left of" in template:
        centres = [(size * 0.27, size / 2), (size * 0.73, size / 2)]
    else:
        centres = [(size * (0.18 + 0.32 * i), size / 2) for i in range(3)]
    return [(cx + jitter() - icon / 2, cy + jitter() - icon / 2, cx + icon / 2, cy + icon / 2)
            for cx, cy in centres]


def scene_image(template: str, setting: str, icons, size: int, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (size, size), SETTINGS[setting])
    draw = ImageDraw.Draw(image)
    for (shape, colour, style), box in zip(icons, _positions(template, len(icons), size, rng)):
        _draw_icon(draw, shape, colour, tuple(int(v) for v in box), style)
    return image


def make_world(base, *, entities: int = 24, scenes: dict[str, int] | None = None, size: int = 64,
               seed: int = 0) -> World:
    """Write queries/corpus/qrels/entities/entity_names under `base` and return them with a store."""
    rng = random.Random(seed)
    scenes = scenes or {"train": 400, "val": 60, "test": 120}
    kinds = [(s, c, "") for s in SHAPES for c in COLOURS]
    rng.shuffle(kinds)
    if entities > len(kinds):  # styled kinds after the plain ones, from their own generator
        styled = [(s, c, style) for style in STYLES for s in SHAPES for c in COLOURS]
        random.Random(seed + 1).shuffle(styled)
        kinds += styled
    kinds = kinds[:entities]
    root = DataRoot(base)
    images: dict[str, Image.Image] = {}
    entity_rows, name_rows, urls = [], [], []
    for n, (shape, colour, style) in enumerate(kinds):
        url = f"https://upload.wikimedia.org/wikipedia/commons/e/e{n % 10}/Entity_{n}.png"
        urls.append(url)
        images[image_id(url)] = entity_image(shape, COLOURS[colour], size, style)
        name = " ".join(filter(None, (colour, style, shape)))
        entity_rows.append({"entity_id": f"Q{n + 1}", "language": "en", "page_title": name,
                            "image_url": url, "image_id": image_id(url), "image_source": "page_props"})
        name_rows.append({"entity_id": f"Q{n + 1}", "language": "en", "name": name, "source": "title"})
    write_table_dir(root.table("entities"), [pa.Table.from_pylist(entity_rows, ENTITIES)], ENTITIES)
    write_table_dir(root.table("entity_names"), [pa.Table.from_pylist(name_rows, ENTITY_NAMES)], ENTITY_NAMES)
    for split, count in scenes.items():
        queries, corpus, qrels = [], [], []
        for k in range(count):
            num = rng.choice((1, 2, 2, 3))
            members = rng.sample(range(len(kinds)), num)
            template = rng.choice(RELATIONS[num])
            setting = rng.choice(list(SETTINGS))
            url = f"https://upload.wikimedia.org/wikipedia/commons/s/s{k % 10}/Scene_{split}_{k}.png"
            target = image_id(url)
            images[target] = scene_image(template, setting, [(kinds[m][0], COLOURS[kinds[m][1]], kinds[m][2])
                                                             for m in members], size, rng)
            qid = f"{split}-{k:06d}"
            queries.append({
                "query_id": qid, "split": split, "language": "en", "page_title": f"Scene {k}",
                "page_url": f"https://en.wikipedia.org/wiki/Scene_{k}", "target_image_id": target,
                "target_image_url": url, "masked_text": template.format(s=setting),
                "entity_ids": [f"Q{m + 1}" for m in members], "entity_image_urls": [urls[m] for m in members],
                "mentions": [], "query_type": "single" if num == 1 else "multi", "num_entities": num,
                "original_text": template.format(s=setting),
            })
            corpus.append({"image_id": target, "image_url": url, "split": split})
            qrels.append({"query_id": qid, "image_id": target, "relevance": 1})
        for name, rows, schema in (("queries", queries, QUERIES), ("corpus", corpus, CORPUS),
                                   ("qrels", qrels, QRELS)):
            write_table_dir(root.table_split(name, split), [pa.Table.from_pylist(rows, schema)], schema)
    return World(root, DictStore(images), len(kinds))


def count_encoded(encoder) -> dict[str, int]:
    """Count the images an encoder embeds from now on (calls["images"])."""
    calls = {"images": 0}
    inner = encoder.encode_pixels

    def counting(pixels):
        calls["images"] += len(pixels)
        return inner(pixels)

    encoder.encode_pixels = counting
    return calls


def write_store(store: DictStore, directory) -> None:
    """Write the world's images as a real image store (one tar shard + manifest + done-marker)."""
    import hashlib

    from wit_retrieval.images.decode import StoredImage
    from wit_retrieval.images.store import ShardWriter

    writer = ShardWriter(directory, 0)
    for key in store.ids():
        data = store.get(key)
        width, height = store.images[key].size
        writer.add_ok(key, f"https://upload.wikimedia.org/{key}.png",
                      StoredImage(data, "png", width, height, hashlib.sha256(data).hexdigest()), "mirror")
    writer.commit({"ok": len(store)})


def test_world_scenes_need_their_entities(tmp_path):
    world = make_world(tmp_path, entities=6, scenes={"test": 12}, size=32)
    from wit_retrieval.io.shards import read_table_dir

    queries = read_table_dir(world.root.table_split("queries", "test")).to_pylist()
    assert len(queries) == 12
    for query in queries:
        assert "[MASK_0]" in query["masked_text"]
        assert len(query["entity_image_urls"]) == query["num_entities"]
        assert all(image_id(u) in world.store for u in query["entity_image_urls"])
        assert world.store.open(query["target_image_id"]).size == (32, 32)
    from wit_retrieval.images import open_store

    write_store(world.store, tmp_path / "images")
    real = open_store(tmp_path / "images")
    assert len(real) == len(world.store)
    first = world.store.ids()[0]
    assert list(real.open(first).getdata()) == list(world.store.open(first).getdata())
