"""Prepared training data: webdataset-style sample shards plus a random-access store of referenced images.

Layout of `ROOT/train_shards/<key>/` (or `prepare --out DIR`), see docs/training.md:

- `samples-NNNNN.tar`: members `NNNNN-KKKKKKK.json` (query_id, masked_text, entity image ids or null,
  target id, hard-negative ids) and `NNNNN-KKKKKKK.img` (the target image's stored bytes, still
  encoded, so a change of resolution needs no new preparation); `samples-NNNNN.json` beside
  each shard (written last, so a shard without it is unfinished) holds its counts;
- `images.bin` + `images.idx.npy`: each entity / hard-negative image once (one entity appears in
  many queries), found by a 64-bit hash of its id through a sorted index read as a memory map;
- `manifest.json` (written last): inputs, key, per-shard sample counts, totals and bytes.

Shard n holds the queries of rows [n*S, (n+1)*S) of the queries table, so an interrupted
preparation resumes shard by shard. Targets are read sequentially at training time; only
entity and hard-negative images are read at random, and per-process memory does not depend on
the number of queries or images.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import fs
from ..io.locks import file_lock
from ..io.shards import atomic_path, parquet_file, read_manifest, write_json_atomic
from ..layout import DataRoot
from . import train_uri

VERSION = 1
MANIFEST = "manifest.json"
INDEX_DTYPE = np.dtype([("hash", "<u8"), ("offset", "<u8"), ("length", "<u4")])
MAX_SHARD = 1000                  # samples per shard (open_clip's README); fewer on small sets
MIN_SHARDS = 64                   # so ranks x workers all get shards on small sets
JSON_BYTES = 400                  # a sample's JSON and tar headers, for the disk estimate


@dataclass(frozen=True)
class PrepareInputs:
    """What a preparation reads; its key names the output folder."""

    root: str
    split: str = "train"
    max_queries: int = 0
    hard_negatives: str = ""
    hard_per_query: int = 1


def id_hash(image_id: str) -> int:
    """The 64-bit key of an image id in images.idx.npy."""
    return int.from_bytes(hashlib.blake2b(image_id.encode("utf-8"), digest_size=8).digest(), "little")


def prepare_key(inputs: PrepareInputs, store) -> str:
    """16 hex digits over the queries table, the image store's manifests and the hard negatives."""
    queries = DataRoot(inputs.root).table_split("queries", inputs.split)
    manifest = read_manifest(queries)
    if manifest is None:
        raise InputError("no manifest: this queries table was never finished; rebuild it", path=fs.redact(queries))
    store_dir = store if isinstance(store, (str, Path, fs.ObjectPath)) else getattr(store, "directory", None)
    parts = {"version": VERSION, "queries": manifest.get("files"), "split": inputs.split,
             "max_queries": inputs.max_queries, "hard_per_query": inputs.hard_per_query,
             "store": train_uri.listing_fingerprint(store_dir, ".done") if store_dir else len(store),
             "hard_negatives": train_uri.fingerprint([inputs.hard_negatives]) if inputs.hard_negatives else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_out(inputs: PrepareInputs, store) -> Path:
    """ROOT/train_shards/<key> (an io.fs.ObjectPath when ROOT is an s3:// or gs:// URI)."""
    return fs.join(inputs.root, "train_shards", prepare_key(inputs, store))


def is_prepared(out) -> bool:
    """True when `out` (a folder or URI) holds a finished preparation."""
    return (fs.path(out) / MANIFEST).is_file()


def ensure_prepared(inputs: PrepareInputs, store, out: Path | None = None, *, progress: bool = True) -> Path:
    """The prepared folder for `inputs`, preparing (or finishing) it under a file lock if needed.

    `store` is an image store or its folder (opened only if preparing is needed). `out` may be
    an s3:// or gs:// URI; the lock is then a local file (one preparer per node, not per cluster).
    """
    out = fs.path(out) if out else default_out(inputs, store)
    if is_prepared(out):
        return out
    with file_lock(train_uri.lock_file(out)):  # one preparer; the others wait (no collective)
        if not is_prepared(out):  # another process may have finished it while we waited
            prepare(inputs, _opened(store), out, progress=progress)
    return out


def _opened(store):
    """A store object; a folder is opened only now (its index of every image is not needed to train)."""
    if isinstance(store, (str, Path, fs.ObjectPath)):
        from ..images import open_store

        return open_store(store)
    return store


def read_hard_negatives(path: str | Path) -> dict[str, list[str]]:
    """Ranked image ids per query: a parquet of (query_id, image_ids list<string>, scores) or any run file."""
    from ..io.shards import read_parquet

    path = fs.path(path)
    if not path.exists():
        raise InputError("hard negatives file not found", path=fs.redact(path))
    if path.suffix == ".parquet" and "image_ids" in parquet_file(path).schema_arrow.names:
        table = read_parquet(path, columns=["query_id", "image_ids"])
        return dict(zip(table["query_id"].to_pylist(), table["image_ids"].to_pylist()))
    from .train_data import hard_negatives_from_run

    with fs.local_copy(path) as local:  # the run readers take local files
        return hard_negatives_from_run(local)


def _query_batches(inputs: PrepareInputs) -> Iterator[list[dict]]:
    from .train_data import QUERY_COLUMNS

    folder = DataRoot(inputs.root).table_split("queries", inputs.split)
    left = inputs.max_queries or math.inf
    for entry in read_manifest(folder)["files"]:
        for batch in parquet_file(folder / entry["file"]).iter_batches(batch_size=8192, columns=QUERY_COLUMNS):
            rows = batch.to_pylist()[: int(min(left, batch.num_rows))]
            left -= len(rows)
            yield rows
            if left <= 0:
                return


def _count_queries(inputs: PrepareInputs) -> int:
    folder = DataRoot(inputs.root).table_split("queries", inputs.split)
    total = sum(parquet_file(folder / e["file"]).metadata.num_rows for e in read_manifest(folder)["files"])
    return min(total, inputs.max_queries) if inputs.max_queries else total


def _chunks(inputs: PrepareInputs, size: int) -> Iterator[list[dict]]:
    """The queries table in consecutive chunks of `size` rows (one pass, one chunk in memory)."""
    chunk: list[dict] = []
    for rows in _query_batches(inputs):
        for row in rows:
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def estimate_bytes(store, total: int, sample_ids: list[str]) -> int:
    """Disk the preparation needs: targets (mean stored size, from a sample) + JSON + entity store (bound)."""
    sizes = [len(data) for _, data in train_uri.fetch_ordered(store, sample_ids[:200])]
    mean = sum(sizes) / len(sizes) if sizes else 50_000
    return int(total * (mean + JSON_BYTES) * 1.05 + 0.5 * total * mean)


def check_free_space(out: Path, needed: int) -> None:
    """An InputError naming both numbers when the output's disk has less free space than `needed`.

    For an object-store output, the local temporary folder is checked instead (see train_uri.staging_need).
    """
    if fs.is_remote(out):
        out, needed = Path(tempfile.gettempdir()), train_uri.staging_need(needed)
    probe = out if out.exists() else next(p for p in out.parents if p.exists())
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise InputError(f"preparing the training shards needs about {needed / 1e9:.2f} GB but only "
                         f"{free / 1e9:.2f} GB is free; free space or use --out on a bigger disk", path=fs.redact(out))


def prepare(inputs: PrepareInputs, store, out: Path, *, progress: bool = True) -> dict:
    """Write (or finish) the prepared layout in `out`; returns its manifest."""
    from ..progress import progress_task

    total = _count_queries(inputs)
    if not total:
        raise InputError(f"no {inputs.split} queries to prepare", path=fs.redact(inputs.root))
    size = max(1, min(MAX_SHARD, math.ceil(total / MIN_SHARDS)))
    shards = math.ceil(total / size)
    out.mkdir(parents=True, exist_ok=True)
    done = set(fs.listdir(out))  # one listing, not a request per shard, on an object store
    todo = [n for n in range(shards) if f"samples-{n:05d}.json" not in done]
    if todo:
        first = next(_query_batches(inputs))
        check_free_space(out, estimate_bytes(store, total, [r["target_image_id"] for r in first])
                         * len(todo) // shards)
        hard = _hard_negatives(inputs, out, progress)
        pending = set(todo)
        with progress_task("preparing training shards", len(todo)) if progress else _no_progress() as advance:
            for n, rows in enumerate(_chunks(inputs, size)):
                if n in pending:
                    _write_shard(out, n, rows, store, hard, inputs.hard_per_query)
                    advance()
    manifest = _finish(out, inputs, store, shards)
    from .hard_store import drop_hard_negatives

    drop_hard_negatives(_local_side(out))  # every shard holds its own now
    return manifest


def _local_side(out) -> Path:
    """Where preparation keeps its local working stores: `out` on disk, this node's cache for a URI."""
    return train_uri.node_cache(out) if fs.is_remote(out) else Path(out)


def _hard_negatives(inputs: PrepareInputs, out: Path, progress: bool):
    """The hard negatives as a store looked up per query (hard_store.py), never a dict of every query."""
    if not inputs.hard_negatives:
        return None
    from .hard_store import open_hard_negatives

    with fs.local_copy(inputs.hard_negatives) as local:  # a URI's file is converted from a local copy
        return open_hard_negatives(local, _local_side(out), progress=progress)


@contextmanager
def _no_progress():
    yield lambda *a, **k: None


def _write_shard(out: Path, n: int, rows: list[dict], store, hard: dict | None, per_query: int) -> None:
    from .train_data import entity_image_ids

    counts = {"queries": len(rows), "samples": 0, "dropped_no_target_image": 0, "missing_entity_images": 0}
    referenced: set[str] = set()
    targets = dict(train_uri.fetch_ordered(store, [r["target_image_id"] for r in rows]))
    with atomic_path(out / f"samples-{n:05d}.tar") as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for row in rows:
            target = row["target_image_id"]
            if target not in store:
                counts["dropped_no_target_image"] += 1
                continue
            entities = [i if i is not None and i in store else None for i in entity_image_ids(row)]
            counts["missing_entity_images"] += sum(e is None for e in entities)
            ranked = hard.get(row["query_id"], []) if hard else []
            negatives = [i for i in ranked if i != target and i in store][:per_query]
            referenced.update(e for e in entities if e)
            referenced.update(negatives)
            sample = {"query_id": row["query_id"], "masked_text": row["masked_text"], "entities": entities,
                      "target": target, "hard": negatives}
            key = f"{n:05d}-{counts['samples']:07d}"
            _add(tar, f"{key}.json", json.dumps(sample, ensure_ascii=False).encode("utf-8"))
            _add(tar, f"{key}.img", targets[target])
            counts["samples"] += 1
    write_json_atomic(out / f"samples-{n:05d}.json", {**counts, "referenced": sorted(referenced)})


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _finish(out: Path, inputs: PrepareInputs, store, shards: int) -> dict:
    """The entity / hard-negative image store and the manifest (after every shard is done)."""
    referenced: set[str] = set()
    counts = {"queries": 0, "samples": 0, "dropped_no_target_image": 0, "missing_entity_images": 0}
    per_shard = []
    for n in range(shards):
        done = json.loads((out / f"samples-{n:05d}.json").read_text(encoding="utf-8"))
        referenced.update(done.pop("referenced"))
        per_shard.append({"file": f"samples-{n:05d}.tar", "samples": done["samples"]})
        for k in counts:
            counts[k] += done[k]
    if not counts["samples"]:
        raise InputError(f"no {inputs.split} query has its target image in the image store; fetch the images "
                         "first", path=fs.redact(inputs.root))
    ids = sorted(referenced, key=id_hash)
    index = np.zeros(len(ids), INDEX_DTYPE)
    with atomic_path(out / "images.bin") as tmp, open(tmp, "wb") as blob:
        for row, (key, data) in enumerate(train_uri.fetch_ordered(store, ids)):
            index[row] = (id_hash(key), blob.tell(), len(data))
            blob.write(data)
    with atomic_path(out / "images.idx.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, index)
    fs.sweep(out)  # temporaries (.tmp-*) an interrupted earlier preparer left: a finished folder holds none
    total_bytes = train_uri.folder_bytes(out)
    manifest = {"format": "wit-retrieval/train-shards", "version": VERSION, "inputs": fs.redact_all(inputs.__dict__),
                "key": out.name, "shards": per_shard, "counts": counts, "entity_images": len(ids),
                "bytes": total_bytes}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def read_prepared(out: Path) -> dict:
    """The manifest of a finished preparation (an InputError when there is none)."""
    path = fs.path(out) / MANIFEST
    if not path.is_file():
        raise InputError("not a prepared training folder (no manifest.json); run wit-retrieval prepare",
                         path=fs.redact(out))
    return json.loads(path.read_text(encoding="utf-8"))


class EntityImages:
    """Random access to images.bin by image id through the memory-mapped sorted hash index.

    For a preparation on an object store, both files are read from this node's local copy
    (train_uri.local_entity_store: downloaded once, on first use).
    """

    def __init__(self, out):
        self.source = out
        self.out = train_uri.local_entity_store(out)
        self.index = np.load(self.out / "images.idx.npy", mmap_mode="r")
        self._handle = self._sample = None

    def get(self, image_id: str) -> bytes | None:
        """The stored bytes, or None when the id is not in the store."""
        from .id_store import block_find, sample_of

        if self._sample is None:  # searchsorted on the strided hash field would copy it whole per call
            self._sample = sample_of(self.index["hash"])
        row = block_find(self.index["hash"], self._sample, np.uint64(id_hash(image_id)))
        if row < 0:
            return None
        if self._handle is None:  # opened lazily: each loader worker gets its own handle
            self._handle = open(self.out / "images.bin", "rb")  # noqa: SIM115
        self._handle.seek(int(self.index["offset"][row]))
        return self._handle.read(int(self.index["length"][row]))

    def __getstate__(self):
        return {"out": self.source}

    def __setstate__(self, state):
        self.__init__(state["out"])


def disk_cost_note(manifest: dict) -> str:
    """One line: samples, shards, entity images and bytes of a preparation."""
    return (f"{manifest['counts']['samples']} samples in {len(manifest['shards'])} shards, "
            f"{manifest['entity_images']} entity/hard-negative images, {manifest['bytes'] / 1e6:.1f} MB")


def shard_paths(out, manifest: dict) -> list[tuple[Path, int]]:
    """(tar path or ObjectPath, samples) of every shard."""
    return [(fs.path(out) / s["file"], int(s["samples"])) for s in manifest["shards"]]

