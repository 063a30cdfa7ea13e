"""Masking: replace each entity mention with `[MASK_i]`, i numbered by first occurrence."""

from __future__ import annotations

from dataclasses import dataclass

from .linker import Span


@dataclass(frozen=True)
class Masked:
    """A masked reference description and what each mask stands for."""

    masked_text: str
    entity_ids: list[str]  # index i is [MASK_i]
    mentions: list[tuple]  # (mask, entity_id, surface, start, end), offsets in the original text
    context: str  # the text outside the masks (for the word-count filter)


def mask_text(text: str, spans: list[Span]) -> Masked:
    """Mask non-overlapping, sorted spans; repeated entities reuse their id; all else is kept."""
    order: dict[str, int] = {}
    pieces: list[str] = []
    outside: list[str] = []
    mentions: list[dict] = []
    cursor = 0
    for start, end, entity_id in spans:
        index = order.setdefault(entity_id, len(order))
        pieces.append(text[cursor:start])
        outside.append(text[cursor:start])
        pieces.append(f"[MASK_{index}]")
        mentions.append((index, entity_id, text[start:end], start, end))
        cursor = end
    pieces.append(text[cursor:])
    outside.append(text[cursor:])
    return Masked("".join(pieces), list(order), mentions, " ".join(outside))
