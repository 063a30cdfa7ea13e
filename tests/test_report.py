"""The end-to-end report reads what the stages wrote and shows their numbers."""

from __future__ import annotations

import json
import random
import shutil

from typer.testing import CliRunner

from wit_retrieval.cli import app
from wit_retrieval.io.shards import write_json_atomic
from wit_retrieval.layout import DataRoot
from wit_retrieval.report import collect, write_report
from wit_retrieval.results import compare_runs, score_run

from .conftest import REPO

MEASURES = ["R@1", "R@5", "R@10", "MRR@10", "nDCG@10"]


def _runs(n_queries: int = 40, corpus: int = 30, seed: int = 0):
    rng = random.Random(seed)
    qrels = {f"q{i}": {f"d{rng.randrange(corpus)}": 1} for i in range(n_queries)}
    docs = [f"d{j}" for j in range(corpus)]

    def run(quality: float):
        out = {}
        for q, rel in qrels.items():
            ranked = rng.sample(docs, len(docs))
            target = next(iter(rel))
            if rng.random() < quality:
                ranked.remove(target)
                ranked.insert(0, target)
            out[q] = [(d, 1.0 - r / len(docs)) for r, d in enumerate(ranked)]
        return out

    return qrels, run(0.1), run(0.8)


def _queries_table(qrels):
    import pyarrow as pa

    ids = sorted(qrels)
    return pa.table({"query_id": ids, "language": ["en" if i % 2 else "de" for i in range(len(ids))],
                     "query_type": ["multi" if i % 3 else "single" for i in range(len(ids))],
                     "num_entities": [1 + i % 3 for i in range(len(ids))]})


def _fill_root(root: DataRoot) -> None:
    root.root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "data_cards" / "stats.json", root.stats)
    qrels, weak, strong = _runs()
    queries = _queries_table(qrels)
    for name, run, meta in (("zero-shot", weak, {"name": "zero-shot", "fusion": "sum"}),
                            ("trained", strong, {"name": "trained", "fusion": "inject",
                                                 "training_datasets": ["mmir-mini"]})):
        res = score_run(run, qrels, MEASURES, queries_table=queries, bootstrap=200, corpus_size=30,
                        metadata=meta, split="test")
        if name == "trained":  # as `evaluate --out DIR` writes it
            res.save(root.results / name / "results.json")
            continue
        res.save(root.results / f"{name}.json")
    comparison = compare_runs(weak, strong, qrels, MEASURES, queries_table=queries, permutations=500,
                              bootstrap=200)
    write_json_atomic(root.results / "compare-trained-vs-zero-shot.json",
                      {**comparison, "run_a": "zero-shot", "run_b": "trained"})
    write_json_atomic(root.annotation / "annotation.json", {
        "version": 1, "simulated": True, "confidence": 0.95, "task_kinds": {"ei-correct": {
            "items": 50, "raters": 3, "ratings": 150, "fleiss_kappa": 0.61, "krippendorff_alpha": 0.6,
            "estimate_name": "accuracy", "estimate": {"value": 0.9, "low": 0.79, "high": 0.96, "n": 50}}}})


def test_report_shows_every_section_with_the_run_numbers(tmp_path):
    root = DataRoot(tmp_path / "data")
    _fill_root(root)
    inputs = collect(root.root)
    assert set(inputs.results) == {"zero-shot", "trained"}
    md_path = write_report(root.root)
    text = md_path.read_text(encoding="utf-8")
    trained = json.loads((root.results / "trained" / "results.json").read_text())
    assert f"{trained['scores']['R@10']:.3f} [{trained['ci']['R@10'][0]:.3f}" in text
    for heading in ("## Dataset", "## Results", "## Breakdowns", "## Significance", "## Annotation audit"):
        assert heading in text
    assert "SIMULATED" in text and "0.610" in text
    assert "| inject | trained on mmir-mini |" in text and "| sum | zero-shot |" in text
    train = json.loads(root.stats.read_text())["mmir"]["splits"]["train"]
    assert f"| train | {train['rows_read']} | {train['with_reference']} | {train['queries']} |" in text
    assert "No image store" in text  # nothing fetched in this root: said, not hidden
    for png in ("recall_at_k.png", "by_language.png", "by_query_type.png"):
        assert (root.reports / png).stat().st_size > 1000
    html = (root.reports / "report.html").read_text(encoding="utf-8")
    assert "<table>" in html and "recall_at_k.png" in html


def test_report_cli_on_an_empty_root_says_what_to_run(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "run `wit-retrieval build mmir` first" in text
    assert "run `wit-retrieval evaluate`" in text
