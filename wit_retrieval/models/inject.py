"""Pic2Word-style injection: each `[MASK_i]` token of the text receives entity i's image.

The masked text is tokenized with a placeholder word per mask; the text transformer is run by
hand so that each placeholder's token embedding is replaced by a learned projection of the
entity's image embedding. Relations between several entities are then read in context by
the text transformer itself, which is what MMIR queries need.
"""

from __future__ import annotations

import re

import torch
from torch import nn

MASK_PATTERN = re.compile(r"\[MASK_(\d+)\]")
PLACEHOLDER = "*"


def mask_order(masked_text: str) -> list[int]:
    """The mask indices of `masked_text` in reading order (repeated masks repeat)."""
    return [int(m.group(1)) for m in MASK_PATTERN.finditer(masked_text)]


def tokenize_with_slots(tokenizer, masked_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens with a placeholder per mask, and slots [B, L]: the mask index at each placeholder, else -1."""
    placeholder_id = tokenizer.encoder[PLACEHOLDER + "</w>"]
    # The placeholder must only come from masks, so stray asterisks in the text are dropped.
    texts = [MASK_PATTERN.sub(f" {PLACEHOLDER} ", t.replace(PLACEHOLDER, " ")) for t in masked_texts]
    tokens = tokenizer(texts)
    slots = torch.full_like(tokens, -1)
    for row, text in enumerate(masked_texts):
        order = mask_order(text)
        positions = (tokens[row] == placeholder_id).nonzero().flatten().tolist()
        # Truncation at the context length can cut trailing masks; zip keeps the ones that fit.
        for mask, pos in zip(order, positions):
            slots[row, pos] = mask
    return tokens, slots


class InjectHead(nn.Module):
    """Projects an image embedding into the text encoder's token space (a two-layer MLP)."""

    def __init__(self, image_dim: int, token_width: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * token_width
        self.proj = nn.Sequential(nn.Linear(image_dim, hidden), nn.GELU(), nn.Linear(hidden, token_width))

    def forward(self, clip: nn.Module, tokens: torch.Tensor, slots: torch.Tensor, entity: torch.Tensor,
                entity_valid: torch.Tensor) -> torch.Tensor:
        """Text features (unnormalised) with entity images injected at their mask slots."""
        if not hasattr(clip, "token_embedding"):
            from ..errors import ConfigError

            raise ConfigError("inject needs an open_clip model with its own text transformer "
                              "(not an HF text tower such as XLM-R)")
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)
        width = x.shape[-1]
        slot_index = slots.clamp(min=0)
        projected = self.proj(entity.to(self.proj[0].weight.dtype)).to(cast_dtype)
        gathered = projected.gather(1, slot_index.unsqueeze(-1).expand(-1, -1, width))
        use = (slots >= 0) & entity_valid.gather(1, slot_index)
        # A mask whose entity image is missing keeps the placeholder word's own embedding.
        x = torch.where(use.unsqueeze(-1), gathered, x)
        return _text_tower_from_embeddings(clip, x, tokens)


def _text_tower_from_embeddings(clip: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip CLIP.encode_text from token embeddings on (positional, transformer, pool, projection).

    Under a causal mask the pooled token (end of text) sees only the tokens before it, so the
    padding after the batch's last pooled position changes nothing: it is cut off before the
    transformer (same features and gradients; MMIR queries fill a fraction of the 77 tokens).
    """
    from open_clip.transformer import text_global_pool

    cast_dtype = clip.transformer.get_cast_dtype()
    length = _used_length(clip, tokens)
    x, tokens = x[:, :length], tokens[:, :length]
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    attn_mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
    x = clip.transformer(x, attn_mask=attn_mask)
    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if clip.text_projection is not None:
        x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
    return x


def _used_length(clip: nn.Module, tokens: torch.Tensor) -> int:
    """Tokens the pooled features depend on: up to the last pooled position, rounded up to 8 (fewer shapes
    for torch.compile); all of them unless the mask is causal and the pool an end-of-text token."""
    full = tokens.shape[1]
    if clip.attn_mask is None or clip.text_pool_type not in ("argmax", "eos"):
        return full
    if clip.text_pool_type == "argmax":
        pooled = tokens.argmax(dim=-1)
    else:
        pooled = (tokens == clip.text_eos_id).int().argmax(dim=-1)
    last = int(pooled.max()) + 1 if len(tokens) else full
    return min(full, -(-last // 8) * 8)
