"""Validating a submitted run before scoring it: every problem named, with its line.

`validate_run(path, truth, config)` never raises on a bad file: it returns a
ValidationReport of problems (kind, severity, line, message). Checks are vectorised so a
100M-row run validates in seconds: unknown and missing queries, duplicate image ids within a
query, unknown image ids, non-numeric or non-finite scores, ranks that contradict scores,
more than `max_k` results per query, files over a size cap, bad encodings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .io.runs import RunFile, read_run_table, read_split_table
from .problems import SEVERITY, Problem, ValidationReport
from .ranking import (
    IMAGE_FINGERPRINT,
    fingerprint,
    flat,
    from_numpy,
    group_runs,
    is_one_block_per_query,
    take,
    to_numpy,
)

__all__ = ["SEVERITY", "Problem", "SplitTruth", "ValidationConfig", "ValidationReport", "fingerprint",
           "load_truth", "validate", "validate_run"]


@dataclass(frozen=True)
class ValidationConfig:
    """How strict validation is."""

    strict: bool = False  # missing queries are errors, not warnings
    max_k: int = 1000  # results per query
    max_bytes: int = 8 << 30  # files over this size are refused before reading
    fmt: str | None = None  # trec | json | parquet; None: detect


@dataclass(frozen=True)
class SplitTruth:
    """What a run of one split is checked against: its query ids and (optionally) corpus image ids."""

    query_ids: pa.Array
    image_ids: pa.Array | None = None
    split: str | None = None


def load_truth(root: str | Path, split: str) -> SplitTruth:
    """Query ids (qrels of the split) and corpus image ids of a data root."""
    qrels = read_split_table(root, "qrels", split, ["query_id"])
    corpus = read_split_table(root, "corpus", split, ["image_id"])
    return SplitTruth(flat(pc.unique(qrels["query_id"])), flat(pc.unique(corpus["image_id"])), split)


def validate_run(path: str | Path, truth: SplitTruth | None = None,
                 config: ValidationConfig = ValidationConfig()) -> tuple[ValidationReport, RunFile | None]:
    """Check a run file; returns the report and the parsed run (None when unreadable as a whole)."""
    path = Path(path)
    report = ValidationReport(str(path), strict=config.strict)
    try:
        size = path.stat().st_size
    except OSError as exc:
        report.add("format", None, f"cannot read the file: {exc.strerror or exc}")
        return report, None
    if size > config.max_bytes:
        report.add("size", None, f"file is {size} bytes, over the cap of {config.max_bytes} (raise --max-bytes)")
        return report, None
    try:
        run = read_run_table(path, config.fmt, on_problem=report.add)
    except InputError as exc:
        report.add("format", exc.line, str(exc))
        return report, None
    report.fmt = run.fmt
    declared = run.meta.get("split")
    if truth is not None and truth.split and declared is not None and declared != truth.split:
        report.add("split_mismatch", 1, f"the file says split {declared!r} but it is scored against {truth.split!r}")
    _check_table(run, truth, config, report)
    return report, run


def _check_table(run: RunFile, truth: SplitTruth | None, config: ValidationConfig,
                 report: ValidationReport) -> None:
    table = run.table
    report.num_rows = table.num_rows
    lines = to_numpy(table["line"])
    score = to_numpy(table["score"])
    # kept contiguous with the run: scoring then reads the scores without concatenating the chunks again
    run.table = run.table.set_column(table.schema.get_field_index("score"), "score", from_numpy(score))
    query_id, image_id = table["query_id"], table["image_id"]
    bad = np.flatnonzero(~np.isfinite(score))
    report.add_rows("nonfinite_score", lines[bad],
                    lambda i: [f"score {v} is not finite" for v in score[bad[i]].tolist()])
    starts, lengths = group_runs(query_id)
    heads = take(query_id, starts)
    unique_q = pc.unique(heads)
    report.num_queries = len(unique_q)
    head_q = to_numpy(pc.index_in(heads, value_set=unique_q)).astype(np.int64)
    per_query = np.bincount(head_q, weights=lengths, minlength=len(unique_q)).astype(np.int64)
    first_row = np.full(len(unique_q), -1)
    first_row[head_q[::-1]] = starts[::-1]  # earliest start wins
    over = np.flatnonzero(per_query > config.max_k)
    report.add_rows("too_many", lines[first_row[over]], lambda i: [
        f"query {q!r} has {n} results, over --max-k {config.max_k}"
        for q, n in zip(_values(unique_q, over[i]), per_query[over[i]].tolist())])
    if truth is not None:
        _check_queries(unique_q, first_row, lines, truth, report)
    if truth is not None and truth.image_ids is not None:
        doc, exact = _corpus_codes(image_id, truth.image_ids, lines, report), True
    else:
        doc, exact = fingerprint(image_id), False
        # kept with the run: ranking (ranking.rank_hits) reuses them instead of hashing every id again
        run.table = run.table.append_column(IMAGE_FINGERPRINT, from_numpy(doc))
    groups = _Groups(starts, lengths, head_q)
    _check_duplicates(groups, doc, exact, lines, query_id, image_id, report)
    if "rank" in table.column_names:
        _check_rank_order(groups, to_numpy(table["rank"]), score, lines, report)


def _values(values: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> list:
    """Python values at the given positions."""
    return take(values, rows).to_pylist()


def _check_queries(unique_q: pa.Array, first_row: np.ndarray, lines: np.ndarray, truth: SplitTruth,
                   report: ValidationReport) -> None:
    unknown = np.flatnonzero(~to_numpy(pc.is_in(unique_q, value_set=truth.query_ids)))
    report.add_rows("unknown_query", lines[first_row[unknown]], lambda i: [
        f"query id {q!r} is not a query of this split" for q in _values(unique_q, unknown[i])])
    missing = np.flatnonzero(~to_numpy(pc.is_in(truth.query_ids, value_set=unique_q)))
    report.add_rows("missing_query", np.zeros(len(missing), np.int64), lambda i: [
        f"query {q!r} has no results; it scores 0" for q in _values(truth.query_ids, missing[i])])


def _corpus_codes(image_id: pa.ChunkedArray, corpus: pa.Array, lines: np.ndarray,
                  report: ValidationReport) -> np.ndarray:
    """Each row's position in the corpus ids (-1: unknown, reported)."""
    code = to_numpy(pc.index_in(image_id, value_set=corpus), null=-1).astype(np.int64)
    unknown = np.flatnonzero(code < 0)
    report.add_rows("unknown_image", lines[unknown], lambda i: [
        f"image id {d!r} is not in the split's corpus (use corpus image_id values or image URLs)"
        for d in _values(image_id, unknown[i])])
    return code


