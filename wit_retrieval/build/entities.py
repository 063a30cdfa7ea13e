"""Build the entity candidates (`entities`) and what the linker matches (`entity_names`).

An entity is an article (namespace 0, not a redirect, not a disambiguation page) with a
canonical image: `page_image_free`, else `page_image`, from the dumps' page_props; for
languages without dumps, the page's WIT row with `is_main_image=true` (smallest URL on
ties). Pages sharing a Wikidata QID are one entity; `prefer_lang` picks whose image it gets.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from ..errors import ConfigError, InputError
from ..io import fs
from ..layout import DataRoot
from ..schema import ENTITIES, ENTITY_NAMES
from .names import commons_url, page_url, strip_qualifier, title_key, title_text

PROPS = frozenset({"page_image_free", "page_image", "wikibase_item", "disambiguation"})
DUMP_TABLES = ("page", "page_props", "redirect")
_DUMP_NAME = re.compile(r"^(?P<wiki>[a-z0-9_]+)wiki-latest-(?P<table>page|page_props|redirect)\.sql\.gz$")


@dataclass(frozen=True)
class EntitiesConfig:
    """Inputs and choices of `build ei`."""

    out: str
    wit: tuple[str, ...] = ()
    dumps: str | None = None
    prefer_lang: tuple[str, ...] = ("en",)  # then the other languages, alphabetically

    def __post_init__(self):
        object.__setattr__(self, "wit", tuple(str(p) for p in self.wit))
        object.__setattr__(self, "prefer_lang", tuple(self.prefer_lang))
        for path in self.wit:
            if not fs.exists(path):
                raise ConfigError(f"WIT file not found: {fs.redact(path)}")
        if self.dumps is not None and not fs.path(self.dumps).is_dir():
            raise ConfigError(f"--dumps must be a folder of {{lang}}wiki-latest-*.sql.gz files: {self.dumps}")
        if not self.wit and self.dumps is None:
            raise ConfigError("give --dumps DIR and/or --wit FILES: there is nothing to build entities from")


@dataclass
class Page:
    """One article of one language, as the builder keeps it."""

    language: str
    title: str  # underscore form
    qid: str | None
    image_url: str | None
    image_source: str | None
    url: str
    redirects: list[str] = field(default_factory=list)


def find_dumps(directory: str | Path) -> dict[str, dict[str, Path]]:
    """{language: {table: path}} for the page/page_props/redirect dumps in a folder tree."""
    found: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(Path(directory).rglob("*wiki-latest-*.sql.gz")):
        match = _DUMP_NAME.match(path.name)
        if match:
            found[match["wiki"].replace("_", "-")][match["table"]] = path
    for language, tables in found.items():
        missing = [t for t in ("page", "page_props") if t not in tables]
        if missing:
            raise InputError(f"{language}: missing dump(s) {', '.join(missing)}", path=str(directory))
    return dict(sorted(found.items()))


def dump_pages(language: str, pages: Iterable, props: Iterable, redirects: Iterable) -> tuple[list[Page], dict]:
    """Articles of one language from its dump records (Page, PageProp, Redirect tuples)."""
    values: dict[str, dict[int, str]] = {name: {} for name in PROPS}
    for prop in props:
        if prop.name in values:
            values[prop.name][prop.page_id] = prop.value if prop.value is not None else ""
    disambiguation = values["disambiguation"]
    articles: dict[int, Page] = {}
    by_title: dict[str, Page] = {}
    redirect_titles: dict[int, str] = {}
    counts = defaultdict(int)
    for page in pages:
        if page.namespace != 0:
            counts["other_namespace"] += 1
        elif page.is_redirect:
            redirect_titles[page.page_id] = page.title
        elif page.page_id in disambiguation:
            counts["disambiguation"] += 1
        else:
            pid = page.page_id
            free, any_licence = values["page_image_free"].get(pid), values["page_image"].get(pid)
            image = free or any_licence
            qid = values["wikibase_item"].get(pid) or None
            counts["articles"] += 1
            if image is None and qid is None:
                continue  # no image and nothing to merge with: never an entity
            record = Page(
                language, page.title, qid, commons_url(image) if image else None,
                "page_props" if image else None, page_url(language, page.title),
            )
            articles[pid] = by_title[page.title] = record
    for redirect in redirects:
        title = redirect_titles.get(redirect.from_id)
        target = by_title.get(redirect.title) if redirect.namespace == 0 else None
        if title is not None and target is not None:
            target.redirects.append(title)
            counts["redirects"] += 1
    return list(articles.values()), dict(counts)


def read_dump_language(language: str, tables: dict[str, Path]) -> tuple[list[Page], dict]:
    """Articles of one language, read from its dump files."""
    from ..io.wikidump import read_page_props, read_pages, read_redirects

    redirects = read_redirects(tables["redirect"]) if "redirect" in tables else ()
    return dump_pages(language, read_pages(tables["page"]), read_page_props(tables["page_props"], PROPS), redirects)


def merge_pages(pages: Iterable[Page], prefer_lang: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Entity rows and name rows: pages with one QID merge; pages without an image drop out."""
    groups: dict[str, list[Page]] = defaultdict(list)
    for page in pages:
        key = page.qid or f"{page.language}:{title_key(page.title)}"
        groups[key].append(page)
    rank = {lang: i for i, lang in enumerate(prefer_lang)}
    entities, names = [], []
    for entity_id in sorted(groups):
        group = sorted(groups[entity_id], key=lambda p: (rank.get(p.language, len(rank)), p.language))
        chosen = next((p for p in group if p.image_url), None)
        if chosen is None:
            continue
        entities.append({
            "entity_id": entity_id, "language": chosen.language, "page_title": title_text(chosen.title),
            "page_url": chosen.url, "image_url": chosen.image_url, "image_source": chosen.image_source,
            "qid": chosen.qid, "languages": sorted({p.language for p in group}),
        })
        for page in group:
            names.extend(page_names(entity_id, page))
    return entities, drop_colliding_unqualified(names)


