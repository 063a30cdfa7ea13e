"""The table section of docs/formats.md, rendered from schema.py so the docs cannot drift.

Every column of every canonical schema needs a description here; a test fails when a column
is added to schema.py without one.
"""

from __future__ import annotations

import pyarrow as pa

from . import schema

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "entities": {
        "entity_id": "Wikidata QID when known (one entity across languages), else `{lang}:{title}`",
        "language": "language whose page gave the canonical image",
        "page_title": "title with spaces (as WIT writes titles)",
        "page_url": "`https://{lang}.wikipedia.org/wiki/{Title}`",
        "image_url": "canonical image as a Commons URL",
        "image_id": "`image_id(image_url)`: 16 hex digits of SHA-256 of the normalised URL",
        "image_source": "`page_props` (page_image_free, else page_image) or `wit_main_image`",
        "qid": "Wikidata QID, null when unknown",
        "languages": "every language with a page for this entity",
        "mime_type": "from WIT when known",
        "width": "original width from WIT when known",
        "height": "original height from WIT when known",
    },
    "entity_names": {
        "entity_id": "the entity the name points to",
        "language": "language of the name",
        "name": "surface form the linker matches (underscores as spaces)",
        "source": "`title`, `title_unqualified` (trailing parenthetical removed) or `redirect`",
    },
    "queries": {
        "query_id": "`{split}-` + 16 hex digits of a hash of the WIT row's identity",
        "split": "train | val | test, from the WIT file name (never re-split)",
        "language": "WIT row language",
        "page_title": "WIT page title",
        "page_url": "WIT page URL",
        "target_image_id": "`image_id` of the target (the WIT row's image)",
        "target_image_url": "the WIT row's image URL",
        "masked_text": "reference description with `[MASK_i]` for entity i (numbered by first occurrence)",
        "entity_ids": "entity of `[MASK_i]` at index i",
        "entity_image_urls": "canonical image of entity i at index i",
        "mentions": "every linked mention: mask, entity_id, surface, start, end (offsets in original_text)",
        "query_type": "`single` (1 distinct entity) or `multi` (2 or more)",
        "num_entities": "number of distinct entities",
        "original_text": "the reference description as in WIT",
    },
    "corpus": {
        "image_id": "stable id of the image",
        "image_url": "image URL",
        "split": "the split whose targets the image belongs to",
    },
    "qrels": {
        "query_id": "query",
        "image_id": "relevant image",
        "relevance": "1 for the target",
    },
    "ei": {
        "entity_id": "entity used by at least one MMIR query",
        "language": "language of the canonical image's page",
        "page_title": "title",
        "image_url": "canonical image URL",
        "image_id": "`image_id(image_url)`",
        "num_queries": "number of MMIR queries (all splits) that use the entity",
    },
    "images manifest": {
        "image_id": "stable id of the image",
        "url": "the URL as given (identity; host aliases do not change it)",
        "status": "`ok` or `failed`",
        "error": "null when ok; else a class: timeout, http_429, http_404, http_5xx, too_large, "
                 "not_an_image, decode_error, disallowed_host, redirect_loop, connection, ...",
        "retryable": "whether `images retry-failed` will try it again",
        "width": "stored width",
        "height": "stored height",
        "sha256": "SHA-256 of the stored bytes",
        "shard": "tar shard holding the image",
        "offset": "byte offset of the image member's header in the tar",
        "source": "`mirror` or `http`",
    },
}

SCHEMAS: dict[str, pa.Schema] = {**schema.TABLES, "images manifest": schema.IMAGES_MANIFEST}


def undocumented() -> list[str]:
    """`table.column` names present in schema.py without a description here."""
    return [f"{table}.{name}" for table, sch in SCHEMAS.items() for name in sch.names
            if name not in DESCRIPTIONS.get(table, {})]


def render_tables_markdown() -> str:
    """One markdown table per canonical schema: column, arrow type, meaning."""
    lines = []
    for table, sch in SCHEMAS.items():
        lines += [f"### `{table}`", "", "| column | type | meaning |", "|---|---|---|"]
        for fld in sch:
            lines.append(f"| `{fld.name}` | `{fld.type}` | {DESCRIPTIONS.get(table, {}).get(fld.name, '')} |")
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- TABLES START -->\n", "<!-- TABLES END -->"


def refresh_formats_doc(path) -> None:
    """Re-render the TABLES section of docs/formats.md in place (atomically)."""
    from pathlib import Path

    from .io.shards import write_text_atomic

    text = Path(path).read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    write_text_atomic(path, f"{head}{START}{render_tables_markdown()}{END}{tail}")
