"""The end-to-end report: dataset statistics, fetch summary, results, significance, audit.

It only reads what the stages wrote under a data root (stats.json, the image store's
manifests, results/*.json, results/compare-*.json, annotation/annotation.json), so every
number in it comes from the run that produced those files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .io.shards import write_text_atomic
from .layout import DataRoot
from .tradeoff import tradeoff_section

MAIN_MEASURES = ("R@1", "R@5", "R@10", "MRR@10", "nDCG@10")


@dataclass(frozen=True)
class ReportInputs:
    """What the report found under a data root."""

    stats: dict[str, Any] | None
    fetch: dict[str, Any] | None
    results: dict[str, dict[str, Any]]  # baseline name -> results JSON
    comparisons: list[dict[str, Any]]
    audit: dict[str, Any] | None


def _load_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc}); re-run the stage that wrote it", path=str(path)) from exc


def fetch_summary(images_dir: Path) -> dict[str, Any] | None:
    """Counts of ok / failed by error class from an image store's finished shards (done-markers)."""
    if not images_dir.is_dir():
        return None
    from .images.status import store_status

    status = store_status(images_dir)
    if not status["shards_done"]:
        return None
    return {"status": {"ok": status["ok"], "failed": status["failed"]}, "errors": status["errors"],
            "sources": status["sources"], "shards": status["shards_done"], "pending": status["pending"]}


def collect(root: str | Path) -> ReportInputs:
    """Read every input the report needs from a data root."""
    data = DataRoot(root)
    results: dict[str, dict[str, Any]] = {}
    comparisons: list[dict[str, Any]] = []
    if data.results.is_dir():
        # results/NAME.json (score --json) and results/NAME/results.json (evaluate --out)
        paths = sorted(data.results.glob("*.json")) + sorted(data.results.glob("*/results.json"))
        for path in paths:
            doc = _load_json(path)
            if doc is None:
                continue
            if path.name.startswith("compare"):
                comparisons.append(doc)
            elif "scores" in doc:
                results[_baseline_name(doc, path)] = doc
    return ReportInputs(
        stats=_load_json(data.stats),
        fetch=fetch_summary(data.images),
        results=results,
        comparisons=comparisons,
        audit=_load_json(data.annotation / "annotation.json"),
    )


def _baseline_name(doc: dict[str, Any], path: Path) -> str:
    meta = doc.get("run_metadata") or {}
    return str(meta.get("name") or (path.parent.name if path.name == "results.json" else path.stem))


def _fusion(doc: dict[str, Any]) -> str:
    return str(doc.get("fusion") or (doc.get("run_metadata") or {}).get("fusion") or "-")


def _training(doc: dict[str, Any]) -> str:
    """'zero-shot' or what the model was trained on, from evaluate's model metadata or a run sidecar."""
    model = doc.get("model") or {}
    meta = doc.get("run_metadata") or {}
    trained_on = model.get("training_datasets") or meta.get("training_datasets") or []
    if doc.get("zero_shot") is True or not trained_on:
        return "zero-shot"
    return "trained on " + ", ".join(map(str, trained_on))


def ci_of(doc: dict[str, Any], measure: str) -> tuple[float, float] | None:
    """The confidence interval of a measure, whichever of the two spellings a results JSON uses."""
    ci = (doc.get("ci") or {}).get(measure)
    if ci is None:
        return None
    if isinstance(ci, dict):
        return float(ci.get("low", ci.get("lo"))), float(ci.get("high", ci.get("hi")))
    return float(ci[0]), float(ci[1])


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _counts_table(title: str, counts: dict[str, Any] | None) -> list[str]:
    """A two-column table of value -> count, or nothing when there are no counts."""
    if not counts:
        return []
    rows = [[k, v] for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))]
    return [f"**{title}**", "", *_table(["value", "count"], rows)]


def dataset_section(stats: dict[str, Any] | None) -> list[str]:
    """Markdown for the build statistics (stats.json: per split, language, query type, entities per query)."""
    lines = ["## Dataset", ""]
    mmir = (stats or {}).get("mmir") or {}
    splits = mmir.get("splits") or {}
    if not splits:
        return lines + ["No MMIR statistics under the data root: run `wit-retrieval build mmir` first.", ""]
    entities, ei = stats.get("entities") or {}, stats.get("ei") or {}
    if entities:
        lines += [f"{entities.get('entities', '?')} entities with a canonical image "
                  f"({entities.get('names', '?')} names); the EI subset used by MMIR queries: "
                  f"{ei.get('entities', '?')} entities.", ""]
    order = [s for s in ("train", "val", "test") if s in splits] + sorted(set(splits) - {"train", "val", "test"})
    rows = [[name, splits[name].get("rows_read", 0), splits[name].get("with_reference", 0),
             splits[name].get("queries", 0), splits[name].get("corpus", 0),
             ", ".join(f"{k} {v}" for k, v in sorted(splits[name].get("dropped", {}).items())) or "-"]
            for name in order]
    lines += ["**Per split**", "", *_table(["split", "WIT rows", "with reference", "queries", "corpus images",
                                             "dropped by filter"], rows)]
    for key, title in (("by_language", "language"), ("by_query_type", "query type"),
                       ("entities_per_query", "entities per query")):
        values = sorted({v for name in order for v in splits[name].get(key, {})}, key=_natural_key)
        rows = [[name, *[splits[name].get(key, {}).get(v, 0) for v in values]] for name in order]
        lines += [f"**Queries per {title}**", "", *_table(["split", *values], rows)]
    return lines


