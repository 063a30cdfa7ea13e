"""Export a build as gzipped TSVs in the released layout (header row, lists as JSON).

Files (under DataRoot.exports): `entity_image_dataset.tsv.gz`,
`mmir_dataset_train-0000K-of-0000N.tsv.gz`, `mmir_dataset_validation.tsv.gz`,
`mmir_dataset_test.tsv.gz`. The first column is an image URL, as in the released files.
Quoting follows the WIT dialect: a field holding a tab, newline, carriage return or quote is
double-quoted with `""` for a quote. Lists are JSON as `json.dumps(list, ensure_ascii=False)`
writes them. Gzip headers carry no time stamp, so equal builds give equal bytes.

Columnar: each batch of rows becomes its TSV text in Arrow compute (quoting, JSON lists and
the joins vectorised; only list items that need a JSON escape go through `json.dumps`), and
the text's buffer goes straight to the compressor (ISA-L's deflate when the `isal` package
is there, else zlib). The files are written by a thread each, up to one per CPU (Arrow and
the compressor release the GIL). Row by row in Python (`csv.writer` + `json.dumps`) this
cost ~40 µs per query, four times the build itself.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.shards import atomic_path, parquet_file, read_manifest, read_table_dir
from ..layout import DataRoot

try:
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps odd platforms working
    _deflate = zlib

MMIR_COLUMNS = ("target_image_url", "masked_text", "entity_image_urls", "entity_names", "entity_ids", "language",
                "page_url", "page_title", "query_type", "query_id")
EI_COLUMNS = ("image_url", "entity_name", "entity_id", "language", "num_queries")
RELEASED_SPLITS = {"train": "train", "val": "validation", "test": "test"}
_LISTS = frozenset({"entity_image_urls", "entity_ids", "entity_names"})
_READ = [c for c in MMIR_COLUMNS if c != "entity_names"]  # the names come from the entities table
_BATCH_ROWS = 65536
# ISA-L's level 2 (its default, of 0-3), or zlib's 6 without it: measured on 20 MB of synth WIT
# text, ISA-L 2 deflates at ~950 MB/s of CPU against zlib 6's 75 (the old export's zlib 9: 54),
# for files ~27% larger (ISA-L 3: 177 MB/s, 19% larger)
_LEVEL = 2 if _deflate is not zlib else 6
_NEEDS_QUOTES = '[\t\n\r"]'
_NEEDS_JSON_ESCAPE = r'[\\"\x00-\x1f]'
_TSV_QUOTED = (0x09, 0x0A, 0x0D, 0x22)  # the bytes of _NEEDS_QUOTES
_JSON_ESCAPED = (0x22, 0x5C)  # and every byte under 0x20: those of _NEEDS_JSON_ESCAPE


@dataclass(frozen=True)
class _Piece:
    """Rows [start, stop) of one parquet file of a split's queries."""

    path: Path
    start: int
    stop: int


def export_all(root: str | DataRoot, *, train_shards: int = 5) -> list[Path]:
    """Write every export file a build has tables for; returns their paths."""
    from ..io.shards import write_json_atomic

    root = root if isinstance(root, DataRoot) else DataRoot(root)
    write_json_atomic(root.config / "build_export.json", {"train_shards": train_shards})
    jobs: list[tuple[Path, Callable[[], Iterator[list[pa.Array]]], tuple[str, ...]]] = []
    if read_manifest(root.table("ei")) is not None:
        jobs.append((root.exports / "entity_image_dataset.tsv.gz", lambda: _ei_batches(root), EI_COLUMNS))
    names = _entity_names(root)
    for split, released in RELEASED_SPLITS.items():
        manifest = read_manifest(root.table_split("queries", split))
        if manifest is None:
            continue
        folder = root.table_split("queries", split)
        if split == "train":
            shards = max(1, train_shards)
            size = -(-manifest["rows"] // shards) if manifest["rows"] else 0
            ranges = [(k * size, (k + 1) * size) for k in range(shards)]
            paths = [root.exports / f"mmir_dataset_train-{k:05d}-of-{shards:05d}.tsv.gz" for k in range(shards)]
        else:
            ranges, paths = [(0, manifest["rows"])], [root.exports / f"mmir_dataset_{released}.tsv.gz"]
        for path, (start, stop) in zip(paths, ranges):
            pieces = _pieces(folder, manifest, start, stop)
            jobs.append((path, lambda pieces=pieces: _mmir_batches(pieces, names), MMIR_COLUMNS))
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda job: write_tsv_gz(job[0], job[2], job[1]()), jobs))


