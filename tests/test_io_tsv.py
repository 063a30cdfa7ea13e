"""The header-driven TSV reader: real WIT rows, malformed rows, gz, byte literals, both paths."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wit_retrieval.errors import InputError
from wit_retrieval.io import tsv
from wit_retrieval.io.tsv import RowErrors, decode_byte_literal, read_tsv_rows, read_wit_batches
from wit_retrieval.schema import WIT_COLUMNS


def _rows(batches) -> list[dict]:
    return [row for b in batches for row in b.to_pylist()]


def _wit_line(i: int, *, multiline: bool = False) -> str:
    context = f'"Page {i} first line\nsecond line with a ""quote"" and\ttab"' if multiline else f"Page {i}"
    fields = [
        "en", f"https://en.wikipedia.org/wiki/P{i}", f"https://upload.wikimedia.org/wikipedia/commons/a/ab/I{i}.jpg",
        f"P {i}", "", f"P {i}", f"Reference {i}", "", "", "image/jpeg", str(100 + i), str(200 + i),
        "true" if i % 2 else "false", "false", "true", context, "",
    ]
    return "\t".join(fields) + "\n"


def _write(path, lines: list[str]) -> None:
    text = "\t".join(WIT_COLUMNS) + "\n" + "".join(lines)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


BAD_UNCLOSED = "en\thttps://en.wikipedia.org/wiki/Bad\tx\tBad\t\t\t\t\t\timage/png\t1\t2\ttrue\ttrue\ttrue\t\"never closed\n"


def test_real_sample(wit_fixtures):
    errors = RowErrors()
    rows = _rows(read_wit_batches(wit_fixtures / "wit_train_sample.tsv", errors=errors))
    assert errors.count == 0
    assert [r["language"] for r in rows] == ["es", "de", "ru"]
    assert [r["is_main_image"] for r in rows] == [False, True, False]
    assert rows[0]["caption_reference_description"] is None
    assert "\nEl símbolo" in rows[0]["context_page_description"]
    assert rows[1]["original_height"] == 1636 and rows[1]["original_width"] == 2000
    assert rows[2]["page_url"].startswith("https://ru.wikipedia.org/wiki/%D0%A3")
    assert rows[2]["page_title"] == "Украинская гривна"


def test_real_sample_dict_rows_have_lines(wit_fixtures):
    rows = list(read_tsv_rows(wit_fixtures / "wit_train_sample.tsv"))
    assert [r["_line"] for r in rows] == [2, 4, 5]  # row 1 spans lines 2-3
    assert rows[1]["is_main_image"] is True and rows[1]["attribution_passes_lang_id"] is False


def test_real_truncated_file_reports_one_bad_row(wit_fixtures):
    path = wit_fixtures / "wit_test_truncated.tsv"
    errors = RowErrors()
    assert _rows(read_wit_batches(path, errors=errors)) == []
    assert errors.count == 1
    bad = errors.samples[0]
    assert bad.path == str(path) and bad.line == 2 and "unclosed" in bad.reason
    assert "wit_test_truncated.tsv:2" in errors.summary()
    json.dumps(errors.to_dict())


@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
def test_malformed_row_in_the_middle_keeps_every_good_row(tmp_path, suffix):
    lines = [_wit_line(i, multiline=i % 3 == 0) for i in range(20)]
    lines.insert(10, BAD_UNCLOSED)
    path = tmp_path / f"mid{suffix}"
    _write(path, lines)
    errors = RowErrors()
    rows = _rows(read_wit_batches(path, errors=errors))
    assert [r["page_title"] for r in rows] == [f"P {i}" for i in range(20)]
    assert errors.count == 1
    expected_line = 2 + sum(line.count("\n") for line in lines[:10])
    assert errors.samples[0].line == expected_line
    assert rows[12]["context_page_description"] == 'Page 12 first line\nsecond line with a "quote" and\ttab'
    dict_rows = list(read_tsv_rows(path))
    assert [r["page_title"] for r in dict_rows] == [r["page_title"] for r in rows]


def test_fallback_after_fast_batches_yields_no_duplicates(tmp_path, monkeypatch):
    # Tiny segments: the fast path yields early batches, then fails on the bad rows' segments.
    monkeypatch.setattr(tsv, "_SEGMENT_BYTES", 2048)
    lines = [_wit_line(i, multiline=i % 5 == 0) for i in range(300)]
    lines.insert(250, BAD_UNCLOSED)
    lines.insert(120, "en\tonly\tthree fields\n")
    path = tmp_path / "late.tsv"
    _write(path, lines)
    errors = RowErrors()
    batches = list(read_wit_batches(path, errors=errors, batch_rows=50))
    assert len(batches) > 3 and all(b.num_rows <= 50 for b in batches)
    titles = [r["page_title"] for r in _rows(batches)]
    assert titles == [f"P {i}" for i in range(300)]
    assert errors.count == 2
    assert {s.reason.split(" ")[0] for s in errors.samples} == {"expected", "unclosed"}


def test_bad_values_and_invalid_utf8_are_reported_not_fatal(tmp_path):
    good = [_wit_line(i) for i in range(4)]
    bad_int = _wit_line(9).replace("\t109\t", "\tlarge\t")
    bad_bool = _wit_line(8).replace("\tfalse\ttrue\t", "\tmaybe\ttrue\t")
    path = tmp_path / "values.tsv"
    _write(path, [good[0], bad_int, good[1], bad_bool, good[2]])
    with open(path, "ab") as f:
        f.write(_wit_line(3).replace("P 3\t", "P \xff3\t").encode("latin-1"))
    errors = RowErrors()
    rows = _rows(read_wit_batches(path, errors=errors))
    assert [r["language"] for r in rows] == ["en"] * 4
    assert rows[3]["page_title"] == "P \ufffd3"
    assert errors.count == 2
    assert any("original_height" in s.reason for s in errors.samples)


def test_columns_subset_and_types(tmp_path):
    path = tmp_path / "sub.tsv.gz"
    _write(path, [_wit_line(i) for i in range(5)])
    batches = list(read_wit_batches(path, columns=["image_url", "original_width", "is_main_image"]))
    table = pa.Table.from_batches(batches)
    assert table.schema.names == ["image_url", "original_width", "is_main_image"]
    assert table.schema.field("original_width").type == pa.int64()
    assert table.column("is_main_image").to_pylist() == [False, True, False, True, False]
    with pytest.raises(InputError, match="no column"):
        list(read_wit_batches(path, columns=["nope"]))


def test_huge_field_retries_with_bigger_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(tsv, "_BLOCK_SIZE", 1024)
    big = "x" * 20000
    lines = [_wit_line(0), _wit_line(1).replace("Page 1", big), _wit_line(2)]
    path = tmp_path / "huge.tsv"
    _write(path, lines)
    errors = RowErrors()
    rows = _rows(read_wit_batches(path, errors=errors))
    assert len(rows) == 3 and rows[1]["context_page_description"] == big and errors.count == 0


def test_byte_literals():
    assert decode_byte_literal("b'Z\\xc3\\xbcrich'") == "Zürich"
    assert decode_byte_literal('b"it\'s"') == "it's"
    assert decode_byte_literal("b'plain'") == "plain"
    assert decode_byte_literal("bare") == "bare"
    assert decode_byte_literal("b'unterminated") == "b'unterminated"
    assert decode_byte_literal(None) is None


def test_released_style_file_byte_literals_and_variable_fields(tmp_path):
    header = "image_url\tmasked_text\tentity_image_urls\n"
    body = (
        "b'https://upload.wikimedia.org/wikipedia/commons/a/ab/Z\\xc3\\xbcrich.jpg'\tb'[MASK_0] at night'\tu1\n"
        "https://upload.wikimedia.org/x.jpg\tplain text\n"
        "b'https://upload.wikimedia.org/y.jpg'\tb'[MASK_0] and [MASK_1]'\tu1\tu2\tu3\n"
    )
    path = tmp_path / "mmir_dataset_test.tsv"
    path.write_text(header + body, encoding="utf-8")
    errors = RowErrors()
    rows = _rows(read_wit_batches(path, errors=errors))
    assert errors.count == 0
    assert rows[0]["image_url"].endswith("/Zürich.jpg") and rows[0]["masked_text"] == "[MASK_0] at night"
    assert rows[1]["entity_image_urls"] is None
    assert rows[2]["image_url"] == "https://upload.wikimedia.org/y.jpg"
    dict_rows = list(read_tsv_rows(path))
    assert dict_rows[2]["_extra"] == ["u2", "u3"]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        list(read_wit_batches(tmp_path / "absent.tsv"))
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(InputError, match="empty"):
        list(read_wit_batches(tmp_path / "empty.tsv"))


@pytest.mark.parametrize("segment", [97, 700, 4096])
def test_segment_boundaries_never_split_or_duplicate_rows(tmp_path, monkeypatch, segment):
    monkeypatch.setattr(tsv, "_SEGMENT_BYTES", segment)
    lines = [_wit_line(i, multiline=i % 2 == 0) for i in range(60)]
    for at in (45, 30, 7):  # unclosed quotes whose rows run across segment ends
        lines.insert(at, BAD_UNCLOSED.replace("never closed\n", "never closed\nstill open\n"))
    path = tmp_path / "seg.tsv.gz"
    _write(path, lines)
    errors = RowErrors()
    rows = _rows(read_wit_batches(path, errors=errors, columns=["page_title", "context_page_description"]))
    assert [r["page_title"] for r in rows] == [f"P {i}" for i in range(60)]
    assert rows[58]["context_page_description"].endswith('a "quote" and\ttab')
    assert errors.count == 3
    bad = [k for k, line in enumerate(lines) if line.startswith("en\thttps://en.wikipedia.org/wiki/Bad")]
    assert [s.line for s in errors.samples] == [2 + sum(x.count("\n") for x in lines[:k]) for k in bad]


def test_open_quote_in_last_column_does_not_swallow_rows(tmp_path):
    # pyarrow alone would read rows 3..9 into the last field of the bad row, silently
    bad = _wit_line(99).rstrip("\n") + '"open in the last column\n'
    lines = [_wit_line(i) for i in range(10)]
    lines.insert(3, bad.replace("\tPage 99\t", "\tPage 99\t").replace("P 99", "Bad"))
    path = tmp_path / "last.tsv"
    _write(path, lines)
    errors = RowErrors()
    rows = _rows(read_wit_batches(path, errors=errors))
    assert [r["page_title"] for r in rows] == [f"P {i}" for i in range(10)]
    assert errors.count == 1 and errors.samples[0].line == 5


def _quote(value: str) -> str:
    if any(c in value for c in '\t\n"'):
        return '"' + value.replace('"', '""') + '"'
    return value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.lists(st.text(alphabet='ab "\t\né[]', max_size=8) | st.sampled_from(['b""', "b'a'"]), min_size=3, max_size=3), min_size=1, max_size=25),
    st.integers(40, 400),
)
def test_quoted_values_round_trip_at_any_segment_size(tmp_path, rows, segment):
    path = tmp_path / "rt.tsv"
    lines = ["url\ttext\tnote\tmore"] + [
        "\t".join([f"https://x.org/{i}.jpg", *(_quote(v) for v in row)]) for i, row in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    saved = tsv._SEGMENT_BYTES
    tsv._SEGMENT_BYTES = segment
    try:
        errors = RowErrors()
        got = _rows(read_wit_batches(path, errors=errors))
    finally:
        tsv._SEGMENT_BYTES = saved
    assert errors.count == 0
    # a value spelled as a byte literal (the alphabet can make b"") is decoded; an empty field is null
    expected = [[tsv.decode_byte_literal(v) if v else None for v in row] for row in rows]
    assert [[r["text"], r["note"], r["more"]] for r in got] == expected
    assert [r["url"] for r in got] == [f"https://x.org/{i}.jpg" for i in range(len(rows))]
    robust = [{k: r[k] for k in ("url", "text", "note", "more")} for r in read_tsv_rows(path)]
    assert robust == got


def test_bom_and_crlf(tmp_path):
    path = tmp_path / "crlf.tsv"
    text = "\ufeff" + "\t".join(WIT_COLUMNS) + "\r\n" + "".join(_wit_line(i).replace("\n", "\r\n") for i in range(3))
    path.write_bytes(text.encode("utf-8"))
    rows = _rows(read_wit_batches(path))
    assert [r["language"] for r in rows] == ["en"] * 3 and rows[2]["context_section_description"] is None
    assert [r["page_title"] for r in read_tsv_rows(path)] == ["P 0", "P 1", "P 2"]


def test_truncated_gzip_is_a_clear_input_error(tmp_path):
    whole = tmp_path / "whole.tsv.gz"
    _write(whole, [_wit_line(i) for i in range(3000)])
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.tsv.gz: unreadable after line .*truncated or corrupt"):
        list(read_wit_batches(cut))
