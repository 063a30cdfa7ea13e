"""Masking: replace each entity mention with `[MASK_i]`, i numbered by first occurrence."""

from __future__ import annotations

from typing import NamedTuple

from .linker import Span
from .names import count_words

_MASKS = [f"[MASK_{i}]" for i in range(64)]


class Masked(NamedTuple):
    """A masked reference description and what each mask stands for."""

    masked_text: str
    entity_ids: list[str]  # index i is [MASK_i]
    mentions: list[tuple]  # (mask, entity_id, surface, start, end), offsets in the original text


def mask_text(text: str, spans: list[Span]) -> Masked:
    """Mask non-overlapping, sorted spans; repeated entities reuse their id; all else is kept."""
    order: dict[str, int] = {}
    pieces: list[str] = []
    mentions: list[tuple] = []
    cursor = 0
    for start, end, entity_id in spans:
        index = order.setdefault(entity_id, len(order))
        pieces.append(text[cursor:start])
        pieces.append(_MASKS[index] if index < len(_MASKS) else f"[MASK_{index}]")
        mentions.append((index, entity_id, text[start:end], start, end))
        cursor = end
    pieces.append(text[cursor:])
    return Masked("".join(pieces), list(order), mentions)


def context_words(masked: Masked) -> int:
    """Words outside the masks: each `[MASK_i]` is exactly one word run, so subtract them."""
    return count_words(masked.masked_text) - len(masked.mentions)
