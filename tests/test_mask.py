"""Masking: numbering by first occurrence, repeats reuse ids, every other character kept."""

from __future__ import annotations

from wit_retrieval.build.mask import context_words, mask_text
from wit_retrieval.build.names import count_words


def test_numbering_by_first_occurrence_and_reuse():
    text = "Bob met Alice, then Bob left."
    masked = mask_text(text, [(0, 3, "Q2"), (8, 13, "Q1"), (20, 23, "Q2")])
    assert masked.masked_text == "[MASK_0] met [MASK_1], then [MASK_0] left."
    assert masked.entity_ids == ["Q2", "Q1"]
    assert [m[0] for m in masked.mentions] == [0, 1, 0]
    assert masked.mentions[1] == (1, "Q1", "Alice", 8, 13)


def test_other_characters_kept_exactly():
    text = "  «Ünïcödé»\tund\n  Straße —  "
    masked = mask_text(text, [(3, 10, "Q1"), (18, 24, "Q2")])
    assert masked.masked_text == "  «[MASK_0]»\tund\n  [MASK_1] —  "
    # unmasking gives the original text back
    restored = masked.masked_text
    for mention in masked.mentions:
        restored = restored.replace(f"[MASK_{mention[0]}]", mention[2], 1)
    assert restored == text


def test_no_spans_is_identity():
    assert mask_text("plain", []).masked_text == "plain"


def test_word_count_outside_masks():
    assert context_words(mask_text("Bob and Alice", [(0, 3, "a"), (8, 13, "b")])) == 1
    assert context_words(mask_text("東京の[x]", [(0, 2, "a")])) == 2
    assert count_words("東京 に住む") == 5  # each character counts where words are not spaced
    assert count_words(" , . ") == 0
