"""Proof that the whole path learns: train inject from random weights on a tiny world through the CLI,
evaluate it through the CLI, and beat both chance and the best any text-only model could do."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from tests.test_models_world import make_world, one_torch_thread, write_store  # noqa: F401
from wit_retrieval.cli import app
from wit_retrieval.models.train_data import read_queries

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_oracle_recall(queries: list[dict], k: int) -> float:
    """Expected R@k of a perfect text-only model: it can only rank within the group of same texts."""
    groups = Counter(q["masked_text"] for q in queries)
    return sum(min(1.0, k / groups[q["masked_text"]]) for q in queries) / len(queries)


@pytest.mark.slow
def test_inject_learns_entities_from_images(tmp_path):
    world = make_world(tmp_path / "root", entities=12, scenes={"train": 300, "val": 20, "test": 200}, size=32)
    write_store(world.store, world.root.images)
    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "baselines/inject-mini.toml", "--data", str(world.root.root), "--out", str(tmp_path / "run"),
        "--set", "model.base=open_clip:wit-tiny-rn:random",
        "--set", "optim.steps=40", "--set", "optim.batch_size=32", "--set", "optim.warmup_steps=10",
        "--set", "run.eval_every=0", "--set", "run.checkpoint_every=0",
    ])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "run" / "model"), "--data",
                                 str(world.root.root), "--out", str(tmp_path / "eval"), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    recall = results["scores"]["R@10"]
    chance = 10 / 200
    oracle = text_oracle_recall(read_queries(world.root.root, "test"), 10)
    assert results["fusion"] == "inject" and results["zero_shot"] is False
    assert recall > 3 * chance and recall > oracle + 0.15, (recall, oracle, chance)
