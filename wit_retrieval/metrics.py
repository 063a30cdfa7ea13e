"""Retrieval measures with canonical names, computed exactly and vectorised (ir_measures style).

Measures are small frozen dataclasses registered by name; `parse_measures("R@1,R@10,MRR@10")`
builds them and `str(measure)` prints the canonical name back. Definitions follow trec_eval:

- `R@k`: relevant items in the top k / relevant items of the query (TREC recall).
- `Success@k`: 1 if any relevant item is in the top k (UniIR and others call this "Recall@k").
  With exactly one relevant item per query, `R@k == Success@k`.
- `MRR@k`: 1 / rank of the first relevant item if it is in the top k, else 0.
- `nDCG@k`: sum of relevance / log2(rank + 1) over the top k, over the same for the ideal order.
- `AP@k`: sum of precision at each relevant item in the top k / relevant items of the query
  (trec_eval's map_cut).

Order within a query: score descending, then image id descending (byte order), as trec_eval
does; ranks written in a run file are ignored. Queries of the qrels that the run lacks score 0;
queries of the run that the qrels lack are ignored. Relevance > 0 is relevant.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

from .errors import ConfigError
from .ranking import Qrels, RankedHits, Run, rank_hits
from .registry import Registry

MEASURES: Registry[Measure] = Registry("measure")
DEFAULT_MEASURES = "R@1,R@5,R@10,Success@1,Success@5,Success@10,MRR@10,nDCG@10,AP@10"

# Other spellings users type; "Recall@k" means TREC recall here, never hit@k.
ALIASES = {
    "r": "R", "recall": "R", "success": "Success", "hit": "Success", "hits": "Success",
    "mrr": "MRR", "rr": "MRR", "ndcg": "nDCG", "ap": "AP", "map": "AP",
}


@dataclass(frozen=True)
class Measure:
    """A measure at an optional cutoff; `compute` gives one value per qrels query."""

    cutoff: int | None = None
    name: ClassVar[str] = ""

    def __post_init__(self):
        if self.cutoff is not None and self.cutoff < 1:
            raise ConfigError(f"{self.name}@{self.cutoff}: the cutoff must be a positive integer")

    def __str__(self) -> str:
        return self.name if self.cutoff is None else f"{self.name}@{self.cutoff}"

    def _in_cut(self, hits: RankedHits) -> np.ndarray:
        """Mask of the hits within the cutoff."""
        return np.ones(len(hits.rank), bool) if self.cutoff is None else hits.rank < self.cutoff

    def compute(self, hits: RankedHits) -> np.ndarray:
        """Per-query values, aligned with hits.query_ids."""
        raise NotImplementedError


def _count_in_cut(measure: Measure, hits: RankedHits) -> np.ndarray:
    return np.bincount(hits.query[measure._in_cut(hits)], minlength=hits.num_queries).astype(np.float64)


def _over_relevant(values: np.ndarray, hits: RankedHits) -> np.ndarray:
    """values / relevant items per query, 0 for a query without relevant items (as trec_eval)."""
    return np.divide(values, hits.num_relevant, out=np.zeros(hits.num_queries), where=hits.num_relevant > 0)


@MEASURES.register("R")
@dataclass(frozen=True)
class Recall(Measure):
    """Fraction of the query's relevant items retrieved in the top k (TREC recall)."""

    name: ClassVar[str] = "R"

    def compute(self, hits: RankedHits) -> np.ndarray:
        return _over_relevant(_count_in_cut(self, hits), hits)


@MEASURES.register("Success")
@dataclass(frozen=True)
class Success(Measure):
    """1 if any relevant item is in the top k (hit@k)."""

    name: ClassVar[str] = "Success"

    def compute(self, hits: RankedHits) -> np.ndarray:
        return (_count_in_cut(self, hits) > 0).astype(np.float64)


