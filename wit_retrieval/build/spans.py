"""The `spans` linker: entity spans a user brings instead of the gazetteer's."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..errors import InputError
from .linker import LINKERS, LinkerSpec, Span, leftmost_longest


class SpansLinker:
    """Spans a user brings: JSONL lines `{row_id, start, end, entity_id}`.

    `row_id` is the query id the build gives the row: `ids.query_id(split, image_url,
    page_url, reference_description)`. Offsets are Python character offsets in the
    reference description, end exclusive. Overlapping spans keep the leftmost-longest.
    """

    def __init__(self, spec: LinkerSpec):
        self.spec = spec
        self.spans: dict[str, list[Span]] = defaultdict(list)
        path = Path(spec.spans_path)
        if not path.exists():
            raise InputError("spans file not found", path=str(path))
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    row_id, span = _parse_span(line, str(path), number)
                    self.spans[row_id].append(span)

    def link_batch(self, texts: list[str], languages: list[str], row_ids: list[str]) -> list[list[Span]]:
        """link() row by row."""
        return [self.link(text, language, row_id) for text, language, row_id in zip(texts, languages, row_ids)]

    def link(self, text: str, language: str, row_id: str = "") -> list[Span]:
        """The spans given for `row_id` that fit inside `text`."""
        spans = [s for s in self.spans.get(row_id, ()) if 0 <= s[0] < s[1] <= len(text)]
        return leftmost_longest(spans)


def _parse_span(line: str, path: str, number: int) -> tuple[str, Span]:
    try:
        item = json.loads(line)
        return str(item["row_id"]), (int(item["start"]), int(item["end"]), str(item["entity_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"not a span ({exc}); each line must be JSON with row_id, start, end, entity_id",
            path=path, line=number,
        ) from None


LINKERS.register("spans")(SpansLinker)
