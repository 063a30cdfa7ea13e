"""io/_fasttsv.c: a segment's string columns split in C equal pyarrow.csv's, or the C part declines.

The invariant: whenever `split` answers, pyarrow parses the same bytes to the same columns;
anything unusual makes it answer None, and the segment goes to pyarrow as before.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wit_retrieval.io import tsv
from wit_retrieval.io.tsv import RowErrors, read_wit_batches
from wit_retrieval.schema import WIT_COLUMNS

if tsv._fasttsv is None:  # pragma: no cover - CI requires the compiled extension
    if os.environ.get("WIT_RETRIEVAL_REQUIRE_C"):
        raise ImportError("wit_retrieval.io._fasttsv is not compiled (WIT_RETRIEVAL_REQUIRE_C is set)")
    pytest.skip("the C extension is not compiled", allow_module_level=True)

HEADER = ["a", "b", "c", "d"]
TYPES = {name: pa.string() for name in HEADER}
QUERY_COLUMNS = ["language", "page_url", "image_url", "page_title", "caption_reference_description"]


def _pyarrow(data: bytes, selected: list[str]) -> pa.Table:
    return pa.Table.from_batches(tsv._parse_segment(data, HEADER, selected, TYPES))


def _same(ours: pa.Table, data: bytes, selected: list[str]) -> bool:
    if ours.num_rows == 0 and not data.strip(b"\n"):
        return True  # nothing but empty lines: pyarrow calls it an empty file; no rows either way
    return ours.equals(_pyarrow(data, selected).cast(ours.schema))


def _c(data: bytes, selected: list[str]) -> pa.Table | None:
    batch = tsv._split_strings(data, HEADER, selected, TYPES)
    return None if batch is None else pa.Table.from_batches([batch])


def _quote(value: str, always: bool) -> str:
    if always or any(c in value for c in '\t\n"') or value.startswith('"'):
        return '"' + value.replace('"', '""') + '"'
    return value


FIELD = st.text(alphabet=st.sampled_from(list("ab é𝄞\t\n\"'\\x")), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.lists(FIELD, min_size=4, max_size=4), st.lists(st.booleans(), min_size=4,
                                                                              max_size=4)), max_size=8),
       selected=st.sampled_from([["a"], ["b", "d"], ["d", "a"], HEADER]), final_newline=st.booleans())
def test_written_rows_split_as_pyarrow_splits_them(rows, selected, final_newline):
    lines = ["\t".join(_quote(v, q) for v, q in zip(values, quoted)) for values, quoted in rows]
    data = "\n".join(lines).encode("utf-8") + (b"\n" if final_newline and lines else b"")
    ours = _c(data, selected)
    assert ours is not None, data
    assert _same(ours, data, selected)


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list('ab\t\n"\ré')), max_size=60),
       selected=st.sampled_from([["a"], ["c", "b"], HEADER]))
def test_whatever_it_answers_pyarrow_agrees_with(text, selected):
    data = text.encode("utf-8")
    ours = _c(data, selected)
    if ours is None:
        return  # declined: pyarrow (then the robust reader) decides, as before
    assert _same(ours, data, selected)


def test_declines_what_pyarrow_must_decide():
    cases = {
        "carriage return": b"x\ty\tz\tw\r\n",
        "too few fields": b"x\ty\tz\n",
        "too few fields, the last given quoted": b'\t\t""',
        "too many fields": b"x\ty\tz\tw\tv\n",
        "open quote": b'x\ty\t"z\tw\n',
        "text after a closing quote": b'x\t"y"q\tz\tw\n',
    }
    for name, data in cases.items():
        assert tsv._fasttsv.split(data, 4, [0, 3]) is None, name
    bad_utf8 = b"x\ty\t\xff\tw\n"
    assert tsv._fasttsv.split(bad_utf8, 4, [2]) is not None  # bytes split fine ...
    assert tsv._split_strings(bad_utf8, HEADER, ["c"], TYPES) is None  # ... but Arrow's UTF-8 check declines


@given(data=st.binary(max_size=300))
def test_newlines_counts_as_bytes_count(data):
    assert tsv._fasttsv.newlines(data) == data.count(b"\n")
    assert tsv._fasttsv.newlines(memoryview(data)[1:-1]) == data[1:-1].count(b"\n")


def test_nulls_and_quotes():
    data = b'\t""\t"a""b"\t"\n"\n\t\t\t\n'
    table = _c(data, HEADER)
    assert table.to_pylist() == [{"a": None, "b": None, "c": 'a"b', "d": "\n"},
                                 {"a": None, "b": None, "c": None, "d": None}]
    assert table.equals(_pyarrow(data, HEADER))


@pytest.mark.parametrize("name", ["wit_train_sample.tsv", "wit_test_truncated.tsv"])
def test_real_rows_read_the_same_with_and_without_c(wit_fixtures, monkeypatch, name):
    path = wit_fixtures / name
    with_c, with_c_errors = RowErrors(), None
    rows_c = [r for b in read_wit_batches(path, columns=QUERY_COLUMNS, errors=with_c) for r in b.to_pylist()]
    with_c_errors = [(s.line, s.reason) for s in with_c.samples]
    monkeypatch.setattr(tsv, "_fasttsv", None)
    without = RowErrors()
    rows_py = [r for b in read_wit_batches(path, columns=QUERY_COLUMNS, errors=without) for r in b.to_pylist()]
    assert rows_c == rows_py
    assert with_c_errors == [(s.line, s.reason) for s in without.samples]
    assert (len(rows_c), with_c.count) == ((3, 0) if name == "wit_train_sample.tsv" else (0, 1))


@pytest.mark.parametrize("name", ["wit_train_sample.tsv", "wit_test_truncated.tsv"])
def test_reading_in_the_foreground_gives_the_same_rows(wit_fixtures, name):
    path = wit_fixtures / name
    runs = []
    for background in (True, False):
        errors = RowErrors()
        rows = [r for b in read_wit_batches(path, errors=errors, background=background) for r in b.to_pylist()]
        runs.append((rows, [(s.line, s.reason) for s in errors.samples]))
    assert runs[0] == runs[1]


def test_the_sample_segment_is_split_in_c(wit_fixtures):
    """The real rows take the C path (quoted multi-line context fields included)."""
    path = wit_fixtures / "wit_train_sample.tsv"
    header = tsv.read_header(path)
    data = path.read_bytes().split(b"\n", 1)[1]
    batch = tsv._split_strings(data, header, QUERY_COLUMNS, tsv.column_types(header))
    assert batch is not None and batch.num_rows == 3
    assert header == list(WIT_COLUMNS)


def test_the_pure_python_switch_turns_the_split_off(monkeypatch):
    data = b"x\ty\tz\tw\n"
    assert tsv._split_strings(data, HEADER, ["a"], TYPES) is not None
    monkeypatch.setenv("WIT_RETRIEVAL_PURE_PYTHON", "1")
    assert tsv._split_strings(data, HEADER, ["a"], TYPES) is None
