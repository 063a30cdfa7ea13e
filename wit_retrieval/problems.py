"""The problems found in a run file, held per kind as columns and rendered only when shown.

A check hands over every problem of one kind at once: the line numbers and a function that
writes the message of any subset of them. Counting is free, the console shows each kind with
its count and first lines, and only `write_jsonl` (validate --problems) renders them all, so a
run with a million `rank_order` warnings validates in the time of a few numpy passes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EXAMPLES = 5  # problems shown per kind (console, JSON report); all are counted and written by --problems
SEVERITY = {
    "size": "error", "encoding": "error", "format": "error", "rank": "error", "score": "error",
    "nonfinite_score": "error", "unknown_query": "error", "duplicate_query": "error",
    "duplicate_image": "error", "unknown_image": "error", "too_many": "error",
    "split_mismatch": "error", "missing_query": "warning", "rank_order": "warning",
}
# render(positions) -> the messages of those problems of a batch (positions index its `lines`).
Render = Callable[[np.ndarray], list[str]]
_RENDER_ROWS = 1 << 16  # messages rendered at a time when writing them all


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


@dataclass(frozen=True)
class _Batch:
    lines: np.ndarray  # int64, 0 where a problem has no line (a missing query)
    render: Render


@dataclass
class ValidationReport:
    """All problems of one run file; `ok` when there is no error."""

    path: str
    fmt: str | None = None
    num_rows: int = 0
    num_queries: int = 0
    strict: bool = False
    _batches: dict[str, list[_Batch]] = field(default_factory=dict, repr=False)
    _single: dict[str, tuple[list[int], list[str]]] = field(default_factory=dict, repr=False)

    def add(self, kind: str, line: int | None, message: str) -> None:
        """Record one problem (parsers report bad lines one at a time)."""
        lines, messages = self._single.setdefault(kind, ([], []))
        lines.append(line or 0)
        messages.append(message)

    def add_rows(self, kind: str, lines: np.ndarray, render: Render) -> None:
        """Record every problem of a kind found by a vectorised check; messages are rendered on demand."""
        if len(lines):
            self._batches.setdefault(kind, []).append(_Batch(np.asarray(lines, dtype=np.int64), render))

    def _all_batches(self) -> dict[str, list[_Batch]]:
        out = {kind: list(batches) for kind, batches in self._batches.items()}
        for kind, (lines, messages) in self._single.items():
            out.setdefault(kind, []).append(_Batch(np.asarray(lines, dtype=np.int64),
                                                   lambda i, m=messages: [m[j] for j in i]))
        return out

    def severity(self, kind: str) -> str:
        if kind == "missing_query" and self.strict:
            return "error"
        return SEVERITY.get(kind, "error")

    @property
    def counts(self) -> Counter:
        """Problems per kind."""
        return Counter({kind: sum(len(b.lines) for b in batches) for kind, batches in self._all_batches().items()})

    def _count(self, severity: str) -> int:
        return sum(n for kind, n in self.counts.items() if self.severity(kind) == severity)

    @property
    def num_errors(self) -> int:
        return self._count("error")

    @property
    def num_warnings(self) -> int:
        return self._count("warning")

    @property
    def ok(self) -> bool:
        return self.num_errors == 0

    def first(self, kind: str, n: int = EXAMPLES) -> list[Problem]:
        """The first `n` problems of a kind, by line."""
        candidates = []
        for batch in self._all_batches().get(kind, []):
            pos = _smallest(batch.lines, n)
            candidates += [(int(batch.lines[p]), k, batch, p) for k, p in enumerate(pos)]
        candidates.sort(key=lambda c: (c[0], c[1]))
        return [Problem(kind, self.severity(kind), line or None, batch.render(np.array([p]))[0])
                for line, _, batch, p in candidates[:n]]

    @property
    def problems(self) -> list[Problem]:
        """The first EXAMPLES problems of each kind, by line (all are in `counts` and `iter_problems`)."""
        shown = [p for kind in self._all_batches() for p in self.first(kind)]
        return sorted(shown, key=lambda p: p.line or 0)

    def iter_problems(self) -> Iterator[Problem]:
        """Every problem, kind by kind, each kind in line order."""
        for kind, batches in self._all_batches().items():
            severity = self.severity(kind)
            for batch in batches:
                order = np.argsort(batch.lines, kind="stable")
                for start in range(0, len(order), _RENDER_ROWS):
                    part = order[start:start + _RENDER_ROWS]
                    for line, message in zip(batch.lines[part].tolist(), batch.render(part)):
                        yield Problem(kind, severity, line or None, message)

    def write_jsonl(self, path: str | Path) -> int:
        """Write every problem as one JSON object per line (kind, severity, line, message), atomically."""
        from .io.shards import atomic_path

        written = 0
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for p in self.iter_problems():
                line = "null" if p.line is None else p.line
                f.write(f'{{"kind": "{p.kind}", "severity": "{p.severity}", "line": {line}, '
                        f'"message": {json.dumps(p.message)}}}\n')
                written += 1
        return written

    def summary(self) -> str:
        """One line: rows, queries, errors and warnings by kind."""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.counts.items()))
        return (f"{self.path}: {self.num_rows} rows, {self.num_queries} queries, {self.num_errors} errors, "
                f"{self.num_warnings} warnings" + (f" ({kinds})" if kinds else ""))

    def by_kind(self) -> list[dict]:
        """Per kind: severity, count, first lines and the first problem's message (what the console shows)."""
        rows = []
        for kind, count in self.counts.items():
            first = self.first(kind)
            rows.append({"kind": kind, "severity": self.severity(kind), "count": count,
                         "first_lines": [p.line for p in first if p.line], "example": first[0].message})
        return sorted(rows, key=lambda r: (r["severity"] != "error", -r["count"], r["kind"]))

    def to_dict(self) -> dict:
        """JSON-able form: counts, per-kind summary and the first problems of each kind."""
        return {"path": self.path, "format": self.fmt, "num_rows": self.num_rows, "num_queries": self.num_queries,
                "ok": self.ok, "num_errors": self.num_errors, "num_warnings": self.num_warnings,
                "counts": dict(self.counts), "kinds": self.by_kind(),
                "problems": [p.__dict__ for p in self.problems]}


def _smallest(lines: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n smallest lines, in order (argpartition: no full sort of a million lines)."""
    if bool(np.all(lines[1:] >= lines[:-1])):  # checks mostly report in file order
        return np.arange(min(n, len(lines)))
    if len(lines) <= n:
        return np.argsort(lines, kind="stable")
    pos = np.argpartition(lines, n - 1)[:n]
    return pos[np.lexsort((pos, lines[pos]))]
