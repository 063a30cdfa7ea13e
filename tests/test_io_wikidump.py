"""MediaWiki SQL dump reader: tokenizer round-trips, chunk boundaries, CREATE TABLE column orders."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wit_retrieval.errors import InputError
from wit_retrieval.io.tsv import RowErrors
from wit_retrieval.io.wikidump import (
    DumpReader,
    Page,
    PageProp,
    Redirect,
    iter_dump_tuples,
    read_page_props,
    read_pages,
    read_redirects,
    sql_quote,
)

PAGE_CREATE = """CREATE TABLE `page` (
  `page_id` int(8) unsigned NOT NULL AUTO_INCREMENT,
  `page_namespace` int(11) NOT NULL DEFAULT 0,
  `page_title` varbinary(255) NOT NULL DEFAULT '',
  `page_is_redirect` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `page_is_new` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `page_random` double unsigned NOT NULL DEFAULT 0,
  `page_touched` binary(14) NOT NULL,
  `page_links_updated` varbinary(14) DEFAULT NULL,
  `page_latest` int(8) unsigned NOT NULL DEFAULT 0,
  `page_len` int(8) unsigned NOT NULL DEFAULT 0,
  `page_content_model` varbinary(32) DEFAULT NULL,
  `page_lang` varbinary(35) DEFAULT NULL,
  PRIMARY KEY (`page_id`),
  KEY `page_len` (`page_len`)
) ENGINE=InnoDB DEFAULT CHARSET=binary ROW_FORMAT=COMPRESSED;
"""


def _insert(table: str, rows: list[tuple]) -> str:
    return f"INSERT INTO `{table}` VALUES " + ",".join(
        "(" + ",".join(sql_quote(v) for v in row) + ")" for row in rows
    ) + ";\n"


def _page(page_id, ns, title, redirect=0):
    return (page_id, ns, title, redirect, 0, 0.123, "20240101000000", None, 5, 100, "wikitext", None)


def _write_gz(path, text: str):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)


def test_pages_with_create_table(tmp_path):
    path = tmp_path / "enwiki-latest-page.sql.gz"
    text = "-- MySQL dump\n/*!40101 SET NAMES binary */;\nDROP TABLE IF EXISTS `page`;\n" + PAGE_CREATE
    text += "LOCK TABLES `page` WRITE;\n"
    text += _insert("page", [_page(1, 0, "Zürich"), _page(2, 0, "It's_(a)_\\test"), _page(3, 1, "Talk")])
    text += _insert("page", [_page(4, 0, "Old_name", 1)]) + "UNLOCK TABLES;\n"
    _write_gz(path, text)
    pages = list(read_pages(path))
    assert pages == [
        Page(1, 0, "Zürich", False), Page(2, 0, "It's_(a)_\\test", False), Page(3, 1, "Talk", False),
        Page(4, 0, "Old_name", True),
    ]


def test_reordered_columns_follow_create_table(tmp_path):
    create = "CREATE TABLE `redirect` (\n  `rd_namespace` int(11) NOT NULL,\n  `rd_from` int(8) NOT NULL,\n" \
             "  `rd_interwiki` varbinary(32) DEFAULT NULL,\n  `rd_title` varbinary(255) NOT NULL,\n" \
             "  `rd_fragment` varbinary(255) DEFAULT NULL,\n  PRIMARY KEY (`rd_from`)\n) ENGINE=InnoDB;\n"
    path = tmp_path / "redirect.sql"
    path.write_text(create + _insert("redirect", [(0, 10, "", "Target", None), (0, 11, "w", "Else", None)]))
    assert list(read_redirects(path)) == [Redirect(10, 0, "Target")]


def test_mysql4_redirect_dump_without_interwiki_reads_as_local_redirects(tmp_path):
    # MySQL-4-era `redirect` tables have 3 columns: no rd_interwiki, so no interwiki redirects
    create = "CREATE TABLE `redirect` (\n  `rd_from` int(8) unsigned NOT NULL default '0',\n" \
             "  `rd_namespace` int(11) NOT NULL default '0',\n  `rd_title` varchar(255) binary NOT NULL default '',\n" \
             "  PRIMARY KEY  (`rd_from`)\n) TYPE=InnoDB;\n"
    path = tmp_path / "redirect.sql"
    path.write_text(create + _insert("redirect", [(10, 0, "Target"), (11, 4, "Else")]))
    assert list(read_redirects(path)) == [Redirect(10, 0, "Target"), Redirect(11, 4, "Else")]
    bare = tmp_path / "bare.sql"  # no CREATE TABLE at all: the documented order, 3 values a tuple
    bare.write_text(_insert("redirect", [(12, 0, "Other")]))
    assert list(read_redirects(bare)) == [Redirect(12, 0, "Other")]


def test_redirect_dump_without_a_required_column_is_refused(tmp_path):
    create = "CREATE TABLE `redirect` (\n  `rd_from` int(8) NOT NULL,\n  `rd_namespace` int(11) NOT NULL\n);\n"
    path = tmp_path / "redirect.sql"
    path.write_text(create + _insert("redirect", [(10, 0)]))
    with pytest.raises(InputError, match="rd_title"):
        list(read_redirects(path))


def test_page_props_without_create_table_use_documented_order(tmp_path):
    path = tmp_path / "page_props.sql.gz"
    rows = [(1, "wikibase_item", "Q42", None), (1, "page_image_free", "A_b.jpg", None),
            (2, "defaultsort", "X", None), (3, "disambiguation", "", None)]
    _write_gz(path, _insert("page_props", rows))
    assert list(read_page_props(path)) == [
        PageProp(1, "wikibase_item", "Q42"), PageProp(1, "page_image_free", "A_b.jpg"),
        PageProp(3, "disambiguation", ""),
    ]
    assert len(list(read_page_props(path, props=None))) == 4


def test_tiny_chunks_cut_tokens_and_multibyte_chars(tmp_path):
    rows = [(i, 0, f"Tïtle_{i}_'q'_\\_\n_(x),y;", 0.5 * i, None) for i in range(50)]
    path = tmp_path / "t.sql"
    path.write_text(PAGE_CREATE + _insert("t", rows[:25]) + _insert("t", rows[25:]), encoding="utf-8")
    for chunk_size in (1, 3, 7, 64):
        got = [values for _, values in DumpReader(path, chunk_size=chunk_size)]
        assert got == rows


def test_unparsable_tuple_is_reported_and_reading_resumes(tmp_path):
    path = tmp_path / "bad.sql"
    path.write_text(_insert("page_props", [(1, "a", "x", None)]) + "INSERT INTO `page_props` VALUES garbage;\n"
                    + _insert("page_props", [(2, "b", "y", None)]))
    errors = RowErrors()
    got = [v for _, v in DumpReader(path, errors=errors)]
    assert got == [(1, "a", "x", None), (2, "b", "y", None)]
    assert errors.count == 1 and errors.samples[0].line == 2
    with pytest.raises(InputError, match="bad.sql:2"):
        list(iter_dump_tuples(path))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet=st.sampled_from("ab'\"\\\n\r\t(),;é\0 "), max_size=12),
                          st.integers(-10**12, 10**12), st.none()), min_size=1, max_size=6),
       st.integers(1, 40))
def test_round_trip_random_values(tmp_path_factory, values, chunk_size):
    path = tmp_path_factory.mktemp("rt") / "x.sql"
    row = tuple(values)
    path.write_bytes(_insert("x", [row, row]).encode("utf-8"))
    assert list(iter_dump_tuples(path)) == [row, row]
    assert [v for _, v in DumpReader(path, chunk_size=chunk_size)] == [row, row]


def test_truncated_gzip_dump_is_a_clear_input_error(tmp_path):
    whole = tmp_path / "whole.sql.gz"
    _write_gz(whole, "".join(_insert("page", [_page(k * 100 + i, 0, f"T{k}_{i}") for i in range(100)])
                             for k in range(50)))
    cut = tmp_path / "cut.sql.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.sql.gz: unreadable after line .*download it again"):
        list(read_pages(cut))
