"""Each loss term on small tensors whose values are computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from wit_retrieval.models.losses import duplicate_mask, info_nce, spread_out, truncate

E = math.e
ONE = torch.tensor(1.0)


def eye2():
    return torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_info_nce_in_batch_negatives():
    loss = info_nce(eye2(), eye2(), ONE)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_temperature_scales_logits():
    loss = info_nce(eye2(), eye2(), torch.tensor(10.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-10)), abs=1e-6)


def test_duplicate_mask_removes_shared_targets_and_queries():
    mask = duplicate_mask(["q1", "q2", "q1"], ["a", "b", "c"])
    assert mask.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
    mask = duplicate_mask(["q1", "q2"], ["a", "a"])
    assert mask.tolist() == [[False, True], [True, False]]
    # both pairs share their target: no negative is left, so the loss is -log(1) = 0
    assert info_nce(eye2(), eye2(), ONE, duplicates=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_negative_weight_is_exp_alpha_sim_and_not_differentiated():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    hard = torch.tensor([[[0.6, 0.8]]], requires_grad=True)
    loss = info_nce(q, p, ONE, hard_negatives=hard, hard_alpha=5.0)
    expected = -math.log(E / (E + math.exp(5 * 0.6) * math.exp(0.6)))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    # d/dh of log(e + w e^{q.h}) with w constant: w e^{s} / Z * q
    w_es = math.exp(3.0) * math.exp(0.6)
    assert hard.grad[0, 0, 0].item() == pytest.approx(w_es / (E + w_es), abs=1e-5)
    assert hard.grad[0, 0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_invalid_hard_negatives_are_ignored():
    hard = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    valid = torch.tensor([[False], [False]])
    with_hard = info_nce(eye2(), eye2(), ONE, hard_negatives=hard, hard_valid=valid)
    assert with_hard.item() == pytest.approx(info_nce(eye2(), eye2(), ONE).item(), abs=1e-6)


def test_same_tower_negatives_add_query_query_terms():
    loss = info_nce(eye2(), eye2(), ONE, same_tower=True)
    # row 0: positive e^1, in-batch negative e^0, other query e^(q0.q1)=e^0
    assert loss.item() == pytest.approx(-math.log(E / (E + 2)), abs=1e-6)


def test_symmetric_averages_both_directions():
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    forward = info_nce(q, p, ONE)
    backward = info_nce(p, q, ONE)
    assert info_nce(q, p, ONE, symmetric=True).item() == pytest.approx((forward + backward).item() / 2, abs=1e-6)


def test_spread_out_is_mean_squared_off_diagonal_cosine():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert spread_out(x).item() == pytest.approx((0 + 0.36 + 0.64) * 2 / 6, abs=1e-6)
    assert spread_out(x[:1]).item() == 0.0


def test_matryoshka_truncation_renormalises_the_prefix():
    out = truncate(torch.tensor([[3.0, 4.0, 12.0]]), 2)
    assert out[0].tolist() == pytest.approx([0.6, 0.8])
