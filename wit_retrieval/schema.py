"""The canonical columns of every table the toolkit writes (see docs/formats.md)."""

from __future__ import annotations

import pyarrow as pa

SPLITS = ("train", "val", "test")

# WIT release: 17 columns in this order (reference/domain.md section 2).
WIT_COLUMNS = (
    "language", "page_url", "image_url", "page_title", "section_title",
    "hierarchical_section_title", "caption_reference_description",
    "caption_attribution_description", "caption_alt_text_description", "mime_type",
    "original_height", "original_width", "is_main_image", "attribution_passes_lang_id",
    "page_changed_recently", "context_page_description", "context_section_description",
)
WIT_INT_COLUMNS = frozenset({"original_height", "original_width"})
WIT_BOOL_COLUMNS = frozenset({"is_main_image", "attribution_passes_lang_id", "page_changed_recently"})

ENTITIES = pa.schema([
    ("entity_id", pa.string()),      # Wikidata QID when known, else "{lang}:{title}"
    ("language", pa.string()),       # language whose page gave the canonical image
    ("page_title", pa.string()),     # with spaces, as WIT writes titles
    ("page_url", pa.string()),
    ("image_url", pa.string()),      # canonical image (Commons URL)
    ("image_id", pa.string()),
    ("image_source", pa.string()),   # page_props | wit_main_image
    ("qid", pa.string()),            # null when unknown
    ("languages", pa.list_(pa.string())),  # every language with a page for this entity
    ("mime_type", pa.string()),
    ("width", pa.int64()),
    ("height", pa.int64()),
])

ENTITY_NAMES = pa.schema([
    ("entity_id", pa.string()),
    ("language", pa.string()),
    ("name", pa.string()),
    ("source", pa.string()),         # title | title_unqualified | redirect
])

MENTION = pa.struct([
    ("mask", pa.int32()),            # i of [MASK_i]
    ("entity_id", pa.string()),
    ("surface", pa.string()),
    ("start", pa.int32()),           # character offsets in original_text
    ("end", pa.int32()),
])

QUERIES = pa.schema([
    ("query_id", pa.string()),
    ("split", pa.string()),
    ("language", pa.string()),
    ("page_title", pa.string()),
    ("page_url", pa.string()),
    ("target_image_id", pa.string()),
    ("target_image_url", pa.string()),
    ("masked_text", pa.string()),
    ("entity_ids", pa.list_(pa.string())),        # index i is [MASK_i]
    ("entity_image_urls", pa.list_(pa.string())), # index i is [MASK_i]
    ("mentions", pa.list_(MENTION)),
    ("query_type", pa.string()),                  # single | multi
    ("num_entities", pa.int32()),
    ("original_text", pa.string()),
])

CORPUS = pa.schema([
    ("image_id", pa.string()),
    ("image_url", pa.string()),
    ("split", pa.string()),
])

QRELS = pa.schema([
    ("query_id", pa.string()),
    ("image_id", pa.string()),
    ("relevance", pa.int32()),
])

# The EI dataset as released: the entities MMIR queries use, with how often.
EI = pa.schema([
    ("entity_id", pa.string()),
    ("language", pa.string()),
    ("page_title", pa.string()),
    ("image_url", pa.string()),
    ("image_id", pa.string()),
    ("num_queries", pa.int64()),
])

IMAGES_MANIFEST = pa.schema([
    ("image_id", pa.string()),
    ("url", pa.string()),
    ("status", pa.string()),         # ok | failed
    ("error", pa.string()),          # null when ok; else a class: timeout, http_429, ...
    ("retryable", pa.bool_()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("sha256", pa.string()),
    ("shard", pa.string()),
    ("offset", pa.int64()),          # byte offset of the image member's header in the tar
    ("source", pa.string()),         # mirror | http
])

TABLES = {
    "entities": ENTITIES,
    "entity_names": ENTITY_NAMES,
    "queries": QUERIES,
    "corpus": CORPUS,
    "qrels": QRELS,
    "ei": EI,
}
SPLIT_TABLES = frozenset({"queries", "corpus", "qrels"})
