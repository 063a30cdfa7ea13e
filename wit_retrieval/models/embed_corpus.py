"""Embedding a whole corpus into a folder of parts: a plan shared by every rank, resumable, manifest last.

`embed --out DIR` (one process, `torchrun` ranks, or Ray actors) writes:

    DIR/key.json                          model name, revision, preprocessing, dim, dtype: the cache key
    DIR/part-NNNNN-HHHHHHHHHHHH.parquet   `id`, `embedding` (float32 or float16); the part's failures
                                          (id and reason) in its metadata
    DIR/failures.jsonl                    one {"id", "reason"} line per image that could not be embedded
    DIR/manifest.json                     written last: the parts in order, their rows, the counts

Every process computes the same plan from the same ids: the ids in the order their bytes lie in
the image store (each part reads its tar shards front to back), cut into parts of `part_rows`.
Rank r of W takes a contiguous block of parts (UniIR's contiguous split, so a rank reads its
shards sequentially). A part's file name is its number plus a digest of its ids: names never clash
across ranks, and a re-run finds exactly the parts already done (re-embedding only the missing
ones, nothing at all for a finished run). Each part is written atomically and only when whole, so
memory holds one part's embeddings, never the whole output. Readers trust only what the manifest
lists (io/embeddings.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..io.embeddings import DTYPES, META_KEY, PARTS_MANIFEST, write_embeddings
from ..io.shards import write_json_atomic, write_text_atomic
from .embed import EmbedConfig, Failed, embed_parts

KEY_FILE = "key.json"
FAILURES = "failures.jsonl"


@dataclass(frozen=True)
class Part:
    """One part of the plan: its number and its ids, in reading order."""

    number: int
    ids: tuple[str, ...]

    @property
    def file(self) -> str:
        digest = hashlib.sha256("\n".join(self.ids).encode("utf-8")).hexdigest()[:12]
        return f"part-{self.number:05d}-{digest}.parquet"


def plan_parts(ids: Sequence[str], part_rows: int) -> list[Part]:
    """`ids` cut into parts of `part_rows`, numbered from 0 (every rank computes the same plan)."""
    if part_rows < 1:
        raise ConfigError("part_rows must be at least 1")
    return [Part(n, tuple(ids[start: start + part_rows])) for n, start in enumerate(range(0, len(ids), part_rows))]


def rank_block(count: int, rank: int, world: int) -> range:
    """The contiguous block of part numbers rank `rank` of `world` embeds (sizes differ by at most one)."""
    if not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is outside a world of {world}")
    return range(count * rank // world, count * (rank + 1) // world)


def key_of(metadata, dtype: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What identifies embeddings: re-running with another model, revision, preprocessing or dtype is refused."""
    key = {"model": metadata.name, "revision": metadata.revision, "preprocessing": metadata.preprocessing,
           "dim": metadata.dim, "dtype": dtype, **(extra or {})}
    if getattr(metadata, "quantization", ""):  # quantized weights embed differently: another key
        key["quantization"] = metadata.quantization
    return key


def ensure_key(out: Path, key: dict[str, Any]) -> None:
    """Write `key.json` in a new folder; refuse a folder holding another model's embeddings."""
    path = out / KEY_FILE
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != key:
            diff = sorted(k for k in set(found) | set(key) if found.get(k) != key.get(k))
            raise ConfigError(f"{out} holds embeddings of another model or setting ({', '.join(diff)} differ: "
                              f"{found.get('model')} {found.get('revision')}); use another --out or delete it")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, key)


