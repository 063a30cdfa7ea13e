"""The MMIR shard function: one WIT file -> its queries, run by any engine.

Everything a worker needs is in the picklable `ShardTask`; the linker and the entity table
are loaded once per process (module-level caches), never per row.
"""

from __future__ import annotations

import itertools
import resource
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import MENTION, QRELS, QUERIES
from .fast_ids import normal_image_id, normal_url, query_id
from .keys import part_images, sorted_tails
from .linker import LinkerSpec, load_linker
from .mask import context_words, mask_text
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
    staging: str = ""  # folder the worker writes its query files to (the main process moves them in place)
    index: int = 0  # the task's position: names its staged parts
    background_reads: bool = True  # decompress in a thread (io.tsv.read_wit_batches): only with a spare core


@dataclass
class StagedPart:
    """One query file a worker wrote (queries without the split column, input order), and what
    the main process needs of it without reading it back: its ids and its entity counts."""

    path: str
    rows: int
    qrels_path: str  # the part's qrels (query_id, image_id, relevance), also final
    images_path: str  # keys.part_images of its targets, an Arrow file beside it (the corpus, merged by the main process)
    query_numbers: np.ndarray | None  # keys.sorted_tails of its query ids (repeats in the split)
    query_ids: pa.Array | None  # the query ids themselves, only when they have no tails
    entity_counts: pa.Table  # entity_id, count (queries using each entity)

    @property
    def images(self) -> pa.Table:
        """The part's images, memory-mapped (they never pass through the result pipe: ~9 MB a part
        pickled by the worker, read and unpickled by the main process, cost both a few percent)."""
        from ..io.shards import read_arrow

        return read_arrow(self.images_path)


@dataclass
class ShardResult:
    """A shard's staged query parts, counts (its queries counted before cross-shard dedup), and bad rows."""

    split: str
    path: str
    parts: list[StagedPart]
    stats: SplitStats
    errors: object  # io.tsv.RowErrors
    cpu_seconds: float = 0.0  # CPU time of this shard in its worker, one-time loads excluded
    peak_rss_mib: float = 0.0  # the worker's peak memory so far


class EntityImages(Mapping):
    """entity_id -> (image_url, image_id), and the same as Arrow columns (`table`) for the C path.

    The dict behind the mapping is built on first use only: the C path reads the columns and
    never needs it.
    """

    def __init__(self, table: pa.Table):
        self.table = table
        self._dict: dict[str, tuple[str, str]] | None = None

    def _mapping(self) -> dict[str, tuple[str, str]]:
        if self._dict is None:
            table = self.table
            self._dict = dict(zip(table["entity_id"].to_pylist(),
                                  zip(table["image_url"].to_pylist(), table["image_id"].to_pylist())))
        return self._dict

    def __getitem__(self, key: str) -> tuple[str, str]:
        return self._mapping()[key]

    def __iter__(self):
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())


_ENTITY_IMAGES: dict[str, EntityImages] = {}


def entity_images(entities_path: str) -> EntityImages:
    """The entities' images, read once per process."""
    if entities_path not in _ENTITY_IMAGES:
        from ..io.shards import read_table_dir

        table = read_table_dir(entities_path, columns=["entity_id", "image_url", "image_id"])
        _ENTITY_IMAGES[entities_path] = EntityImages(table.combine_chunks())
    return _ENTITY_IMAGES[entities_path]


def build_shard(task: ShardTask) -> ShardResult:
    """Link, mask and filter every row of one WIT file that has a reference description."""
    from ..io.tsv import RowErrors, read_wit_batches

    errors = RowErrors()
    stats = SplitStats()
    linker = load_linker(task.linker)
    images = entity_images(task.entities_path)
    started = time.process_time()
    loads = getattr(linker, "load_cpu_seconds", 0.0)  # automata load lazily: subtract that one-time cost
    staged: list[StagedPart] = []
    pending: list[pa.Table] = []
    batches = read_wit_batches(task.path, columns=WIT_QUERY_COLUMNS, batch_rows=task.batch_rows, errors=errors,
                               background=task.background_reads)
    for batch in _rebatched(batches, task.batch_rows):
        stats.rows_read += batch.num_rows
        text = batch.column("caption_reference_description")
        # only rows with a reference description are linked: filter in arrow, not in Python
        has_text = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
        candidates = has_text.true_count
        stats.with_reference += candidates
        if candidates:
            pending.append(_queries(batch, has_text, task, linker, images, stats))
        if sum(t.num_rows for t in pending) >= STAGE_ROWS:
            staged.append(_stage(pending, task, len(staged), stats))
            pending = []
    if pending:
        staged.append(_stage(pending, task, len(staged), stats))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    cpu = time.process_time() - started - (getattr(linker, "load_cpu_seconds", 0.0) - loads)
    return ShardResult(task.split, task.path, staged, stats, errors, cpu, peak)


