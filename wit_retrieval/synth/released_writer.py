"""Released-format EI and MMIR files of the world (what the paper's pipeline would publish).

The quirks readers must survive, from the one public reader of the real files: a header
row, column 0 an image URL, rows with fewer fields, and values written as Python byte
literals (b'...' with \\xNN escapes for non-ASCII UTF-8) on some rows.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

from .files import ProgressFn, gzip_text, page_url
from .world import World

RELEASED_DIR = "gresearch/wit-retrieval"
MMIR_COLUMNS = ("image_url", "masked_caption", "entity_image_urls", "entity_names", "language", "page_url",
                "page_title")
EI_COLUMNS = ("image_url", "entity_name", "language", "page_url", "wikidata_id")
MMIR_TRAIN_SHARDS = 5


def mmir_file_name(split: str, k: int = 0) -> str:
    """Released MMIR file of a split (train has five shards; val is called validation)."""
    if split == "train":
        return f"mmir_dataset_train-{k:05d}-of-{MMIR_TRAIN_SHARDS:05d}.tsv.gz"
    return f"mmir_dataset_{'validation' if split == 'val' else split}.tsv.gz"


def _text(value: str, as_bytes: bool) -> str:
    return repr(value.encode("utf-8")) if as_bytes else value


def _line(fields: list[str], key: int) -> str:
    """A TSV line; about one row in 20 drops its last field and one in 50 its last two."""
    if key % 50 == 2:
        fields = fields[:-2]
    elif key % 20 == 1:
        fields = fields[:-1]
    return "\t".join(fields) + "\n"


def write_released(world: World, out: Path, progress: ProgressFn | None = None) -> dict:
    """Write EI and MMIR files; returns {"files": [...], "mmir_rows": {split: n}, "ei_rows": n}."""
    entities, urls = world.entities, world.entity_urls
    names = {"train": [mmir_file_name("train", k) for k in range(MMIR_TRAIN_SHARDS)],
             "val": [mmir_file_name("val")], "test": [mmir_file_name("test")]}
    used: set[tuple[int, str]] = set()
    rows = dict.fromkeys(names, 0)
    files = [f"{RELEASED_DIR}/{n}" for split in names for n in names[split]]
    with contextlib.ExitStack() as stack:
        streams = {}
        for split, file_names in names.items():
            for k, name in enumerate(file_names):
                streams[split, k] = stack.enter_context(gzip_text(out / RELEASED_DIR / name))
                streams[split, k].write("\t".join(MMIR_COLUMNS) + "\n")
        for scene, target in zip(world.scenes, world.scene_urls):
            for caption in scene.captions:
                code = caption.language
                key = zlib.crc32(f"{scene.index}:{code}".encode())
                as_bytes = key % 4 == 0
                masked, order = caption.masked, caption.order
                ents = [entities[i] for i in order]
                used.update((i, code) for i in order)
                entity_names = [e.names[code] for e in ents]
                host = entities[scene.entities[0]]
                fields = [target, _text(masked, as_bytes), repr([urls[i] for i in order]),
                          repr([n.encode("utf-8") for n in entity_names] if as_bytes else entity_names),
                          code, page_url(code, host.titles[code]), _text(host.titles[code], as_bytes)]
                shard = key % MMIR_TRAIN_SHARDS if scene.split == "train" else 0
                streams[scene.split, shard].write(_line(fields, key))
                rows[scene.split] += 1
            if progress and scene.index % 1000 == 999:
                progress("Released files", 1000, len(world.scenes))
    ei_rel = f"{RELEASED_DIR}/entity_image_dataset.tsv.gz"
    with gzip_text(out / ei_rel) as f:
        f.write("\t".join(EI_COLUMNS) + "\n")
        for i, code in sorted(used):
            e = entities[i]
            key = zlib.crc32(f"ei:{i}:{code}".encode())
            f.write(_line([urls[i], _text(e.titles[code], key % 4 == 0), code,
                           page_url(code, e.titles[code]), e.qid], key))
    return {"files": [ei_rel, *files], "mmir_rows": rows, "ei_rows": len(used)}