def export_ei(root: DataRoot) -> Path:
    """entity_image_dataset.tsv.gz from the `ei` table."""
    return write_tsv_gz(root.exports / "entity_image_dataset.tsv.gz", EI_COLUMNS, _ei_batches(root))


def _ei_batches(root: DataRoot) -> Iterator[list[pa.Array]]:
    table = read_table_dir(root.table("ei"), columns=["image_url", "page_title", "entity_id", "language",
                                                      "num_queries"])
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        yield [tsv_field(column) for column in batch.columns]


def _entity_names(root: DataRoot) -> pa.RecordBatch | None:
    """entity_id, page_title of the entities table (None when there is none)."""
    if read_manifest(root.table("entities")) is None:
        return None
    table = read_table_dir(root.table("entities"), columns=["entity_id", "page_title"]).combine_chunks()
    return table.to_batches()[0] if table.num_rows else None


def _pieces(folder: Path, manifest: dict, start: int, stop: int) -> list[_Piece]:
    """The parts of the manifest's files that hold rows [start, stop) of the table."""
    pieces, offset = [], 0
    for item in manifest["files"]:
        lo, hi = max(start, offset), min(stop, offset + item["rows"])
        if lo < hi:
            pieces.append(_Piece(folder / item["file"], lo - offset, hi - offset))
        offset += item["rows"]
    return pieces


def _mmir_batches(pieces: list[_Piece], names: pa.RecordBatch | None) -> Iterator[list[pa.Array]]:
    """The export's columns, batch by batch, of the queries in `pieces` (in order)."""
    for piece in pieces:
        offset = 0
        for batch in parquet_file(piece.path).iter_batches(batch_size=_BATCH_ROWS, columns=_READ):
            lo, hi = max(piece.start - offset, 0), min(piece.stop - offset, batch.num_rows)
            offset += batch.num_rows
            if lo < hi:
                yield _mmir_columns(batch.slice(lo, hi - lo), names)
            if offset >= piece.stop:
                break


def _mmir_columns(batch: pa.RecordBatch, names: pa.RecordBatch | None) -> list[pa.Array]:
    columns = {name: batch.column(name) for name in _READ}
    columns["entity_names"] = _names_of(columns["entity_ids"], names)
    return [tsv_json_lists(columns[c]) if c in _LISTS else tsv_field(columns[c]) for c in MMIR_COLUMNS]


def _names_of(entity_ids: pa.ListArray, names: pa.RecordBatch | None) -> pa.ListArray:
    """Each query's entity names (the entity's page title; "" for an entity not in the table)."""
    flat = pc.list_flatten(entity_ids)
    if names is None:
        return _relisted(entity_ids, pa.array([""] * len(flat), pa.string()))
    titles = names["page_title"].take(pc.index_in(flat, value_set=names["entity_id"]))
    return _relisted(entity_ids, pc.fill_null(titles, ""))


def _relisted(lists: pa.ListArray, values: pa.Array) -> pa.ListArray:
    """`values` (one per item of `lists`, flattened) in the lists' shape."""
    offsets = lists.offsets
    offsets = pc.subtract(offsets, offsets[0]) if len(offsets) and offsets[0].as_py() else offsets
    mask = lists.is_null() if lists.null_count else None
    return pa.ListArray.from_arrays(offsets, values, mask=mask)


