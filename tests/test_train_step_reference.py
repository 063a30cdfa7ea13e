"""The training step's loss and gradients against a naive reference computation.

The step embeds every distinct image of a micro-batch in ONE image-tower call (targets and entity
images together, an image shared by several queries once), indexes entity features out of it,
and computes the loss of its rows against the (gathered) batch with key-hash duplicate masks.
The reference below embeds each query's target and entity images one query at a time and takes
`losses.info_nce` (+ Matryoshka and spread-out terms) of the whole batch as the formulas read.
Both must give the same loss parts and the same gradient on every parameter (1e-5), so that a
faster step can never change what is trained.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tests.test_models_world import make_world, one_torch_thread  # noqa: F401
from wit_retrieval.models.inject import tokenize_with_slots
from wit_retrieval.models.losses import duplicate_mask, info_nce, spread_out, truncate
from wit_retrieval.models.train import prepare
from wit_retrieval.models.train_config import config_from_dict
from wit_retrieval.models.train_data import QueryTokens, make_batch
from wit_retrieval.models.train_step import encode, step_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    base = tmp_path_factory.mktemp("step-reference")
    world = make_world(base, entities=6, scenes={"train": 16, "val": 4}, size=32)
    config = config_from_dict({
        "model": {"base": "open_clip:wit-tiny-vit:random", "fusion": "inject"},  # LayerNorm only: no batch statistics
        "data": {"root": str(world.root.root), "loader": "memory"},
        "optim": {"steps": 4, "batch_size": 8},
        "loss": {"duplicate_mask": True, "symmetric": True, "matryoshka_dims": [16], "spread_out_weight": 0.3},
        "run": {"out": str(base / "run"), "eval_every": 0, "checkpoint_every": 0, "threads": 1}})
    return prepare(config, world.store, device="cpu")


def _batch_samples(trainer):
    """Eight queries with a repeated query and a shared target (so the duplicate mask has work)."""
    samples = list(trainer.feed.samples[:7])
    samples.append(samples[0])                                  # the same query and target again
    samples[6] = replace(samples[6], target=samples[1].target)  # another query, the same target
    assert any(len([e for e in s.entity_images if e]) > 1 for s in samples)
    return samples


def _reference_loss(trainer, samples) -> dict[str, torch.Tensor]:
    """The loss parts computed one query at a time (separate image-tower calls per query)."""
    model, loader, cfg = trainer.built.model, trainer.feed.loader, trainer.config.loss
    head = model.head("inject")
    queries, positives = [], []
    for sample in samples:
        positives.append(model.image_features(loader.pixels([sample.target]))[0])
        present = [e for e in sample.entity_images if e is not None]
        features = model.image_features(loader.pixels(present))
        entity = torch.zeros(1, len(sample.entity_images), features.shape[1])
        valid = torch.tensor([[e is not None for e in sample.entity_images]])
        entity[0, valid[0]] = features
        tokens, slots = tokenize_with_slots(trainer.built.tokenizer, [sample.masked_text])
        queries.append(F.normalize(head(model.clip, tokens, slots, entity, valid).float(), dim=-1)[0])
    q, p = torch.stack(queries), torch.stack(positives)
    duplicates = duplicate_mask([s.key for s in samples], [s.target for s in samples])
    scale = model.clip.logit_scale.exp()
    parts = {"loss": info_nce(q, p, scale, duplicates=duplicates, symmetric=True)}
    for dim in cfg.matryoshka_dims:
        parts[f"loss@{dim}"] = info_nce(truncate(q, dim), truncate(p, dim), scale, duplicates=duplicates,
                                        symmetric=True)
    parts["spread_out"] = spread_out(q) + spread_out(p)
    parts["total"] = sum(v for k, v in parts.items() if k.startswith("loss")) + cfg.spread_out_weight * parts[
        "spread_out"]
    return parts


def _gradients(model, total: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def test_step_loss_and_gradients_match_a_per_query_reference(trainer):
    model, samples = trainer.built.model, _batch_samples(trainer)
    batch = make_batch(samples, trainer.feed.loader)
    # the step encodes each distinct image once: fewer than one target + its entities per query
    assert batch.pixels.shape[0] < sum(1 + len([e for e in s.entity_images if e]) for s in samples)
    local = encode(trainer, batch)
    _, parts = step_loss(trainer, [local], [local], trainer.world)
    ours = _gradients(model, parts["total"])
    reference = _reference_loss(trainer, samples)
    expected = _gradients(model, reference["total"])
    assert sorted(parts) == sorted(reference)
    for name in parts:
        assert abs(float(parts[name].detach()) - float(reference[name].detach())) < 1e-5, name
    # every trained parameter gets a gradient: both towers, the inject head and the temperature
    assert ours.keys() == expected.keys() and {"clip.logit_scale", "clip.token_embedding.weight"} <= set(ours)
    assert any(n.startswith("clip.visual.") for n in ours) and any(n.startswith("heads.inject.") for n in ours)
    for name, grad in ours.items():
        torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-5, msg=name)
    assert any(float(g.abs().max()) > 1e-3 for g in ours.values())  # gradients that could differ


def test_the_duplicate_mask_changes_the_loss(trainer):
    """The repeated query and shared target are masked: without the mask the reference loss differs."""
    samples = _batch_samples(trainer)
    local = encode(trainer, make_batch(samples, trainer.feed.loader))
    with torch.no_grad():
        _, parts = step_loss(trainer, [local], [local], trainer.world)
        unmasked = info_nce(local.queries, local.positives, trainer.built.model.clip.logit_scale.exp(),
                            symmetric=True)
    assert abs(float(parts["loss"]) - float(unmasked)) > 1e-3


def test_inject_text_tower_cuts_padding_without_changing_features_or_gradients(trainer):
    """The inject head runs the text transformer only up to the batch's last end-of-text token;
    with no entity image injected it must equal open_clip's full-length encode_text exactly."""
    from wit_retrieval.models.inject import _used_length

    model = trainer.built.model
    clip, head = model.clip, model.head("inject")
    texts = [s.masked_text for s in trainer.feed.samples[:8]]
    tokens, slots = tokenize_with_slots(trainer.built.tokenizer, texts)
    assert _used_length(clip, tokens) < tokens.shape[1]  # padding was cut off
    entity = torch.randn(len(texts), 3, clip.text_projection.shape[1])
    nothing = torch.zeros(len(texts), 3, dtype=torch.bool)  # placeholders keep their own word
    weights = torch.randn(len(texts), clip.text_projection.shape[1])
    ours = head(clip, tokens, slots, entity, nothing)
    ours_grads = _gradients(model, (ours * weights).sum())
    full = clip.encode_text(tokens)
    full_grads = _gradients(model, (full * weights).sum())
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
    # the head's own projection is in the graph but unused (zero gradients); the towers' must agree
    assert all(not g.any() for n, g in ours_grads.items() if n.startswith("heads."))
    ours_grads = {n: g for n, g in ours_grads.items() if not n.startswith("heads.")}
    assert ours_grads.keys() == full_grads.keys() and "clip.positional_embedding" in ours_grads
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, full_grads[name], atol=1e-5, rtol=1e-5, msg=name)


