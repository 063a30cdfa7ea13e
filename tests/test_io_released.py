"""Released EI/MMIR files: role detection across header spellings and list encodings, import, CLI."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from wit_retrieval.cli import app
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.ids import image_id
from wit_retrieval.io.released import import_released, read_released, split_from_name
from wit_retrieval.io.roles import detect_columns, split_list
from wit_retrieval.io.shards import read_table_dir
from wit_retrieval.layout import DataRoot

COMMONS = "https://upload.wikimedia.org/wikipedia/commons"
NAMES = ["Zürich", "Bern", "Genève", "Basel", "Luzern", "Lugano"]


def _url(name: str) -> str:
    return f"{COMMONS}/a/ab/{name}.jpg"


def _scenes(n: int = 12) -> list[dict]:
    scenes = []
    for i in range(n):
        ents = [NAMES[i % 6]] if i % 3 else [NAMES[i % 6], NAMES[(i + 1) % 6]]
        masked = " and ".join(f"[MASK_{k}]" for k in range(len(ents))) + f" at night {i}"
        title = f"Night {i}"
        scenes.append({"target": _url(f"Scene_{i}"), "masked": masked, "urls": [_url(e) for e in ents],
                       "names": ents, "lang": "de" if i % 2 else "en", "title": title,
                       "page": f"https://en.wikipedia.org/wiki/{title.replace(' ', '_')}"})
    return scenes


def _literal(text: str) -> str:
    return repr(text.encode("utf-8"))  # b'Z\xc3\xbcrich' style, as the public reader writes


def _encode(items: list[str], encoding: str, literals: bool) -> str:
    if encoding == "json":
        return json.dumps(items, ensure_ascii=False)
    if encoding == "python":
        return repr([i.encode("utf-8") for i in items]) if literals else repr(items)
    sep = "|" if encoding == "pipe" else " "
    return sep.join(items)


def write_mmir(path, headers: list[str], encoding: str, literals: bool, scenes=None) -> list[dict]:
    """A released-format MMIR file: columns target, masked, urls, names, lang, page url, title."""
    scenes = scenes or _scenes()
    lines = ["\t".join(headers)]
    for s in scenes:
        cell = (lambda v: _literal(v)) if literals else (lambda v: v)
        names = _encode(s["names"], "json" if encoding == "space" else encoding, False)
        fields = [cell(s["target"]), cell(s["masked"]), _encode(s["urls"], encoding, literals), names, s["lang"],
                  s["page"], s["title"]]
        lines.append("\t".join(fields))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return scenes


HEADERS = [
    ["image_url", "masked_text", "entity_image_urls", "entity_names", "language", "page_url", "page_title"],
    ["col0", "col1", "col2", "col3", "col4", "col5", "col6"],
    ["Target URL", "Query", "Entities", "Labels", "lang", "url", "title"],
]


@pytest.mark.parametrize("encoding", ["json", "python", "pipe", "space"])
@pytest.mark.parametrize("literals", [False, True])
@pytest.mark.parametrize("headers", HEADERS, ids=["named", "numbered", "odd"])
def test_detects_mmir_roles_without_relying_on_names(tmp_path, headers, encoding, literals):
    path = tmp_path / "mmir_dataset_validation.tsv.gz"
    scenes = write_mmir(path, headers, encoding, literals)
    mapping = detect_columns(path)
    assert mapping.kind == "mmir"
    assert mapping.roles == {
        "target_image_url": headers[0], "masked_text": headers[1], "entity_image_urls": headers[2],
        "entity_names": headers[3], "language": headers[4], "page_url": headers[5], "page_title": headers[6],
    }
    assert "[MASK_" in mapping.evidence["masked_text"]
    assert mapping.list_encoding == encoding
    assert "masked_text" in str(mapping)
    rows = list(read_released(path, mapping))
    assert [r["entity_image_urls"] for r in rows] == [s["urls"] for s in scenes]
    assert rows[0]["entity_image_urls"][0].endswith("/Zürich.jpg")
    assert rows[0]["query_type"] == "multi" and rows[1]["query_type"] == "single"
    assert rows[0]["split"] == "val" and rows[0]["target_image_id"] == image_id(scenes[0]["target"])
    assert [m["surface"] for m in rows[0]["mentions"]] == scenes[0]["names"]


def test_shuffled_columns_and_wide_rows(tmp_path):
    # entity images spill into fields beyond the header: rows of different field counts
    path = tmp_path / "mmir_dataset_test.tsv"
    lines = ["a\tb\tc"]
    for s in _scenes(9):
        lines.append("\t".join([s["target"], s["lang"], s["masked"]] + s["urls"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = detect_columns(path)
    assert mapping.roles["target_image_url"] == "a" and mapping.roles["masked_text"] == "c"
    assert mapping.roles["entity_image_urls"] == "_extra" and mapping.roles["language"] == "b"
    assert mapping.evidence["entity_image_urls"].startswith("fields beyond the header: 9/9")
    rows = list(read_released(path, mapping))
    assert len(rows) == 9 and rows[0]["num_entities"] == 2


def test_ei_detection_and_overrides(tmp_path):
    path = tmp_path / "entity_image_dataset.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("u\tn\tl\tq\n")
        for i, name in enumerate(NAMES):
            f.write(f"{_literal(_url(name))}\t{_literal(name)}\ten\tQ{i + 1}\n")
    mapping = detect_columns(path)
    assert mapping.kind == "ei"
    assert mapping.roles == {"image_url": "u", "entity_name": "n", "language": "l", "entity_id": "q"}
    rows = list(read_released(path, mapping))
    assert rows[0]["page_title"] == "Zürich" and rows[0]["entity_id"] == "Q1"
    swapped = detect_columns(path, overrides={"entity_id": "l", "language": "3"})
    assert swapped.roles["entity_id"] == "l" and swapped.roles["language"] == "q"
    assert swapped.evidence["language"] == "set by --column"
    with pytest.raises(ConfigError, match="no such column"):
        detect_columns(path, overrides={"language": "nope"})
    with pytest.raises(ConfigError, match="unknown role"):
        detect_columns(path, overrides={"masked_text": "u"})


def test_undetectable_required_role_asks_for_column(tmp_path):
    path = tmp_path / "mmir_dataset_train-00000-of-00005.tsv"
    path.write_text("x\ty\n" + "".join(f"{_url(n)}\tno masks here\n" for n in NAMES), encoding="utf-8")
    with pytest.raises(InputError, match="--column"):
        detect_columns(path)


def test_split_list_and_split_names():
    assert split_list('["a", "b"]') == (["a", "b"], "json")
    assert split_list("[b'Z\\xc3\\xbcrich', b'x']") == (["Zürich", "x"], "python")
    assert split_list("a|b") == (["a", "b"], "pipe")
    assert split_list("New York", names=True) == (["New York"], "single")
    assert split_from_name("mmir_dataset_validation.tsv.gz") == "val"
    assert split_from_name("mmir_dataset_train-00003-of-00005.tsv.gz") == "train"


def test_import_writes_canonical_tables(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    scenes = write_mmir(src / "mmir_dataset_test.tsv.gz", HEADERS[1], "pipe", True)
    write_mmir(src / "mmir_dataset_train-00000-of-00005.tsv.gz", HEADERS[0], "json", False, _scenes(6))
    with gzip.open(src / "entity_image_dataset.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("img\tname\n" + "".join(f"{_url(n)}\t{n}\n" for n in NAMES))
    root = tmp_path / "root"
    summary = import_released(sorted(src.iterdir()), root)
    assert summary["splits"]["test"] == {"queries": 12, "corpus": 12, "qrels": 12}
    data = DataRoot(root)
    queries = read_table_dir(data.table_split("queries", "test")).to_pylist()
    assert queries[0]["entity_ids"] == ["Zürich", "Bern"]  # EI has no language column: the name is the id
    qrels = read_table_dir(data.table_split("qrels", "test")).to_pylist()
    assert {(q["query_id"], q["image_id"]) for q in qrels} == {(q["query_id"], image_id(s["target"]))
                                                               for q, s in zip(queries, scenes)}
    ei = {r["entity_id"]: r["num_queries"] for r in read_table_dir(data.table("ei")).to_pylist()}
    expected = sum("Zürich" in sc["names"] for sc in scenes + _scenes(6))
    assert ei["Zürich"] == expected and expected >= 3
    assert (data.config / "released_import.json").exists()


def test_cli_inspect_and_import(tmp_path):
    path = tmp_path / "mmir_dataset_validation.tsv.gz"
    write_mmir(path, HEADERS[2], "python", True)
    runner = CliRunner()
    result = runner.invoke(app, ["released", "inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "masked_text" in result.output and "'Query'" in result.output
    result = runner.invoke(app, ["released", "inspect", str(path), "--column", "masked_text=nope"])
    assert result.exit_code == 1 and "no such column" in result.output
    result = runner.invoke(app, ["released", "import", str(path), "--out", str(tmp_path / "r"),
                                 "--column", "page_title=title"])
    assert result.exit_code == 0, result.output
    assert "val: 12 queries" in result.output


def test_import_the_synthetic_worlds_released_files(tmp_path):
    from wit_retrieval.synth import WorldConfig, generate_world

    summary = generate_world(WorldConfig(entities=60, scenes=200, images=False), tmp_path / "world")
    files = sorted((tmp_path / "world" / "gresearch" / "wit-retrieval").glob("*.tsv.gz"))
    result = import_released(files, tmp_path / "root")
    assert {s: c["queries"] for s, c in result["splits"].items()} == summary.mmir_rows
    assert result["ei"] == summary.ei_rows and result["bad_rows"]["count"] == 0
    roles = {f["path"].rsplit("/", 1)[-1]: f["roles"] for f in result["files"]}
    assert roles["mmir_dataset_test.tsv.gz"]["masked_text"] == "masked_caption"
    assert roles["entity_image_dataset.tsv.gz"]["entity_id"] == "wikidata_id"
    queries = read_table_dir(DataRoot(tmp_path / "root").table_split("queries", "val")).to_pylist()
    assert all(q["entity_ids"] and not q["entity_ids"][0].startswith("img:") for q in queries)
    assert all(q["masked_text"].count("[MASK_") >= q["num_entities"] for q in queries)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10), max_size=5),
       st.booleans())
def test_python_list_reprs_round_trip(items, as_bytes):
    text = repr([i.encode("utf-8") for i in items]) if as_bytes else repr(items)
    assert split_list(text, names=True)[0] == items


def test_truncated_gzip_released_file(tmp_path):
    whole = tmp_path / "mmir_dataset_test.tsv.gz"
    write_mmir(whole, HEADERS[0], "json", False, _scenes(3000))
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) // 2])
    mapping = detect_columns(whole)  # the sample at the start is still readable
    with pytest.raises(InputError, match="truncated or corrupt"):
        list(read_released(whole, mapping))
