"""A distillation teacher's embeddings as an id-keyed store read by memory map (never loaded whole).

`[distill] teacher_embeddings` (parquet file or folder of parts, or `.npy` + `.ids.txt`) is
converted once, block by block, into `<prepared folder>/teacher-<key>/`:

- `hashes.u64`: the sorted 64-bit hashes of the ids (train_shards.id_hash), uint64;
- `vectors.f32`: the L2-normalised rows in the same order, float32 [rows, dim];
- `store.json` (written last): rows, dim, the source file and the key.

The key covers the teacher files' names, sizes and modification times, so a new teacher file
is converted again and an unchanged one is reused. Each batch looks its ids up by bisection of
a sample of the sorted hashes held in memory and one read of a block of them, then reads its
own rows (pread, no memory map): a process holds neither the file nor the pages it touched. The rows are those TeacherCache (distill.py) holds: the same float32
normalisation, a repeated id keeps its first row, unknown ids give NaN rows.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from .id_store import (
    DONE,
    BucketSpill,
    FileReader,
    SortedHashes,
    bucket_bits,
    building,
    hashes_of,
    is_built,
    sorted_rows,
    store_key,
)

VERSION = 1
NPY_BLOCK = 65536                 # rows of an .npy teacher read at a time


def teacher_files(path: str | Path) -> list[Path]:
    """The files a teacher path consists of (its parquet parts, or the .npy and its ids)."""
    from ..io.embeddings import _sidecars, embedding_files

    path = Path(path)
    if path.suffix == ".npy":
        if not path.exists():
            raise InputError("embedding file not found", path=str(path))
        return [path, _sidecars(path)[0]]
    return embedding_files(path)


def teacher_blocks(path: str | Path) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 rows) of a teacher file, one row group (or NPY_BLOCK rows) at a time."""
    from ..io.embeddings import iter_embedding_blocks

    path = Path(path)
    if path.suffix != ".npy":
        yield from iter_embedding_blocks(path)
        return
    matrix = np.load(path, mmap_mode="r")
    ids_file = teacher_files(path)[1]
    if not ids_file.exists():
        raise InputError(f"ids file {ids_file.name} is missing beside it (one id per line)", path=str(path))
    if matrix.ndim != 2:
        raise InputError(f"expected a 2-D array [n, d], got shape {matrix.shape}", path=str(path))
    row = 0
    with open(ids_file, encoding="utf-8", newline="") as lines:
        while True:
            ids = [line.rstrip("\r\n") for _, line in zip(range(NPY_BLOCK), lines)]
            if not ids:
                break
            if row + len(ids) > len(matrix):
                raise InputError(f"more ids than the {len(matrix)} rows", path=str(ids_file))
            yield ids, np.ascontiguousarray(matrix[row:row + len(ids)], dtype=np.float32)
            row += len(ids)
    if row != len(matrix):
        raise InputError(f"{row} ids for {len(matrix)} rows", path=str(ids_file))