@dataclass(frozen=True)
class _Groups:
    """The runs of equal consecutive query ids: starts, lengths and each run's query number."""

    starts: np.ndarray
    lengths: np.ndarray
    head_q: np.ndarray

    def row_q(self) -> np.ndarray:
        """Each row's query number (a full-length array: only the rare unsorted paths need it)."""
        return np.repeat(self.head_q, self.lengths)

    def same_as_previous(self) -> np.ndarray:
        """Whether row i + 1 is in the same run as row i (runs are maximal, so: not a run start)."""
        same = np.ones(max(int(self.lengths.sum()) - 1, 0), bool)
        same[self.starts[1:] - 1] = False
        return same


def _check_duplicates(groups: _Groups, doc: np.ndarray, exact: bool, lines: np.ndarray, query_id, image_id,
                      report: ValidationReport) -> None:
    """Duplicate (query, image) pairs: sort the image codes of each query and compare neighbours.

    `doc` are corpus codes (exact; -1 unknown, never a duplicate) or fingerprints, whose equal
    neighbours are confirmed by comparing the strings.
    """
    starts, lengths = groups.starts, groups.lengths
    if len(lengths) and lengths.min() == lengths.max() and is_one_block_per_query(groups.head_q):
        # One block per query, all of the same depth: sort row-wise (much cheaper than one big sort),
        # and find the rows of the few queries that have a repeat before locating it.
        codes = doc.reshape(len(starts), -1)
        # Fingerprints are sorted on one 32-bit half (a third of the sort's time): equal fingerprints have
        # equal halves, so no repeat is missed, and the queries found are checked on the whole codes below.
        ranked = np.sort(codes if exact else codes.view(np.uint32)[:, ::2], axis=1)
        same = ranked[:, 1:] == ranked[:, :-1]
        groups = np.flatnonzero((same & (ranked[:, 1:] >= 0) if exact else same).any(axis=1))
        order = np.argsort(codes[groups], axis=1, kind="stable")
        ranked = np.take_along_axis(codes[groups], order, axis=1)
        g, j = np.nonzero((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] >= 0 if exact else True))
        rows, firsts = starts[groups[g]] + order[g, j + 1], starts[groups[g]] + order[g, j]
    else:
        valid = np.flatnonzero(doc >= 0) if exact else np.arange(len(doc))
        row_q = groups.row_q()
        order = np.lexsort((doc[valid], row_q[valid]))
        q, d = row_q[valid][order], doc[valid][order]
        dup = np.flatnonzero((q[1:] == q[:-1]) & (d[1:] == d[:-1])) + 1
        rows, firsts = valid[order[dup]], valid[order[dup - 1]]
    if not exact and len(rows):
        same = pc.equal(take(image_id, rows), take(image_id, firsts))
        keep = to_numpy(same)
        rows, firsts = rows[keep], firsts[keep]
    rows, firsts = rows.astype(np.int64), firsts.astype(np.int64)
    report.add_rows("duplicate_image", lines[rows], lambda i: [
        f"image id {d!r} repeats for query {q!r} (first at line {f}); each image may appear once per query"
        for d, q, f in zip(_values(image_id, rows[i]), _values(query_id, rows[i]), lines[firsts[i]].tolist())])


def _check_rank_order(groups: _Groups, rank: np.ndarray, score: np.ndarray, lines: np.ndarray,
                      report: ValidationReport) -> None:
    """Within a query in rank order, a later rank must not have a higher score."""
    same = groups.same_as_previous()
    if np.all(~same | (rank[1:] >= rank[:-1])):
        # Already in rank order within each query (the usual file): no sort, no full-length copies.
        rows = np.flatnonzero(same & (score[1:] > score[:-1])) + 1
        prev = rows - 1
    else:
        row_q = groups.row_q()
        order = np.lexsort((rank, row_q))
        q, s = row_q[order], score[order]
        bad = np.flatnonzero((q[1:] == q[:-1]) & (s[1:] > s[:-1])) + 1
        rows, prev = order[bad], order[bad - 1]
    report.add_rows("rank_order", lines[rows], lambda i: [
        f"rank {a} has a higher score ({x}) than rank {b} ({y}); scores decide the order, as in trec_eval"
        for a, x, b, y in zip(rank[rows[i]].tolist(), score[rows[i]].tolist(), rank[prev[i]].tolist(),
                              score[prev[i]].tolist())])


def validate(path: str | Path, root: str | Path | None = None, split: str | None = None,
             config: ValidationConfig = ValidationConfig()) -> ValidationReport:
    """Validate a run file against one split of a data root (or only its own shape without one)."""
    truth = load_truth(root, split) if root is not None and split is not None else None
    return validate_run(path, truth, config)[0]
