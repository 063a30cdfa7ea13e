"""Build MMIR (queries, corpus, qrels per split) and the released EI subset from WIT files.

Each WIT file is one shard task (`shard.build_shard`), run by `engine.run_shards` locally or
on Ray. Workers stage their queries as parquet parts under ROOT/.build-staging (on a Ray
cluster of several machines ROOT must be a shared file system); the main process streams
them into the tables, so memory stays bounded. Results come back in task order and tasks are sorted by (split, file), so the
output is identical whatever the engine or worker count: queries keep their (file, row)
order, corpus is sorted by image_id, qrels follow the queries.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine import EngineConfig, run_shards
from ..errors import ConfigError
from ..io import fs
from ..io.shards import (
    UNIQUE_COLUMNS,
    publish_table_dir,
    read_manifest,
    read_parquet,
    read_table_dir,
    write_json_atomic,
    write_table_dir,
)
from ..layout import DataRoot
from ..schema import CORPUS, EI, QRELS, QUERIES, SPLITS
from .keys import repeats, split_images
from .linker import LinkerSpec
from .shard import (
    QUERIES_FILE,
    QUERY_FILE_OPTIONS,
    FilterConfig,
    ShardResult,
    ShardTask,
    StagedPart,
    build_shard,
    keys_of,
    preload,
    split_of,
    staged_part,
)
from .stats import SplitStats, update_stats


@dataclass(frozen=True)
class MmirConfig:
    """Inputs and choices of `build mmir` (written next to the output as config/build_mmir.json)."""

    out: str
    wit: tuple[str, ...]
    linker: str = "gazetteer"
    spans: str | None = None  # JSONL spans for the `spans` linker
    filters: FilterConfig = field(default_factory=FilterConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    min_name_length: int = 3
    batch_rows: int = 65536
    export: bool = True  # also write the TSV.gz export in the released layout
    train_shards: int = 5  # mmir_dataset_train-0000K-of-0000N files in the export

    def __post_init__(self):
        object.__setattr__(self, "wit", tuple(sorted(str(p) for p in self.wit)))
        if not self.wit:
            raise ConfigError("give the WIT files to build from (--wit FILES...)")
        for path in self.wit:
            if not fs.exists(path):
                raise ConfigError(f"WIT file not found: {path}")
            split_of(path)  # fails early on a name without a split

    def linker_spec(self) -> LinkerSpec:
        """The picklable linker description workers rebuild the linker from."""
        root = DataRoot(self.out)
        return LinkerSpec(
            name=self.linker, names_path=str(root.table("entity_names")), spans_path=self.spans,
            min_length=self.min_name_length,
        )


def build_mmir(config: MmirConfig) -> dict:
    """Write queries/corpus/qrels per split and the `ei` table (and the TSV.gz export when
    `config.export`); returns the build statistics."""
    section = _build(config)
    if config.export:
        from .export import export_all

        started = time.time()
        export_all(DataRoot(config.out), train_shards=config.train_shards)
        section["export_seconds"] = round(time.time() - started, 2)
    return section


def _build(config: MmirConfig) -> dict:
    from ..io.tsv import RowErrors

    started = time.time()
    root = DataRoot(config.out)
    for table in ("entities", "entity_names"):
        if read_manifest(root.table(table)) is None:
            raise ConfigError(f"{root.table(table)} is missing or unfinished: run `wit-retrieval build ei` first")
    tasks = plan_tasks(config)
    if config.linker == "gazetteer":  # a missing automaton cache is built once here, not in every worker
        from .linker import Gazetteer

        Gazetteer(config.linker_spec()).warm_cache()
    for name in ("queries", "corpus", "qrels"):  # a build replaces every split: no stale split folders
        fs.remove_tree(root.table(name))
    fs.remove_tree(staging_dir(root))
    errors = RowErrors()
    split_stats: dict[str, SplitStats] = {}
    entity_uses = EntityUses()
    workers = {"cpu_seconds": 0.0, "peak_rss_mib": 0.0, "shards": []}
    results = _measured(run_shards(build_shard, tasks, config.engine, partial(preload, tasks[0])), workers)
    # a split's tables are written as soon as its last shard is in (tasks come sorted by split):
    # grouping by the next result's split would leave the main process idle until it arrives
    entities = None
    for split, count in Counter(task.split for task in tasks).items():
        group = itertools.islice(results, count)
        stats = split_stats[split] = SplitStats()
        write_split(root, split, group, stats, errors, entity_uses)
        entity_uses.compact()
        if entities is None:  # read while workers still run the other splits, not after the last
            entities = ei_entities(root)
    fs.remove_tree(staging_dir(root))
    uses = entity_uses.totals()
    write_ei(root, uses, entities)
    write_json_atomic(root.config / "build_mmir.json", fs.redact_all(asdict(config)))
    section = {
        "splits": {s: split_stats[s].to_dict() for s in SPLITS if s in split_stats},
        "bad_rows": errors.to_dict(),
        "files": [Path(t.path).name for t in tasks],
        "linker": config.linker,
        "filters": asdict(config.filters),
        "seconds": round(time.time() - started, 2),
        "worker_cpu_seconds": round(workers["cpu_seconds"], 2),
        "worker_peak_rss_mib": round(workers["peak_rss_mib"], 1),
        "shards": workers["shards"],
    }
    update_stats(root, "mmir", section)
    update_stats(root, "ei", {"entities": uses.num_rows, "uses": pc.sum(uses["count"]).as_py() or 0})
    return section


def _measured(results: Iterator[ShardResult], workers: dict) -> Iterator[ShardResult]:
    """Pass results through, summing the workers' CPU time and keeping their peak memory."""
    for result in results:
        workers["cpu_seconds"] += result.cpu_seconds
        workers["peak_rss_mib"] = max(workers["peak_rss_mib"], result.peak_rss_mib)
        workers["shards"].append({"file": Path(result.path).name, "rows": result.stats.rows_read,
                                  "cpu_seconds": round(result.cpu_seconds, 3)})
        yield result