def page_names(entity_id: str, page: Page) -> list[dict]:
    """Names one page gives its entity: title, title without qualifier, redirects."""
    title = title_text(page.title)
    rows = [{"entity_id": entity_id, "language": page.language, "name": title, "source": "title"}]
    base = strip_qualifier(title)
    if base:
        rows.append({"entity_id": entity_id, "language": page.language, "name": base, "source": "title_unqualified"})
    for redirect in page.redirects:
        rows.append({"entity_id": entity_id, "language": page.language, "name": title_text(redirect),
                     "source": "redirect"})
    return rows


def drop_colliding_unqualified(names: list[dict]) -> list[dict]:
    """Drop "X" from "X (band)" where another entity of the language is also named "X"."""
    from .names import fold

    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in names:
        owners[(row["language"], fold(row["name"]))].add(row["entity_id"])
    kept, seen = [], set()
    for row in names:
        if row["source"] == "title_unqualified" and len(owners[(row["language"], fold(row["name"]))]) > 1:
            continue
        key = (row["entity_id"], row["language"], row["name"], row["source"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


WIT_ENTITY_COLUMNS = ["language", "page_url", "image_url", "page_title", "is_main_image", "mime_type",
                      "original_height", "original_width"]


def wit_pages(paths: Iterable[str], dump_languages: set[str], image_urls: set[str], errors) -> tuple[list[Page], dict]:
    """Main-image pages of languages without dumps, and (mime, width, height) of known images."""
    import pyarrow.compute as pc

    from ..io.tsv import read_wit_batches

    main: dict[tuple[str, str], dict] = {}
    meta: dict[str, tuple] = {}
    wanted = pa.array(sorted(image_urls), pa.string())
    for path in paths:
        for batch in read_wit_batches(path, columns=WIT_ENTITY_COLUMNS, errors=errors):
            table = pa.Table.from_batches([batch])
            no_dump = pc.invert(pc.is_in(table["language"], value_set=pa.array(sorted(dump_languages), pa.string())))
            is_main = pc.fill_null(pc.and_(no_dump, pc.fill_null(table["is_main_image"], False)), False)
            for row in table.filter(is_main).to_pylist():
                if not row["page_title"] or not row["image_url"]:
                    continue
                key = (row["language"], row["page_title"])
                if key not in main or row["image_url"] < main[key]["image_url"]:
                    main[key] = row
                image_urls.add(row["image_url"])
            known = pc.fill_null(pc.is_in(table["image_url"], value_set=wanted), False)
            for row in table.filter(known).select(WIT_ENTITY_COLUMNS[-3:] + ["image_url"]).to_pylist():
                meta.setdefault(row["image_url"], (row["mime_type"], row["original_width"], row["original_height"]))
    pages = []
    for (language, title), row in sorted(main.items()):
        meta.setdefault(row["image_url"], (row["mime_type"], row["original_width"], row["original_height"]))
        pages.append(Page(language, title_key(title), None, row["image_url"], "wit_main_image", row["page_url"]))
    return pages, meta


def build_entities(config: EntitiesConfig) -> dict:
    """Write `entities` and `entity_names` under config.out; returns the build statistics."""
    from ..io.shards import write_json_atomic, write_table_dir
    from ..io.tsv import RowErrors
    from .stats import update_stats

    started = time.time()
    root = DataRoot(config.out)
    pages: list[Page] = []
    counts: dict[str, dict] = {}
    dumps: dict = {}
    # dumps on an object store are read from a local copy (the dump reader reopens its files)
    with fs.local_tree(config.dumps, "*wiki-latest-*.sql.gz") if config.dumps else nullcontext() as local_dumps:
        dumps = find_dumps(local_dumps) if config.dumps else {}
        for language, tables in dumps.items():
            language_pages, counts[language] = read_dump_language(language, tables)
            pages.extend(language_pages)
    errors = RowErrors()
    image_urls = {p.image_url for p in pages if p.image_url}
    extra, meta = wit_pages(config.wit, set(dumps), image_urls, errors) if config.wit else ([], {})
    pages.extend(extra)
    entities, names = merge_pages(pages, config.prefer_lang)
    from ..ids import image_id

    for row in entities:
        mime, width, height = meta.get(row["image_url"], (None, None, None))
        row.update(image_id=image_id(row["image_url"]), mime_type=mime, width=width, height=height)
    names.sort(key=lambda r: (r["language"], r["name"], r["entity_id"], r["source"]))
    provenance = {"builder": "build_entities", "config": fs.redact_all(asdict(config))}
    from .linker import GAZETTEER_CACHE

    fs.remove_tree(root.table("entity_names") / GAZETTEER_CACHE)
    write_table_dir(root.table("entities"), [pa.Table.from_pylist(entities, ENTITIES)], ENTITIES, meta=provenance)
    write_table_dir(root.table("entity_names"), [pa.Table.from_pylist(names, ENTITY_NAMES)], ENTITY_NAMES,
                    meta=provenance)
    write_json_atomic(root.config / "build_ei.json", fs.redact_all(asdict(config)))
    from .linker import Gazetteer, LinkerSpec

    # the names' matcher (the automata `build mmir` loads), built once here with the default options
    Gazetteer(LinkerSpec(names_path=str(root.table("entity_names")))).warm_cache()
    stats = entity_stats(entities, names, counts, errors, dumps, time.time() - started)
    update_stats(root, "entities", stats)
    return stats


def entity_stats(entities: list[dict], names: list[dict], counts: dict, errors, dumps: dict, seconds: float) -> dict:
    """Statistics of an entities build (for stats.json and the cards)."""
    by_language: dict[str, int] = defaultdict(int)
    by_source: dict[str, int] = defaultdict(int)
    names_by_source: dict[str, int] = defaultdict(int)
    for row in entities:
        by_language[row["language"]] += 1
        by_source[row["image_source"]] += 1
    for row in names:
        names_by_source[row["source"]] += 1
    return {
        "entities": len(entities),
        "with_qid": sum(1 for row in entities if row["qid"]),
        "names": len(names),
        "names_by_source": dict(sorted(names_by_source.items())),
        "entities_by_image_language": dict(sorted(by_language.items())),
        "entities_by_image_source": dict(sorted(by_source.items())),
        "dump_languages": sorted(dumps),
        "dump_counts": counts,
        "bad_rows": errors.to_dict(),
        "seconds": round(seconds, 2),
    }
