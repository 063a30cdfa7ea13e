"""Where each relevant item lands in a run: the vectorised core every measure is computed from.

A run is held as columns (query_id, image_id, score). Measures only need, per query, the
0-based rank of each relevant item it retrieved, the item's gain and the query's relevant
items; so instead of sorting 100M rows we count, for each relevant row, the rows of its query
that rank above it. Order is trec_eval's: score descending, then image id descending (byte
order, as strcmp), and ranks in the file are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .fingerprint import IMAGE_FINGERPRINT, fingerprint

# In memory: query_id -> [(image_id, score)] best first; qrels: query_id -> {image_id: relevance}.
Run = dict[str, list[tuple[str, float]]]
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class RankedHits:
    """Relevant items found by a run, per query of the qrels (queries sorted by id)."""

    query_ids: np.ndarray  # object array of the qrels' query ids, sorted
    num_relevant: np.ndarray  # relevant items per query (relevance > 0)
    ideal_query: np.ndarray  # per relevant qrel, sorted by (query, relevance descending): query index
    ideal_gain: np.ndarray  # ... its relevance (float64)
    ideal_pos: np.ndarray  # ... its 0-based position in the query's ideal ranking
    query: np.ndarray  # per hit: query index
    rank: np.ndarray  # per hit: 0-based rank in the run
    gain: np.ndarray  # per hit: relevance (float64)

    @property
    def num_queries(self) -> int:
        return len(self.query_ids)


# Arrow <-> numpy for numbers and booleans straight from the buffers: pyarrow's own to_numpy,
# pa.array and Python scalars in compute calls import pandas on first use, ~0.3 s of a `score`.
_NUMPY_TYPES = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
                pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
                pa.float32(): np.float32, pa.float64(): np.float64}


def _bits(buffer: pa.Buffer, offset: int, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buffer, np.uint8), count=offset + n, bitorder="little")[offset:].astype(bool)


def to_numpy(values: pa.Array | pa.ChunkedArray, null=None) -> np.ndarray:
    """Numbers or booleans of an Arrow array as numpy (read-only when no copy is needed), nulls as `null`."""
    if isinstance(values, pa.ChunkedArray):
        parts = [to_numpy(chunk, null) for chunk in values.chunks]
        if parts:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.zeros(0, bool if pa.types.is_boolean(values.type) else _NUMPY_TYPES[values.type])
    n, offset = len(values), values.offset
    validity, data = values.buffers()[:2]
    if pa.types.is_boolean(values.type):
        out = _bits(data, offset, n) if n else np.zeros(0, bool)
    else:
        dtype = np.dtype(_NUMPY_TYPES[values.type])
        out = np.frombuffer(data, dtype, count=n, offset=offset * dtype.itemsize) if n else np.zeros(0, dtype)
    if values.null_count:
        if null is None:
            raise ValueError("the array has nulls: say what they become")
        out = np.where(_bits(validity, offset, n), out, null)
    return out


def from_numpy(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """A numpy array of numbers or booleans as Arrow (no copy for numbers); `mask` marks nulls."""
    values = np.ascontiguousarray(values)
    if values.dtype == bool:
        arrow_type, data = pa.bool_(), pa.py_buffer(np.packbits(values, bitorder="little"))
    else:
        arrow_type, data = pa.from_numpy_dtype(values.dtype), pa.py_buffer(values)
    validity = None if mask is None else pa.py_buffer(np.packbits(~np.asarray(mask, bool), bitorder="little"))
    return pa.Array.from_buffers(arrow_type, len(values), [validity, data], null_count=-1 if mask is not None else 0)


def take(values: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """values[rows] as one array. A chunked array is indexed chunk by chunk: pc.take on it
    concatenates every chunk first (a copy of the whole column per call)."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(values, pa.Array) or values.num_chunks == 1:
        return pc.take(flat(values), from_numpy(rows))
    if not len(rows) or not values.num_chunks:
        return values.slice(0, 0).combine_chunks()
    bounds = np.cumsum([0] + [len(chunk) for chunk in values.chunks])
    which = np.searchsorted(bounds, rows, side="right") - 1
    order = np.argsort(which, kind="stable")
    parts = [pc.take(values.chunk(int(which[seg[0]])), from_numpy(rows[seg] - bounds[which[seg[0]]]))
             for seg in np.split(order, np.flatnonzero(np.diff(which[order])) + 1)]
    combined = pa.concat_arrays(parts)
    if np.array_equal(order, np.arange(len(order))):
        return combined
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return pc.take(combined, from_numpy(inverse))