def _rebatched(batches, rows: int):
    """The reader's batches (one per parsed block, often a few thousand rows) joined to about `rows`,
    so that the per-batch work (grouping, arrays, tables) is paid rarely."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


# Workers write their queries in parts of about this many rows, so neither a worker nor the
# main process ever holds a whole WIT file's queries (a real shard has ~3.7M rows).
STAGE_ROWS = 100_000

# The split lives in the hive folder name (split=train); files leave it out so that
# pyarrow.dataset(..., partitioning="hive") reads one split column without a conflict.
QUERIES_FILE = pa.schema([f for f in QUERIES if f.name != "split"])


# dictionaries only where values repeat, and no statistics: the text columns are unique per row,
# and trying both cost a fifth of the write. lz4, not zstd: measured on 84k queries, a write of
# 0.10 s instead of 0.14 s (a seventh of a worker's CPU per shard) for 13 MiB instead of 8, and
# readers decompress it faster too. The corpus, qrels and ei tables stay zstd (small, written once).
QUERY_FILE_OPTIONS = {"use_dictionary": ["language", "query_type"], "write_statistics": False, "compression": "lz4"}


def _stage(tables: list[pa.Table], task: ShardTask, number: int, stats: SplitStats) -> StagedPart:
    """Write one final query file (parquet, in the worker: the writes run in parallel) and count it."""
    from ..io.shards import UNIQUE_COLUMNS, write_parquet_atomic

    stem = f"{task.staging}/{task.index:05d}-{number:05d}"  # a local path or a URI (io.fs)
    path = f"{stem}.parquet"
    table = pa.concat_tables(tables)
    stats.count_queries(table)
    counts = pc.value_counts(pc.list_flatten(table["entity_ids"]))
    entity_counts = pa.table({"entity_id": counts.field("values"), "count": counts.field("counts")})
    keys = keys_of(table)
    write_parquet_atomic(table.drop_columns(["split"]), path, **QUERY_FILE_OPTIONS)
    qrels_path = f"{stem}.qrels.parquet"
    write_parquet_atomic(qrels_of(keys), qrels_path, **UNIQUE_COLUMNS)
    return staged_part(path, keys, qrels_path, entity_counts)


def keys_of(queries: pa.Table) -> pa.Table:
    """A part's keys: query_id, target_image_id, target_image_url (one chunk, file order)."""
    return queries.select(["query_id", "target_image_id", "target_image_url"]).combine_chunks()


def staged_part(path: str, keys: pa.Table, qrels_path: str, entity_counts: pa.Table) -> StagedPart:
    """A part's record from its keys (`keys_of`); writes its images file."""
    from ..io.shards import write_arrow_atomic

    query_numbers = sorted_tails(keys["query_id"]) if keys.num_rows else np.zeros(0, np.uint64)
    images_path = path.removesuffix(".parquet") + ".images.arrow"
    write_arrow_atomic(part_images(keys["target_image_id"], keys["target_image_url"]), images_path)
    return StagedPart(path, keys.num_rows, qrels_path, images_path, query_numbers,
                      keys["query_id"] if query_numbers is None else None, entity_counts)


def qrels_of(keys: pa.Table) -> pa.Table:
    """The QRELS rows of queries: each query's one relevant image, its target."""
    return pa.table({"query_id": keys["query_id"], "image_id": keys["target_image_id"],
                     "relevance": pa.array(np.ones(keys.num_rows, np.int32))}, schema=QRELS)


_FAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # linker -> its fastpath.FastShard


def _queries(batch: pa.RecordBatch, has_text: pa.Array, task: ShardTask, linker, images, stats: SplitStats
             ) -> pa.Table:
    """The kept rows of a batch (of those with text): in C for the gazetteer when the extension is built,
    else in Python."""
    from . import fastpath
    from .linker import Gazetteer

    if isinstance(linker, Gazetteer) and fastpath.enabled():
        return _fast_shard(linker, images).queries(batch, task.split, task.filters, stats, has_text)
    return _queries_python(batch.filter(has_text), task, linker, images, stats)


def _fast_shard(linker, images):
    """The process's fastpath.FastShard of a linker and entity table."""
    from . import fastpath

    fast = _FAST.get(linker)
    if fast is None or fast.images is not images:
        fast = _FAST[linker] = fastpath.FastShard(linker, images)
    return fast


def preload(task: ShardTask) -> None:
    """Load once, in this process, what every shard task reads: the reader and writer modules, the
    linker with all its languages, the entity images and (C path) the automata.

    Workers forked after this share it copy-on-write (`engine.run_shards(preload=...)`) instead of
    each importing and loading its own: about a second per worker, and one copy in memory.
    """
    import pyarrow.csv  # noqa: F401  (lazy imports the first shard would otherwise pay)
    import pyarrow.parquet  # noqa: F401

    from ..io import tsv  # noqa: F401
    from . import fastpath
    from .linker import Gazetteer

    linker = load_linker(task.linker)
    images = entity_images(task.entities_path)
    if isinstance(linker, Gazetteer):
        fast = _fast_shard(linker, images) if fastpath.enabled() else None
        for code in linker.languages():
            fast.automaton(code) if fast is not None else linker.language(code)


