"""Validating a submitted run before scoring it: every problem named, with its line.

`validate_run(path, truth, config)` never raises on a bad file: it returns a
ValidationReport of problems (kind, severity, line, message). Checks are vectorised so a
100M-row run validates in seconds: unknown and missing queries, duplicate image ids within a
query, unknown image ids, non-numeric or non-finite scores, ranks that contradict scores,
more than `max_k` results per query, files over a size cap, bad encodings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .io.runs import RunFile, read_run_table, read_split_table
from .ranking import flat, group_runs, is_one_block_per_query

MAX_EXAMPLES = 20  # problems kept per kind; all are counted
SEVERITY = {
    "size": "error", "encoding": "error", "format": "error", "rank": "error", "score": "error",
    "nonfinite_score": "error", "unknown_query": "error", "duplicate_query": "error",
    "duplicate_image": "error", "unknown_image": "error", "too_many": "error",
    "split_mismatch": "error", "missing_query": "warning", "rank_order": "warning",
}


@dataclass(frozen=True)
class Problem:
    """One problem of a run file: what kind, how bad, where (1-based line or row), what to do."""

    kind: str
    severity: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{self.severity}: {where}{self.message} [{self.kind}]"


@dataclass
class ValidationReport:
    """All problems of one run file; `ok` when there is no error."""

    path: str
    fmt: str | None = None
    num_rows: int = 0
    num_queries: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    strict: bool = False

    def add(self, kind: str, line: int | None, message: str) -> None:
        """Record a problem (only the first MAX_EXAMPLES of each kind are kept; all are counted)."""
        severity = SEVERITY.get(kind, "error")
        if kind == "missing_query" and self.strict:
            severity = "error"
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_EXAMPLES:
            self.problems.append(Problem(kind, severity, line, message))

    def _count(self, severity: str) -> int:
        kinds = {p.kind for p in self.problems if p.severity == severity}
        return sum(self.counts[k] for k in kinds)

    @property
    def num_errors(self) -> int:
        return self._count("error")

    @property
    def num_warnings(self) -> int:
        return self._count("warning")

    @property
    def ok(self) -> bool:
        return self.num_errors == 0

    def summary(self) -> str:
        """One line: rows, queries, errors and warnings by kind."""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.counts.items()))
        return (f"{self.path}: {self.num_rows} rows, {self.num_queries} queries, {self.num_errors} errors, "
                f"{self.num_warnings} warnings" + (f" ({kinds})" if kinds else ""))

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"path": self.path, "format": self.fmt, "num_rows": self.num_rows, "num_queries": self.num_queries,
                "ok": self.ok, "num_errors": self.num_errors, "num_warnings": self.num_warnings,
                "counts": dict(self.counts), "problems": [p.__dict__ for p in self.problems]}


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
    lines = table["line"].to_numpy()
    score = table["score"].to_numpy(zero_copy_only=False)
    _add_rows(report, "nonfinite_score", np.flatnonzero(~np.isfinite(score)),
              lambda row: (int(lines[row]), f"score {score[row]} is not finite"))
    starts, lengths = group_runs(table["query_id"])
    heads = flat(pc.take(table["query_id"], pa.array(starts, pa.int64())))
    unique_q = pc.unique(heads)
    report.num_queries = len(unique_q)
    head_q = pc.index_in(heads, value_set=unique_q).to_numpy().astype(np.int64)
    row_q = np.repeat(head_q, lengths)
    per_query = np.bincount(row_q, minlength=len(unique_q))
    first_row = np.full(len(unique_q), -1)
    first_row[head_q[::-1]] = starts[::-1]  # earliest start wins
    for qi in np.flatnonzero(per_query > config.max_k):
        report.add("too_many", int(lines[first_row[qi]]),
                   f"query {unique_q[qi].as_py()!r} has {per_query[qi]} results, over --max-k {config.max_k}")
    if truth is not None:
        _check_queries(unique_q, first_row, lines, truth, report)
    doc_code, unknown = _image_codes(table["image_id"], truth)
    _add_rows(report, "unknown_image", np.flatnonzero(unknown),
              lambda row: (int(lines[row]), f"image id {table['image_id'][row].as_py()!r} is not in the split's "
                           "corpus (use corpus image_id values or image URLs)"))
    _check_duplicates(row_q, doc_code, starts, lengths, lines, table["query_id"], table["image_id"], report)
    if "rank" in table.column_names:
        _check_rank_order(row_q, table["rank"].to_numpy(), score, lines, report)


def _check_queries(unique_q: pa.Array, first_row: np.ndarray, lines: np.ndarray, truth: SplitTruth,
                   report: ValidationReport) -> None:
    known = pc.is_in(unique_q, value_set=truth.query_ids).to_numpy(zero_copy_only=False)
    for qi in np.flatnonzero(~known):
        report.add("unknown_query", int(lines[first_row[qi]]),
                   f"query id {unique_q[qi].as_py()!r} is not a query of this split")
    present = pc.is_in(truth.query_ids, value_set=unique_q).to_numpy(zero_copy_only=False)
    _add_rows(report, "missing_query", np.flatnonzero(~present),
              lambda qi: (None, f"query {truth.query_ids[qi].as_py()!r} has no results; it scores 0"))


def _image_codes(image_id: pa.ChunkedArray, truth: SplitTruth | None) -> tuple[np.ndarray, np.ndarray]:
    """An integer code per row's image id, and a mask of ids outside the corpus."""
    if truth is not None and truth.image_ids is not None:
        code = pc.index_in(image_id, value_set=truth.image_ids).fill_null(-1).to_numpy().astype(np.int64)
        return code, code < 0
    encoded = pc.dictionary_encode(flat(image_id))
    return encoded.indices.to_numpy().astype(np.int64), np.zeros(len(image_id), bool)


