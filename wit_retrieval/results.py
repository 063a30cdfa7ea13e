"""Assembling a results record: scores, breakdowns, confidence intervals, chance, provenance.

`score_run` gives one Results per evaluation; `compare_runs` the paired tests of two runs per
measure and per breakdown group. Both are plain dicts once `to_dict()`-ed, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__
from .metrics import QueryScores, chance_level, evaluate_queries, parse_measures
from .ranking import flat, from_numpy, qrels_columns, to_numpy
from .significance import bootstrap_ci, paired_test

BREAKDOWN_KEYS = ("query_type", "language", "num_entities")


@dataclass
class Results:
    """One evaluation: aggregate scores keyed by canonical measure name, and what they rest on."""

    scores: dict[str, float]
    num_queries: int
    breakdowns: dict = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    chance: dict[str, float | None] = field(default_factory=dict)
    corpus_size: int | None = None
    split: str | None = None
    dataset_revision: str | None = None
    toolkit_version: str = __version__
    run_metadata: dict = field(default_factory=dict)
    evaluation_time_s: float = 0.0
    bootstrap: dict = field(default_factory=dict)
    per_query: dict | None = None
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_dict(self) -> dict:
        """JSON-able dict; `per_query` only when kept."""
        out = asdict(self)
        if out["per_query"] is None:
            out.pop("per_query")
        return out

    def __getitem__(self, key: str):
        return getattr(self, key)

    def save(self, path: str | Path) -> None:
        """Write the results JSON atomically."""
        from .io.shards import write_json_atomic

        write_json_atomic(path, self.to_dict())


def group_masks(query_ids: np.ndarray, queries_table: pa.Table | None,
                keys: tuple[str, ...] = BREAKDOWN_KEYS) -> dict[str, dict[str, np.ndarray]]:
    """For each breakdown key in the queries table, value -> mask over `query_ids` ("unknown" if absent)."""
    if queries_table is None or "query_id" not in queries_table.column_names:
        return {}
    pos = pc.index_in(pa.array(query_ids.tolist(), pa.string()), value_set=flat(queries_table["query_id"]))
    pos = pos.fill_null(-1).to_numpy()
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        if key not in queries_table.column_names:
            continue
        column = np.array([("unknown" if v is None else str(v)) for v in queries_table[key].to_pylist()] + ["unknown"],
                          dtype=object)
        labels = column[pos]  # pos -1 picks the trailing "unknown"
        out[key] = {str(v): labels == v for v in sorted(set(labels.tolist()), key=_natural)}
    return out


def _natural(value: str):
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _ci_dict(values: dict[str, np.ndarray], mask: np.ndarray | None, samples: int, seed: int) -> dict:
    names = list(values)
    if samples <= 0 or not names:
        return {}
    matrix = np.column_stack([values[n] if mask is None else values[n][mask] for n in names])
    low, high = bootstrap_ci(matrix, samples, seed)
    return {n: [float(lo), float(hi)] for n, lo, hi in zip(names, low, high)}


def score_queries(scores: QueryScores, queries_table: pa.Table | None = None, bootstrap: int = 1000,
                  seed: int = 0) -> tuple[dict, dict]:
    """Aggregate CI and breakdowns (scores, count, CI per group) from per-query values."""
    ci = _ci_dict(scores.values, None, bootstrap, seed)
    breakdowns: dict = {}
    for key, groups in group_masks(scores.query_ids, queries_table).items():
        breakdowns[key] = {
            value: {"num_queries": int(mask.sum()),
                    "scores": {n: float(v[mask].mean()) for n, v in scores.values.items()},
                    "ci": _ci_dict(scores.values, mask, bootstrap, seed)}
            for value, mask in groups.items()
        }
    return ci, breakdowns


def score_run(run, qrels, measures, *, queries_table: pa.Table | None = None, bootstrap: int = 1000, seed: int = 0,
              corpus_size: int | None = None, metadata: dict | None = None, dataset_revision: str | None = None,
              split: str | None = None, keep_per_query: bool = False) -> Results:
    """Score a run against qrels: aggregates, breakdowns, bootstrap CIs, chance levels, provenance."""
    started = time.perf_counter()
    measures = parse_measures(measures)
    qrels_t = qrels_columns(qrels)
    scores = evaluate_queries(run, qrels_t, measures)
    ci, breakdowns = score_queries(scores, queries_table, bootstrap, seed)
    chance = {}
    if corpus_size:
        num_rel = _num_relevant(qrels_t, scores.query_ids)
        chance = {str(m): chance_level(m, corpus_size, num_rel) for m in measures}
    per_query = None
    if keep_per_query:
        per_query = {"query_id": scores.query_ids.tolist(), **{n: v.tolist() for n, v in scores.values.items()}}
    return Results(scores=scores.mean(), num_queries=len(scores.query_ids), breakdowns=breakdowns, ci=ci,
                   chance=chance, corpus_size=corpus_size, split=split, dataset_revision=dataset_revision,
                   run_metadata=dict(metadata or {}), evaluation_time_s=time.perf_counter() - started,
                   bootstrap={"samples": bootstrap, "seed": seed, "confidence": 0.95}, per_query=per_query)


def _num_relevant(qrels: pa.Table, query_ids: np.ndarray) -> np.ndarray:
    relevant = qrels.filter(from_numpy(to_numpy(qrels["relevance"]) > 0))
    q = to_numpy(pc.index_in(relevant["query_id"], value_set=pa.array(query_ids.tolist(), pa.string())), null=-1)
    return np.bincount(q + 1, minlength=len(query_ids) + 1)[1:]


def compare_runs(run_a, run_b, qrels, measures, *, queries_table: pa.Table | None = None,
                 permutations: int = 10000, bootstrap: int = 1000, seed: int = 0,
                 names: tuple[str, str] = ("A", "B")) -> dict:
    """Paired tests (t-test, permutation) of B vs A per measure, overall and per breakdown group."""
    measures = parse_measures(measures)
    qrels_t = qrels_columns(qrels)
    a, b = evaluate_queries(run_a, qrels_t, measures), evaluate_queries(run_b, qrels_t, measures)
    groups = group_masks(a.query_ids, queries_table)
    out: dict = {"run_a": names[0], "run_b": names[1], "num_queries": len(a.query_ids), "measures": [str(m) for m in measures], "tests": {},
                 "breakdowns": {}, "settings": {"permutations": permutations, "bootstrap": bootstrap, "seed": seed}}
    for name in a.values:
        out["tests"][name] = paired_test(a.values[name], b.values[name], permutations=permutations,
                                         samples=bootstrap, seed=seed)
        for key, by_value in groups.items():
            target = out["breakdowns"].setdefault(key, {})
            for value, mask in by_value.items():
                target.setdefault(value, {})[name] = paired_test(
                    a.values[name][mask], b.values[name][mask], permutations=permutations, samples=bootstrap,
                    seed=seed)
    return out


def dataset_revision(root: str | Path) -> str | None:
    """A hash of the data root's table manifests (without write times), or None without any."""
    root = Path(root)
    manifests = sorted(root.glob("*/_manifest.json")) + sorted(root.glob("*/split=*/_manifest.json"))
    if not manifests:
        return None
    digest = hashlib.sha256()
    for path in manifests:
        content = json.loads(path.read_text(encoding="utf-8"))
        content.pop("written_at", None)
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(json.dumps(content, sort_keys=True).encode() + b"\0")
    return digest.hexdigest()[:16]


