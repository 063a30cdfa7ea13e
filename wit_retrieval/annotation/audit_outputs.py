"""Write an audit report: JSON, markdown, matplotlib plots, and the data cards' annotation.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..io.shards import write_json_atomic, write_text_atomic
from ..layout import DataRoot
from .ratings import now_iso

CARD_FILE = "annotation.json"
SIMULATED_BANNER = ("> **SIMULATED RATINGS.** These numbers come from `wit-retrieval annotate simulate`, "
                    "not from people. They show what the report looks like; they say nothing about the data.")


def clean_json(value: Any) -> Any:
    """NaN and infinities become null so the JSON stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _ci(cell: dict) -> str:
    return f"{_num(cell['value'])} [{_num(cell['low'])}, {_num(cell['high'])}]"


def _group_table(title: str, column: str, cells: dict[str, dict]) -> list[str]:
    lines = [f"#### {title}", "", f"| {column} | estimate [CI] | n |", "|---|---|---|"]
    lines += [f"| {key} | {_ci(cell)} | {cell['n']} |" for key, cell in cells.items()]
    return lines + [""]


def _kind_markdown(name: str, s: dict, confidence: float, plots: dict[str, str]) -> list[str]:
    est = s["estimate"]
    lines = [f"## {name}", "", f"*{s['question']}* Labels: {', '.join(s['labels'])}"
             f"{' (ordinal)' if s['ordinal'] else ''}.", "",
             "| items | ratings | raters | ratings/item | Fleiss' kappa | alpha (nominal) | alpha (ordinal) |",
             "|---|---|---|---|---|---|---|",
             f"| {s['items']} | {s['ratings']} | {s['raters']} | {s['ratings_per_item']:.2f} | "
             f"{_num(s['fleiss_kappa'])} | {_num(s['krippendorff_alpha_nominal'])} | "
             f"{_num(s['krippendorff_alpha_ordinal'])} |", "",
             f"**{est['name']}** (majority label in {{{', '.join(est['positive_labels'])}}}): {_ci(est)}, "
             f"{est['successes']} of {est['n']} decided items, Wilson {confidence:.0%} interval.", ""]
    weighted = est.get("population_weighted")
    if weighted:
        lines += [f"Population-weighted {est['name']}: {_ci(weighted)} (strata weighted by their population; "
                  f"normal-approximation interval; {weighted['coverage']:.0%} of the population in rated strata).", ""]
    if "mean_grade" in s:
        lines += [f"Mean grade (0 = {s['labels'][0]}, {len(s['labels']) - 1} = {s['labels'][-1]}): "
                  f"{_num(s['mean_grade'], 2)}.", ""]
    for group, column in (("by_language", "language"), ("by_query_type", "query type"), ("by_stratum", "stratum")):
        if group in est:
            lines += _group_table(f"By {column}", column, est[group])
    m = s["majority"]
    lines += [f"Majority labels: {m['decided']} decided, {m['ties']} ties, {m['no_decided_rating']} with no "
              "decided rating (abstentions only)." + (f" Tied items: {', '.join(m['tied_items'])}." if m["ties"] else ""),
              "", "#### Raters on gold items", "", "| rater | accuracy [CI] | n | excluded |", "|---|---|---|---|"]
    lines += [f"| {rater} | {_ci(acc)} | {acc['n']} | {'yes' if rater in s['excluded_raters'] else ''} |"
              for rater, acc in s["rater_gold_accuracy"].items()]
    lines.append("")
    lines += [f"![{title}]({path})" for title, path in plots.items()]
    return lines + [""]


def render_markdown(report: dict, plots: dict[str, dict[str, str]] | None = None) -> str:
    """The report as markdown (plots: kind -> {title: relative PNG path})."""
    lines = ["# Annotation audit report", ""]
    if report["simulated"]:
        lines += [SIMULATED_BANNER, ""]
    lines += [f"Sources: {', '.join(report['sources']) or 'none'}. Ratings: {report['ratings']}. "
              "Gold items are excluded from agreement and estimates; 'unsure' counts as no rating.", ""]
    for name, stats in report["task_kinds"].items():
        lines += _kind_markdown(name, stats, report["confidence"], (plots or {}).get(name, {}))
    return "\n".join(lines)


def write_plots(report: dict, out: Path) -> dict[str, dict[str, str]]:
    """PNG plots per task kind: the estimate per stratum with intervals, and rater gold accuracy."""
    from ..errors import require

    require("matplotlib", "plots").use("Agg")
    import matplotlib.pyplot as plt

    suffix = " (SIMULATED)" if report["simulated"] else ""
    written: dict[str, dict[str, str]] = {}
    for name, s in report["task_kinds"].items():
        written[name] = {}
        panels = [("estimate by stratum", s["estimate"].get("by_stratum", {}), f"{name}_estimate.png"),
                  ("rater accuracy on gold", s["rater_gold_accuracy"], f"{name}_raters.png")]
        for title, cells, filename in panels:
            cells = {k: v for k, v in cells.items() if v["n"]}
            if not cells:
                continue
            fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(cells) + 2), 3.2))
            keys = list(cells)
            values = [cells[k]["value"] for k in keys]
            errors = [[v - cells[k]["low"] for k, v in zip(keys, values)],
                      [cells[k]["high"] - v for k, v in zip(keys, values)]]
            ax.bar(range(len(keys)), values, yerr=errors, capsize=3, color="#4a8")
            ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_title(f"{name}: {title}{suffix}", fontsize=9)
            fig.tight_layout()
            fig.savefig(out / filename, dpi=100)
            plt.close(fig)
            written[name][title] = filename
    return written


def write_report(report: dict, out: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and the plots into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = write_plots(report, out) if plots else {}
    write_json_atomic(out / "report.json", clean_json(report))
    write_text_atomic(out / "report.md", render_markdown(report, pngs))
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths.update({f"{kind}:{title}": out / f for kind, files in pngs.items() for title, f in files.items()})
    return paths


def card_estimates(report: dict) -> dict:
    """The part of a report that the data cards show (schema: see annotation/protocol.md)."""
    kinds = {}
    for name, s in report["task_kinds"].items():
        est = s["estimate"]
        kinds[name] = {
            "question": s["question"], "estimate_name": est["name"],
            "estimate": {k: est[k] for k in ("value", "low", "high", "successes", "n")},
            "population_weighted": est.get("population_weighted"),
            "by_language": est.get("by_language", {}), "by_query_type": est.get("by_query_type", {}),
            "items": s["items"], "ratings": s["ratings"], "raters": s["raters"],
            "fleiss_kappa": s["fleiss_kappa"], "krippendorff_alpha": s["krippendorff_alpha"],
        }
    return clean_json({"version": report["version"], "generated_at": now_iso(), "simulated": report["simulated"],
                       "sources": report["sources"], "confidence": report["confidence"], "task_kinds": kinds})


def write_card_estimates(report: dict, root: str | Path) -> Path:
    """Write annotation.json under the build's DataRoot.annotation for the card renderer."""
    path = DataRoot(root).annotation / CARD_FILE
    write_json_atomic(path, card_estimates(report))
    return path
