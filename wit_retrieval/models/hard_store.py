"""Hard negatives by query id, converted once into an id-keyed store (never loaded whole).

`[loss] hard_negatives` is a parquet file (`query_id`, `image_ids` list<string> best first,
`scores` list<float>) or any run file (TREC, parquet run, JSON). Preparing the shards
(train_shards.prepare) converts it, block by block, into `<prepared>/hard-negatives-<key>/`:

- `hashes.u64`: the sorted 64-bit hashes of the query ids (train_shards.id_hash);
- `spans.u64`: (offset, length) in `lists.bin` of each, uint64 [queries, 2];
- `lists.bin`: each query's ranked image ids, newline-separated UTF-8;
- `store.json` (written last).

Each shard then looks up its own queries; the store is deleted once the preparation is finished
(the hard negatives travel with the samples). The lists are those read_hard_negatives gives:
for the parquet of lists, a repeated query keeps its last row; for a run, every row of a query
is ranked by score (descending, then image id descending, as trec_eval and io.runs order them).
TREC runs are read in pieces of CHUNK_BYTES; a JSON run is read whole (it is one JSON object).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import id_store as ids

VERSION = 1
CHUNK_BYTES = 64 << 20            # TREC runs are parsed in pieces of about this size
BLOCK_ROWS = 65536


def is_list_file(path: Path) -> bool:
    """True for the parquet of ranked lists (`image_ids`), False for a run file."""
    import pyarrow.parquet as pq

    return path.suffix == ".parquet" and "image_ids" in pq.read_schema(path).names


def _list_blocks(path: Path) -> Iterator[tuple[list[str], list[bytes]]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(columns=["query_id", "image_ids"], batch_size=BLOCK_ROWS):
        columns = zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())
        pairs = [(q, images) for q, images in columns if q is not None]
        yield [str(q) for q, _ in pairs], ["\n".join(images or []).encode("utf-8") for _, images in pairs]


def _run_tables(path: Path, scratch: Path, chunk_bytes: int) -> Iterator:
    """(query_id, image_id, score) tables of a run file, a piece at a time."""
    from ..io.runs import detect_format, map_urls, read_run_table

    fmt = detect_format(path)
    if fmt == "json":
        yield read_run_table(path, fmt).table
    elif fmt == "parquet":
        yield from (map_urls(t) for t in _parquet_run(path))
    else:
        yield from _trec_pieces(path, scratch, chunk_bytes)


def _parquet_run(path: Path) -> Iterator:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pa.schema([("query_id", pa.string()), ("image_id", pa.string()), ("score", pa.float64())])
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=schema.names, batch_size=BLOCK_ROWS):
        table = pa.Table.from_batches([batch])
        try:
            table = table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"columns have the wrong types ({exc}); want string, string, float",
                             path=str(path)) from None
        nulls = pc.or_(pc.is_null(table["query_id"]), pc.is_null(table["image_id"])).to_numpy(zero_copy_only=False)
        if nulls.any():
            raise InputError("query_id or image_id is null", path=str(path), line=row + int(np.flatnonzero(nulls)[0]) + 1)
        row += table.num_rows
        yield table


def _trec_pieces(path: Path, scratch: Path, chunk_bytes: int) -> Iterator:
    """A TREC run parsed in pieces cut at line ends; errors name the line of the whole file."""
    from ..io.runs import read_run_table

    piece = scratch / "piece.trec"
    first_line = 1
    with open(path, "rb") as source:
        while data := source.read(chunk_bytes):
            data += source.readline()
            piece.write_bytes(data)

            def problem(kind: str, line: int | None, message: str, offset: int = first_line - 1) -> None:
                raise InputError(f"{message} ({kind}); run `wit-retrieval validate` for all problems",
                                 path=str(path), line=None if line is None else line + offset)

            yield read_run_table(piece, "trec", on_problem=problem).table
            first_line += data.count(b"\n")
    piece.unlink(missing_ok=True)


def _run_blocks(path: Path, scratch: Path, chunk_bytes: int) -> Iterator[tuple[list[str], list[bytes]]]:
    """One entry per run row: query id and `score<TAB>image id` (merged per query when written)."""
    for table in _run_tables(path, scratch, chunk_bytes):
        for start in range(0, table.num_rows, BLOCK_ROWS):
            part = table.slice(start, BLOCK_ROWS)
            yield part["query_id"].to_pylist(), [f"{s!r}\t{d}".encode() for d, s in
                                                 zip(part["image_id"].to_pylist(), part["score"].to_pylist())]


def hard_folder(path: str | Path, prepared: Path) -> Path:
    """Where the store of hard-negatives file `path` lives while `prepared` is being written."""
    return Path(prepared) / f"hard-negatives-{ids.store_key('hard-negatives', VERSION, [Path(path)])}"


def build_hard_store(path: str | Path, folder: Path, *, chunk_bytes: int = CHUNK_BYTES, progress: bool = False) -> None:
    """Convert a hard-negatives file into the store at `folder` (memory: one block and one bucket)."""
    from ..progress import progress_task
    from .train_shards import _no_progress

    path = Path(path)
    if not path.exists():
        raise InputError("hard negatives file not found", path=str(path))
    lists = is_list_file(path)
    with ids.building(folder) as tmp:
        spill = ids.BucketSpill(tmp / "spill", ids.bucket_bits(8 * path.stat().st_size))  # decoded text outgrows the file
        with progress_task("reading the hard negatives (rows)", None) if progress else _no_progress() as advance:
            for qids, payloads in (_list_blocks(path) if lists else _run_blocks(path, tmp, chunk_bytes)):
                spill.add(ids.hashes_of(qids), payloads)
                advance(len(qids))
        rows = _write_lists(spill, tmp, merge=not lists)
        shutil.rmtree(spill.folder)
        meta = {"format": "wit-retrieval/hard-negatives-store", "version": VERSION, "queries": rows,
                "source": str(path), "key": folder.name}
        (tmp / ids.DONE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _write_lists(spill: ids.BucketSpill, tmp: Path, *, merge: bool) -> int:
    """Each bucket's queries in hash order: a run's rows merged and ranked, a list file's last row kept."""
    rows, written = 0, 0
    with (open(tmp / "hashes.u64", "wb") as hashes_out, open(tmp / "spans.u64", "wb") as spans_out,
          open(tmp / "lists.bin", "wb") as blob):
        for bucket in range(spill.buckets):
            hashes, seqs, offsets, payload = spill.read(bucket)
            if not len(hashes):
                continue
            order = ids.sorted_rows(hashes, seqs)
            ordered = hashes[order]
            starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
            ends = np.append(starts[1:], len(order)).astype(np.int64)
            if merge:
                lists = [_ranked([payload[offsets[r]:offsets[r + 1]] for r in order[a:b]])
                         for a, b in zip(starts, ends)]
            else:
                lists = [payload[offsets[r]:offsets[r + 1]] for r in order[ends - 1]]
            lengths = np.fromiter(map(len, lists), np.uint64, len(lists))
            spans = np.stack([written + np.cumsum(lengths) - lengths, lengths], axis=1)
            blob.write(b"".join(lists))
            written += int(lengths.sum())
            hashes_out.write(ordered[starts].tobytes())
            spans_out.write(spans.tobytes())
            rows += len(spans)
            spill.drop(bucket)
    return rows