def _natural_key(value: str):
    return (0, int(value), "") if str(value).isdigit() else (1, 0, str(value))


def fetch_section(fetch: dict[str, Any] | None, plot: Path | None) -> list[str]:
    """Markdown for the image fetch: ok / failed by error class and source."""
    lines = ["## Images", ""]
    if not fetch:
        return lines + ["No image store under the data root: run `wit-retrieval images fetch` first.", ""]
    total = sum(fetch["status"].values())
    ok = fetch["status"].get("ok", 0)
    lines += [f"{ok} of {total} images stored ({ok / max(total, 1):.1%}) in {fetch['shards']} shards.", ""]
    lines += _counts_table("Failures by error class", fetch["errors"])
    lines += _counts_table("Stored images by source", fetch["sources"])
    if plot is not None:
        lines += [f"![fetch summary]({plot.name})", ""]
    return lines


def _with_ci(doc: dict[str, Any], measure: str) -> str:
    value = doc.get("scores", {}).get(measure)
    if value is None:
        return "-"
    ci = ci_of(doc, measure)
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _measures_of(results: dict[str, dict[str, Any]]) -> list[str]:
    present = {m for doc in results.values() for m in doc.get("scores", {})}
    main = [m for m in MAIN_MEASURES if m in present]
    return main or sorted(present)


def results_section(results: dict[str, dict[str, Any]], curve: Path | None) -> list[str]:
    """Markdown for the results of each baseline with 95% bootstrap CIs, and the recall@k curves."""
    lines = ["## Results", ""]
    if not results:
        return lines + ["No results under the data root: run `wit-retrieval evaluate` or `score --json`.", ""]
    measures = _measures_of(results)
    rows = []
    for name, doc in results.items():
        model = (doc.get("model") or {}).get("name") or (doc.get("run_metadata") or {}).get("model", "-")
        rows.append([name, f"`{model}`", _fusion(doc), _training(doc), doc.get("split", "-"),
                     doc.get("num_queries", "-"),
                     *[_with_ci(doc, m) for m in measures]])
    lines += ["Scores with 95% bootstrap confidence intervals (seeded).", ""]
    lines += _table(["baseline", "model", "fusion", "training", "split", "queries", *measures], rows)
    chance = next((doc.get("chance") for doc in results.values() if doc.get("chance")), None)
    if chance:
        corpus = next(doc.get("corpus_size") for doc in results.values())
        pretty = ", ".join(f"{m} {v:.4f}" for m, v in chance.items() if v is not None)
        lines += [f"Chance level for a corpus of {corpus} images: {pretty}.", ""]
    if curve is not None:
        lines += [f"![recall@k curves]({curve.name})", ""]
    return lines


def breakdown_section(results: dict[str, dict[str, Any]], plots: dict[str, Path]) -> list[str]:
    """Markdown for per-language and per-query-type breakdowns of every baseline."""
    lines = ["## Breakdowns", ""]
    measure = "R@10" if "R@10" in _measures_of(results) else (_measures_of(results) or ["-"])[0]
    for key in ("language", "query_type", "num_entities"):
        values = sorted({v for doc in results.values() for v in doc.get("breakdowns", {}).get(key, {})})
        if not values:
            continue
        rows = []
        for name, doc in results.items():
            groups = doc.get("breakdowns", {}).get(key, {})
            rows.append([name, *[_group_cell(groups.get(v), measure) for v in values]])
        lines += [f"**{measure} by {key.replace('_', ' ')}** (queries in parentheses)", ""]
        lines += _table(["baseline", *values], rows)
        if key in plots:
            lines += [f"![{measure} by {key}]({plots[key].name})", ""]
    return lines if len(lines) > 2 else []


def _group_cell(group: dict[str, Any] | None, measure: str) -> str:
    if not group:
        return "-"
    return f"{group['scores'].get(measure, float('nan')):.3f} ({group.get('num_queries', '?')})"