def read_run_metadata(run_path: str | Path) -> dict:
    """The sidecar `RUN.meta.json` (model, fusion, training data...) beside a run file, or {}."""
    path = Path(str(run_path) + ".meta.json")
    if not path.is_file():
        return {}
    from .errors import InputError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid run metadata JSON ({exc})", path=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("run metadata must be a JSON object", path=str(path))
    return data


@dataclass(frozen=True)
class SplitInputs:
    """What scoring one split of a data root needs besides the run."""

    qrels: pa.Table
    queries: pa.Table | None
    corpus_size: int | None
    revision: str | None


def load_split_inputs(root: str | Path, split: str) -> SplitInputs:
    """Qrels, the queries' breakdown columns, the corpus size and the dataset revision of a split."""
    from .io.runs import read_split_table
    from .io.shards import read_manifest
    from .layout import DataRoot

    qrels = read_split_table(root, "qrels", split, ["query_id", "image_id", "relevance"])
    queries = None
    manifest = read_manifest(DataRoot(root).table_split("queries", split))
    if manifest is not None:
        present = manifest.get("columns") or ["query_id", *BREAKDOWN_KEYS]
        queries = read_split_table(root, "queries", split, [c for c in ("query_id", *BREAKDOWN_KEYS) if c in present])
    corpus = read_manifest(DataRoot(root).table_split("corpus", split))
    return SplitInputs(qrels, queries, corpus.get("rows") if corpus else None, dataset_revision(root))