def _ranked(entries: list[bytes]) -> bytes:
    """A query's run rows as ranked ids: score descending, then image id descending."""
    items = [(float(score), image) for score, image in (e.decode("utf-8").split("\t", 1) for e in entries)]
    return "\n".join(image for _, image in sorted(items, reverse=True)).encode("utf-8")


class HardNegativeStore:
    """Ranked hard-negative image ids by query id (a sorted hash index and pread, nothing loaded whole)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        rows = int(json.loads((self.folder / ids.DONE).read_text(encoding="utf-8"))["queries"])
        self.index = ids.SortedHashes(self.folder / "hashes.u64", rows)
        self.spans, self.lists = ids.FileReader(self.folder / "spans.u64"), ids.FileReader(self.folder / "lists.bin")

    def __len__(self) -> int:
        return len(self.index)

    def get(self, query_id: str, default=None) -> list[str] | None:
        """The query's ranked image ids (best first), or `default` when it has none."""
        row = int(self.index.find(ids.hashes_of([query_id]))[0])
        if row < 0:
            return default
        offset, length = (int(v) for v in np.frombuffer(self.spans.read(16 * row, 16), np.uint64))
        data = self.lists.read(offset, length)
        return data.decode("utf-8").split("\n") if data else []


def open_hard_negatives(path: str | Path, prepared: Path, *, progress: bool = False) -> HardNegativeStore:
    """The store of `path` inside the prepared folder, converted unless an earlier run finished it."""
    if not Path(path).exists():
        raise InputError("hard negatives file not found", path=str(path))
    folder = hard_folder(path, prepared)
    if not ids.is_built(folder):
        build_hard_store(path, folder, progress=progress)
    return HardNegativeStore(folder)


def drop_hard_negatives(prepared: Path) -> None:
    """Remove the converted hard negatives once every shard holds its own."""
    for folder in Path(prepared).glob("hard-negatives-*"):
        shutil.rmtree(folder, ignore_errors=True)
