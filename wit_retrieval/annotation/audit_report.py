"""Turn a ratings table into audit numbers: agreement, majority labels, rater accuracy on gold,
dataset quality estimates with Wilson intervals per language and query type.

Gold items measure raters only; they never enter agreement or dataset estimates. A kind's
abstain label ("unsure") counts as a missing rating.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from .agreement import count_matrix, fleiss_kappa, krippendorff_alpha, majority, wilson
from .tasks import TaskKind, get_kind

REPORT_VERSION = 1
MAX_LISTED_TIES = 50


def _interval(successes: int, trials: int, confidence: float) -> dict:
    p, low, high = wilson(successes, trials, confidence)
    return {"value": p, "low": low, "high": high, "successes": successes, "n": trials}


def _gold_accuracy(rows: list[dict], confidence: float) -> dict[str, dict]:
    """Per rater: share of gold items answered with the gold label (abstentions count as wrong)."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r["is_gold"] and r["gold_label"] is not None:
            hits[r["rater"]][0] += int(r["label"] == r["gold_label"])
            hits[r["rater"]][1] += 1
    return {rater: _interval(k, n, confidence) for rater, (k, n) in sorted(hits.items())}


def _estimates(majorities: dict[str, dict], kind: TaskKind, confidence: float) -> dict:
    """The dataset estimate overall and per language, query type and both."""
    groups: dict[str, dict[str, list[int]]] = {"by_language": {}, "by_query_type": {}, "by_stratum": {}}
    overall = [0, 0]
    for m in majorities.values():
        if m["label"] is None:
            continue
        hit = int(m["label"] in kind.positive)
        overall[0] += hit
        overall[1] += 1
        keys = {"by_language": m["language"], "by_query_type": m["query_type"],
                "by_stratum": stratum_key(m["language"], m["query_type"])}
        for group, key in keys.items():
            if key is None:
                continue
            cell = groups[group].setdefault(str(key), [0, 0])
            cell[0] += hit
            cell[1] += 1
    out = {"name": kind.estimate, "positive_labels": list(kind.positive), **_interval(*overall, confidence)}
    for group, cells in groups.items():
        if cells:
            out[group] = {key: _interval(k, n, confidence) for key, (k, n) in sorted(cells.items())}
    return out


def stratum_key(language: str | None, query_type: str | None) -> str:
    """How a stratum is named in reports: "lang/query_type", or "lang" for entity tasks."""
    return f"{language}/{query_type}" if query_type else str(language)


