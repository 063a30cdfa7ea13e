"""Item text as safe HTML: every character from the data is escaped; only our own tags remain."""

from __future__ import annotations

import html
import re

from .tasks import Item

MASK_TOKEN = re.compile(r"\[MASK_(\d+)\]")


def text_html(item: Item) -> str:
    """The item's text as HTML: masked tokens or mention spans marked, all data escaped."""
    if item.mentions:
        return _mentions_html(item.text, item.mentions)
    return _masks_html(item.text)


def _masks_html(text: str) -> str:
    parts, last = [], 0
    for match in MASK_TOKEN.finditer(text):
        parts.append(html.escape(text[last:match.start()]))
        parts.append(f'<mark class="mask">[MASK_{int(match.group(1))}]</mark>')
        last = match.end()
    parts.append(html.escape(text[last:]))
    return "".join(parts)


def _mentions_html(text: str, mentions: list[dict]) -> str:
    """Original text with each mention span marked and tagged with its mask number."""
    parts, last = [], 0
    for m in sorted(mentions, key=lambda m: (m["start"], m["end"])):
        start, end = int(m["start"]), int(m["end"])
        if start < last or end > len(text) or start >= end:
            continue  # overlapping or out-of-range spans are skipped, never mis-rendered
        parts.append(html.escape(text[last:start]))
        parts.append(f'<mark class="mention">{html.escape(text[start:end])}'
                     f'<sup>[{int(m["mask"])}]</sup></mark>')
        last = end
    parts.append(html.escape(text[last:]))
    return "".join(parts)
