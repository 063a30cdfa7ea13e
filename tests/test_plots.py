"""PNG plots from results records (matplotlib Agg)."""

from __future__ import annotations

import pytest
from PIL import Image

from wit_retrieval.errors import InputError
from wit_retrieval.plots import breakdown_bars_png, recall_curve_png
from wit_retrieval.results import score_run

QRELS = {f"q{i}": {f"t{i}": 1} for i in range(12)}
QUERIES = {"query_id": [f"q{i}" for i in range(12)], "language": ["en", "de", "fr"] * 4}


def results(hits: int):
    import pyarrow as pa

    run = {f"q{i}": [(f"t{i}" if i < hits else "x", 1.0)] for i in range(12)}
    return score_run(run, QRELS, "R@1,R@5,R@10,MRR@10", queries_table=pa.table(QUERIES), bootstrap=50,
                     corpus_size=100)


def test_recall_curve_and_bars(tmp_path):
    a, b = results(4), results(9)
    path = recall_curve_png({"a": a, "b": b.to_dict()}, tmp_path / "curve.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 300
    single = breakdown_bars_png(a, "language", tmp_path / "one.png")
    grouped = breakdown_bars_png({"a": a, "b": b}, "language", tmp_path / "two.png", measure="MRR@10")
    assert single.stat().st_size > 1000 and grouped.stat().st_size > 1000
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically


def test_plot_errors_say_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="no 'query_type' breakdown"):
        breakdown_bars_png(results(3), "query_type", tmp_path / "x.png")
    only_mrr = score_run({"q0": [("t0", 1.0)]}, QRELS, "MRR@10", bootstrap=0)
    with pytest.raises(InputError, match="Success@k scores"):
        recall_curve_png({"r": only_mrr}, tmp_path / "y.png")
    assert not (tmp_path / "y.png").exists()