def populations_from_items(items) -> dict[str, dict[str, int]]:
    """task kind -> stratum -> population size, from exported items (their stratum_size)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for item in items:
        if item.stratum_size:
            out[item.task_kind][stratum_key(item.language, item.query_type)] = item.stratum_size
    return dict(out)


def population_weighted(by_stratum: dict[str, dict], populations: dict[str, int], confidence: float) -> dict | None:
    """Stratified estimate: strata weighted by population, normal-approximation interval.

    Only strata with decided items count; their populations are renormalised (reported as coverage).
    """
    from statistics import NormalDist

    cells = {k: v for k, v in by_stratum.items() if v["n"] and populations.get(k)}
    total = sum(populations.values())
    covered = sum(populations[k] for k in cells)
    if not cells or not covered:
        return None
    value = sum(populations[k] / covered * c["value"] for k, c in cells.items())
    variance = sum((populations[k] / covered) ** 2 * c["value"] * (1 - c["value"]) / c["n"] for k, c in cells.items())
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * variance**0.5
    return {"value": value, "low": max(0.0, value - half), "high": min(1.0, value + half),
            "population": covered, "coverage": covered / total}


def _majorities(rows: list[dict], kind: TaskKind) -> dict[str, dict]:
    by_item: dict[str, dict] = {}
    for r in rows:
        entry = by_item.setdefault(r["item_id"], {"labels": [], "language": r["language"],
                                                  "query_type": r["query_type"]})
        if kind.decided(r["label"]):
            entry["labels"].append(r["label"])
    for entry in by_item.values():
        entry["label"], entry["tied"] = majority(entry["labels"])
    return by_item


def analyze_kind(rows: list[dict], kind: TaskKind, confidence: float = 0.95,
                 min_gold_accuracy: float | None = None, populations: dict[str, int] | None = None) -> dict:
    """All audit numbers for one task kind's ratings."""
    gold = _gold_accuracy(rows, confidence)
    excluded = sorted(r for r, acc in gold.items() if min_gold_accuracy is not None and acc["value"] < min_gold_accuracy)
    rated = [r for r in rows if not r["is_gold"] and r["rater"] not in excluded]
    majorities = _majorities(rated, kind)
    units = [m["labels"] for m in majorities.values()]
    counts = count_matrix(units, kind.labels)
    ties = sorted(item for item, m in majorities.items() if m["label"] is None and len(m["tied"]) > 1)
    label_counts = {label: sum(r["label"] == label for r in rated) for label in kind.labels}
    nominal = krippendorff_alpha(counts, "nominal")
    ordinal = krippendorff_alpha(counts, "ordinal")
    stats = {
        "question": kind.question, "labels": list(kind.labels), "ordinal": kind.ordinal,
        "items": len(majorities), "ratings": len(rated), "gold_ratings": sum(r["is_gold"] for r in rows),
        "raters": len({r["rater"] for r in rated}),
        "ratings_per_item": len(rated) / len(majorities) if majorities else 0.0,
        "label_counts": label_counts,
        "fleiss_kappa": fleiss_kappa(counts),
        "krippendorff_alpha_nominal": nominal, "krippendorff_alpha_ordinal": ordinal,
        "krippendorff_alpha": ordinal if kind.ordinal else nominal,
        "majority": {"decided": sum(m["label"] is not None for m in majorities.values()), "ties": len(ties),
                     "no_decided_rating": sum(not m["labels"] for m in majorities.values()),
                     "tied_items": ties[:MAX_LISTED_TIES]},
        "estimate": _estimates(majorities, kind, confidence),
        "rater_gold_accuracy": gold, "excluded_raters": excluded,
    }
    if populations:
        stats["estimate"]["population_weighted"] = population_weighted(
            stats["estimate"].get("by_stratum", {}), populations, confidence)
    if kind.ordinal:
        grades = [kind.labels.index(r["label"]) for r in rated]
        stats["mean_grade"] = sum(grades) / len(grades) if grades else float("nan")
    return stats


def analyze(ratings: pa.Table, confidence: float = 0.95, min_gold_accuracy: float | None = None,
            populations: dict[str, dict[str, int]] | None = None) -> dict:
    """The audit report of a ratings table (all task kinds in it); `populations` (from
    `populations_from_items`) adds population-weighted estimates."""
    rows = ratings.to_pylist()
    sources = sorted({r["source"] for r in rows if r["source"]})
    kinds = sorted({r["task_kind"] for r in rows})
    per_kind = {k: analyze_kind([r for r in rows if r["task_kind"] == k], get_kind(k), confidence, min_gold_accuracy,
                                (populations or {}).get(k))
                for k in kinds}
    report = {
        "version": REPORT_VERSION, "confidence": confidence, "sources": sources,
        "simulated": "simulated" in sources, "ratings": len(rows), "task_kinds": per_kind,
    }
    # Top-level agreement: the kind's numbers when there is one kind, else a mapping kind -> number.
    for key in ("fleiss_kappa", "krippendorff_alpha", "krippendorff_alpha_nominal", "krippendorff_alpha_ordinal"):
        values = {k: s[key] for k, s in per_kind.items()}
        report[key] = next(iter(values.values())) if len(values) == 1 else values
    return report


AGREEMENT_KEYS = ("fleiss_kappa", "krippendorff_alpha", "krippendorff_alpha_nominal", "krippendorff_alpha_ordinal",
                  "items", "ratings", "raters", "ratings_per_item")


def agreement(ratings: pa.Table, task_kind: str | None = None) -> dict:
    """Agreement numbers of one task kind's ratings (the only kind present, or `task_kind`)."""
    from ..errors import ConfigError

    kinds = sorted(set(ratings.column("task_kind").to_pylist()))
    if task_kind is None:
        if len(kinds) != 1:
            raise ConfigError(f"the ratings hold task kinds {', '.join(kinds) or 'none'}; name one (task_kind=)")
        task_kind = kinds[0]
    rows = [r for r in ratings.to_pylist() if r["task_kind"] == task_kind]
    stats = analyze_kind(rows, get_kind(task_kind))
    return {"task_kind": task_kind, **{k: stats[k] for k in AGREEMENT_KEYS}}
