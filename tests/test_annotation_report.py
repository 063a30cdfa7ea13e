"""Audit report: estimates, ties, gold accuracy, simulated labelling, plots, the cards' annotation.json, CLI."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wit_retrieval.annotation import agreement
from wit_retrieval.annotation.audit_outputs import SIMULATED_BANNER, write_card_estimates, write_report
from wit_retrieval.annotation.audit_report import analyze, population_weighted
from wit_retrieval.annotation.ratings import ratings_table
from wit_retrieval.annotation.sampling import SampleConfig, sample_items
from wit_retrieval.annotation.simulate import SimulationConfig, simulate_ratings
from wit_retrieval.cli import app
from wit_retrieval.layout import DataRoot

from .test_annotation_data import make_build


def _row(item, rater, label, lang="en", qtype="single", gold=None):
    return {"item_id": item, "task_kind": "mmir-answerable", "rater": rater, "label": label,
            "is_gold": gold is not None, "gold_label": gold, "language": lang, "query_type": qtype,
            "source": "csv", "rated_at": "2026-01-01T00:00:00Z"}


def test_report_numbers_on_a_hand_made_table():
    rows = [
        _row("a", "r1", "yes"), _row("a", "r2", "yes"), _row("a", "r3", "partly"),
        _row("b", "r1", "no"), _row("b", "r2", "yes"),                      # tie
        _row("c", "r1", "yes", lang="de", qtype="multi"), _row("c", "r3", "yes", lang="de", qtype="multi"),
        _row("d", "r2", "no", lang="de"), _row("d", "r3", "no", lang="de"),
        _row("g", "r1", "no", gold="no"), _row("g", "r2", "yes", gold="no"), _row("g", "r3", "no", gold="no"),
    ]
    report = analyze(ratings_table(rows))
    s = report["task_kinds"]["mmir-answerable"]
    assert s["items"] == 4 and s["ratings"] == 9 and s["gold_ratings"] == 3  # gold kept out of estimates
    assert s["majority"]["ties"] == 1 and s["majority"]["tied_items"] == ["b"]
    est = s["estimate"]
    assert (est["successes"], est["n"]) == (2, 3)  # a and c are "yes", d is "no", b is tied
    assert est["by_language"]["de"]["n"] == 2 and est["by_language"]["en"]["successes"] == 1
    assert est["by_stratum"]["de/multi"]["value"] == 1.0
    assert s["rater_gold_accuracy"]["r2"]["value"] == 0.0 and s["rater_gold_accuracy"]["r1"]["value"] == 1.0
    assert report["krippendorff_alpha"] == s["krippendorff_alpha_ordinal"]  # ordinal kind
    assert not report["simulated"]
    dropped = analyze(ratings_table(rows), min_gold_accuracy=0.5)["task_kinds"]["mmir-answerable"]
    assert dropped["excluded_raters"] == ["r2"] and dropped["ratings"] == 6
    numbers = agreement(ratings_table(rows))
    assert numbers["fleiss_kappa"] == s["fleiss_kappa"] and numbers["items"] == 4


def test_population_weighted_estimate_by_hand():
    by_stratum = {"en/single": {"value": 0.5, "n": 10}, "de/multi": {"value": 1.0, "n": 5}, "ja/single": {"value": 0.0, "n": 0}}
    result = population_weighted(by_stratum, {"en/single": 300, "de/multi": 100, "ja/single": 100}, 0.95)
    half = 1.959963984540054 * (0.75**2 * 0.25 / 10) ** 0.5
    assert result["value"] == pytest.approx(0.625) and result["coverage"] == pytest.approx(0.8)
    assert result["low"] == pytest.approx(0.625 - half) and result["high"] == pytest.approx(0.625 + half)


def test_simulated_ratings_are_labelled_everywhere(tmp_path):
    root = make_build(tmp_path / "build")
    items, _ = sample_items(root.root, SampleConfig(task_kinds=("ei-correct", "mmir-answerable"), n=12,
                                                    overlap=3, gold_fraction=0.5))
    config = SimulationConfig(raters=4, accuracy=(0.999, 1.0), positive_rate=0.75, abstain_rate=0.0, seed=1)
    table = simulate_ratings(items, config)
    assert set(table.column("source").to_pylist()) == {"simulated"}
    per_item = {}
    for r in table.to_pylist():
        per_item.setdefault(r["item_id"], []).append(r["rater"])
    for item in items:  # overlap honoured, gold items seen by every rater
        assert len(per_item[item.item_id]) == (4 if item.is_gold else 3)
    report = analyze(table)
    assert report["simulated"] and report["sources"] == ["simulated"]
    for s in report["task_kinds"].values():  # near-perfect raters agree and pass gold
        assert s["fleiss_kappa"] > 0.9 and all(a["value"] == 1.0 for a in s["rater_gold_accuracy"].values())
    paths = write_report(report, tmp_path / "report")
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert SIMULATED_BANNER in markdown and "## ei-correct" in markdown and "## mmir-answerable" in markdown
    pngs = [p for k, p in paths.items() if ":" in k]
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    card = json.loads(write_card_estimates(report, root.root).read_text(encoding="utf-8"))
    assert card["simulated"] is True and card["version"] == 1
    ei = card["task_kinds"]["ei-correct"]
    assert ei["estimate_name"] == "accuracy" and set(ei["estimate"]) == {"value", "low", "high", "successes", "n"}
    assert ei["estimate"]["low"] <= ei["estimate"]["value"] <= ei["estimate"]["high"]
    assert set(ei["by_language"]) == {"en", "de"}
    assert (DataRoot(root.root).annotation / "annotation.json").exists()


def test_cli_export_simulate_import_report(tmp_path):
    root = make_build(tmp_path / "build")
    runner = CliRunner()
    out = tmp_path / "audit"

    def run(*args):
        result = runner.invoke(app, ["annotate", *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.output

    printed = run("export", root.root, "--out", out, "--task", "mask-correct", "--task", "ei-correct", "--n", "10",
                  "--overlap", "2", "--seed", "5")
    assert "mask-correct: 10 items + 1 gold" in printed
    run("simulate", out, "--out", tmp_path / "sim.parquet", "--raters", "3", "--seed", "2")
    assert "ratings to" in run("import", tmp_path / "sim.parquet", "--out", tmp_path / "ratings.parquet")
    assert pq.read_table(tmp_path / "ratings.parquet").num_rows > 20
    printed = run("report", "--ratings", tmp_path / "ratings.parquet", "--json", tmp_path / "r.json",
                  "--out", tmp_path / "report", "--root", root.root)
    assert "SIMULATED" in printed
    result = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert set(result["fleiss_kappa"]) == {"ei-correct", "mask-correct"}  # several kinds: per-kind mapping
    assert "krippendorff_alpha" in result and result["simulated"] is True
    run("report", "--ratings", tmp_path / "ratings.parquet", "--json", tmp_path / "w.json", "--items", out)
    weighted = json.loads((tmp_path / "w.json").read_text(encoding="utf-8"))["task_kinds"]["mask-correct"]
    assert weighted["estimate"]["population_weighted"]["coverage"] == pytest.approx(1.0)
    bad = runner.invoke(app, ["annotate", "export", str(root.root), "--out", str(out), "--task", "relevence"])
    assert bad.exit_code == 1 and "Did you mean relevance" in bad.output