def _loss_and_gradients(trainer, batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    local = encode(trainer, batch)
    _, parts = step_loss(trainer, [local], [local], trainer.world)
    return {k: float(v.detach()) for k, v in parts.items()}, _gradients(trainer.built.model, parts["total"])


def test_memory_feed_tokenizes_the_queries_as_the_step_did(trainer):
    """The memory feed's batches carry the inject fusion's tokens and slots of their own texts,
    also in the second epoch, when they come from its per-text cache."""
    feed = trainer.feed
    state = feed.state()
    try:
        batches = [feed.next() for _ in range(2 * len(feed.samples) // feed.batch + 1)]  # into a third epoch
    finally:
        feed.restore(state)
    assert set(feed.tokenize.cache) == {s.masked_text for s in feed.samples}  # each text tokenized once
    for batch in batches:
        tokens, slots = tokenize_with_slots(trainer.built.tokenizer, batch.masked_texts)
        assert batch.text_mode == "placeholder" and batch.tokens is not None
        assert torch.equal(batch.tokens, tokens) and torch.equal(batch.slots, slots)
    assert (slots >= 0).any()  # the slots mark masks: a test that could fail


def test_pre_tokenized_batch_gives_exactly_the_same_loss_and_gradients(trainer):
    samples = _batch_samples(trainer)
    ready = make_batch(samples, trainer.feed.loader, tokenize=QueryTokens("placeholder", trainer.built.tokenizer))
    bare = replace(ready, tokens=None, slots=None, text_mode=None)  # tokenized in the step, as before
    loss, grads = _loss_and_gradients(trainer, ready)
    bare_loss, bare_grads = _loss_and_gradients(trainer, bare)
    assert loss == bare_loss
    assert grads.keys() == bare_grads.keys() and all(torch.equal(grads[n], bare_grads[n]) for n in grads)
    # the step reads the batch's tokens (other tokens, another loss) unless they were made for
    # another fusion's text mode: then it tokenizes the texts itself
    shifted = replace(ready, tokens=ready.tokens.roll(1, 0), slots=ready.slots.roll(1, 0))
    assert _loss_and_gradients(trainer, shifted)[0]["total"] != loss
    assert _loss_and_gradients(trainer, replace(shifted, text_mode="neutral"))[0] == loss