@MEASURES.register("MRR")
@dataclass(frozen=True)
class MRR(Measure):
    """Reciprocal rank of the first relevant item within the top k, else 0."""

    name: ClassVar[str] = "MRR"

    def compute(self, hits: RankedHits) -> np.ndarray:
        cut = self._in_cut(hits)
        best = np.full(hits.num_queries, np.inf)
        np.minimum.at(best, hits.query[cut], hits.rank[cut].astype(np.float64))
        return 1.0 / (best + 1.0)


@MEASURES.register("nDCG")
@dataclass(frozen=True)
class NDCG(Measure):
    """Normalised discounted cumulative gain (gain = relevance, discount log2(rank + 1))."""

    name: ClassVar[str] = "nDCG"

    def compute(self, hits: RankedHits) -> np.ndarray:
        cut = self._in_cut(hits)
        dcg = np.bincount(hits.query[cut], weights=hits.gain[cut] / np.log2(hits.rank[cut] + 2.0),
                          minlength=hits.num_queries)
        ideal = np.ones(len(hits.ideal_pos), bool) if self.cutoff is None else hits.ideal_pos < self.cutoff
        idcg = np.bincount(hits.ideal_query[ideal],
                           weights=hits.ideal_gain[ideal] / np.log2(hits.ideal_pos[ideal] + 2.0),
                           minlength=hits.num_queries)
        return np.divide(dcg, idcg, out=np.zeros(hits.num_queries), where=idcg > 0)


@MEASURES.register("AP")
@dataclass(frozen=True)
class AP(Measure):
    """Average precision over the top k, divided by all relevant items (trec_eval map_cut)."""

    name: ClassVar[str] = "AP"

    def compute(self, hits: RankedHits) -> np.ndarray:
        cut = np.flatnonzero(self._in_cut(hits))
        order = cut[np.lexsort((hits.rank[cut], hits.query[cut]))]
        q, rank = hits.query[order], hits.rank[order]
        found = np.arange(len(q)) - np.searchsorted(q, q) + 1.0  # relevant items up to this one
        precision_sum = np.bincount(q, weights=found / (rank + 1.0), minlength=hits.num_queries)
        return _over_relevant(precision_sum, hits)


_MEASURE_RE = re.compile(r"^\s*([A-Za-z]+)\s*(?:@\s*(\d+))?\s*$")


def parse_measure(text: str) -> Measure:
    """Build a measure from its name, e.g. "nDCG@10"; did-you-mean on unknown names."""
    match = _MEASURE_RE.match(text)
    if not match:
        raise ConfigError(f"cannot parse measure {text!r}; write NAME@K, e.g. R@10 (known: {', '.join(MEASURES)})")
    name, cutoff = match.group(1), match.group(2)
    name = name if name in MEASURES else ALIASES.get(name.lower(), name)
    return MEASURES.create(name, cutoff=int(cutoff) if cutoff else None)


def parse_measures(text: str | list[str] | tuple) -> list[Measure]:
    """Measures from "R@1,R@10,MRR@10" (or a list of names or measures); duplicates dropped."""
    items = text.split(",") if isinstance(text, str) else list(text)
    measures = [m if isinstance(m, Measure) else parse_measure(m) for m in items if str(m).strip()]
    if not measures:
        raise ConfigError("no measures given; e.g. --measures R@1,R@10,MRR@10")
    return list(dict.fromkeys(measures))


@dataclass(frozen=True)
class QueryScores:
    """Per-query values of each measure, aligned with `query_ids` (the qrels' queries, sorted)."""

    query_ids: np.ndarray
    values: dict[str, np.ndarray]

    def mean(self) -> dict[str, float]:
        """Aggregate scores (mean over queries; missing queries count as 0)."""
        return {name: float(v.mean()) if len(v) else 0.0 for name, v in self.values.items()}