def normalized(block: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, computed exactly as TeacherCache does (float32)."""
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)


def teacher_folder(path: str | Path, prepared: Path) -> Path:
    """Where the store of `path` lives for the prepared folder `prepared`."""
    return Path(prepared) / f"teacher-{store_key('teacher', VERSION, teacher_files(path), normalize=True)}"


def build_teacher_store(path: str | Path, folder: Path, *, progress: bool = True) -> None:
    """Convert a teacher file into the store at `folder` (memory: one input block and one bucket)."""
    from ..progress import progress_task
    from .train_shards import _no_progress

    files = teacher_files(path)
    bits = bucket_bits(2 * sum(f.stat().st_size for f in files))  # float16 parts double once read
    with building(folder) as tmp:
        spill, dim = BucketSpill(tmp / "spill", bits), 0
        with progress_task("converting the teacher embeddings", _rows(path)) if progress else _no_progress() as advance:
            for ids, block in teacher_blocks(path):
                dim = block.shape[1]
                spill.add(hashes_of(ids), np.ascontiguousarray(normalized(block), dtype=np.float32))
                advance(len(ids))
        rows = _write_sorted(spill, tmp, dim)
        shutil.rmtree(spill.folder)
        meta = {"format": "wit-retrieval/teacher-store", "version": VERSION, "rows": rows, "dim": dim,
                "source": str(path), "key": folder.name}
        (tmp / DONE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _rows(path: str | Path) -> int:
    from ..io.embeddings import count_embeddings

    path = Path(path)
    return len(np.load(path, mmap_mode="r")) if path.suffix == ".npy" else count_embeddings(path)


def _write_sorted(spill: BucketSpill, tmp: Path, dim: int) -> int:
    """Each bucket sorted by hash (a repeated id keeps its first row) appended to the store files."""
    rows = 0
    with open(tmp / "hashes.u64", "wb") as hashes_out, open(tmp / "vectors.f32", "wb") as vectors_out:
        for bucket in range(spill.buckets):
            hashes, seqs, _, payload = spill.read(bucket)
            if not len(hashes):
                continue
            order = sorted_rows(hashes, seqs)
            ordered = hashes[order]
            first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
            vectors = np.frombuffer(payload, np.float32).reshape(len(hashes), dim)[order[first]]
            hashes_out.write(ordered[first].tobytes())
            vectors_out.write(vectors.tobytes())
            rows += int(first.sum())
            spill.drop(bucket)
    return rows


class TeacherStore:
    """A converted teacher read by id (pread); the interface of distill.TeacherCache."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / DONE).read_text(encoding="utf-8"))
        self.rows, self.dim = int(meta["rows"]), int(meta["dim"])
        self.index = SortedHashes(self.folder / "hashes.u64", self.rows)
        self.vectors = FileReader(self.folder / "vectors.f32")

    def __len__(self) -> int:
        return self.rows

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.index.find(hashes_of([key]))[0] >= 0)

    def lookup(self, ids: Sequence[str], device=None):
        """Teacher rows [len(ids), dim] float32 in the order of `ids`; NaN rows where an id is unknown."""
        import torch

        rows = self.index.find(hashes_of(ids))
        out = np.full((len(ids), self.dim), np.nan, np.float32)
        width = 4 * self.dim
        for n in np.flatnonzero(rows >= 0):  # one read per row: nothing of the file stays in memory
            out[n] = np.frombuffer(self.vectors.read(int(rows[n]) * width, width), np.float32)
        tensor = torch.from_numpy(out)
        return tensor if device is None else tensor.to(device)

    def coverage(self, ids: Sequence[str]) -> float:
        """Share of `ids` that have a teacher row."""
        return float((self.index.find(hashes_of(list(ids))) >= 0).mean()) if ids else 0.0


def open_teacher_store(config, prepared: Path, *, progress: bool = True) -> TeacherStore | None:
    """The store of `config`'s ([distill]) teacher beside a prepared folder, converted on first use.

    One converter at a time (a file lock, as preparing the shards); the others wait and reuse it.
    """
    if not config.enabled:
        return None
    from ..io import fs
    from ..io.locks import file_lock
    from .train_uri import node_cache

    # Beside the shards on local disk; for a prepared folder on an object store, in this node's cache.
    folder = teacher_folder(config.teacher_embeddings, node_cache(prepared) if fs.is_remote(prepared) else prepared)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not is_built(folder):
        with file_lock(folder.parent / f".{folder.name}.lock"):
            if not is_built(folder):
                build_teacher_store(config.teacher_embeddings, folder, progress=progress)
    store = TeacherStore(folder)
    _check_coverage(store, config, prepared)
    return store


def _check_coverage(store: TeacherStore, config, prepared: Path) -> None:
    """A ConfigError when no id of the first shard the teacher teaches has a row (a wrong teacher file)."""
    from .train_shards import read_prepared, shard_paths
    from .train_stream import _read_shards

    first = shard_paths(prepared, read_prepared(prepared))[0][0]
    wanted: list[str] = []
    for meta_bytes, _ in _read_shards([first]):
        meta = json.loads(meta_bytes)
        if config.on in ("targets", "both"):
            wanted.append(meta["target"])
        if config.on in ("queries", "both"):
            wanted.append(meta["query_id"])
    if wanted and store.coverage(wanted) == 0:
        raise ConfigError(f"[distill] none of the {len(wanted)} {config.on} ids of the first training shard has "
                          f"a row in {config.teacher_embeddings}; embed them with the teacher first "
                          "(wit-retrieval embed)")