def embed_rank(encoder, store, plan: list[Part], out: Path, config: EmbedConfig, *, dtype: str = "float32",
               rank: int = 0, world: int = 1) -> dict[str, int]:
    """Embed this rank's block of the plan into `out`, skipping parts already there; returns counts."""
    mine = [plan[n] for n in rank_block(len(plan), rank, world)]
    todo = [part for part in mine if not (out / part.file).is_file()]
    meta = json.loads((out / KEY_FILE).read_text(encoding="utf-8"))
    embedded = failed = 0
    done = embed_parts(encoder, store, [p.ids for p in todo], config) if todo else iter(())
    for part, (ids, matrix, failures) in zip(todo, done):
        write_part(out, part, ids, matrix, failures, meta, dtype)
        embedded += len(ids)
        failed += len(failures)
    return {"parts": len(mine), "parts_written": len(todo), "embedded": embedded, "failed": failed}


def write_part(out: Path, part: Part, ids: list[str], matrix: np.ndarray, failures: list[Failed],
               meta: dict[str, Any], dtype: str) -> None:
    """One part, atomically; its failures travel in its metadata so the part is complete on its own."""
    failed = [{"id": f.image_id, "reason": f.reason} for f in failures]
    write_embeddings(out / part.file, ids, matrix, {**meta, "part": part.number, "failures": failed}, dtype=dtype)


def finish(out: Path, plan: list[Part], key: dict[str, Any]) -> dict[str, Any]:
    """After every rank is done: failures.jsonl, then manifest.json (last); parts not in the plan removed."""
    absent = [part.file for part in plan if not (out / part.file).is_file()]
    if absent:
        raise InputError(f"{len(absent)} of {len(plan)} parts are missing (e.g. {absent[0]}): a process stopped "
                         "early; re-run the same command to embed only those", path=str(out))
    listed, failures = [], []
    for part in plan:
        footer = pq.ParquetFile(out / part.file)  # one footer read: the schema's metadata and the row count
        meta = json.loads((footer.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
        rows = footer.metadata.num_rows
        listed.append({"file": part.file, "rows": rows, "failed": len(meta.get("failures", []))})
        failures.extend(meta.get("failures", []))
    write_text_atomic(out / FAILURES, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
    keep = {part.file for part in plan}
    for stale in out.glob("part-*.parquet"):
        if stale.name not in keep:
            stale.unlink()  # another plan's part (the ids changed): readers would never trust it anyway
    manifest = {"format": "wit-retrieval-embeddings/1", **key, "parts": listed,
                "rows": sum(p["rows"] for p in listed), "failed": len(failures)}
    write_json_atomic(out / PARTS_MANIFEST, manifest)
    return manifest


def embed_to_folder(encoder, store, ids: Sequence[str], out: str | Path, config: EmbedConfig = EmbedConfig(),
                    *, dtype: str = "float32", rank: int = 0, world: int = 1,
                    barrier: Callable[[], None] | None = None, key_extra: dict | None = None) -> dict[str, Any]:
    """Embed `ids` from `store` into the parts folder `out` as rank `rank` of `world`; returns a summary.

    With several ranks, `barrier` synchronises them (rank 0 writes the key before the others read
    it, and the manifest after all have finished); rank 0 returns the manifest's counts.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if world > 1 and barrier is None:
        raise ConfigError("several ranks need a barrier")
    out = Path(out)
    if out.suffix == ".parquet":
        raise ConfigError(f"{out} is a file name; embed_to_folder writes a folder of parts")
    order = store.disk_order(ids) if hasattr(store, "disk_order") else list(dict.fromkeys(ids))
    plan = plan_parts(order, config.part_rows)
    key = key_of(encoder.metadata, dtype, key_extra)
    if rank == 0:
        ensure_key(out, key)
    if barrier is not None:
        barrier()
    if rank != 0:
        ensure_key(out, key)  # reads only: rank 0 wrote it before the barrier
    counts = embed_rank(encoder, store, plan, out, config, dtype=dtype, rank=rank, world=world)
    if barrier is not None:
        barrier()
    if rank != 0:
        return {"rank": rank, **counts}
    manifest = finish(out, plan, key)
    return {"rank": 0, **counts, "out": str(out), "rows": manifest["rows"], "failed_total": manifest["failed"],
            "parts_total": len(plan), "dim": key["dim"], "dtype": dtype}