def _text_bytes(strings: pa.Array) -> np.ndarray:
    """The UTF-8 bytes of a string array's values end to end (a view, no copy)."""
    data = strings.buffers()[2] if len(strings) else None
    if data is None:
        return np.zeros(0, np.uint8)
    offsets = np.frombuffer(strings.buffers()[1], np.int32, len(strings) + 1, strings.offset * 4)
    return np.frombuffer(data, np.uint8, int(offsets[-1] - offsets[0]), int(offsets[0]))


def _holds(strings: pa.Array, codes: tuple[int, ...], below: int = 0) -> bool:
    """Whether any value may hold one of the byte `codes` or a byte under `below` (one numpy pass
    each over the values' bytes: the common answer, no, costs no per-value work)."""
    data = _text_bytes(strings)
    return bool((below and (data < below).any()) or any((data == code).any() for code in codes))


def json_lists(lists: pa.ListArray) -> pa.Array:
    """Each list as `json.dumps(items, ensure_ascii=False)` ("null" for a null list), vectorised."""
    items = pc.list_flatten(lists)
    quoted = pc.binary_join_element_wise('"', items, '"', "")
    if _holds(items, _JSON_ESCAPED, below=0x20):  # rare (a quote or backslash in a title): json.dumps for those
        escape = pc.fill_null(pc.match_substring_regex(items, _NEEDS_JSON_ESCAPE), False)
        odd = items.filter(escape).to_pylist()
        quoted = pc.replace_with_mask(quoted, escape, pa.array([json.dumps(v, ensure_ascii=False) for v in odd]))
    quoted = pc.fill_null(quoted, "null")  # a null item
    joined = pc.binary_join(_relisted(lists, quoted), ", ")
    return pc.fill_null(pc.binary_join_element_wise("[", joined, "]", ""), "null")


def tsv_json_lists(lists: pa.ListArray) -> pa.Array:
    """`tsv_field(json_lists(lists))`, in one pass where no item needs a JSON escape and no list is
    empty or null (the usual case): each item as `""item""`, each list as `"[...]"`."""
    items = pc.list_flatten(lists)
    offsets = np.frombuffer(lists.buffers()[1], np.int32, len(lists) + 1, lists.offset * 4) if len(lists) else None
    if (offsets is None or lists.null_count or items.null_count or (np.diff(offsets) == 0).any()
            or _holds(items, _JSON_ESCAPED, below=0x20)):
        return tsv_field(json_lists(lists))
    joined = pc.binary_join(_relisted(lists, pc.binary_join_element_wise('""', items, '""', "")), ", ")
    return pc.binary_join_element_wise('"[', joined, ']"', "")


def tsv_field(column: pa.Array) -> pa.Array:
    """A column as TSV fields: text ("" for null), quoted when it holds a tab, newline, CR or quote."""
    text = pc.fill_null(column if column.type == pa.string() else column.cast(pa.string()), "")
    if not _holds(text, _TSV_QUOTED):
        return text
    needs = pc.match_substring_regex(text, _NEEDS_QUOTES)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text.filter(needs), '"', '""'), '"', "")
    return pc.replace_with_mask(text, needs, quoted)


def tsv_text(fields: list[pa.Array]) -> pa.Buffer:
    """Rows of TSV fields (`tsv_field`s, no nulls) joined into the bytes of their lines."""
    last = pc.binary_join_element_wise(fields[-1], "\n", "")
    lines = pc.binary_join_element_wise(*fields[:-1], last, "\t")
    # the lines' characters lie end to end in the string array's data buffer: that is the text
    offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def write_tsv_gz(path: Path, header: tuple[str, ...], batches) -> Path:
    """Write a header and batches of TSV fields (lists of `tsv_field` arrays, one per header column)
    as a gzipped TSV, atomically and byte-reproducibly."""
    compressor = _deflate.compressobj(_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing, no name, mtime 0
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(compressor.compress(("\t".join(header) + "\n").encode("utf-8")))
        for fields in batches:
            if len(fields[0]):
                out.write(compressor.compress(tsv_text(fields)))
        out.write(compressor.flush())
    return path
