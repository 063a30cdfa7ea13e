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


def run_columns(run: Run | pa.Table) -> pa.Table:
    """The run as a table (query_id, image_id, score); a dict run keeps each item's best score."""
    if isinstance(run, pa.Table):
        table = run.select(["query_id", "image_id", "score"])
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
    """One contiguous array (chunked arrays are combined)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _index(values: pa.Array | pa.ChunkedArray, universe: pa.Array) -> np.ndarray:
    """Position of each value in `universe`, -1 where absent."""
    return pc.index_in(values, value_set=universe).fill_null(-1).to_numpy().astype(np.int64)


def group_runs(query_id: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal consecutive query ids (files group rows by query)."""
    n = len(query_id)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ids = flat(query_id)
    change = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)
    return starts, np.diff(np.append(starts, n))


def _qrels_index(qrels: pa.Table):
    """Sorted query ids, relevant items keyed (query, item) and each query's relevance list."""
    query_ids = pc.sort_indices(pc.unique(qrels["query_id"]))
    query_ids = pc.take(pc.unique(qrels["query_id"]), query_ids)
    rel = qrels["relevance"].to_numpy()
    relevant = qrels.filter(pa.array(rel > 0))
    q = _index(relevant["query_id"], query_ids)
    docs = pc.unique(relevant["image_id"])
    d = _index(relevant["image_id"], docs)
    gains = relevant["relevance"].to_numpy().astype(np.float64)
    key = q * max(len(docs), 1) + d
    order = np.argsort(key, kind="stable")
    num_relevant = np.bincount(q, minlength=len(query_ids))
    ideal_order = np.lexsort((-gains, q))
    ideal_q = q[ideal_order]
    ideal_pos = np.arange(len(ideal_q)) - np.searchsorted(ideal_q, ideal_q)
    ideal = (ideal_q, gains[ideal_order], ideal_pos)
    return query_ids, docs, key[order], gains[order], num_relevant, ideal


def rank_hits(run: Run | pa.Table, qrels: Qrels | pa.Table) -> RankedHits:
    """Ranks and gains of the relevant items each query's run retrieved (trec_eval order)."""
    run_t, qrels_t = run_columns(run), qrels_columns(qrels)
    query_ids, rel_docs, rel_keys, rel_gains, num_relevant, ideal = _qrels_index(qrels_t)
    starts, lengths = group_runs(run_t["query_id"])
    head_q = _index(pc.take(run_t["query_id"], pa.array(starts)), query_ids) if len(starts) else starts
    known = head_q >= 0
    if len(np.unique(head_q[known])) < known.sum():
        # A query's rows are split across the file: regroup them (rare; stable keeps file order).
        row_q = np.repeat(head_q, lengths)
        run_t = run_t.take(pa.array(np.argsort(row_q, kind="stable")))
        starts, lengths = group_runs(run_t["query_id"])
        head_q = _index(pc.take(run_t["query_id"], pa.array(starts)), query_ids)
    row_group = np.repeat(np.arange(len(starts)), lengths)
    row_q = head_q[row_group] if len(starts) else np.zeros(0, np.int64)
    doc = _index(run_t["image_id"], rel_docs)
    cand = np.flatnonzero((row_q >= 0) & (doc >= 0))
    gain_of = np.zeros(len(cand))
    if len(cand) and len(rel_keys):
        key = row_q[cand] * max(len(rel_docs), 1) + doc[cand]
        pos = np.minimum(np.searchsorted(rel_keys, key), len(rel_keys) - 1)
        hit = rel_keys[pos] == key
        cand, gain_of = cand[hit], rel_gains[pos[hit]]
    score = np.nan_to_num(run_t["score"].to_numpy(zero_copy_only=False), nan=-np.inf)
    ranks = _ranks_of(cand, row_group, starts, lengths, score, run_t["image_id"])
    return RankedHits(np.asarray(query_ids.to_pylist(), dtype=object), num_relevant, *ideal,
                      row_q[cand], ranks, gain_of)


def _ranks_of(rel_rows: np.ndarray, row_group: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
              score: np.ndarray, image_id: pa.ChunkedArray) -> np.ndarray:
    """0-based rank of each relevant row among the rows of its group, by (score, image id) descending.

    Relevant rows of one group are handled in "slots": pass j compares every row of the groups
    having a j-th relevant row with that row, so the cost is rows x relevant-per-query, not a sort.
    """
    ranks = np.zeros(len(rel_rows), np.int64)
    if not len(rel_rows):
        return ranks
    groups = row_group[rel_rows]
    # Slot of each relevant row within its group (rows come in group order already).
    first = np.searchsorted(groups, groups)
    slot = np.arange(len(rel_rows)) - first
    flat_ids = flat(image_id)
    for j in range(int(slot.max()) + 1):
        sel = np.flatnonzero(slot == j)
        g, r = groups[sel], rel_rows[sel]
        rows = _rows_of_groups(g, starts, lengths)
        ref = np.repeat(np.arange(len(g)), lengths[g])  # index into sel for each row
        s_ref = score[r][ref]
        s_row = score[rows]
        above = np.bincount(ref, weights=(s_row > s_ref), minlength=len(g))
        tied = np.flatnonzero((s_row == s_ref) & (rows != r[ref]))
        if len(tied):
            later = pc.greater(pc.take(flat_ids, pa.array(rows[tied])),
                               pc.take(flat_ids, pa.array(r[ref[tied]]))).to_numpy(zero_copy_only=False)
            above += np.bincount(ref[tied], weights=later, minlength=len(g))
        ranks[sel] = above.astype(np.int64)
    return ranks


def _rows_of_groups(groups: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Row indices of the given groups, concatenated in order."""
    if len(groups) == len(starts) and np.array_equal(groups, np.arange(len(starts))):
        return np.arange(int(lengths.sum()))
    lens = lengths[groups]
    offsets = np.repeat(starts[groups] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return np.arange(int(lens.sum())) + offsets