def plan_tasks(config: MmirConfig) -> list[ShardTask]:
    """One task per WIT file, ordered by (split, path) so outputs never depend on scheduling."""
    spec = config.linker_spec()
    entities = str(DataRoot(config.out).table("entities"))
    staging = str(staging_dir(DataRoot(config.out)))
    tasks = sorted(config.wit, key=lambda path: (SPLITS.index(split_of(path)), path))
    # a reader's background thread pays where a core is spare, not with a worker on every core
    background = config.engine.name == "local" and min(config.engine.num_workers, len(tasks)) < (os.cpu_count() or 1)
    return [ShardTask(path, split_of(path), entities, spec, config.filters, config.batch_rows, staging, index,
                      background)
            for index, path in enumerate(tasks)]


def staging_dir(root: DataRoot) -> Path:
    """Where workers stage query parts during a build (a dot folder: readers skip it)."""
    return root.root / ".build-staging"


class EntityUses:
    """How many queries use each entity: the parts' count tables, summed once in Arrow at the end
    (a Counter updated part by part cost the main process half a second of a 1M-row build)."""

    _SCHEMA = pa.schema([("entity_id", pa.string()), ("count", pa.int64())])

    def __init__(self):
        self._parts: list[pa.Table] = []

    def add(self, counts: pa.Table) -> None:
        """Add a table of (entity_id, count)."""
        self._parts.append(counts.select(self._SCHEMA.names).cast(self._SCHEMA))

    def subtract(self, entity_ids: list[str]) -> None:
        """Take back one use of each id listed (once per listing)."""
        self._parts.append(pa.table({"entity_id": pa.array(entity_ids, pa.string()),
                                     "count": pa.array([-1] * len(entity_ids), pa.int64())}))

    def compact(self) -> None:
        """Sum what was added so far into one table (done after each split, while workers run the
        next: the last sum, at the end of the build, then has little left to add)."""
        if len(self._parts) > 1:
            self._parts = [self._summed()]

    def totals(self) -> pa.Table:
        """(entity_id, count) of the entities used at least once."""
        if not self._parts:
            return self._SCHEMA.empty_table()
        summed = self._summed()
        return summed.filter(pc.greater(summed["count"], 0))

    def _summed(self) -> pa.Table:
        summed = pa.concat_tables(self._parts).group_by("entity_id", use_threads=False).aggregate([("count", "sum")])
        return summed.rename_columns(["entity_id", "count"]).select(self._SCHEMA.names)


def write_split(root: DataRoot, split: str, results: Iterator[ShardResult], stats: SplitStats, errors,
                entity_uses: EntityUses) -> None:
    """One split's shard results -> its queries (the workers' files, moved in place), corpus and qrels."""
    parts: list[StagedPart] = []
    for result in results:  # counted as they come: the main process is idle while workers run
        stats.add(result.stats)
        errors.merge(result.errors)
        parts.extend(result.parts)
        for part in result.parts:
            entity_uses.add(part.entity_counts)
    if _repeats(parts):
        _drop_duplicates(parts, stats, entity_uses)
    meta = {"builder": "build_mmir", "split": split}
    publish_table_dir(root.table_split("queries", split), [(p.path, p.rows) for p in parts], QUERIES_FILE, meta=meta)
    publish_table_dir(root.table_split("qrels", split), [(p.qrels_path, p.rows) for p in parts], QRELS, meta=meta)
    images = split_images([p.images for p in parts], _CORPUS_FILE)
    stats.corpus = images.num_rows
    write_table_dir(root.table_split("corpus", split), [images], _CORPUS_FILE, meta=meta, **UNIQUE_COLUMNS)


