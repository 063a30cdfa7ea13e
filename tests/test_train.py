"""Training: exact resume, checkpoints, logs and plot, hard negatives, clear config errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.test_models_world import make_world, one_torch_thread  # noqa: F401
from wit_retrieval.errors import ConfigError
from wit_retrieval.models.train import train
from wit_retrieval.models.train_config import config_from_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), entities=6, scenes={"train": 24, "val": 8}, size=32)


def _config(world, out, **sections):
    data = {"model": {"base": "open_clip:wit-tiny-vit:random", "fusion": "inject"},
            "data": {"root": str(world.root.root)},
            "optim": {"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2},
            "run": {"out": str(out), "checkpoint_every": 2, "eval_every": 0, "log_every": 1, "threads": 1}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return config_from_dict(data)


@pytest.mark.slow
def test_resume_is_exact(world, tmp_path):
    straight = train(_config(world, tmp_path / "a"), store=world.store)
    first = train(_config(world, tmp_path / "b"), store=world.store, stop_after=2)
    assert first["step"] == 2
    resumed = train(_config(world, tmp_path / "b"), store=world.store)
    assert straight["step"] == resumed["step"] == 4
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a run that did not resume differs (the check above could not pass by accident)
    c = load_file(str(tmp_path / "b" / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["total"] > 0 for r in log)
    assert (tmp_path / "b" / "training.png").read_bytes()[:4] == b"\x89PNG"
    spec = json.loads((tmp_path / "b" / "model" / "retriever.json").read_text())
    assert spec["step"] == 4 and spec["fusion"] == "inject" and spec["training_datasets"][0].startswith("MMIR:")


@pytest.mark.slow
def test_options_validation_and_hard_negatives(world, tmp_path):
    from wit_retrieval.io.runs import write_trec
    from wit_retrieval.models.train_data import read_queries

    queries = read_queries(world.root.root, "train")
    targets = [q["target_image_id"] for q in queries]
    run = {q["query_id"]: [(t, 1.0 / (n + 1)) for n, t in enumerate(targets[:5])] for q in queries}
    write_trec(run, tmp_path / "first.trec")
    config = _config(world, tmp_path / "out", optim={"steps": 2, "grad_accum": 2, "grad_checkpointing": True},
                     loss={"hard_negatives": str(tmp_path / "first.trec"), "hard_negatives_per_query": 2,
                           "spread_out_weight": 0.1, "matryoshka_dims": [32], "same_tower_negatives": True},
                     model={"fusion": "combiner", "freeze_text": True},
                     run={"eval_every": 2, "checkpoint_every": 0})
    summary = train(config, store=world.store)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert {"loss", "loss@32", "spread_out", "total"} <= set(log[0])
    assert set(summary["val"]) == {"R@1", "R@5", "R@10", "MRR@10"} and 0 <= summary["val"]["R@10"] <= 1
    with pytest.raises(ConfigError, match="exceeds the embedding width"):
        train(_config(world, tmp_path / "bad", loss={"matryoshka_dims": [128]}), store=world.store)
    with pytest.raises(ConfigError, match="one batch"):
        train(_config(world, tmp_path / "bad2", optim={"batch_size": 100}), store=world.store)


@pytest.mark.slow
def test_distillation_from_cached_teacher_embeddings(world, tmp_path):
    import numpy as np

    from wit_retrieval.io.embeddings import write_embeddings
    from wit_retrieval.models.train_data import read_queries

    queries = read_queries(world.root.root, "train")
    ids = [q["query_id"] for q in queries] + sorted({q["target_image_id"] for q in queries})
    teacher = np.random.default_rng(0).standard_normal((len(ids), 48)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    write_embeddings(tmp_path / "teacher.parquet", ids, teacher, {"model": "a teacher"})
    config = _config(world, tmp_path / "out", optim={"steps": 3},
                     distill={"teacher_embeddings": str(tmp_path / "teacher.parquet"), "kind": "similarity",
                              "on": "both", "weight": 0.5})
    train(config, store=world.store)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert {"distill_targets", "distill_queries"} <= set(log[0])
    assert all(r["total"] > r["loss"] for r in log)  # the distillation term is part of the objective
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["distill"]["kind"] == "similarity"
