"""Distillation from cached teacher embeddings: losses on hand-computed tensors, the cache, the batch terms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from wit_retrieval.errors import ConfigError
from wit_retrieval.io.embeddings import write_embeddings
from wit_retrieval.models.distill import (
    DistillConfig,
    TeacherCache,
    distill_loss,
    distill_terms,
    load_teacher,
)

NAN = float("nan")


def test_cosine_mse_and_similarity_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # cosines 1 and 0 -> losses 0 and 1
    assert distill_loss(student, teacher, "cosine").item() == pytest.approx(0.5)
    # elementwise squared errors (0, 0, 1, 1) -> mean 0.5
    assert distill_loss(student, teacher, "mse").item() == pytest.approx(0.5)
    # similarity matrices I and all-ones differ by 1 in 2 of 4 entries
    assert distill_loss(student, teacher, "similarity").item() == pytest.approx(0.5)
    diagonal = torch.tensor([[1.0, 1.0]]) / math.sqrt(2)
    assert distill_loss(diagonal, torch.tensor([[1.0, 0.0]]), "cosine").item() == pytest.approx(1 - 1 / math.sqrt(2))
    # teacher vectors are compared after normalisation: scale does not matter
    assert distill_loss(student, 5 * student, "mse").item() == pytest.approx(0.0)


def test_nan_rows_are_skipped_and_gradients_flow():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0], [NAN, NAN]])
    loss = distill_loss(student, teacher, "cosine")
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert student.grad[1].abs().sum() == 0 and student.grad[0].abs().sum() > 0
    none = distill_loss(student, torch.full((2, 2), NAN), "mse")
    assert none.item() == 0.0 and none.requires_grad


def test_width_mismatch_needs_similarity():
    student, teacher = torch.eye(3, 4), torch.eye(3, 8)
    with pytest.raises(ConfigError, match="similarity"):
        distill_loss(student, teacher, "cosine")
    assert distill_loss(student, teacher, "similarity").item() == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="kind"):
        DistillConfig(kind="kl")
    with pytest.raises(ConfigError, match="on must be"):
        DistillConfig(on="images")


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_teacher_cache_lookup_and_keep(tmp_path, suffix):
    path = tmp_path / f"teacher{suffix}"
    write_embeddings(path, ["a", "b", "c"], np.array([[3, 4], [0, 2], [1, 0]], np.float32), {"model": "t"})
    cache = TeacherCache(path)
    got = cache.lookup(["c", "x", "a"])
    assert got.shape == (3, 2) and torch.isnan(got[1]).all()
    torch.testing.assert_close(got[[0, 2]], torch.tensor([[1.0, 0.0], [0.6, 0.8]]))
    assert cache.coverage(["a", "x"]) == 0.5
    kept = TeacherCache(path, keep={"b", "zz"})
    assert len(kept) == 1 and "b" in kept and "a" not in kept
    torch.testing.assert_close(kept.lookup(["b"]), torch.tensor([[0.0, 1.0]]))


def test_teacher_cache_reads_a_folder_of_parts(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_embeddings(folder / "part-00000.parquet", ["a"], np.array([[1, 0, 0]], np.float32))
    write_embeddings(folder / "part-00001.parquet", ["b"], np.array([[0, 0, 2]], np.float32))
    cache = TeacherCache(folder, keep=["b", "a"])
    torch.testing.assert_close(cache.lookup(["a", "b"]), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))


@dataclass(frozen=True)
class Sample:
    query_id: str
    target: str


def test_batch_terms_and_loading(tmp_path):
    path = tmp_path / "teacher.parquet"
    write_embeddings(path, ["img1", "img2", "q1"], np.array([[1, 0], [0, 1], [0, 1]], np.float32))
    config = DistillConfig(teacher_embeddings=str(path), weight=0.5, kind="cosine", on="both")
    teacher = load_teacher(config, [Sample("q1", "img1"), Sample("q2", "img2")])
    assert len(teacher) == 3
    positives = torch.tensor([[1.0, 0.0], [1.0, 0.0]])   # img1 matches, img2 is orthogonal: mean 0.5
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])     # q1 orthogonal (1), q2 has no teacher row
    total, parts = distill_terms(teacher, config, queries=queries, query_ids=["q1", "q2"], positives=positives,
                                 target_ids=["img1", "img2"])
    assert parts == {"distill_targets": pytest.approx(0.5), "distill_queries": pytest.approx(1.0)}
    assert total.item() == pytest.approx(0.5 * 1.5)
    assert load_teacher(DistillConfig(), []) is None
    with pytest.raises(ConfigError, match="none of the 1 training targets"):
        load_teacher(DistillConfig(teacher_embeddings=str(path)), [Sample("q", "other")])


def test_config_fits_the_train_config_parser():
    from wit_retrieval.models.train_config import section_from_dict

    config = section_from_dict(DistillConfig, {"teacher_embeddings": "t.parquet", "weight": 2, "kind": "mse"}, "[distill]")
    assert config == DistillConfig("t.parquet", 2.0, "mse") and config.enabled
    with pytest.raises(ConfigError, match="unknown key 'weigth'"):
        section_from_dict(DistillConfig, {"weigth": 1.0}, "[distill]")