def _queries_python(batch: pa.RecordBatch, task: ShardTask, linker, images, stats: SplitStats) -> pa.Table:
    """The reference implementation (and the path of the spans linker)."""
    filters = task.filters
    split, needs_row_id = task.split, task.linker.name == "spans"
    min_entities, max_entities = max(filters.min_entities, 1), filters.max_entities
    min_words, drop_entity_image = filters.min_context_words, filters.drop_target_is_entity_image
    dropped = stats.dropped
    languages, page_urls, urls, titles, texts = (batch.column(c).to_pylist() for c in WIT_QUERY_COLUMNS)
    languages = [language or "" for language in languages]
    row_ids = None
    if needs_row_id:
        row_ids = [query_id(split, normal_url(u) if u else "", p or "", t) for u, p, t in zip(urls, page_urls, texts)]
    linked = linker.link_batch(texts, languages, row_ids)
    # the kept rows' values, column by column (one pa.array per column, no row tuples)
    columns = _Columns()
    for i, spans in enumerate(linked):
        if not spans:  # most dropped rows (min_entities >= 1): nothing to mask
            dropped["no_entity"] += 1
            continue
        masked = mask_text(texts[i], spans)
        count = len(masked.entity_ids)  # the distinct entities, in mask order
        if count < min_entities:
            dropped["no_entity"] += 1
            continue
        if count > max_entities:
            dropped["too_many_entities"] += 1
            continue
        url = urls[i]
        if not url:
            dropped["no_target_image"] += 1
            continue
        entity = [images.get(e) for e in masked.entity_ids]
        if None in entity:  # a spans file naming an entity we do not have
            dropped["unknown_entity"] += 1
            continue
        normal = normal_url(url)
        target = normal_image_id(normal)
        if drop_entity_image and any(e[1] == target for e in entity):
            dropped["target_is_entity_image"] += 1
            continue
        if context_words(masked) < min_words:
            dropped["too_few_words"] += 1
            continue
        columns.add(i, row_ids[i] if row_ids else query_id(split, normal, page_urls[i] or "", texts[i]), target,
                    masked, [e[0] for e in entity], count)
    return columns.table(split, batch)


class _Columns:
    """The kept rows of a batch as Python lists of primitives, one list per output column."""

    def __init__(self):
        self.rows: list[int] = []
        self.query_ids: list[str] = []
        self.targets: list[str] = []
        self.masked: list[str] = []
        self.entity_ids: list[list[str]] = []
        self.entity_urls: list[list[str]] = []
        self.num_entities: list[int] = []
        self.mention_counts: list[int] = []
        self.mentions: list[tuple] = []  # flat over rows

    def add(self, row: int, query_id: str, target: str, masked, entity_urls: list[str], count: int) -> None:
        """One kept row."""
        self.rows.append(row)
        self.query_ids.append(query_id)
        self.targets.append(target)
        self.masked.append(masked.masked_text)
        self.entity_ids.append(masked.entity_ids)
        self.entity_urls.append(entity_urls)
        self.num_entities.append(count)
        self.mention_counts.append(len(masked.mentions))
        self.mentions.extend(masked.mentions)

    def table(self, split: str, batch: pa.RecordBatch) -> pa.Table:
        """A QUERIES table; copied columns, split and query_type are filled in by arrow."""
        def array(name: str, values: list) -> pa.Array:
            return pa.array(values, QUERIES.field(name).type)

        arrays = {"query_id": array("query_id", self.query_ids),
                  "target_image_id": array("target_image_id", self.targets),
                  "masked_text": array("masked_text", self.masked),
                  "entity_ids": array("entity_ids", self.entity_ids),
                  "entity_image_urls": array("entity_image_urls", self.entity_urls),
                  "num_entities": array("num_entities", self.num_entities)}
        taken = batch.take(pa.array(self.rows, pa.int64()))
        arrays.update({name: taken.column(source) for name, source in COPIED_COLUMNS.items()})
        arrays["mentions"] = _mentions_array(self.mention_counts, self.mentions)
        arrays["split"] = pa.array([split] * len(self.rows), pa.string())
        arrays["query_type"] = pc.if_else(pc.greater(arrays["num_entities"], 1), "multi", "single")
        return pa.table([arrays[name] for name in QUERIES.names], schema=QUERIES)


# columns copied from the WIT batch as they are (arrow take, no Python round trip)
COPIED_COLUMNS = {"language": "language", "page_title": "page_title", "page_url": "page_url",
           "target_image_url": "image_url", "original_text": "caption_reference_description"}


def _mentions_array(counts: list[int], flat: list[tuple]) -> pa.Array:
    """list<MENTION> from per-row mention counts and the flat (mask, entity_id, surface, start, end) tuples."""
    offsets = list(itertools.accumulate(counts, initial=0))
    fields = list(zip(*flat)) if flat else [[] for _ in MENTION]
    children = [pa.array(values, field.type) for values, field in zip(fields, MENTION)]
    struct = pa.StructArray.from_arrays(children, fields=list(MENTION))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct, type=QUERIES.field("mentions").type)


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