def evaluate_queries(run: Run | pa.Table, qrels: Qrels | pa.Table, measures) -> QueryScores:
    """Per-query values of `measures` (names or Measure objects) for a run against qrels."""
    measures = parse_measures(measures)
    hits = rank_hits(run, qrels)
    return QueryScores(hits.query_ids, {str(m): m.compute(hits) for m in measures})


def per_query(run: Run | pa.Table, qrels: Qrels | pa.Table, measures) -> dict[str, np.ndarray]:
    """Per-query values keyed by measure name, aligned with the sorted qrels query ids."""
    return evaluate_queries(run, qrels, measures).values


def evaluate_run(run: Run | pa.Table, qrels: Qrels | pa.Table, measures) -> dict[str, float]:
    """Aggregate score of each measure, keyed by canonical name."""
    return evaluate_queries(run, qrels, measures).mean()


def chance_level(measure: Measure, corpus_size: int, num_relevant: np.ndarray) -> float | None:
    """Expected score of a uniformly random ranking of the corpus (mean over queries), or None.

    Exact for every measure here: positions of R relevant items among N are a random R-subset.
    """
    n = int(corpus_size)
    if n <= 0 or not len(num_relevant):
        return None
    k = min(measure.cutoff or n, n)
    values = []
    counts = np.bincount(num_relevant)
    for r in np.flatnonzero(counts):
        values.append(_chance_one(measure, n, k, int(r)) * counts[r])
    return float(sum(values) / len(num_relevant))


def _chance_one(measure: Measure, n: int, k: int, r: int) -> float:
    """Chance value for one query with r relevant items (binary relevance) in a corpus of n."""
    if r == 0:
        return 0.0
    r = min(r, n)
    i = np.arange(1, k + 1, dtype=np.float64)
    if isinstance(measure, Recall):
        return k / n
    if isinstance(measure, Success):
        return 1.0 - math.exp(_log_comb(n - r, k) - _log_comb(n, k)) if n - r >= k else 1.0
    if isinstance(measure, MRR):
        # P(first relevant at i) = C(n - i, r - 1) / C(n, r)
        logs = np.array([_log_comb(n - j, r - 1) for j in range(1, k + 1)]) - _log_comb(n, r)
        return float(np.sum(np.exp(logs) / i))
    if isinstance(measure, NDCG):
        ideal = np.sum(1.0 / np.log2(np.arange(1, min(r, k) + 1) + 1.0))
        return float(r / n * np.sum(1.0 / np.log2(i + 1.0)) / ideal)
    if isinstance(measure, AP):
        # E[rel_i * (1 + relevant above i)] / i, summed, over r.
        above = (i - 1) * (r - 1) / (n - 1) if n > 1 else 0 * i
        return float(np.sum(r / n * (1.0 + above) / i) / r)
    return float("nan")


def _log_comb(n: int, k: int) -> float:
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def load_qrels(root: str | Path, split: str) -> Qrels:
    """Qrels of one split of a data root as a dict (query_id -> {image_id: relevance})."""
    return qrels_to_dict(load_qrels_table(root, split))


def load_qrels_table(root: str | Path, split: str) -> pa.Table:
    """Qrels of one split of a data root as a table (query_id, image_id, relevance)."""
    from .io.runs import read_split_table

    return read_split_table(root, "qrels", split, ["query_id", "image_id", "relevance"])


def qrels_to_dict(table: pa.Table) -> Qrels:
    """A qrels table as query_id -> {image_id: relevance}."""
    out: Qrels = {}
    for q, d, r in zip(*(table[c].to_pylist() for c in ("query_id", "image_id", "relevance"))):
        out.setdefault(q, {})[d] = int(r)
    return out


def score(run, qrels, measures=DEFAULT_MEASURES, queries_table=None, bootstrap: int = 1000, seed: int = 0,
          **kwargs):
    """Scores, breakdowns and confidence intervals of a run: see results.score_run."""
    from .results import score_run

    return score_run(run, qrels, measures, queries_table=queries_table, bootstrap=bootstrap, seed=seed,
                     **kwargs)