def _add_rows(report: ValidationReport, kind: str, rows: np.ndarray, message) -> None:
    """Report the first rows of a kind with `message(row)`, and count the rest."""
    for row in rows[:MAX_EXAMPLES]:
        line, text = message(int(row))
        report.add(kind, line, text)
    if len(rows) > MAX_EXAMPLES:
        report.counts[kind] += len(rows) - MAX_EXAMPLES


def _check_duplicates(row_q: np.ndarray, doc: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                      lines: np.ndarray, query_id, image_id, report: ValidationReport) -> None:
    """Duplicate (query, image) pairs: sort the image codes of each query and compare neighbours."""
    if len(lengths) and lengths.min() == lengths.max() and is_one_block_per_query(row_q[starts]):
        # One block per query, all of the same depth: sort row-wise (much cheaper than one big sort).
        codes = doc.reshape(len(starts), -1)
        order = np.argsort(codes, axis=1, kind="stable")
        ranked = np.take_along_axis(codes, order, axis=1)
        g, j = np.nonzero((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] >= 0))
        rows, firsts = starts[g] + order[g, j + 1], starts[g] + order[g, j]
    else:
        valid = np.flatnonzero(doc >= 0)
        key = row_q[valid] * (int(doc.max(initial=0)) + 1) + doc[valid]
        order = np.argsort(key, kind="stable")
        dup = np.flatnonzero(key[order][1:] == key[order][:-1]) + 1
        rows, firsts = valid[order[dup]], valid[order[dup - 1]]
    pairs = np.arange(len(rows))

    def message(i: int) -> tuple[int, str]:
        row, first = int(rows[i]), int(firsts[i])
        return int(lines[row]), (f"image id {image_id[row].as_py()!r} repeats for query {query_id[row].as_py()!r}"
                                 f" (first at line {lines[first]}); each image may appear once per query")

    _add_rows(report, "duplicate_image", pairs, message)


def _check_rank_order(row_q: np.ndarray, rank: np.ndarray, score: np.ndarray, lines: np.ndarray,
                      report: ValidationReport) -> None:
    """Within a query in rank order, a later rank must not have a higher score."""
    same = row_q[1:] == row_q[:-1]
    if np.all(~same | (rank[1:] >= rank[:-1])):
        order = np.arange(len(rank))  # already in rank order within each query: skip the sort
    else:
        order = np.lexsort((rank, row_q))
    q, s = row_q[order], score[order]
    bad = np.flatnonzero((q[1:] == q[:-1]) & (s[1:] > s[:-1])) + 1

    def message(i: int) -> tuple[int, str]:
        row, prev = order[i], order[i - 1]
        return int(lines[row]), (f"rank {rank[row]} has a higher score ({s[i]}) than rank {rank[prev]} "
                                 f"({s[i - 1]}); scores decide the order, as in trec_eval")

    _add_rows(report, "rank_order", bad, message)


def validate(path: str | Path, root: str | Path | None = None, split: str | None = None,
             config: ValidationConfig = ValidationConfig()) -> ValidationReport:
    """Validate a run file against one split of a data root (or only its own shape without one)."""
    truth = load_truth(root, split) if root is not None and split is not None else None
    return validate_run(path, truth, config)[0]
