"""PNG plots of results (matplotlib, Agg): recall@k curves and per-group bars with CIs.

Each function takes results (a Results or its dict) and writes one PNG atomically; the final
report reuses them.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InputError, require
from .io.shards import atomic_path

_AT_K = re.compile(r"^(\w+)@(\d+)$")


def _pyplot():
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _as_dict(results) -> dict:
    return results.to_dict() if hasattr(results, "to_dict") else dict(results)


def _curve(scores: dict[str, float], family: str) -> tuple[list[int], list[float]]:
    points = sorted((int(m.group(2)), v) for name, v in scores.items()
                    if (m := _AT_K.match(name)) and m.group(1) == family)
    return [k for k, _ in points], [v for _, v in points]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def recall_curve_png(results_by_name, path: str | Path, family: str = "R") -> Path:
    """Score@k against k for each run (family "R", else "Success"), with chance level when known.

    `results_by_name` maps run names to results (one results record is accepted too).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    plotted, all_k = 0, set()
    for name, data in _runs(results_by_name).items():
        ks, values = _curve(data.get("scores", {}), family)
        if not ks:
            continue
        line, = ax.plot(ks, values, marker="o", label=name or "run")
        plotted += 1
        all_k.update(ks)
        chance_k, chance_v = _curve({k: v for k, v in data.get("chance", {}).items() if v is not None}, family)
        if chance_k:
            ax.plot(chance_k, chance_v, linestyle=":", color=line.get_color(), label=f"{name} (chance)")
    if not plotted and family == "R":
        plt.close(fig)
        return recall_curve_png(results_by_name, path, family="Success")
    if not plotted:
        plt.close(fig)
        raise InputError(f"no {family}@k scores to plot; score with e.g. --measures {family}@1,{family}@10")
    ax.set_xscale("log")
    ax.set_xticks(sorted(all_k), [str(k) for k in sorted(all_k)])
    ax.minorticks_off()
    ax.set_xlabel("k")
    ax.set_ylabel(f"{family}@k")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _runs(results) -> dict[str, dict]:
    """One results record, or a mapping name -> results, as name -> results dict."""
    data = _as_dict(results)
    if "scores" in data:
        return {"": data}
    return {name: _as_dict(r) for name, r in data.items()}


def breakdown_bars_png(results, key: str, path: str | Path, measure: str | None = None) -> Path:
    """Bars of one measure per group of a breakdown (language, query_type, ...) with 95% CIs.

    `results` is one results record or a mapping run name -> results (grouped bars).
    """
    plt = _pyplot()
    runs = {name: doc for name, doc in _runs(results).items() if doc.get("breakdowns", {}).get(key)}
    if not runs:
        raise InputError(f"the results have no {key!r} breakdown (score with --data so queries are known)")
    present = [m for doc in runs.values() for m in doc["scores"]]
    measure = measure or ("R@10" if "R@10" in present else present[0])
    labels = sorted({g for doc in runs.values() for g in doc["breakdowns"][key]},
                    key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(labels) * len(runs) + 2), 4))
    for i, (name, doc) in enumerate(runs.items()):
        groups = doc["breakdowns"][key]
        values = [groups[g]["scores"].get(measure, 0.0) if g in groups else 0.0 for g in labels]
        cis = [groups.get(g, {}).get("ci", {}).get(measure) for g in labels]
        errors = None
        if all(ci is not None for ci in cis):
            errors = [[v - ci[0] for v, ci in zip(values, cis)], [ci[1] - v for v, ci in zip(values, cis)]]
        positions = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(positions, values, width=width, yerr=errors, capsize=3, label=name or None)
    counts = {g: max(doc["breakdowns"][key].get(g, {}).get("num_queries", 0) for doc in runs.values()) for g in labels}
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{g}\n(n={counts[g]})" for g in labels], fontsize="small")
    ax.set_ylabel(measure)
    ax.set_xlabel(key.replace("_", " "))
    ax.set_ylim(0, 1)
    ax.grid(True, axis="y", alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize="small")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
