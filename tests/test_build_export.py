"""build/export.py: the columnar TSV.gz export equals csv.writer + json.dumps row by row, and
`released import` of our own export gives back the build's queries (nasty strings included)."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_build_mmir import make_world
from wit_retrieval.build import MmirConfig, build_mmir
from wit_retrieval.build.export import (
    MMIR_COLUMNS,
    export_all,
    json_lists,
    tsv_field,
    tsv_json_lists,
    tsv_text,
)
from wit_retrieval.build.mmir import read_split_table
from wit_retrieval.engine import EngineConfig
from wit_retrieval.io.released import import_released
from wit_retrieval.layout import DataRoot

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ['a"b', "t\tab", "n\nl", "c\rr", "back\\slash", "\x00\x01\x1f\x7f", "é€😀", '"', "", "\u2028"])
NASTY = ['He said "hi" [MASK_0]', "tab\there [MASK_0]", "new\nline [MASK_0]", "carriage\rreturn [MASK_0]",
         "back\\slash [MASK_0]", "ctl\x01\x1f [MASK_0]", "Zürich € 😀 [MASK_0]", '"[MASK_0]"']


@settings(max_examples=150, deadline=None)
@given(st.lists(st.none() | st.lists(st.none() | TEXT, max_size=4), max_size=8))
def test_json_lists_equal_json_dumps(lists):
    array = pa.array(lists, pa.list_(pa.string()))
    got = json_lists(array).to_pylist()
    assert got == [json.dumps(x, ensure_ascii=False) for x in lists]
    assert tsv_json_lists(array).to_pylist() == tsv_field(json_lists(array)).to_pylist()  # its one-pass form
    plain = [[v for v in x if v and v.isalnum()] or ["x"] for x in lists if x is not None] or [["y"]]
    assert tsv_json_lists(pa.array(plain)).to_pylist() == [
        '"' + json.dumps(x, ensure_ascii=False).replace('"', '""') + '"' for x in plain]


def reference_tsv(rows: list[list]) -> str:
    """csv.writer's minimal quoting (fields with a tab, quote, CR or LF quoted), lines ending in LF."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", quotechar='"', lineterminator="\r\n")
    text = []
    for row in rows:
        out.seek(0)
        out.truncate()
        writer.writerow(["" if v is None else v for v in row])
        text.append(out.getvalue()[:-2] + "\n")
    return "".join(text)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 4).flatmap(lambda n: st.lists(st.lists(st.none() | TEXT, min_size=n, max_size=n),
                                                     min_size=1, max_size=6)))
def test_tsv_text_equals_csv_writer_and_reads_back(rows):
    columns = [pa.array([row[i] for row in rows], pa.string()) for i in range(len(rows[0]))]
    text = tsv_text([tsv_field(c) for c in columns]).to_pybytes().decode("utf-8")
    assert text == reference_tsv(rows)
    parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"'))
    assert parsed == [["" if v is None else v for v in row] for row in rows]


def test_sliced_batches_and_numbers():
    lists = pa.array([["x"], ["a", 'b"'], [], None, ["c"]], pa.list_(pa.string())).slice(1, 3)
    assert json_lists(lists).to_pylist() == ['["a", "b\\""]', "[]", "null"]
    plain = pa.array([["a"], ["b", "c"], ["d"]]).slice(1, 2)
    assert tsv_json_lists(plain).to_pylist() == ['"[""b"", ""c""]"', '"[""d""]"']
    fields = [tsv_field(pa.array([1, None, 30], pa.int64())), tsv_field(pa.array(["a", "b", "c"]).slice(0, 3))]
    assert tsv_text(fields).to_pybytes() == b"1\ta\n\tb\n30\tc\n"
    assert tsv_text([tsv_field(pa.array(["x\ty", "z"]).slice(1, 1))]).to_pybytes() == b"z\n"


def _poison(root, split: str) -> None:
    """Rewrite a split's masked texts with the strings a TSV writer must quote (the page titles stay:
    `released import` finds the title column by its match with the page URL)."""
    for path in sorted(DataRoot(root).table_split("queries", split).glob("part-*.parquet")):
        table = pq.read_table(path)
        n = table.num_rows
        every = [" ".join(NASTY[i % len(NASTY):] + NASTY[:i % len(NASTY)]) for i in range(n)]
        table = table.set_column(table.schema.get_field_index("masked_text"), "masked_text", pa.array(every))
        pq.write_table(table, path)


def test_released_import_of_our_export_round_trips(tmp_path):
    root, files = make_world(tmp_path)
    build_mmir(MmirConfig(out=str(root), wit=files, engine=EngineConfig(workers=1), export=False))
    _poison(root, "train")
    written = export_all(root, train_shards=2)
    assert [p.name for p in written][-2:] == ["mmir_dataset_validation.tsv.gz", "mmir_dataset_test.tsv.gz"]
    with gzip.open(root / "exports" / "mmir_dataset_train-00000-of-00002.tsv.gz", "rt", encoding="utf-8",
                   newline="") as f:
        header = next(csv.reader(f, delimiter="\t"))
    assert tuple(header) == MMIR_COLUMNS
    summary = import_released(written, tmp_path / "back")
    assert summary["bad_rows"]["count"] == 0
    keep = ["target_image_url", "masked_text", "entity_image_urls", "language", "page_url", "page_title",
            "query_type"]
    for split in ("train", "val", "test"):
        ours = read_split_table(root, "queries", split)
        back = read_split_table(tmp_path / "back", "queries", split)
        assert back.num_rows == ours.num_rows > 0
        assert back.select(keep).to_pylist() == ours.select(keep).to_pylist(), split
    assert all(text.startswith(NASTY[0]) or text.startswith(NASTY[1]) and "\r" in text
               for text in read_split_table(tmp_path / "back", "queries", "train")["masked_text"].to_pylist())
