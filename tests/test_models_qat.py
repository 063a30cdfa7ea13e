"""Quantization-aware training: straight-through fake quantization, float keys in checkpoints, a QAT run
that learns as the float run does, its int4 export used by evaluate, and one-line errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.test_models_world import make_world, one_torch_thread, write_store  # noqa: F401
from tests.test_train_learns import text_oracle_recall
from wit_retrieval.cli import app
from wit_retrieval.errors import ConfigError
from wit_retrieval.models.checkpoint import build_retriever
from wit_retrieval.models.qat import attach_qat, write_export
from wit_retrieval.models.quant import fake_quantize
from wit_retrieval.models.train_config import QuantConfig
from wit_retrieval.models.train_data import read_queries

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fake_quantization_rounds_forward_and_passes_gradients_straight_through():
    weight = torch.randn(6, 10, requires_grad=True)
    out = fake_quantize(weight, 4)
    scale = weight.detach().abs().amax(1, keepdim=True) / 7
    steps = out.detach() / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 7 + 1e-4
    upstream = torch.randn(6, 10)
    (out * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)


def test_qat_model_keeps_float_keys_and_switches_on_at_start_step():
    built = build_retriever("open_clip:wit-tiny-rn:random", {"inject": {}})
    keys = set(built.model.state_dict())
    linear = built.model.heads["inject"].proj[0]
    float_weight = linear.weight.detach().clone()
    optimizer = torch.optim.SGD(built.model.parameters(), lr=0.0)
    state = attach_qat(built.model, QuantConfig(bits=4, start_step=2), optimizer)
    assert set(built.model.state_dict()) == keys  # checkpoints hold float weights by their names
    built.model.load_state_dict(built.model.state_dict())
    assert not state["on"] and torch.equal(linear.weight, float_weight)
    for _ in range(2):
        optimizer.step()
    assert state["on"] and state["step"] == 2
    grid = linear.weight.detach() / (float_weight.abs().amax(1, keepdim=True) / 7)
    assert torch.allclose(grid, grid.round(), atol=1e-4)
    assert torch.equal(built.model.state_dict()["heads.inject.proj.0.weight"], float_weight)
    with tempfile.TemporaryDirectory() as tmp:  # a checkpoint mid-training leaves the model training
        assert write_export(built.model, Path(tmp))["scheme"] == "int4"
    built.model.image_features(torch.randn(2, 3, 32, 32)).sum().backward()
    assert built.model.clip.visual.conv1.parametrizations.weight.original.grad is not None


def _train(runner, world, out, *extra):
    result = runner.invoke(app, [
        "train", "baselines/inject-mini.toml", "--data", str(world.root.root), "--out", str(out),
        "--set", "optim.steps=40", "--set", "optim.batch_size=32", "--set", "optim.warmup_steps=10",
        "--set", "run.eval_every=0", "--set", "run.checkpoint_every=0", *extra,
    ])
    assert result.exit_code == 0, result.output


def _evaluate(runner, world, checkpoint, out, *extra) -> dict:
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--data", str(world.root.root),
                                 "--out", str(out), "--bootstrap", "0", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_int4_qat_learns_as_the_float_run_does_and_evaluate_uses_its_export(tmp_path):
    world = make_world(tmp_path / "root", entities=12, scenes={"train": 300, "val": 20, "test": 200}, size=32)
    write_store(world.store, world.root.images)
    runner = CliRunner()
    _train(runner, world, tmp_path / "float")
    _train(runner, world, tmp_path / "qat", "--set", "quant.bits=4", "--set", "quant.start_step=10")
    model = tmp_path / "qat" / "model"
    spec = json.loads((model / "retriever.json").read_text())
    assert spec["quant"]["scheme"] == "int4" and spec["quant"]["active"] and spec["quant"]["start_step"] == 10
    export = load_file(str(model / spec["quant"]["export"]))
    assert export["heads.inject.proj.0.weight_q4"].dtype == torch.uint8
    assert not any(k.endswith(".weight") and v.ndim >= 2 for k, v in export.items())
    float_results = _evaluate(runner, world, tmp_path / "float" / "model", tmp_path / "e-float")
    qat = _evaluate(runner, world, model, tmp_path / "e-qat")
    qat_float = _evaluate(runner, world, model, tmp_path / "e-qat-fp32", "--quantize", "fp32")
    assert qat["quantization"]["source"] == "qat" and qat_float["quantization"]["scheme"] == "fp32"
    chance, oracle = 10 / 200, text_oracle_recall(read_queries(world.root.root, "test"), 10)
    recall, reference = qat["scores"]["R@10"], float_results["scores"]["R@10"]
    assert recall > 3 * chance and recall > oracle + 0.1, (recall, oracle)
    # 40 steps on the tiny world are short for QAT (rounding from step 10): one CI run measured 0.72
    # against the float run's 0.825 with the streamed loader, so here QAT must be within 0.15 of float;
    # the demo world measures the real gap (int4 QAT 0.981 against fp32 0.984, benchmarks/results/quant.md)
    assert recall > reference - 0.15, (recall, reference)
    # a QAT run resumed, or a QAT checkpoint trained on, without [quant]: one line each
    result = runner.invoke(app, ["train", "baselines/inject-mini.toml", "--data", str(world.root.root),
                                 "--out", str(tmp_path / "qat"), "--set", "optim.steps=41"])
    assert result.exit_code == 1 and "int4 quantization-aware run but this config has no [quant]" in result.output
    result = runner.invoke(app, ["train", "baselines/inject-mini.toml", "--data", str(world.root.root),
                                 "--out", str(tmp_path / "more"), "--set", f"model.base=local-dir:{model}"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "quantization-aware int4 checkpoint but this config has no [quant] section" in result.output


def test_bad_quant_sections_are_config_errors():
    built = build_retriever("open_clip:wit-tiny-rn:random", {})
    with pytest.raises(ConfigError, match=r"\[quant\] bits must be 4 or 8"):
        attach_qat(built.model, QuantConfig(bits=3))
    with pytest.raises(ConfigError, match="unknown quantization module group"):
        attach_qat(built.model, QuantConfig(bits=8, modules=("vision",)))
