"""The small-retriever trade-off: R@1 and R@10 against weight size on disk and embedding width.

Reads the results JSONs of `evaluate --quantize ... --dims ...` (each records `quantization` and `dim`)
and renders a markdown table with bootstrap intervals and a 2x2 PNG (R@1 / R@10 x size / width). Rows are
grouped by fusion and split; a row is one (weights, width) point of one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MEASURES = ("R@1", "R@10")
ORDER = {"fp32": 0, "int8": 1, "int4": 2}


def points(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per results JSON that records its weights and width (of models with several), in table order."""
    out = []
    for name, doc in results.items():
        quant, dim = doc.get("quantization"), doc.get("dim")
        if not quant or not dim or not all(m in doc.get("scores", {}) for m in MEASURES):
            continue
        source = {"float": "", "ptq": " post-training", "qat": " quantization-aware"}.get(quant.get("source"), "")
        out.append({"name": name, "weights": quant["scheme"] + source, "scheme": quant["scheme"], "dim": int(dim),
                    "size_mb": quant.get("size_bytes", 0) / 2**20 if quant.get("size_bytes") else None,
                    "fusion": doc.get("fusion", "-"), "split": doc.get("split", "-"), "doc": doc,
                    "model": (doc.get("model") or {}).get("name", "-")})
    # a model evaluated at one point only (e.g. a zero-shot baseline) is no trade-off: left out
    count: dict = {}
    for p in out:
        count[p["model"], p["fusion"], p["split"]] = count.get((p["model"], p["fusion"], p["split"]), 0) + 1
    out = [p for p in out if count[p["model"], p["fusion"], p["split"]] > 1]
    out.sort(key=lambda p: (p["fusion"], p["split"], ORDER.get(p["scheme"], 9), p["weights"], -p["dim"]))
    return out


def has_tradeoff(results: dict[str, dict[str, Any]]) -> bool:
    """True when the results hold more than one (weights, width) point: worth a table."""
    return len({(p["weights"], p["dim"]) for p in points(results)}) > 1


def tradeoff_section(results: dict[str, dict[str, Any]], plot: Path | None, title: str) -> list[str]:
    """Markdown: the table of points with 95% bootstrap intervals, and the plot."""
    from .report import _table, _with_ci

    found = points(results)
    if not has_tradeoff(results):
        return []
    lines = ["## Small retrievers: quantized weights x embedding width", "",
             f"Measured on this report's data root ({title}). Weights: fp32, int8 and int4 per output channel "
             "(post-training with `evaluate --quantize`, quantization-aware with a `[quant]` training section); "
             "widths: Matryoshka truncation of the embeddings (`evaluate --dims`). Size: the weights' bytes on "
             "disk. R@k with 95% bootstrap intervals. On the miniature world this is a tiny model trained from "
             "random weights on synthetic icons: the trade-off's shape, not real-world quality.", ""]
    rows = [[p["name"], p["weights"], p["dim"], "-" if p["size_mb"] is None else f"{p['size_mb']:.2f}",
             p["fusion"], p["split"], *[_with_ci(p["doc"], m) for m in MEASURES]] for p in found]
    lines += _table(["run", "weights", "width", "size (MiB)", "fusion", "split", *MEASURES], rows)
    if plot is not None:
        lines += [f"![R@1 and R@10 against size and width]({plot.name})", ""]
    return lines


def tradeoff_png(results: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """R@1 and R@10 (rows) against size on disk and embedding width (columns), one line per weights kind."""
    from .plots import _pyplot, _save
    from .report import ci_of

    found = points(results)
    if not has_tradeoff(results):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for row, measure in enumerate(MEASURES):
        # against size: one line per width (fp32 -> int8 -> int4); against width: one line per kind of weights
        for col, (key, label, line_of) in enumerate((
                ("size_mb", "weights on disk (MiB)", lambda p: f"width {p['dim']}" + (" QAT" if "aware" in p["weights"]
                                                                                     else "")),
                ("dim", "embedding width", lambda p: p["weights"]))):
            ax = axes[row][col]
            for line in dict.fromkeys(line_of(p) for p in found):
                series = sorted((p for p in found if line_of(p) == line and p[key] is not None), key=lambda p: p[key])
                if series:
                    _errorbar(ax, series, key, measure, line, ci_of)
            ax.set_xscale("log", base=2)
            ax.set(xlabel=label, ylabel=measure, ylim=(0, 1))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="x-small")
    fig.suptitle("R@k against weight size and embedding width (95% bootstrap intervals)")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _errorbar(ax, series: list[dict], key: str, measure: str, label: str, ci_of) -> None:
    xs = [p[key] for p in series]
    ys = [p["doc"]["scores"][measure] for p in series]
    cis = [ci_of(p["doc"], measure) or (y, y) for p, y in zip(series, ys)]
    errors = [[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]]
    ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
