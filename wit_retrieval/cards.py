"""Data cards for EI and MMIR, rendered from a build's stats.json (typed metadata -> markdown).

Like MTEB's task metadata, a card starts from a typed record (`CardMetadata`): licence, task
categories, languages, size category, configs, the published figures. The body adds how the
data was built, the choices this toolkit makes where the paper is silent, the schema, and the
statistics of the build the card was rendered from. Rendering is deterministic (no times, no
absolute paths), so a test can keep the committed cards in sync with a fresh build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build.stats import read_stats, totals
from .errors import InputError
from .layout import DataRoot
from .schema import EI, QUERIES

PAPER = "Entity Image and Mixed-Modal Image Retrieval Datasets (arXiv 2506.02291)"
RELEASE = "https://github.com/google-research-datasets/wit-retrieval"
PUBLISHED = {
    "EI": "1.80M entities, each with one canonical image from its Wikipedia page.",
    "MMIR": "over 9M examples (9.16M in an earlier release note) in 108 languages, split as WIT.",
}
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


@dataclass(frozen=True)
class CardMetadata:
    """The typed front matter of one card (Hugging Face dataset card fields)."""

    name: str  # EI | MMIR
    pretty_name: str
    task_categories: tuple[str, ...]
    languages: tuple[str, ...]
    rows: int
    configs: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (config_name, ((split, path glob), ...))
    license: str = "cc-by-sa-3.0"

    @property
    def size_category(self) -> str:
        """Hugging Face size category of `rows`."""
        return next((label for bound, label in _SIZES if self.rows < bound), "n>100M")

    def front_matter(self) -> str:
        """The YAML block between `---` lines."""
        lines = ["---", f"license: {self.license}", f"pretty_name: {self.pretty_name}", "language:"]
        lines += [f"- {lang}" for lang in self.languages] or ["- multilingual"]
        lines += ["task_categories:"] + [f"- {t}" for t in self.task_categories]
        lines += ["size_categories:", f"- {self.size_category}", "configs:"]
        for config_name, files in self.configs:
            lines += [f"- config_name: {config_name}", "  data_files:"]
            for split, path in files:
                lines += [f"  - split: {split}", f"    path: {path}"]
        return "\n".join(lines + ["---", ""])


def metadata(kind: str, stats: dict[str, Any]) -> CardMetadata:
    """The card metadata of EI or MMIR from a build's statistics."""
    mmir = stats.get("mmir", {})
    total = totals(mmir)
    languages = tuple(sorted(total["by_language"]))
    if kind == "EI":
        return CardMetadata(
            "EI", "Entity Image (EI)", ("text-to-image", "image-to-text"), languages,
            stats.get("ei", {}).get("entities", 0), (("default", (("train", "ei/*.parquet"),)),),
        )
    splits = tuple(s for s in ("train", "val", "test") if s in mmir.get("splits", {}))
    configs = tuple(
        (table, tuple(("validation" if s == "val" else s, f"{table}/split={s}/*.parquet") for s in splits))
        for table in ("queries", "corpus", "qrels")
    )
    return CardMetadata("MMIR", "Mixed-Modal Image Retrieval (MMIR)", ("image-to-image", "text-to-image"),
                        languages, total["queries"], configs)


CHOICES = """\
## Choices this toolkit makes where the paper is silent

- **Entities**: an entity is a Wikipedia article (namespace 0, not a redirect, not a
  disambiguation page). Pages with one Wikidata QID are one entity (`entity_id` = the QID);
  without a QID, `entity_id` is `{{lang}}:{{Title_with_underscores}}`.
- **Canonical image**: `page_image_free` from the dumps' page_props, else `page_image`, as a
  Commons URL (md5 of the underscored file name). For a language without dumps: the page's WIT
  row with `is_main_image=true` (the smallest URL on ties). Across languages, `--prefer-lang`
  picks whose image wins (then alphabetical). Entities without a canonical image are dropped.
- **Names** the linker matches: titles (underscores as spaces), titles without a trailing
  parenthetical qualifier ("X (band)" gives "X") unless another entity of the language is also
  named "X", and redirects.
- **Linker**: a gazetteer per language (Aho-Corasick) on NFKC + casefolded text with an offset
  map back to the original characters; leftmost-longest, non-overlapping matches; word
  boundaries in scripts written with spaces; names of at least 3 characters, never only digits.
  A name of several entities is not linked unless exactly one of them has it as its title
  (several titles that differ only in case: the one spelled as the surface). Users may bring
  their own spans instead (`--linker spans`).
- **Masking**: each distinct entity gets `[MASK_i]`, numbered from 0 by first occurrence;
  repeated mentions reuse the id; every other character is kept. `single` = 1 entity, `multi` = 2+.
- **Filters** (in this order; each drop counted): no entity; more than {max_entities}
  entities; the target image is one of its entities' canonical images; fewer than
  {min_context_words} words outside the masks. Splits come from the WIT file names, never re-split.
- **Ids**: `image_id` = 16 hex digits of SHA-256 of the normalised image URL; `query_id` =
  `{{split}}-` + 16 hex digits of SHA-256 of (split, image URL, page URL, reference description).
"""