def run_columns(run: Run | pa.Table) -> pa.Table:
    """The run as a table (query_id, image_id, score[, image_fp]); a dict run keeps each item's best score."""
    if isinstance(run, pa.Table):
        table = run.select(["query_id", "image_id", "score"]
                           + ([IMAGE_FINGERPRINT] if IMAGE_FINGERPRINT in run.column_names else []))
        return table.set_column(2, "score", pc.cast(table["score"], pa.float64()))
    qids, docs, scores = [], [], []
    for qid, items in run.items():
        seen: dict[str, float] = {}
        for doc, score in items:
            if doc not in seen or score > seen[doc]:
                seen[doc] = float(score)
        qids.extend([qid] * len(seen))
        docs.extend(seen)
        scores.extend(seen.values())
    return pa.table({"query_id": pa.array(qids, pa.string()), "image_id": pa.array(docs, pa.string()),
                     "score": pa.array(scores, pa.float64())})


def qrels_columns(qrels: Qrels | pa.Table) -> pa.Table:
    """Qrels as a table (query_id, image_id, relevance)."""
    if isinstance(qrels, pa.Table):
        table = qrels.select(["query_id", "image_id", "relevance"])
        return table.set_column(2, "relevance", pc.cast(table["relevance"], pa.int64()))
    rows = [(q, d, int(r)) for q, docs in qrels.items() for d, r in docs.items()]
    qids, docs, rels = zip(*rows) if rows else ((), (), ())
    return pa.table({"query_id": pa.array(qids, pa.string()), "image_id": pa.array(docs, pa.string()),
                     "relevance": pa.array(rels, pa.int64())})


def flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (chunked arrays are combined; a single chunk is used as it is)."""
    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values


def _index(values: pa.Array | pa.ChunkedArray, universe: pa.Array) -> np.ndarray:
    """Position of each value in `universe`, -1 where absent."""
    return to_numpy(pc.index_in(values, value_set=universe), null=-1).astype(np.int64)


def is_one_block_per_query(head_q: np.ndarray) -> bool:
    """True when no query index repeats (bincount: numpy's hash-based unique is slow here)."""
    return not len(head_q) or int(np.bincount(head_q).max()) <= 1


def group_runs(query_id: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal consecutive query ids (files group rows by query)."""
    n = len(query_id)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Chunked is fine: slices are views and the comparison aligns chunks (no copy of the strings).
    change = to_numpy(pc.not_equal(query_id[1:], query_id[:-1]))
    starts = np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)
    return starts, np.diff(np.append(starts, n))


@dataclass(frozen=True)
class _RelevantIndex:
    """The qrels' relevant items grouped by query: items of query q are at first[q] ... first[q] + count[q]."""

    query_ids: pa.Array  # sorted
    docs: pa.Array  # relevant image ids, grouped by query
    docs_fp: np.ndarray  # their fingerprints
    gains: np.ndarray
    first: np.ndarray
    count: np.ndarray
    ideal: tuple[np.ndarray, np.ndarray, np.ndarray]  # (query, gain, position) of the ideal rankings


def _qrels_index(qrels: pa.Table) -> _RelevantIndex:
    """Index the relevant items (relevance > 0) of the qrels by query."""
    unique = pc.unique(qrels["query_id"])
    query_ids = pc.take(unique, pc.sort_indices(unique))
    relevant = qrels.filter(from_numpy(to_numpy(qrels["relevance"]) > 0))
    q = _index(relevant["query_id"], query_ids)
    gains = to_numpy(relevant["relevance"]).astype(np.float64)
    by_query = np.argsort(q, kind="stable")
    count = np.bincount(q, minlength=len(query_ids))
    first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    ideal_order = np.lexsort((-gains, q))
    ideal_q = q[ideal_order]
    ideal_pos = np.arange(len(ideal_q)) - np.searchsorted(ideal_q, ideal_q)
    docs = flat(pc.take(relevant["image_id"], from_numpy(by_query)))
    return _RelevantIndex(flat(query_ids), docs, fingerprint(docs), gains[by_query], first, count,
                          (ideal_q, gains[ideal_order], ideal_pos))


BLOCK_ROWS = 1 << 22  # rows per block: temporaries stay small and in cache at 100M rows


def rank_hits(run: Run | pa.Table, qrels: Qrels | pa.Table) -> RankedHits:
    """Ranks and gains of the relevant items each query's run retrieved (trec_eval order)."""
    run_t, rel = run_columns(run), _qrels_index(qrels_columns(qrels))
    starts, lengths = group_runs(run_t["query_id"])
    head_q = _index(take(run_t["query_id"], starts), rel.query_ids) if len(starts) else starts
    known = head_q >= 0
    if not is_one_block_per_query(head_q[known]):
        # A query's rows are split across the file: regroup them (rare; stable keeps file order).
        run_t = run_t.take(from_numpy(np.argsort(np.repeat(head_q, lengths), kind="stable")))
        starts, lengths = group_runs(run_t["query_id"])
        head_q = _index(take(run_t["query_id"], starts), rel.query_ids)
    score = to_numpy(run_t["score"])
    if np.isnan(score).any():  # NaN would compare false both ways; rank it last, deterministically
        score = np.where(np.isnan(score), -np.inf, score)
    ids = run_t["image_id"]  # kept chunked: combining 100M strings would copy gigabytes
    fps = to_numpy(run_t[IMAGE_FINGERPRINT]) if IMAGE_FINGERPRINT in run_t.column_names else None
    parts = []
    group_cuts = np.searchsorted(starts, np.arange(0, len(score), BLOCK_ROWS))
    for g_a, g_b in zip(group_cuts, np.append(group_cuts[1:], len(starts))):
        if g_b <= g_a:
            continue
        row_a = int(starts[g_a])
        row_b = int(starts[g_b]) if g_b < len(starts) else len(score)
        block_ids = ids.slice(row_a, row_b - row_a)
        block = _Block(starts[g_a:g_b] - row_a, lengths[g_a:g_b], head_q[g_a:g_b], score[row_a:row_b],
                       block_ids, fingerprint(block_ids) if fps is None else fps[row_a:row_b])
        rows, groups, gains = _match_relevant(block, rel)
        parts.append((block.head_q[groups], _ranks_of(rows, groups, block), gains))
    if parts:
        query, ranks, gains = (np.concatenate(column) for column in zip(*parts))
    else:
        query, ranks, gains = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return RankedHits(np.asarray(rel.query_ids.to_pylist(), dtype=object), rel.count, *rel.ideal,
                      query.astype(np.int64), ranks.astype(np.int64), gains)


@dataclass(frozen=True)
class _Block:
    """Consecutive whole query groups of a run, with block-local row numbers."""

    starts: np.ndarray
    lengths: np.ndarray
    head_q: np.ndarray  # query index of each group (-1: not in the qrels)
    score: np.ndarray
    ids: pa.Array
    fp: np.ndarray  # fingerprints of ids


def _match_relevant(block: _Block, rel: _RelevantIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (block-local, ascending), their groups and gains where the image is relevant to the query.

    Pass j compares each row's image id with the j-th relevant id of its query: sequential
    comparisons of fingerprints, no hash lookups (those thrash the cache at a million queries).
    """
    known = block.head_q >= 0
    count = np.where(known, rel.count[np.maximum(block.head_q, 0)], 0)
    first = rel.first[np.maximum(block.head_q, 0)]
    rows_found, gains_found = [], []
    for j in range(int(count.max(initial=0))):
        active = np.flatnonzero(count > j)
        # Fingerprints first (numpy, 8 bytes a row), then the few equal ones confirmed on the strings.
        if 4 * len(active) >= len(block.starts):  # dense: every row against its group's j-th relevant id
            target = np.where(count > j, first + j, 0)
            rows = np.flatnonzero(_rows_vs_groups(np.equal, block.fp, rel.docs_fp[target], block.lengths))
            groups = np.searchsorted(block.starts, rows, side="right") - 1
            has_j = count[groups] > j  # a group without a j-th relevant item matched item 0 by chance
            rows, target_rows = rows[has_j], target[groups[has_j]]
        else:
            rows = _rows_of_groups(active, block.starts, block.lengths)
            target_rows = np.repeat(first[active] + j, block.lengths[active])
            equal = np.flatnonzero(block.fp[rows] == rel.docs_fp[target_rows])
            rows, target_rows = rows[equal], target_rows[equal]
        same = to_numpy(pc.equal(take(block.ids, rows), take(rel.docs, target_rows)))
        rows_found.append(rows[same])
        gains_found.append(rel.gains[target_rows[same]])
    if not rows_found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    rows, gains = np.concatenate(rows_found), np.concatenate(gains_found)
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    return rows, np.searchsorted(block.starts, rows, side="right") - 1, gains[order]


def _ranks_of(rel_rows: np.ndarray, groups: np.ndarray, block: _Block) -> np.ndarray:
    """0-based rank of each relevant row among the rows of its group, by (score, image id) descending.

    Relevant rows of one group are handled in "slots": pass j compares every row of the groups
    having a j-th relevant row with that row, so the cost is rows x relevant-per-query, not a sort.
    """
    ranks = np.zeros(len(rel_rows), np.int64)
    if not len(rel_rows):
        return ranks
    # Slot of each relevant row within its group (rows come in group order already).
    slot = np.arange(len(rel_rows)) - np.searchsorted(groups, groups)
    starts, lengths, score, ids = block.starts, block.lengths, block.score, block.ids
    for j in range(int(slot.max()) + 1):
        sel = np.flatnonzero(slot == j)
        g, r = groups[sel], rel_rows[sel]
        if 4 * len(g) >= len(starts):
            above, tied, tied_ref = _compare_all_rows(g, r, starts, lengths, score)
        else:
            above, tied, tied_ref = _compare_group_rows(g, r, starts, lengths, score)
        if len(tied):  # equal scores: the larger image id (byte order) ranks first, as in trec_eval
            later = pc.greater(take(ids, tied), take(ids, r[tied_ref]))
            above += np.bincount(tied_ref, weights=to_numpy(later), minlength=len(g)
                                 ).astype(np.int64)
        ranks[sel] = above
    return ranks


def _compare_all_rows(g, r, starts, lengths, score):
    """Dense pass over every row: rows above each reference, and tied rows (row, reference index)."""
    ref = np.full(len(starts), np.nan)
    ref[g] = score[r]
    greater = _rows_vs_groups(np.greater, score, ref, lengths)
    if lengths.min() == lengths.max():  # every query has the same depth: a reshape beats reduceat
        above = np.count_nonzero(greater.reshape(len(starts), -1), axis=1)[g]
    else:
        above = np.add.reduceat(greater, starts, dtype=np.int64)[g]
    tied = np.flatnonzero(_rows_vs_groups(np.equal, score, ref, lengths))
    slot_of_group = np.full(len(starts), -1)
    slot_of_group[g] = np.arange(len(g))
    tied_ref = slot_of_group[np.searchsorted(starts, tied, side="right") - 1]
    keep = tied != r[tied_ref]
    return above, tied[keep], tied_ref[keep]


def _rows_vs_groups(op, rows: np.ndarray, per_group: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """op(row value, its group's value) for every row of consecutive groups; a broadcast, with no
    full-length copy of the group values, when every group has the same length (a fixed depth)."""
    if len(lengths) and lengths.min() == lengths.max():
        return op(rows.reshape(len(lengths), -1), per_group[:, None]).reshape(-1)
    return op(rows, np.repeat(per_group, lengths))


def _compare_group_rows(g, r, starts, lengths, score):
    """Sparse pass over the rows of the given groups only."""
    rows = _rows_of_groups(g, starts, lengths)
    ref = np.repeat(np.arange(len(g)), lengths[g])  # reference index for each row
    s_ref, s_row = score[r][ref], score[rows]
    above = np.bincount(ref, weights=(s_row > s_ref), minlength=len(g)).astype(np.int64)
    tied = np.flatnonzero((s_row == s_ref) & (rows != r[ref]))
    return above, rows[tied], ref[tied]


def _rows_of_groups(groups: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Row indices of the given groups, concatenated in order."""
    if len(groups) == len(starts) and np.array_equal(groups, np.arange(len(starts))):
        return np.arange(int(lengths.sum()))
    lens = lengths[groups]
    offsets = np.repeat(starts[groups] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return np.arange(int(lens.sum())) + offsets
