"""docs/formats.md shows every canonical column, rendered from schema.py."""

from __future__ import annotations

from wit_retrieval.schemadoc import render_tables_markdown, undocumented

from .conftest import REPO


def test_every_column_is_described():
    assert undocumented() == []


def test_formats_doc_tables_are_in_sync():
    text = (REPO / "docs" / "formats.md").read_text(encoding="utf-8")
    section = text.split("<!-- TABLES START -->\n", 1)[1].split("<!-- TABLES END -->", 1)[0]
    assert section == render_tables_markdown(), "docs/formats.md is stale: run `make docs`"
