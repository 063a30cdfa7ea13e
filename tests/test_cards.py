"""Data cards: front matter, rendering from stats, and the committed cards kept in sync with a fresh build."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wit_retrieval.cards import DEMO_SOURCE, build_demo_stats, card_stats, metadata, render_card
from wit_retrieval.cli import app

from .conftest import REPO

CARDS = REPO / "data_cards"


def committed_stats() -> dict:
    return json.loads((CARDS / "stats.json").read_text(encoding="utf-8"))


def test_committed_cards_render_from_committed_stats():
    stats = committed_stats()
    for kind in ("EI", "MMIR"):
        assert render_card(kind, stats, DEMO_SOURCE) == (CARDS / f"{kind}.md").read_text(encoding="utf-8")


def test_front_matter_fields():
    yaml = pytest.importorskip("yaml")
    text = (CARDS / "MMIR.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "cc-by-sa-3.0"
    assert front["language"] == ["de", "en"] and front["size_categories"] == ["1K<n<10K"]
    assert [c["config_name"] for c in front["configs"]] == ["queries", "corpus", "qrels"]
    assert front["configs"][0]["data_files"][1] == {"split": "validation", "path": "queries/split=val/*.parquet"}
    assert "1.80M" in text and "9.16M" in text and "108 languages" in text
    assert metadata("MMIR", {"mmir": {"splits": {"train": {"queries": 2_000_000, "by_language": {"en": 1},
                                                             "by_query_type": {}, "entities_per_query": {}}}}}
                    ).size_category == "1M<n<10M"


@pytest.mark.slow
def test_committed_cards_equal_a_fresh_build(tmp_path):
    stats = build_demo_stats(tmp_path)
    assert card_stats(stats) == committed_stats()
    result = CliRunner().invoke(app, ["card", str(tmp_path / "root"), "--out", str(tmp_path / "cards"),
                                      "--source", DEMO_SOURCE])
    assert result.exit_code == 0, result.output
    for kind in ("EI", "MMIR"):
        assert (tmp_path / "cards" / f"{kind}.md").read_text() == (CARDS / f"{kind}.md").read_text()
