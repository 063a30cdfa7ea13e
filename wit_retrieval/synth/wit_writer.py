"""WIT-format shards of the world: gzipped TSV, 17 columns, header, real quoting and quirks.

Rows are grouped by page (a page's main image, its locator map, its gallery of scenes);
a page's rows go to one shard per split (by CRC of the page URL), like the real release.
Quoting is the real files' one: double quotes around fields that hold a newline, tab or
quote, with inner quotes doubled (csv.QUOTE_MINIMAL).
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections import defaultdict
from pathlib import Path

from ..schema import SPLITS, WIT_COLUMNS
from . import lexicon as lx
from .files import ProgressFn, commons_url, gzip_text, page_url
from .world import Entity, World

WIT_DIR = "gresearch/wit"
_NEEDS_QUOTES = re.compile(r'[\t\n\r"]')


SAMPLE_NAME = "wit_v1.train.all-1percent_sample.tsv.gz"


def wit_shard_name(split: str, k: int, n: int) -> str:
    """The real shard name, e.g. wit_v1.train.all-00000-of-00010.tsv.gz."""
    return f"wit_v1.{split}.all-{k:05d}-of-{n:05d}.tsv.gz"


def map_file(e: Entity) -> str | None:
    """The entity's locator map (about one page in three has one), or None."""
    if (e.index * 7 + 3) % 3:
        return None
    return f"{next(iter(e.titles.values()))} locator map.png".replace(" ", "_")


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def page_context(world: World, e: Entity, code: str) -> tuple[str, str]:
    """(context_page_description, context_section_description) of an entity's page."""
    words = lx.language(code)
    title = e.titles[code]
    intro = words.intro.format(title=title, kind=words.kinds[e.kind][1])
    page = intro
    if e.alias:
        # An ASCII quote inside a field forces quoting with doubled quotes, as in WIT (en pages).
        page += words.also_called.format(alias=e.alias)
    if e.index % 5 == 1:
        page += words.paragraph + words.many_pictures.format(title=title)
    if e.index == 0:  # one huge field, as real pages have
        page += ("\n" + intro) * 150
    return page, words.section_pictures.format(title=title)


def tsv_field(value) -> str:
    """A field as the WIT files write it: quoted (inner quotes doubled) when it holds \t, \n, \r or "."""
    value = str(value)
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def _line(fields: list) -> str:
    return "\t".join(map(tsv_field, fields)) + "\n"


def _entity_rows(world: World, e: Entity, code: str, context: tuple[str, str]) -> list[str]:
    size = world.config.image_size
    title, lang_name = e.titles[code], lx.language(code).name
    url = page_url(code, title)
    page_context_field = tsv_field(context[0])
    rows = []
    if e.main_row[code]:
        reference = e.names[code] if e.main_row[code] == 2 else ""
        alt = title if e.index % 4 == 0 else ""
        rows.append(_line([code, url, world.entity_urls[e.index], title, "", title, reference,
                           f"{lang_name}: {title}", alt, "image/png", size, size, "true",
                           _bool(e.index % 3 != 0), _bool(e.index % 7 == 0)])[:-1]
                    + f"\t{page_context_field}\t{page_context_field}\n")
    if (mf := map_file(e)) is not None:
        section = lx.language(code).geography
        rows.append(_line([code, url, commons_url(mf), title, section, f"{title} / {section}", "",
                           f"{lang_name}: Locator map of {title}", "Map" if e.index % 2 else "", "image/png",
                           size, size, "false", "true", "false"])[:-1] + f"\t{page_context_field}\t\n")
    return rows


def _scene_rows(world: World, e: Entity, code: str, hosted: list, context: tuple[str, str]) -> list[str]:
    size = world.config.image_size
    title, words = e.titles[code], lx.language(code)
    # Fields shared by the page's rows are formatted once.
    head = _line([code, page_url(code, title)])[:-1]
    middle = _line([title, words.gallery, f"{title} / {words.gallery}"])[:-1]
    tail = f"\timage/png\t{size}\t{size}\tfalse\t"
    contexts = f"\t{tsv_field(context[0])}\t{tsv_field(context[1])}\n"
    lang_name = words.name
    urls = world.scene_urls
    return [f"{head}\t{urls[scene.index]}\t{middle}\t{tsv_field(caption.text)}\t{lang_name}: Scene {scene.index}"
            f"\t{'' if scene.index % 3 else 'Picture'}{tail}{_bool(scene.index % 4 != 0)}"
            f"\t{_bool(scene.index % 9 == 0)}{contexts}" for scene, caption in hosted]


def write_wit(world: World, out: Path, progress: ProgressFn | None = None) -> dict:
    """Write the WIT shards; returns {"files": [relative paths], "rows": {split: n}}."""
    config = world.config
    hosted: dict[tuple[int, str, str], list] = defaultdict(list)
    for scene in world.scenes:
        for caption in scene.captions:
            hosted[scene.entities[0], caption.language, scene.split].append((scene, caption))
    rows = dict.fromkeys(SPLITS, 0)
    files = []
    with contextlib.ExitStack() as stack:
        writers = {}
        for split in SPLITS:
            n = config.wit_shards[split]
            for k in range(n):
                rel = f"{WIT_DIR}/{wit_shard_name(split, k, n)}"
                files.append(rel)
                writers[split, k] = stack.enter_context(gzip_text(out / rel))
                writers[split, k].write("\t".join(WIT_COLUMNS) + "\n")
        sample = None
        if config.wit_sample:
            files.append(f"{WIT_DIR}/{SAMPLE_NAME}")
            sample = stack.enter_context(gzip_text(out / files[-1]))
            sample.write("\t".join(WIT_COLUMNS) + "\n")
        for e in world.entities:
            for code in world.page_languages(e):
                context = page_context(world, e, code)
                shard_key = zlib.crc32(f"{code}:{e.index}".encode())
                page_rows = {s: [] for s in SPLITS}
                page_rows[e.split] += _entity_rows(world, e, code, context)
                for split in SPLITS:
                    if (key := (e.index, code, split)) in hosted:
                        page_rows[split] += _scene_rows(world, e, code, hosted[key], context)
                for split, batch in page_rows.items():
                    if batch:
                        writers[split, shard_key % config.wit_shards[split]].write("".join(batch))
                        rows[split] += len(batch)
                if sample is not None and page_rows["train"] and shard_key % 100 == 7:
                    sample.write("".join(page_rows["train"]))  # the 1% sample: whole pages of train
            if progress:
                progress("WIT shards", 1, len(world.entities))
    return {"files": files, "rows": rows}
