"""The gazetteer's on-disk cache as data (Arrow IPC), never pickle.

A data root on object storage or a shared disk is written by others: nothing read from it may
run code when loaded. Each language has, in `entity_names/_gazetteer/`:

- `{lang}-{digest}.keys.arrow`: one row per key (`key`, `length`, `right`, `left`, `target`,
  `choices`); `target` is the entity id, null for a blocker or a choice, `choices` a JSON
  object {exact title: entity id} for a choice; metadata `ambiguous`, `names`.
- `{lang}-{digest}.automaton` (with the C extension): the C automaton's bytes, which
  `_fastbuild.Automaton(blob)` bounds-checks on load;
- `{lang}-{digest}.fast.arrow`: the compiled form's `targets` (entity id or null) and
  `others` (JSON of a non-id target), metadata `blob_bytes` (the .automaton's size; -1: none).
  Written after the .automaton file, so it commits the pair.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from ..io import fs
from ..io.shards import write_bytes_atomic

FORMAT = "wit-retrieval-gazetteer/1"

_KEYS = pa.schema([("key", pa.string()), ("length", pa.int32()), ("right", pa.int8()), ("left", pa.int8()),
                   ("target", pa.string()), ("choices", pa.string())])
_FAST = pa.schema([("targets", pa.string()), ("others", pa.string())])


class CacheFormatError(ValueError):
    """A cache file that is not of this format (rebuilt, never trusted)."""


def _ipc_bytes(table: pa.Table, meta: dict[str, str]) -> bytes:
    table = table.replace_schema_metadata({"format": FORMAT, **meta})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _read_ipc(target: Any, schema: pa.Schema) -> tuple[pa.Table, dict[str, str]]:
    table = pa.ipc.open_file(pa.py_buffer(fs.path(target).read_bytes())).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("format") != FORMAT or table.schema.remove_metadata() != schema:
        raise CacheFormatError(f"{target}: not a {FORMAT} file")
    return table, meta


def save_language(target: Any, lang) -> None:
    """Write a linker._Language's keys (`target` ends in .keys.arrow)."""
    values = lang.values
    targets = [v[3] if v[3].__class__ is str else None for v in values]
    choices = [json.dumps(v[3], sort_keys=True) if isinstance(v[3], dict) else None for v in values]
    table = pa.table([pa.array(lang.keys, pa.string()), pa.array([v[0] for v in values], pa.int32()),
                      pa.array([v[1] for v in values], pa.int8()), pa.array([v[2] for v in values], pa.int8()),
                      pa.array(targets, pa.string()), pa.array(choices, pa.string())], schema=_KEYS)
    write_bytes_atomic(target, _ipc_bytes(table, {"ambiguous": str(lang.ambiguous), "names": str(lang.names)}))


def load_language(target: Any, make):
    """The keys of a .keys.arrow file, as `make(keys, values, ambiguous, names)` (linker._Language)."""
    table, meta = _read_ipc(target, _KEYS)
    columns = {name: table[name].to_pylist() for name in ("key", "length", "right", "left", "target")}
    targets = columns["target"]
    choices = table["choices"]
    if choices.null_count < len(choices):  # a choice is rare: only its rows are decoded
        for k, text in enumerate(choices.to_pylist()):
            if text is not None:
                targets[k] = json.loads(text)
    values = list(zip(columns["length"], columns["right"], columns["left"], targets))
    return make(columns["key"], values, int(meta["ambiguous"]), int(meta["names"]))


def save_compiled(target: Any, compiled: dict) -> None:
    """Write fastpath.compile_language's dict: the blob beside, then the .fast.arrow that commits it."""
    blob = compiled["blob"]
    if blob is not None:
        write_bytes_atomic(_blob_path(target), blob)
    others = compiled["others"]
    column = [json.dumps(others[k], sort_keys=True) if k in others else None for k in range(len(compiled["targets"]))]
    table = pa.table([compiled["targets"], pa.array(column, pa.string())], schema=_FAST)
    write_bytes_atomic(target, _ipc_bytes(table, {"blob_bytes": str(-1 if blob is None else len(blob))}))


def load_compiled(target: Any) -> dict:
    """The compiled form of a .fast.arrow file (and its .automaton), as compile_language gives it."""
    table, meta = _read_ipc(target, _FAST)
    size = int(meta["blob_bytes"])
    blob = None
    if size >= 0:
        blob = fs.path(_blob_path(target)).read_bytes()
        if len(blob) != size:
            raise CacheFormatError(f"{_blob_path(target)}: {len(blob)} bytes, its .fast.arrow says {size}")
    others = {k: json.loads(v) for k, v in enumerate(table["others"].to_pylist()) if v is not None}
    return {"blob": blob, "targets": table["targets"].combine_chunks(), "others": others}


def _blob_path(target: Any):
    target = fs.path(target)
    return target.with_name(target.name.removesuffix(".fast.arrow") + ".automaton")


def remove(target: Any) -> None:
    """Delete a damaged cache file (and a compiled form's blob)."""
    target = fs.path(target)
    target.unlink(missing_ok=True)
    if target.name.endswith(".fast.arrow"):
        fs.path(_blob_path(target)).unlink(missing_ok=True)