def _repeats(parts: list[StagedPart]) -> bool:
    """Whether a query id occurs twice in the split (on the workers' sorted id tails when all have them)."""
    if not parts:
        return False
    if all(p.query_numbers is not None for p in parts):
        numbers = np.concatenate([p.query_numbers for p in parts])
        return repeats(None, numbers)
    return repeats(pa.chunked_array([_query_ids(p) for p in parts], pa.string()))


def _query_ids(part: StagedPart) -> pa.Array:
    if part.query_ids is not None:
        return part.query_ids
    return read_parquet(part.path, columns=["query_id"])["query_id"].combine_chunks()


def _drop_duplicates(parts: list[StagedPart], stats: SplitStats, entity_uses: EntityUses) -> None:
    """Keep the first of queries whose id repeats within the split (a WIT row given twice).

    Rare, so done in Python: the part files holding a repeat are rewritten without it, their
    records remade, and its counts and entity uses taken back out.
    """
    from ..io.shards import write_parquet_atomic

    seen: set[str] = set()
    for number, part in enumerate(parts):
        keep = []
        for qid in _query_ids(part).to_pylist():
            keep.append(qid not in seen)
            seen.add(qid)
        if all(keep):
            continue
        mask = pa.array(keep)
        table = read_parquet(part.path)
        dropped = table.filter(pc.invert(mask))
        stats.duplicates += dropped.num_rows
        stats.count_queries(dropped.append_column("split", pa.array([""] * dropped.num_rows)), sign=-1)
        entity_uses.subtract(pc.list_flatten(dropped["entity_ids"]).to_pylist())
        table = table.filter(mask)
        write_parquet_atomic(table, part.path, **QUERY_FILE_OPTIONS)
        write_parquet_atomic(read_parquet(part.qrels_path).filter(mask), part.qrels_path, **UNIQUE_COLUMNS)
        # its entity counts were added already (and the repeats' uses taken back above)
        parts[number] = staged_part(part.path, keys_of(table), part.qrels_path, part.entity_counts)


_CORPUS_FILE = pa.schema([f for f in CORPUS if f.name != "split"])


# the last write of a build: a dictionary only for the column whose values repeat, no statistics
# (37 ms instead of 52 for 100k entities, and a smaller file)
_EI_FILE_OPTIONS = {"use_dictionary": ["language"], "write_statistics": False}


def ei_entities(root: DataRoot) -> pa.Table:
    """The entities table's columns the EI dataset keeps, sorted by entity_id."""
    return read_table_dir(root.table("entities"), columns=["entity_id", "language", "page_title", "image_url",
                                                          "image_id"]).sort_by("entity_id")


def write_ei(root: DataRoot, uses: pa.Table, entities: pa.Table | None = None) -> pa.Table:
    """The released EI dataset: entities MMIR queries use (`uses`: entity_id, count), with how many
    queries use each (`entities`: ei_entities, read here when not given; the rows keep its order)."""
    if entities is None:
        entities = ei_entities(root)
    found = pc.index_in(entities["entity_id"], value_set=uses["entity_id"])
    used = pc.is_valid(found)
    table = entities.filter(used).append_column("num_queries", uses["count"].take(found.filter(used)))
    write_table_dir(root.table("ei"), [table], EI, meta={"builder": "build_mmir"}, **_EI_FILE_OPTIONS)
    return table


def read_split_table(root: str | Path, name: str, split: str | None = None) -> pa.Table:
    """A split table read back through pyarrow.dataset with hive partitioning (split column included)."""
    import pyarrow.dataset as ds

    filesystem, path = fs.resolve(DataRoot(root).table(name))  # pyarrow alone would not know the endpoint
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive",
                         exclude_invalid_files=True)
    table = dataset.to_table(filter=(ds.field("split") == split) if split else None)
    schema = {"queries": QUERIES, "corpus": CORPUS, "qrels": QRELS}[name]
    if "split" in schema.names:
        table = table.select(schema.names).cast(schema)
    return table
