"""Stratified, seeded sampling of annotation items from a build, with gold control items.

Strata are (language, query_type) for query tasks and language for `ei-correct`. Gold items
are controls whose answer is known by construction: an entity paired with another entity's
image, a text linked to another query's entities, a query shown with another query's target
(all "no"), or a run's candidate replaced by the true target ("yes").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..ids import image_id as url_image_id
from ..io.shards import read_manifest, read_table_dir
from ..layout import DataRoot
from .tasks import Item, get_kind, make_item_id

Run = Mapping[str, list[tuple[str, float]]]
QUERY_KINDS = ("mask-correct", "mmir-answerable", "relevance")


@dataclass(frozen=True)
class SampleConfig:
    """What to sample: task kinds, split, size, overlap and gold share."""

    task_kinds: tuple[str, ...] = ("ei-correct",)
    split: str = "test"
    n: int = 200                     # non-gold items per task kind
    seed: int = 0
    overlap: int = 3                 # raters per item
    gold_fraction: float = 0.1       # gold items, as a share of n
    allocation: str = "equal"        # equal | proportional (across strata)
    depth: int = 3                   # relevance: top non-targets per query considered

    def __post_init__(self):
        for kind in self.task_kinds:
            get_kind(kind)
        if self.n < 1 or self.overlap < 1:
            raise ConfigError("--n and --overlap must be at least 1")
        if not 0 <= self.gold_fraction < 1:
            raise ConfigError("--gold-fraction must be in [0, 1)")
        if self.allocation not in ("equal", "proportional"):
            raise ConfigError(f"--allocation must be equal or proportional, not {self.allocation!r}")


def allocate(sizes: Mapping[tuple, int], n: int, mode: str) -> dict[tuple, int]:
    """How many items to draw per stratum: equal shares (water-filling) or proportional."""
    keys = sorted(sizes, key=lambda k: tuple("" if v is None else str(v) for v in k))
    n = min(n, sum(sizes.values()))
    if mode == "proportional":
        total = sum(sizes.values())
        exact = {k: n * sizes[k] / total for k in keys}
        out = {k: int(exact[k]) for k in keys}
        # Largest remainders get the leftover items, ties by stratum order (deterministic).
        for k in sorted(keys, key=lambda k: -(exact[k] - out[k]))[: n - sum(out.values())]:
            out[k] += 1
        return out
    out = dict.fromkeys(keys, 0)
    left, open_keys = n, [k for k in keys if sizes[k] > 0]
    while left > 0 and open_keys:
        share = max(1, left // len(open_keys))
        for k in list(open_keys):
            take = min(share, sizes[k] - out[k], left)
            out[k] += take
            left -= take
            if out[k] >= sizes[k]:
                open_keys.remove(k)
            if left == 0:
                break
    return out


def _stratum_codes(strata: pa.Table, key_columns: list[str]) -> tuple[np.ndarray, list[tuple]]:
    """Per row, the index of its stratum in the returned list of stratum keys (vectorised)."""
    null = "\x00"  # stands for a null value inside the joined key
    columns = [pc.fill_null(strata.column(c).cast(pa.string()), null) for c in key_columns]
    joined = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "\x1f")
    uniques = pc.unique(joined)
    codes = pc.index_in(joined, value_set=uniques).to_numpy(zero_copy_only=False)
    keys = [tuple(None if v == null else v for v in u.split("\x1f")) for u in uniques.to_pylist()]
    return codes, keys


def _draw(strata: pa.Table, key_columns: list[str], config: SampleConfig, rng) -> tuple[np.ndarray, dict]:
    """Row indices of a stratified sample of `strata`, and the stratum sizes."""
    codes, keys = _stratum_codes(strata, key_columns)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(keys) + 1))
    groups = {key: order[bounds[k]:bounds[k + 1]] for k, key in enumerate(keys)}
    sizes = {k: len(v) for k, v in groups.items()}
    chosen = []
    for key, count in allocate(sizes, config.n, config.allocation).items():
        if count:
            chosen.extend(rng.choice(groups[key], size=count, replace=False).tolist())
    chosen = np.asarray(chosen, dtype=np.int64)
    rng.shuffle(chosen)  # raters should not see the strata in blocks
    return chosen, sizes


def _table(directory, label: str):
    if read_manifest(directory) is None:
        raise InputError(f"no finished {label} table here; build it first (wit-retrieval build)",
                         path=str(directory))
    return directory


def _rows_where(directory, column: str, values: list[str]) -> dict[str, dict]:
    """Rows of a table folder whose `column` is in `values`, keyed by that column.

    Reads the key column first and a part file's other columns only when it holds a wanted row.
    """
    manifest = read_manifest(directory)
    wanted = pa.array(values, pa.string())
    out: dict[str, dict] = {}
    for part in manifest["files"]:
        path = directory / part["file"]
        mask = pc.is_in(pq.read_table(path, columns=[column]).column(column), value_set=wanted)
        if pc.any(mask).as_py():
            out.update((row[column], row) for row in pq.read_table(path).filter(mask).to_pylist())
    return out


def _entity_names(root: DataRoot, entity_ids: set[str]) -> dict[str, dict]:
    directory = root.table("entities")
    if read_manifest(directory) is None or not entity_ids:
        return {}
    return _rows_where(directory, "entity_id", sorted(entity_ids))


def sample_items(root, config: SampleConfig, run: Run | None = None) -> tuple[list[Item], dict]:
    """Items for every task kind of `config`, and a manifest describing the sample."""
    root = DataRoot(root)
    items: list[Item] = []
    manifest = {"config": asdict(config), "root": str(root.root), "task_kinds": {},
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for offset, kind in enumerate(config.task_kinds):
        rng = np.random.default_rng([config.seed, offset])
        if kind == "ei-correct":
            kind_items, sizes = _sample_entities(root, config, rng)
        elif kind == "relevance":
            if run is None:
                raise ConfigError("task kind 'relevance' needs a run (--run FILE)")
            kind_items, sizes = _sample_relevance(root, config, run, rng)
        else:
            kind_items, sizes = _sample_queries(root, kind, config, rng)
        items.extend(kind_items)
        manifest["task_kinds"][kind] = {
            "items": sum(not i.is_gold for i in kind_items),
            "gold_items": sum(i.is_gold for i in kind_items),
            "strata": [{"language": k[0], "query_type": k[1] if len(k) > 1 else None, "population": v}
                       for k, v in sorted(sizes.items(), key=lambda kv: str(kv[0]))],
        }
    return items, manifest


def _gold_count(config: SampleConfig, sampled: int) -> int:
    return 0 if config.gold_fraction == 0 or sampled == 0 else max(1, round(config.gold_fraction * sampled))


def _image(url: str | None) -> dict | None:
    return {"image_url": url, "image_id": url_image_id(url)} if url else None


def _sample_entities(root: DataRoot, config: SampleConfig, rng) -> tuple[list[Item], dict]:
    directory = _table(root.table("entities"), "entities")
    table = read_table_dir(directory, ["entity_id", "language", "page_title", "page_url", "image_url"])
    table = table.filter(pc.is_valid(table.column("image_url")))
    chosen, sizes = _draw(table, ["language"], config, rng)
    rows = table.take(pa.array(chosen, pa.int64())).to_pylist() if len(chosen) else []
    items = [_entity_item(row, row, config, sizes[(row["language"],)]) for row in rows]
    for _ in range(_gold_count(config, len(items))):
        a, b = rng.choice(table.num_rows, size=2, replace=False) if table.num_rows > 1 else (0, 0)
        row, other = table.slice(int(a), 1).to_pylist()[0], table.slice(int(b), 1).to_pylist()[0]
        if other["image_url"] == row["image_url"]:
            continue
        items.append(_entity_item(row, other, config, sizes[(row["language"],)], gold="no"))
    return _mix(items, rng), sizes


def _entity_item(row: dict, image_row: dict, config: SampleConfig, size: int, gold: str | None = None) -> Item:
    key = (row["entity_id"],) if gold is None else ("gold", row["entity_id"], image_row["image_url"])
    return Item(
        item_id=make_item_id("ei-correct", *key), task_kind="ei-correct", language=row["language"],
        query_type=None, source_id=row["entity_id"], title=row["page_title"] or row["entity_id"],
        page_url=row.get("page_url"), candidate=_image(image_row["image_url"]),
        is_gold=gold is not None, gold_label=gold, overlap=config.overlap, stratum_size=size,
    )


def _mix(items: list[Item], rng) -> list[Item]:
    """Shuffle so gold items sit among the others."""
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def _query_strata(root: DataRoot, split: str):
    directory = _table(root.table_split("queries", split), f"queries (split={split})")
    return directory, read_table_dir(directory, ["query_id", "language", "query_type", "target_image_url"])


def _sample_queries(root: DataRoot, kind: str, config: SampleConfig, rng) -> tuple[list[Item], dict]:
    directory, strata = _query_strata(root, config.split)
    chosen, sizes = _draw(strata, ["language", "query_type"], config, rng)
    gold_pairs = []
    if strata.num_rows > 1:
        for _ in range(_gold_count(config, len(chosen))):
            gold_pairs.append(tuple(int(x) for x in rng.choice(strata.num_rows, size=2, replace=False)))
    ids = strata.column("query_id").to_pylist()
    wanted = {ids[i] for i in chosen} | {ids[i] for pair in gold_pairs for i in pair}
    rows = _rows_where(directory, "query_id", sorted(wanted))
    names = _entity_names(root, {e for r in rows.values() for e in (r["entity_ids"] or [])})
    build = _mask_item if kind == "mask-correct" else _answerable_item
    items = []
    for i in chosen:
        row = rows[ids[i]]
        items.append(build(row, row, names, config, sizes[(row["language"], row["query_type"])]))
    for a, b in gold_pairs:
        row, other = rows[ids[a]], rows[ids[b]]
        if kind == "mask-correct" and set(row["entity_ids"] or []) & set(other["entity_ids"] or []):
            continue
        if kind != "mask-correct" and row["target_image_url"] == other["target_image_url"]:
            continue
        size = sizes[(row["language"], row["query_type"])]
        items.append(build(row, other, names, config, size, gold="no"))
    return _mix(items, rng), sizes


def _entities(row: dict, names: dict[str, dict], with_names: bool) -> list[dict]:
    out = []
    for mask, (entity_id, url) in enumerate(zip(row["entity_ids"] or [], row["entity_image_urls"] or [])):
        name = (names.get(entity_id) or {}).get("page_title") or entity_id
        out.append({"mask": mask, "entity_id": entity_id, "name": name if with_names else None,
                    **(_image(url) or {"image_url": None, "image_id": None})})
    return out


def _mask_item(row, linked, names, config, size, gold=None) -> Item:
    """mask-correct: the original text with its spans; `linked` gives the entities (another query for gold)."""
    mentions = [{"mask": m["mask"], "surface": m["surface"], "start": m["start"], "end": m["end"]}
                for m in (row["mentions"] or [])]
    key = (row["query_id"],) if gold is None else ("gold", row["query_id"], linked["query_id"])
    entities = _entities(linked, names, with_names=True)
    if gold is not None and entities:  # every mask of the text must point at a wrong entity
        entities = [{**entities[m % len(entities)], "mask": m} for m in sorted({x["mask"] for x in mentions})]
    return Item(
        item_id=make_item_id("mask-correct", *key), task_kind="mask-correct", language=row["language"],
        query_type=row["query_type"], source_id=row["query_id"], title=row["page_title"] or "",
        page_url=row.get("page_url"), text=row["original_text"] or "", mentions=mentions, entities=entities,
        is_gold=gold is not None, gold_label=gold, overlap=config.overlap, stratum_size=size,
    )


def _answerable_item(row, target_row, names, config, size, gold=None) -> Item:
    """mmir-answerable: masked text, entity images, and the target (another query's for gold)."""
    key = (row["query_id"],) if gold is None else ("gold", row["query_id"], target_row["query_id"])
    return Item(
        item_id=make_item_id("mmir-answerable", *key), task_kind="mmir-answerable", language=row["language"],
        query_type=row["query_type"], source_id=row["query_id"], text=row["masked_text"] or "",
        entities=_entities(row, names, with_names=False), candidate=_image(target_row["target_image_url"]),
        is_gold=gold is not None, gold_label=gold, overlap=config.overlap, stratum_size=size,
    )


def _relevance_pairs(root: DataRoot, config: SampleConfig, run: Run, strata: pa.Table) -> list[tuple]:
    """(query row index, image_id, rank) for the top `depth` non-relevant images of each run query."""
    positives: dict[str, set[str]] = {}
    qrels_dir = root.table_split("qrels", config.split)
    if read_manifest(qrels_dir) is not None:
        qrels = read_table_dir(qrels_dir).filter(pc.greater(pc.field("relevance"), 0))
        for qid, iid in zip(qrels.column("query_id").to_pylist(), qrels.column("image_id").to_pylist()):
            positives.setdefault(qid, set()).add(iid)
    pairs = []
    for row, (qid, target_url) in enumerate(zip(strata.column("query_id").to_pylist(),
                                                strata.column("target_image_url").to_pylist())):
        skip = positives.get(qid, set()) | {url_image_id(target_url)}
        ranked = [(iid, rank) for rank, (iid, _score) in enumerate(run.get(qid, []), 1) if iid not in skip]
        pairs.extend((row, iid, rank) for iid, rank in ranked[: config.depth])
    return pairs


def _sample_relevance(root: DataRoot, config: SampleConfig, run: Run, rng) -> tuple[list[Item], dict]:
    directory, strata = _query_strata(root, config.split)
    pairs = _relevance_pairs(root, config, run, strata)
    if not pairs:
        raise InputError("the run ranks no non-target image for any query of this split; "
                         "check --split and that the run's query ids are this build's", path=None)
    langs, types = strata.column("language").to_pylist(), strata.column("query_type").to_pylist()
    pair_strata = pa.table({"language": [langs[p[0]] for p in pairs], "query_type": [types[p[0]] for p in pairs]})
    chosen, sizes = _draw(pair_strata, ["language", "query_type"], config, rng)
    picked = [pairs[i] for i in chosen]
    gold_rows = [pairs[int(i)][0] for i in rng.choice(len(pairs), size=min(_gold_count(config, len(picked)),
                                                                           len(pairs)), replace=False)]
    ids = strata.column("query_id").to_pylist()
    rows = _rows_where(directory, "query_id", sorted({ids[p[0]] for p in picked} | {ids[r] for r in gold_rows}))
    urls = _corpus_urls(root, config.split, {p[1] for p in picked})
    names = _entity_names(root, {e for r in rows.values() for e in (r["entity_ids"] or [])})
    items = []
    for row_index, iid, rank in picked:
        row = rows[ids[row_index]]
        candidate = {"image_id": iid, "image_url": urls.get(iid)}
        items.append(_relevance_item(row, candidate, rank, names, config,
                                     sizes[(row["language"], row["query_type"])]))
    for row_index in gold_rows:
        row = rows[ids[row_index]]
        items.append(_relevance_item(row, _image(row["target_image_url"]), None, names, config,
                                     sizes.get((row["language"], row["query_type"])), gold="yes"))
    return _mix(items, rng), sizes


def _corpus_urls(root: DataRoot, split: str, image_ids: set[str]) -> dict[str, str]:
    directory = root.table_split("corpus", split)
    if read_manifest(directory) is None:
        return {}
    return {k: v["image_url"] for k, v in _rows_where(directory, "image_id", sorted(image_ids)).items()}


def _relevance_item(row, candidate, rank, names, config, size, gold=None) -> Item:
    """relevance: the query, its target as reference, and a retrieved image (the target for gold)."""
    key = (row["query_id"], candidate["image_id"]) + (("gold",) if gold else ())
    return Item(
        item_id=make_item_id("relevance", *key), task_kind="relevance", language=row["language"],
        query_type=row["query_type"], source_id=f"{row['query_id']}/{candidate['image_id']}",
        text=row["masked_text"] or "", entities=_entities(row, names, with_names=False),
        reference=_image(row["target_image_url"]), candidate=candidate, rank=rank,
        is_gold=gold is not None, gold_label=gold, overlap=config.overlap, stratum_size=size,
    )
