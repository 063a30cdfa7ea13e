"""The released EI / MMIR files: read them by detected roles, import them as canonical tables.

Choices where the release is silent (documented in the data card): entity ids of MMIR queries
come from the imported EI file (matched by image URL) and fall back to `img:{image_id}` of the
entity image; the corpus of a split is the set of its queries' target images.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import ConfigError
from ..ids import image_id as _image_id
from ..ids import query_id
from ..layout import DataRoot
from ..schema import CORPUS, EI, QRELS, QUERIES
from .roles import EXTRA, ColumnMapping, detect_columns, kind_from_name, split_list
from .shards import write_table_dir
from .tsv import RowErrors, read_tsv_rows

__all__ = ["ColumnMapping", "detect_columns", "import_released", "read_released", "split_from_name"]

# Entity images repeat across millions of queries: hash each URL once.
image_id = functools.lru_cache(maxsize=1 << 20)(_image_id)
_URL = re.compile(r"^https?://\S+$")
PART_ROWS = 50_000


def split_from_name(path: str | os.PathLike) -> str:
    """Our split name (train | val | test) from a released MMIR file name."""
    name = Path(path).name.lower()
    for word, split in (("train", "train"), ("validation", "val"), ("val", "val"), ("test", "test")):
        if word in name:
            return split
    raise ConfigError(f"{path}: cannot tell the split from the file name (expected train, validation or test)")


def _text(row: dict, mapping: ColumnMapping, role: str) -> str | None:
    column = mapping.roles.get(role)
    value = row.get(column) if column else None
    if isinstance(value, list):
        return " ".join(value) or None
    return value if value not in ("", None) else None


def _entity_urls(row: dict, mapping: ColumnMapping) -> list[str]:
    column = mapping.roles["entity_image_urls"]
    urls = split_list(row.get(column))[0]
    if column != EXTRA:  # rows wider than the header carry further entity images
        urls += [u for u in row.get(EXTRA) or [] if u and _URL.match(u)]
    return urls


def read_released(
    path: str | os.PathLike,
    mapping: ColumnMapping,
    *,
    errors: RowErrors | None = None,
    split: str | None = None,
    entity_ids: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Canonical dicts of a released file: QUERIES rows (mmir) or EI rows (ei); bad rows reported.

    `entity_ids` maps an entity image's image_id to its entity id (from the EI file).
    """
    errors = errors if errors is not None else RowErrors()
    if mapping.kind == "ei":
        yield from _read_ei(path, mapping, errors)
        return
    split = split or split_from_name(path)
    entity_ids = entity_ids or {}
    for row in read_tsv_rows(path, errors=errors, variable_fields=True):
        target, masked = _text(row, mapping, "target_image_url"), _text(row, mapping, "masked_text")
        urls = _entity_urls(row, mapping)
        if not target or not masked or not urls:
            missing = [n for n, v in (("target image URL", target), ("masked text", masked), ("entity images", urls))
                       if not v]
            errors.add(path, row["_line"], f"missing {', '.join(missing)}", str(row)[:200])
            continue
        names = split_list(_text(row, mapping, "entity_names"), names=True)[0]
        page_url = _text(row, mapping, "page_url")
        yield {
            "query_id": query_id(split, target, page_url or "", masked),
            "split": split,
            "language": _text(row, mapping, "language"),
            "page_title": _text(row, mapping, "page_title"),
            "page_url": page_url,
            "target_image_id": image_id(target),
            "target_image_url": target,
            "masked_text": masked,
            "entity_ids": [entity_ids.get(i) or f"img:{i}" for i in map(image_id, urls)],
            "entity_image_urls": urls,
            "mentions": [
                {"mask": i, "entity_id": None, "surface": names[i] if i < len(names) else None,
                 "start": None, "end": None} for i in range(len(urls))
            ],
            "query_type": "multi" if len(urls) > 1 else "single",
            "num_entities": len(urls),
            "original_text": None,
        }


def _read_ei(path, mapping: ColumnMapping, errors: RowErrors) -> Iterator[dict[str, Any]]:
    for row in read_tsv_rows(path, errors=errors, variable_fields=True):
        url, name = _text(row, mapping, "image_url"), _text(row, mapping, "entity_name")
        if not url or not name:
            errors.add(path, row["_line"], "missing image URL or entity name", str(row)[:200])
            continue
        language = _text(row, mapping, "language")
        entity = _text(row, mapping, "entity_id") or (f"{language}:{name}" if language else name)
        yield {"entity_id": entity, "language": language, "page_title": name, "image_url": url,
               "image_id": image_id(url), "num_queries": None}


def _batched(rows: Iterable[dict], schema: pa.Schema) -> Iterator[pa.Table]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= PART_ROWS:
            yield pa.Table.from_pylist(chunk, schema=schema)
            chunk = []
    if chunk:
        yield pa.Table.from_pylist(chunk, schema=schema)


