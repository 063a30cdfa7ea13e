"""Small hand-made build inputs in the real formats (WIT TSV, MySQL dump .sql.gz), and their checks."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from wit_retrieval.io.wikidump import DEFAULT_COLUMNS, read_page_props, read_pages, read_redirects, sql_quote
from wit_retrieval.schema import WIT_COLUMNS


def wit_row(language: str, title: str, image: str, text: str | None, *, main: bool = False) -> dict:
    """A WIT row with the fields the build reads; the other columns are left empty."""
    url_title = title.replace(" ", "_")
    return {
        "language": language, "page_url": f"https://{language}.wikipedia.org/wiki/{url_title}",
        "image_url": f"https://upload.wikimedia.org/wikipedia/commons/a/ab/{image}", "page_title": title,
        "caption_reference_description": text, "mime_type": "image/jpeg", "original_height": 100,
        "original_width": 200, "is_main_image": main,
    }


def write_wit(path: Path, rows: list[dict]) -> Path:
    """A WIT TSV(.gz) with the 17-column header, `true`/`false` booleans and WIT quoting."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", quotechar='"', lineterminator="\n")
    writer.writerow(WIT_COLUMNS)
    for row in rows:
        values = []
        for column in WIT_COLUMNS:
            value = row.get(column)
            values.append("" if value is None else ("true" if value is True else "false" if value is False else value))
        writer.writerow(values)
    data = buffer.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def _insert(table: str, rows: list[tuple]) -> str:
    width = len(DEFAULT_COLUMNS[table])
    tuples = ",".join("(" + ",".join(sql_quote(v) for v in (tuple(r) + (None,) * (width - len(r)))) + ")" for r in rows)
    return f"INSERT INTO `{table}` VALUES {tuples};\n" if rows else ""


def write_dumps(folder: Path, lang: str, pages, props=(), redirects=(), *, nested: bool = True) -> Path:
    """page/page_props/redirect dumps of one language, in {lang}wiki/latest/ (nested) or flat."""
    target = folder / f"{lang}wiki" / "latest" if nested else folder
    target.mkdir(parents=True, exist_ok=True)
    pages = [(pid, ns, title, int(redirect), 0, 0.5, "20240101000000") for pid, ns, title, redirect in pages]
    redirects = [(src, ns, title, "", "") for src, ns, title in redirects]
    for table, rows in (("page", pages), ("page_props", [(*p, None) for p in props]), ("redirect", redirects)):
        text = "-- MySQL dump\n" + _insert(table, list(rows))
        (target / f"{lang}wiki-latest-{table}.sql.gz").write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    return target


def test_written_dumps_read_back(tmp_path):
    folder = write_dumps(tmp_path, "en", [(1, 0, "O'Brien_(band)", False)], [(1, "page_image", "A b.jpg")],
                         [(2, 0, "O'Brien_(band)")])
    assert list(read_pages(folder / "enwiki-latest-page.sql.gz"))[0].title == "O'Brien_(band)"
    assert list(read_page_props(folder / "enwiki-latest-page_props.sql.gz"))[0].value == "A b.jpg"
    assert list(read_redirects(folder / "enwiki-latest-redirect.sql.gz"))[0].from_id == 2
