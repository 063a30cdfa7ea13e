"""Training and evaluation configs: TOML into frozen dataclasses, clear errors, every baseline parses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from wit_retrieval.errors import ConfigError
from wit_retrieval.evaluate import EvalConfig, load_eval_config
from wit_retrieval.models.train_config import TrainConfig, config_from_dict, load_train_config

BASELINES = Path(__file__).resolve().parents[1] / "baselines"


def test_defaults_and_frozen():
    config = config_from_dict({"optim": {"steps": 5, "lr": 1}, "loss": {"matryoshka_dims": [32, 16]}})
    assert config.optim.steps == 5 and config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.loss.matryoshka_dims == (32, 16) and config.model.fusion == "inject"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optim.steps = 6


@pytest.mark.parametrize("data, message", [
    ({"optim": {"step": 5}}, r"\[optim\] unknown key 'step'; did you mean 'steps'"),
    ({"optimizer": {}}, r"unknown section \[optimizer\]; did you mean 'optim'"),
    ({"optim": {"steps": "many"}}, r"\[optim\] steps must be int, got 'many'"),
    ({"loss": {"duplicate_mask": 1}}, r"duplicate_mask must be bool"),
    ({"loss": {"matryoshka_dims": 32}}, r"matryoshka_dims must be a list"),
])
def test_clear_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, source="x.toml")


def test_file_with_command_line_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nsteps = 10\n[run]\nout = "a"\n')
    config = load_train_config(path, {"optim.steps": "3", "loss.symmetric": "false", "data.root": "/r",
                                      "loss.matryoshka_dims": "32,16"})
    assert (config.optim.steps, config.loss.symmetric, config.data.root, config.run.out) == (3, False, "/r", "a")
    assert config.loss.matryoshka_dims == (32, 16)
    path.write_text("[optim\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(tmp_path / "missing.toml")


def test_every_baseline_config_parses():
    train_configs = sorted(BASELINES.glob("*-mini.toml"))
    eval_configs = sorted(BASELINES.glob("zs-*.toml"))
    assert {p.stem for p in train_configs} >= {"inject-mini", "combiner-mini", "text-only-mini"}
    for path in train_configs:
        assert isinstance(load_train_config(path), TrainConfig)
    fusions = set()
    for path in eval_configs:
        config = load_eval_config(path, data="/root")
        assert isinstance(config, EvalConfig) and config.model.startswith("open_clip:") and config.data == "/root"
        fusions.add(config.fusion)
    assert fusions == {"text-only", "image-only", "sum", "names"}


def test_eval_config_unknown_key(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('[evaluate]\nmodel = "open_clip:ViT-B-32:random"\nfusoin = "sum"\n')
    with pytest.raises(ConfigError, match="unknown key 'fusoin'; did you mean 'fusion'"):
        load_eval_config(path)