def _overrides_for(kind: str, overrides: dict[str, str]) -> dict[str, str]:
    from .roles import EI_ROLES, MMIR_ROLES

    unknown = [r for r in overrides if r not in MMIR_ROLES and r not in EI_ROLES]
    if unknown:
        raise ConfigError(f"unknown role(s) {', '.join(unknown)}; roles are: {', '.join(MMIR_ROLES + EI_ROLES)}")
    allowed = MMIR_ROLES if kind == "mmir" else EI_ROLES
    return {role: column for role, column in overrides.items() if role in allowed}


def _mappings(paths, overrides: dict[str, str], on_mapping) -> list[ColumnMapping]:
    mappings = []
    for path in paths:
        kind = kind_from_name(path)
        if kind is None:
            kind = detect_columns(path).kind
        mapping = detect_columns(path, kind, _overrides_for(kind, overrides))
        if kind == "mmir":
            split_from_name(path)  # fail before any work on a name without a split
        if on_mapping:
            on_mapping(mapping)
        mappings.append(mapping)
    return mappings


def _write_split_tables(root: DataRoot, split: str, meta: dict) -> dict[str, int]:
    """qrels and corpus of a split, read back from its freshly written queries."""
    import pyarrow.dataset as ds

    queries = ds.dataset(root.table_split("queries", split), format="parquet")
    columns = ["query_id", "target_image_id", "target_image_url"]
    seen: set[str] = set()

    def qrels():
        for batch in queries.to_batches(columns=columns):
            yield pa.table({"query_id": batch.column(0), "image_id": batch.column(1),
                            "relevance": pa.array([1] * batch.num_rows, pa.int32())})

    def corpus():
        for batch in queries.to_batches(columns=columns):
            ids, urls = batch.column(1).to_pylist(), batch.column(2).to_pylist()
            fresh = [(i, u) for i, u in zip(ids, urls) if i not in seen and not seen.add(i)]
            yield pa.table({"image_id": [i for i, _ in fresh], "image_url": [u for _, u in fresh],
                            "split": [split] * len(fresh)}, schema=CORPUS)

    q = write_table_dir(root.table_split("qrels", split), qrels(), QRELS, meta=meta)
    c = write_table_dir(root.table_split("corpus", split), corpus(), CORPUS, meta=meta)
    return {"qrels": q["rows"], "corpus": c["rows"]}


def import_released(
    paths: Iterable[str | os.PathLike],
    root: str | os.PathLike,
    overrides: dict[str, str] | None = None,
    *,
    on_mapping=None,
) -> dict[str, Any]:
    """Import released EI/MMIR files as canonical tables under `root`; returns a summary.

    MMIR files become queries/corpus/qrels of the split in their name (validation -> val);
    the EI file becomes the `ei` table, with how many imported queries use each entity.
    `on_mapping(mapping)` is called with each file's detected column roles before reading.
    """
    from collections import Counter

    from .shards import write_json_atomic

    paths = [Path(p) for p in paths]
    mappings = _mappings(paths, dict(overrides or {}), on_mapping)
    data_root, errors = DataRoot(root), RowErrors()
    ei = [m for m in mappings if m.kind == "ei"]
    entity_ids = {row["image_id"]: row["entity_id"] for m in ei for row in _read_ei(m.path, m, RowErrors())}
    uses: Counter[str] = Counter()
    meta = {"source": "released", "source_files": [str(p) for p in paths]}
    summary: dict[str, Any] = {"files": [m.to_dict() for m in mappings], "splits": {}}
    splits: dict[str, list[ColumnMapping]] = {}
    for m in mappings:
        if m.kind == "mmir":
            splits.setdefault(split_from_name(m.path), []).append(m)
    for split, group in splits.items():
        def rows(group=group, split=split):
            for m in group:
                for row in read_released(m.path, m, errors=errors, split=split, entity_ids=entity_ids):
                    uses.update(set(row["entity_ids"]))
                    yield row
        written = write_table_dir(data_root.table_split("queries", split), _batched(rows(), QUERIES), QUERIES,
                                  meta=meta)
        summary["splits"][split] = {"queries": written["rows"], **_write_split_tables(data_root, split, meta)}
    if ei:
        def ei_rows():
            for m in ei:
                for row in _read_ei(m.path, m, errors):
                    yield {**row, "num_queries": uses.get(row["entity_id"], 0) if splits else None}
        summary["ei"] = write_table_dir(data_root.table("ei"), _batched(ei_rows(), EI), EI, meta=meta)["rows"]
    summary["bad_rows"] = errors.to_dict()
    write_json_atomic(data_root.config / "released_import.json", summary)
    return summary