def significance_section(comparisons: list[dict[str, Any]]) -> list[str]:
    """Markdown for paired tests (trained vs zero-shot and any other comparison written)."""
    if not comparisons:
        return []
    lines = ["## Significance", ""]
    for doc in comparisons:
        a, b = doc.get("run_a", "A"), doc.get("run_b", "B")
        lines += [f"**{b} vs {a}** ({doc.get('num_queries', '?')} paired queries; B - A)", ""]
        rows = []
        for measure, test in doc.get("tests", {}).items():
            lo, hi = test["difference_ci"]
            rows.append([measure, test["mean_a"], test["mean_b"], f"{test['mean_difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                         f"{test['p_ttest']:.2g}", f"{test['p_permutation']:.2g}", test["cohens_d"]])
        lines += _table(["measure", "A", "B", "difference [95% CI]", "p (t-test)", "p (permutation)",
                         "Cohen's d"], rows)
    return lines


def audit_section(audit: dict[str, Any] | None) -> list[str]:
    """Markdown for the annotation audit (annotation.json): agreement and quality estimates per task kind."""
    if not audit or not audit.get("task_kinds"):
        return []
    lines = ["## Annotation audit", ""]
    if audit.get("simulated"):
        lines += ["**SIMULATED ratings** (the demo has no human raters): these numbers show the audit "
                  "pipeline working, not the dataset's quality.", ""]
    rows = []
    for kind, doc in audit["task_kinds"].items():
        est = doc.get("estimate") or {}
        interval = (f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"
                    if est.get("value") is not None else "-")
        rows.append([kind, doc.get("items", "-"), doc.get("raters", "-"), doc.get("ratings", "-"),
                     _maybe(doc.get("fleiss_kappa")), _maybe(doc.get("krippendorff_alpha")),
                     doc.get("estimate_name", "accuracy"), interval])
    confidence = audit.get("confidence", 0.95)
    lines += [f"Estimates with {confidence:.0%} Wilson intervals.", ""]
    lines += _table(["task", "items", "raters", "ratings", "Fleiss' kappa", "Krippendorff's alpha",
                     "estimate", "value [interval]"], rows)
    return lines


def _maybe(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _plot_fetch(fetch: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["ok", *sorted(fetch["errors"])]
    values = [fetch["status"].get("ok", 0), *[fetch["errors"][k] for k in labels[1:]]]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(labels, values, color=["tab:green"] + ["tab:red"] * (len(labels) - 1))
    ax.set_xlabel("images")
    ax.set_title("Image fetch: stored and failed by class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plots(inputs: ReportInputs, out_dir: Path) -> tuple[Path | None, Path | None, dict[str, Path]]:
    from . import plots
    from .tradeoff import tradeoff_png

    fetch_png = _plot_fetch(inputs.fetch, out_dir / "fetch.png") if inputs.fetch else None
    curve_png, bars = None, {}
    if inputs.results:
        curve_png = out_dir / "recall_at_k.png"
        plots.recall_curve_png(inputs.results, curve_png)
        for key in ("language", "query_type"):
            if any(doc.get("breakdowns", {}).get(key) for doc in inputs.results.values()):
                bars[key] = out_dir / f"by_{key}.png"
                plots.breakdown_bars_png(inputs.results, key, bars[key])
        tradeoff = tradeoff_png(inputs.results, out_dir / "tradeoff.png")
        if tradeoff is not None:
            bars["tradeoff"] = tradeoff
    return fetch_png, curve_png, bars


def render_markdown(inputs: ReportInputs, plots: tuple[Path | None, Path | None, dict[str, Path]],
                    title: str) -> str:
    """The whole report as markdown (plots referenced by file name, beside the report)."""
    fetch_png, curve_png, bars = plots
    lines = [f"# {title}", "",
             "Every number below was read from the files this run wrote under the data root.", ""]
    lines += dataset_section(inputs.stats)
    lines += fetch_section(inputs.fetch, fetch_png)
    lines += results_section(inputs.results, curve_png)
    lines += breakdown_section(inputs.results, bars)
    lines += tradeoff_section(inputs.results, bars.get("tradeoff"), title)
    lines += significance_section(inputs.comparisons)
    lines += audit_section(inputs.audit)
    return "\n".join(lines).rstrip() + "\n"


def write_report(root: str | Path, out_dir: str | Path | None = None,
                 title: str = "wit-retrieval report") -> Path:
    """Write report.md, report.html and the PNG plots; returns the markdown path."""
    inputs = collect(root)
    out = Path(out_dir) if out_dir is not None else DataRoot(root).reports
    out.mkdir(parents=True, exist_ok=True)
    markdown_text = render_markdown(inputs, _plots(inputs, out), title)
    md_path = out / "report.md"
    write_text_atomic(md_path, markdown_text)
    write_text_atomic(out / "report.html", _html(markdown_text, title))
    return md_path


def _html(markdown_text: str, title: str) -> str:
    import html

    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")
