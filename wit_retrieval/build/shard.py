"""The MMIR shard function: one WIT file -> its queries, run by any engine.

Everything a worker needs is in the picklable `ShardTask`; the linker and the entity table
are loaded once per process (module-level caches), never per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..ids import image_id, query_id
from ..schema import QUERIES
from .linker import LinkerSpec, load_linker
from .mask import mask_text
from .names import count_words
from .stats import SplitStats

WIT_QUERY_COLUMNS = ["language", "page_url", "image_url", "page_title", "caption_reference_description"]


@dataclass(frozen=True)
class FilterConfig:
    """Which linked rows become queries (each drop is counted under the filter's name).

    Filters apply in this order; a row is counted under the first that drops it:
    `no_entity` (fewer than min_entities), `too_many_entities` (more than max_entities
    distinct entities), `target_is_entity_image` (the row's image is the canonical image of
    one of its entities: the answer would be in the query), `too_few_words` (fewer than
    min_context_words words outside the masks: nothing relational left to read).
    """

    min_entities: int = 1
    max_entities: int = 5
    min_context_words: int = 2
    drop_target_is_entity_image: bool = True


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: a WIT file of a split, and how to link and filter it."""

    path: str
    split: str
    entities_path: str
    linker: LinkerSpec
    filters: FilterConfig
    batch_rows: int = 65536


@dataclass
class ShardResult:
    """A shard's queries (QUERIES schema, input order), counts, and bad rows."""

    split: str
    path: str
    queries: pa.Table
    stats: SplitStats
    errors: object  # io.tsv.RowErrors


_ENTITY_IMAGES: dict[str, dict[str, tuple[str, str]]] = {}


def entity_images(entities_path: str) -> dict[str, tuple[str, str]]:
    """entity_id -> (image_url, image_id), read once per process."""
    if entities_path not in _ENTITY_IMAGES:
        from ..io.shards import read_table_dir

        table = read_table_dir(entities_path, columns=["entity_id", "image_url", "image_id"])
        _ENTITY_IMAGES[entities_path] = dict(
            zip(table["entity_id"].to_pylist(), zip(table["image_url"].to_pylist(), table["image_id"].to_pylist()))
        )
    return _ENTITY_IMAGES[entities_path]


def build_shard(task: ShardTask) -> ShardResult:
    """Link, mask and filter every row of one WIT file that has a reference description."""
    from ..io.tsv import RowErrors, read_wit_batches

    errors = RowErrors()
    stats = SplitStats()
    linker = load_linker(task.linker)
    images = entity_images(task.entities_path)
    parts = []
    for batch in read_wit_batches(task.path, columns=WIT_QUERY_COLUMNS, batch_rows=task.batch_rows, errors=errors):
        stats.rows_read += batch.num_rows
        text = batch.column("caption_reference_description")
        # only rows with a reference description are linked: filter in arrow, not in Python
        has_text = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
        batch = batch.filter(has_text)
        stats.with_reference += batch.num_rows
        if batch.num_rows:
            parts.append(_queries(batch, task, linker, images, stats))
    queries = pa.concat_tables(parts) if parts else QUERIES.empty_table()
    return ShardResult(task.split, task.path, queries, stats, errors)


def _queries(batch: pa.RecordBatch, task: ShardTask, linker, images, stats: SplitStats) -> pa.Table:
    filters = task.filters
    columns: dict[str, list] = {name: [] for name in QUERIES.names}
    split, needs_row_id = task.split, task.linker.name == "spans"
    dropped = stats.dropped
    for language, page_url, url, title, text in zip(*(batch.column(c).to_pylist() for c in WIT_QUERY_COLUMNS)):
        row_id = query_id(split, url or "", page_url or "", text) if needs_row_id else ""
        spans = linker.link(text, language or "", row_id)
        masked = mask_text(text, spans) if spans else None
        count = len(masked.entity_ids) if masked else 0
        if count < max(filters.min_entities, 1):
            dropped["no_entity"] += 1
            continue
        if count > filters.max_entities:
            dropped["too_many_entities"] += 1
            continue
        entity = [images.get(e) for e in masked.entity_ids]
        if any(e is None for e in entity):  # a spans file naming an entity we do not have
            dropped["unknown_entity"] += 1
            continue
        target = image_id(url) if url else None
        if target is None:
            dropped["no_target_image"] += 1
            continue
        if filters.drop_target_is_entity_image and any(e[1] == target for e in entity):
            dropped["target_is_entity_image"] += 1
            continue
        if count_words(masked.context) < filters.min_context_words:
            dropped["too_few_words"] += 1
            continue
        _append(columns, (
            row_id or query_id(split, url, page_url or "", text), split, language, title, page_url, target, url,
            masked.masked_text, masked.entity_ids, [e[0] for e in entity], masked.mentions,
            "single" if count == 1 else "multi", count, text,
        ))
    return pa.Table.from_pydict(columns, schema=QUERIES)


def _append(columns: dict[str, list], values: tuple) -> None:
    for name, value in zip(QUERIES.names, values):
        columns[name].append(value)


def split_of(path: str | Path) -> str:
    """The split a WIT file belongs to, from its name (wit_v1.{train,val,test}...)."""
    import re

    name = Path(path).name.lower()
    match = re.search(r"(?:^|[._-])(train|val|validation|test)(?:[._-]|$)", name)
    if not match:
        from ..errors import ConfigError

        raise ConfigError(
            f"cannot tell the split of {path}: its name must contain train, val or test "
            "(as in wit_v1.train.all-00000-of-00010.tsv.gz)"
        )
    return "val" if match.group(1) == "validation" else match.group(1)
