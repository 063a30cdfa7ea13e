"""Fusions: how a query (masked text + one image per mask) becomes one embedding.

Every fusion works on a `QueryBatch` of tensors, so training (entity features with gradients)
and evaluation (cached entity embeddings) run the very same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import Registry
from .inject import MASK_PATTERN, tokenize_with_slots
from .retriever import Retriever

# What text-only puts in a mask's place: a word that names no entity.
NEUTRAL_WORD = "something"


@dataclass
class QueryBatch:
    """Tensors of a batch of queries; entity [B, M, D] are L2-normalised image embeddings."""

    tokens: torch.Tensor
    slots: torch.Tensor | None
    entity: torch.Tensor
    entity_valid: torch.Tensor

    def to(self, device) -> QueryBatch:
        """The batch on `device`."""
        slots = None if self.slots is None else self.slots.to(device)
        return QueryBatch(self.tokens.to(device), slots, self.entity.to(device), self.entity_valid.to(device))


@dataclass(frozen=True)
class Fusion:
    """A registered way of encoding queries."""

    name: str
    text_mode: str          # neutral | names | placeholder: what replaces each [MASK_i]
    uses_images: bool
    head: str | None        # the Retriever head it needs, if any
    encode: Callable[[Retriever, QueryBatch], torch.Tensor]
    description: str


FUSIONS: Registry[Fusion] = Registry("fusion")


def get_fusion(name: str) -> Fusion:
    """The fusion registered as `name` (did-you-mean on unknown names)."""
    return FUSIONS.create(name)


def fill_masks(masked_text: str, names: Sequence[str | None] | None = None) -> str:
    """Replace `[MASK_i]` by entity i's name, or by the neutral word where no name is known."""

    def replace(match) -> str:
        i = int(match.group(1))
        if names is not None and i < len(names) and names[i]:
            return names[i]
        return NEUTRAL_WORD

    return MASK_PATTERN.sub(replace, masked_text)


def pad_entities(embeddings: Sequence[np.ndarray | None], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-query entity embeddings [n_i, D] (rows of NaN = missing) into [B, M, D] + valid mask."""
    width = max([1] + [0 if e is None else len(e) for e in embeddings])
    entity = torch.zeros(len(embeddings), width, dim)
    valid = torch.zeros(len(embeddings), width, dtype=torch.bool)
    for row, emb in enumerate(embeddings):
        if emb is None or len(emb) == 0:
            continue
        emb_t = torch.as_tensor(np.asarray(emb, dtype=np.float32))
        ok = ~torch.isnan(emb_t).any(dim=1)
        entity[row, : len(emb_t)] = torch.nan_to_num(emb_t)
        valid[row, : len(emb_t)] = ok
    return entity, valid


def tokenize_queries(text_mode: str, tokenizer, masked_texts: Sequence[str],
                     names: Sequence[Sequence[str | None]] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(tokens, slots) of the texts as a fusion of `text_mode` reads them (slots: placeholder mode only).

    Depends on nothing else, so training's data loaders run it in their workers (train_data.QueryTokens).
    """
    if text_mode == "placeholder":
        return tokenize_with_slots(tokenizer, list(masked_texts))
    if text_mode == "names":
        texts = [fill_masks(t, names[i] if names else None) for i, t in enumerate(masked_texts)]
    else:
        texts = [fill_masks(t) for t in masked_texts]
    return tokenizer(texts), None


def make_query_batch(fusion: Fusion, tokenizer, masked_texts: Sequence[str], entity: torch.Tensor,
                     entity_valid: torch.Tensor, names: Sequence[Sequence[str | None]] | None = None, *,
                     tokens: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> QueryBatch:
    """Tokenize the texts the way `fusion` wants them (or take `tokens`, made so) and bundle the entity tensors."""
    ids, slots = tokens if tokens is not None else tokenize_queries(fusion.text_mode, tokenizer, masked_texts, names)
    return QueryBatch(ids, slots, entity, entity_valid)


def mean_entity(batch: QueryBatch) -> torch.Tensor:
    """Normalised mean of each query's valid entity embeddings (zero when it has none)."""
    weights = batch.entity_valid.to(batch.entity.dtype).unsqueeze(-1)
    total = (batch.entity * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return F.normalize(total, dim=-1)


def _register(name: str, text_mode: str, uses_images: bool, head: str | None, description: str):
    def decorate(encode: Callable[[Retriever, QueryBatch], torch.Tensor]):
        fusion = Fusion(name, text_mode, uses_images, head, encode, description)
        FUSIONS.register(name)(lambda: fusion)
        return encode

    return decorate


@_register("text-only", "neutral", False, None, "the masked text, masks replaced by a neutral word")
def _text_only(model: Retriever, batch: QueryBatch) -> torch.Tensor:
    return model.text_features(batch.tokens)


@_register("names", "names", False, None, "masks replaced by the entities' names (a reference, not MMIR)")
def _names(model: Retriever, batch: QueryBatch) -> torch.Tensor:
    return model.text_features(batch.tokens)


@_register("image-only", "neutral", True, None, "mean of the entity image embeddings")
def _image_only(model: Retriever, batch: QueryBatch) -> torch.Tensor:
    return mean_entity(batch)


@_register("sum", "neutral", True, None, "normalised text plus mean entity image (UniIR score-level fusion)")
def _sum(model: Retriever, batch: QueryBatch) -> torch.Tensor:
    return F.normalize(model.text_features(batch.tokens) + mean_entity(batch), dim=-1)


@_register("combiner", "neutral", True, "combiner", "CLIP4Cir Combiner head over text and mean entity image")
def _combiner(model: Retriever, batch: QueryBatch) -> torch.Tensor:
    combined = model.head("combiner")(model.text_features(batch.tokens), mean_entity(batch))
    return F.normalize(combined.float(), dim=-1)


@_register("inject", "placeholder", True, "inject", "entity images injected as tokens at their masks (Pic2Word)")
def _inject(model: Retriever, batch: QueryBatch) -> torch.Tensor:
    head = model.head("inject")
    features = head(model.clip, batch.tokens, batch.slots, batch.entity, batch.entity_valid)
    return F.normalize(features.float(), dim=-1)