def _schema_table(schema) -> str:
    rows = ["| column | type |", "|---|---|"]
    rows += [f"| `{field.name}` | `{field.type}` |" for field in schema]
    return "\n".join(rows)


def _counts_table(header: tuple[str, ...], rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _ordered(splits: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(name, splits[name]) for name in ("train", "val", "test") if name in splits]


def _build_section(kind: str, stats: dict[str, Any], source: str) -> str:
    mmir = stats.get("mmir", {})
    total = totals(mmir)
    entities = stats.get("entities", {})
    parts = [f"## Statistics of this build\n\nRendered from: {source}\n"]
    if kind == "EI":
        parts.append(f"- EI entities (used by at least one query): {stats.get('ei', {}).get('entities', 0):,}")
        parts.append(f"- entity candidates: {entities.get('entities', 0):,} "
                     f"({entities.get('with_qid', 0):,} with a QID); names: {entities.get('names', 0):,}")
        parts.append("- canonical image source: " + ", ".join(
            f"{k} {v:,}" for k, v in entities.get("entities_by_image_source", {}).items()))
        parts.append("- image language: " + ", ".join(
            f"{k} {v:,}" for k, v in entities.get("entities_by_image_language", {}).items()))
        return "\n".join(parts) + "\n"
    splits = _ordered(mmir.get("splits", {}))
    rows = [(name, f"{s['rows_read']:,}", f"{s['with_reference']:,}", f"{s['queries']:,}",
             f"{s['by_query_type'].get('single', 0):,}", f"{s['by_query_type'].get('multi', 0):,}",
             f"{s['corpus']:,}") for name, s in splits]
    parts.append(_counts_table(("split", "WIT rows", "with reference", "queries", "single", "multi", "corpus"),
                               rows) + "\n")
    drops = [(name, ", ".join(f"{k}: {v:,}" for k, v in s["dropped"].items()) or "none", f"{s['duplicates']:,}")
             for name, s in splits]
    parts.append("Rows dropped per filter:\n\n" + _counts_table(("split", "dropped", "duplicates"), drops) + "\n")
    parts.append("Queries per language:\n\n" + _counts_table(
        ("language", "queries"), [(k, f"{v:,}") for k, v in total["by_language"].items()]) + "\n")
    parts.append("Entities per query:\n\n" + _counts_table(
        ("entities", "queries"), [(k, f"{v:,}") for k, v in total["entities_per_query"].items()]) + "\n")
    parts.append(f"Malformed WIT rows (counted, skipped): {mmir.get('bad_rows', {}).get('count', 0):,}\n")
    return "\n".join(parts)


def render_card(kind: str, stats: dict[str, Any], source: str) -> str:
    """The markdown card (front matter + body) of EI or MMIR."""
    meta = metadata(kind, stats)
    filters = stats.get("mmir", {}).get("filters", {"max_entities": 5, "min_context_words": 2})
    if kind == "EI":
        intro = ("Entity Image (EI) maps Wikipedia entities to one canonical image each. The released EI is the "
                 "set of entities the MMIR queries use; `num_queries` says how many use each.")
        schema = EI
    else:
        intro = ("Mixed-Modal Image Retrieval (MMIR): a query is a WIT reference description whose entity "
                 "mentions are replaced by `[MASK_i]`, plus the canonical image of each masked entity; the "
                 "target is the row's own WIT image. Queries with one entity are `single`, with several `multi`.")
        schema = QUERIES
    body = [
        meta.front_matter(),
        f"# {meta.pretty_name}\n", intro + "\n",
        "## Construction (from the paper)\n",
        f"From {PAPER}: entity recognition on each WIT row's reference description; one canonical image per "
        "recognised entity from its Wikipedia page (EI); each entity name in the description replaced by a mask "
        "id that points to the entity's image (MMIR). Splits follow WIT's train / validation / test.\n",
        f"Published figures: EI {PUBLISHED['EI']} MMIR {PUBLISHED['MMIR']} Release: {RELEASE}\n",
        CHOICES.format(**filters),
        "## Schema\n", _schema_table(schema) + "\n",
        _build_section(meta.name, stats, source),
        "## Licence\n\nCC BY-SA 3.0, as WIT and Wikipedia. Images keep their own Commons licences.",
    ]
    return "\n".join(body) + "\n"


def write_cards(root: str | Path, out: str | Path, *, source: str | None = None) -> list[Path]:
    """Render EI.md and MMIR.md from ROOT/stats.json into `out`; returns the paths."""
    from .io.shards import write_text_atomic

    stats = read_stats(DataRoot(root))
    if "mmir" not in stats:
        raise InputError("no MMIR statistics: run `wit-retrieval build mmir` on this root first", path=str(root))
    source = source or stats.get("source") or f"a build at {Path(root).name}"
    paths = []
    for kind in ("EI", "MMIR"):
        path = Path(out) / f"{kind}.md"
        write_text_atomic(path, render_card(kind, stats, source))
        paths.append(path)
    return paths


DEMO_SOURCE = (
    "the miniature world of `wit-retrieval synth` with its default config (`WorldConfig()`: 300 entities, "
    "2,000 scenes, languages en and de, all with dumps, seed 0; images off, which does not change the WIT "
    "rows), built with the defaults of `wit-retrieval build ei` and `wit-retrieval build mmir`. "
    "Regenerate with `python -m wit_retrieval.cards data_cards`."
)


def build_demo_stats(workdir: str | Path) -> dict[str, Any]:
    """Generate the default synth world, build it with default settings, and return its stats."""
    from .build import EntitiesConfig, MmirConfig, build_entities, build_mmir
    from .engine import EngineConfig
    from .synth import WorldConfig, generate_world

    workdir = Path(workdir)
    world, root = workdir / "world", workdir / "root"
    generate_world(WorldConfig(images=False), world)
    files = tuple(str(p) for p in sorted(world.rglob("wit_v1.*.tsv.gz")))
    build_entities(EntitiesConfig(out=str(root), wit=files, dumps=str(world)))
    build_mmir(MmirConfig(out=str(root), wit=files, engine=EngineConfig(workers=1), export=False))
    return read_stats(root)


_VOLATILE = frozenset({"seconds", "files", "worker_cpu_seconds", "worker_peak_rss_mib", "shards"})


def card_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The part of stats.json the cards render (no timings, no paths): committed beside the cards."""
    mmir = {k: v for k, v in stats.get("mmir", {}).items() if k not in _VOLATILE}
    mmir["bad_rows"] = {"count": mmir.get("bad_rows", {}).get("count", 0)}
    entities = {k: v for k, v in stats.get("entities", {}).items() if k not in ("seconds", "bad_rows")}
    return {"entities": entities, "mmir": mmir, "ei": stats.get("ei", {})}


def write_demo_cards(out: str | Path, workdir: str | Path) -> list[Path]:
    """Rebuild the demo world and write its cards and their stats (stats.json) into `out`."""
    from .io.shards import write_json_atomic, write_text_atomic

    stats = card_stats(build_demo_stats(workdir))
    write_json_atomic(Path(out) / "stats.json", stats)
    paths = []
    for kind in ("EI", "MMIR"):
        paths.append(Path(out) / f"{kind}.md")
        write_text_atomic(paths[-1], render_card(kind, stats, DEMO_SOURCE))
    return paths


if __name__ == "__main__":  # python -m wit_retrieval.cards: refresh data_cards/ from the demo world
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for written in write_demo_cards(sys.argv[1] if len(sys.argv) > 1 else "data_cards", tmp):
            print(written)
