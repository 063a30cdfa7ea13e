"""The miniature world generator: real formats, quirks, determinism, ground truth."""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from wit_retrieval.errors import ConfigError
from wit_retrieval.schema import WIT_COLUMNS
from wit_retrieval.synth import WorldConfig, generate_world

SMALL = WorldConfig(entities=40, scenes=150, languages=("en", "de"), seed=3, image_size=64)
WIT_NAME = re.compile(r"^wit_v1\.(train|val|test)\.all-(\d{5})-of-(\d{5})\.tsv\.gz$")
TUPLE = re.compile(r"\((?:[^()'\\]|'(?:[^'\\]|\\.)*')*\)")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(SMALL, out)
    return out


@pytest.fixture(scope="module")
def truth(world) -> dict:
    return json.loads((world / "world.json").read_text(encoding="utf-8"))


def _wit_rows(world: Path) -> list[dict]:
    rows = []
    for path in sorted((world / "gresearch/wit").glob("*.tsv.gz")):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader)
            assert tuple(header) == WIT_COLUMNS
            for fields in reader:
                assert len(fields) == 17, fields
                rows.append(dict(zip(header, fields)))
    return rows


def _dump_tuples(path: Path, table: str) -> list[str]:
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    assert f"CREATE TABLE `{table}`" in text
    inserts = [line for line in text.splitlines() if line.startswith("INSERT INTO")]
    assert inserts
    tuples = []
    for line in inserts:
        m = re.fullmatch(rf"INSERT INTO `{table}` VALUES (.*);", line)
        assert m, line[:80]
        found = TUPLE.findall(m.group(1))
        assert ",".join(found) == m.group(1)  # the tuples cover the whole statement
        tuples += found
    return tuples


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_config_same_bytes(world, tmp_path):
    again = tmp_path / "again"
    generate_world(SMALL, again)
    assert _files(world) == _files(again)
    other = tmp_path / "other"
    generate_world(WorldConfig(entities=40, scenes=150, seed=4, image_size=64, images=False), other)
    assert (other / "world.json").read_bytes() != (world / "world.json").read_bytes()


def test_layout_is_the_real_url_paths(world):
    names = [p.name for p in (world / "gresearch/wit").iterdir()]
    assert names and all(WIT_NAME.match(n) for n in names)
    assert sorted(n.split(".")[1] for n in names) == ["test", "train", "train", "val"]
    released = {p.name for p in (world / "gresearch/wit-retrieval").iterdir()}
    assert released == {"entity_image_dataset.tsv.gz", "mmir_dataset_validation.tsv.gz", "mmir_dataset_test.tsv.gz",
                        *(f"mmir_dataset_train-0000{k}-of-00005.tsv.gz" for k in range(5))}
    for code in ("en", "de"):
        latest = world / f"{code}wiki/latest"
        lines = (latest / f"{code}wiki-latest-md5sums.txt").read_text().splitlines()
        # Dated names, as the real list has them (latest/ links to the dated files).
        sums = {name.replace("-20261101-", "-latest-"): md5 for md5, name in (line.split("  ") for line in lines)}
        tables = {f"{code}wiki-latest-{t}.sql.gz" for t in ("page", "page_props", "redirect")}
        assert tables < set(sums)
        for name in tables:
            assert hashlib.md5((latest / name).read_bytes()).hexdigest() == sums[name]
    for line in (world / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ")
        assert hashlib.sha256((world / rel).read_bytes()).hexdigest() == digest
    for path in (world / "gresearch").rglob("*.gz"):
        assert path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0


def test_wit_rows_have_the_real_quirks(world, truth):
    rows = _wit_rows(world)
    for col in ("is_main_image", "attribution_passes_lang_id", "page_changed_recently"):
        assert {r[col] for r in rows} == {"true", "false"}
    assert any("\n" in r["context_page_description"] for r in rows)
    raw = gzip.decompress(next((world / "gresearch/wit").glob("wit_v1.train.*")).read_bytes()).decode()
    assert '\t"' in raw and '""' in raw  # quoted fields with doubled inner quotes
    assert any(r["caption_reference_description"] == "" and r["caption_attribution_description"] for r in rows)
    main = [r for r in rows if r["is_main_image"] == "true"]
    assert any(r["caption_reference_description"] == r["page_title"] for r in main)
    pages = {}
    for r in rows:
        pages.setdefault(r["page_url"], []).append(r)
    assert max(len(v) for v in pages.values()) >= 3
    scene_urls = {s["image_url"]: s for s in truth["scenes"]}
    described = [r for r in rows if r["image_url"] in scene_urls]
    assert len(described) == sum(len(s["captions"]) for s in truth["scenes"])
    for r in described:
        scene = scene_urls[r["image_url"]]
        caption = next(c for c in scene["captions"] if c["language"] == r["language"])
        assert r["caption_reference_description"] == caption["text"]
        for start, end, _qid, surface in caption["mentions"]:
            assert caption["text"][start:end] == surface


def test_scene_descriptions_name_entities_and_relation(truth):
    by_qid = {e["qid"]: e for e in truth["entities"]}
    relations_de = {"left of": "links von", "right of": "rechts von", "above": "über", "below": "unter",
                    "next to": "neben"}
    combos: dict[tuple, set] = {}
    for scene in truth["scenes"]:
        for c in scene["captions"]:
            mentioned = {qid for _, _, qid, _ in c["mentions"]}
            assert mentioned == set(scene["entities"])
            for _, _, qid, surface in c["mentions"]:
                e = by_qid[qid]
                assert surface in (e["names"][c["language"]], e["titles"][c["language"]], e["alias"])
            if scene["relation"]:
                word = scene["relation"] if c["language"] == "en" else relations_de[scene["relation"]]
                assert f" {word} " in c["text"]
            combos.setdefault((c["language"], c["masked_text"]), set()).add(tuple(scene["entities"]))
    # Masked text alone is ambiguous: the same masked caption recurs with other entities.
    assert max(len(v) for v in combos.values()) >= 3
    # ... but no two scenes picture the same thing, so the entity images do identify the target.
    from wit_retrieval.synth.scenes import picture_key

    keys = [picture_key(s["entities"], s["relation"], s["setting"], s["larger"]) for s in truth["scenes"]]
    assert len(set(keys)) == len(keys)


def test_entities_names_languages_and_ambiguity(truth):
    ents = truth["entities"]
    assert len({e["qid"] for e in ents}) == len(ents)
    both = [e for e in ents if {"en", "de"} <= set(e["titles"])]
    assert both and sum(e["titles"]["en"] != e["titles"]["de"] for e in both) > len(both) // 2
    assert any(re.search(r" \([a-z]+\)$", e["titles"].get("en", "")) for e in ents)
    assert any(len(qids) >= 2 for qids in truth["ambiguous"]["en"].values())
    assert len({e["titles"].get("en") for e in ents if "en" in e["titles"]}) == sum("en" in e["titles"] for e in ents)
    assert len({e["file"] for e in ents}) == len(ents)


def test_dumps_parse_and_hold_the_props(world, truth):
    en = world / "enwiki/latest"
    pages = _dump_tuples(en / "enwiki-latest-page.sql.gz", "page")
    props = _dump_tuples(en / "enwiki-latest-page_props.sql.gz", "page_props")
    redirects = _dump_tuples(en / "enwiki-latest-redirect.sql.gz", "redirect")
    assert all(len(ast.literal_eval(t.replace("NULL", "None"))) == 12 for t in pages if "\\" not in t)
    assert any(",1,0," in t for t in pages)  # redirect pages
    assert {re.match(r"\(\d+,(\d+),", t).group(1) for t in pages} >= {"0", "1", "6", "14"}
    names = [re.match(r"\(\d+,'([^']+)'", t).group(1) for t in props]
    assert {"page_image_free", "page_image", "wikibase_item", "disambiguation"} <= set(names)
    assert redirects and all(re.fullmatch(r"\(\d+,0,'.*','','[^']*'\)", t) for t in redirects)
    assert any("\\'" in t for t in pages)  # "Port d'Amber" needs a backslash escape
    de_props = gzip.decompress((world / "dewiki/latest/dewiki-latest-page_props.sql.gz").read_bytes()).decode()
    shared = [e["qid"] for e in truth["entities"] if {"en", "de"} <= set(e["titles"])]
    assert all(f"'{q}'" in de_props for q in shared[:10])
    en_props = "".join(props)
    assert all(f"'{q}'" in en_props for q in shared[:10])


def test_commons_paths_follow_the_md5_rule(world, truth):
    for e in truth["entities"][:10]:
        name = e["file"]
        h = hashlib.md5(name.encode()).hexdigest()
        assert (world / "wikipedia/commons" / h[0] / h[:2] / name).is_file()
        assert e["image_url"].startswith(f"https://upload.wikimedia.org/wikipedia/commons/{h[0]}/{h[:2]}/")


def test_images_decode_and_entities_differ(world, truth):
    icons = []
    for e in truth["entities"]:
        h = hashlib.md5(e["file"].encode()).hexdigest()
        img = Image.open(world / "wikipedia/commons" / h[0] / h[:2] / e["file"])
        img.load()
        assert img.size == (64, 64)
        icons.append(np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.float32).ravel())
    x = np.stack(icons)
    dist = np.abs(x[:, None, :] - x[None, :, :]).mean(-1) + np.eye(len(x)) * 1e9
    assert dist.min() > 3.0  # every pair tellable apart at 32 px (mean abs difference per channel)
    scene = truth["scenes"][0]
    h = hashlib.md5(scene["file"].encode()).hexdigest()
    Image.open(world / "wikipedia/commons" / h[0] / h[:2] / scene["file"]).verify()


def _released_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def _unbytes(value: str) -> str:
    return ast.literal_eval(value).decode("utf-8") if value[:2] in ("b'", 'b"') else value


def test_released_files_have_the_quirks(world, truth):
    header, rows = [], []
    for path in sorted((world / "gresearch/wit-retrieval").glob("mmir_dataset_*.tsv.gz")):
        header, part = _released_rows(path)
        rows += part
    assert len(rows) == sum(len(s["captions"]) for s in truth["scenes"])
    assert all(r[0].startswith("https://upload.wikimedia.org/") for r in rows)
    assert any(len(r) < len(header) for r in rows)
    assert any(r[1].startswith("b'") for r in rows)
    for r in rows:
        masked = _unbytes(r[1])
        ids = [int(m) for m in re.findall(r"\[MASK_(\d+)\]", masked)]
        firsts = list(dict.fromkeys(ids))
        assert firsts == list(range(len(firsts)))  # numbered by first occurrence
        assert len(ast.literal_eval(r[2])) == len(firsts)
    assert any(len(re.findall(r"\[MASK_0\]", _unbytes(r[1]))) == 2 for r in rows)  # a repeated mention
    ei_header, ei = _released_rows(world / "gresearch/wit-retrieval/entity_image_dataset.tsv.gz")
    assert ei_header[0] == "image_url" and ei
    encoded = [e for e in ei if e[1].startswith("b")]
    assert encoded and all(_unbytes(e[1]) for e in encoded)


def test_masked_text_agrees_with_the_mentions(tmp_path):
    from wit_retrieval.synth.scenes import build_scenes, mask_caption
    from wit_retrieval.synth.world import build_entities, with_files

    config = WorldConfig(entities=30, scenes=300, images=False)
    entities = with_files(build_entities(config)[0])
    reordered = 0
    for scene in build_scenes(config, entities):
        for c in scene.captions:
            assert mask_caption(c) == (c.masked, list(c.order))
            assert sorted(c.order) == sorted(scene.entities)
            reordered += list(c.order) != list(scene.entities)
    assert reordered  # German triples name the third entity first: [MASK_0] is not always entity 0


def test_non_ascii_byte_literals_use_escapes():
    from wit_retrieval.synth.released_writer import _text

    assert _text("Türkisstern", True) == "b'T\\xc3\\xbcrkisstern'"


def test_language_without_dumps_gets_main_image_rows(tmp_path):
    out = tmp_path / "w"
    generate_world(WorldConfig(entities=30, scenes=20, dump_languages=("en",), images=False), out)
    assert not (out / "dewiki").exists()
    truth = json.loads((out / "world.json").read_text())
    rows = _wit_rows(out)
    mains = {(r["language"], r["page_title"]) for r in rows if r["is_main_image"] == "true"}
    for e in truth["entities"]:
        if "de" in e["titles"]:
            assert ("de", e["titles"]["de"]) in mains
    assert not list(out.rglob("*.png"))


def test_regenerating_replaces_the_previous_world(tmp_path):
    out = tmp_path / "w"
    generate_world(WorldConfig(entities=20, scenes=20, images=True, image_size=16,
                               wit_shards={"train": 3, "val": 1, "test": 1}), out)
    generate_world(WorldConfig(entities=20, scenes=20, images=False, languages=("en",)), out)
    assert len(list((out / "gresearch/wit").glob("wit_v1.train.*"))) == 2
    assert not (out / "dewiki").exists() and not (out / "wikipedia").exists()
    listed = {line.split("  ")[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == listed | {"SHA256SUMS"}


def test_french_has_its_own_words(tmp_path):
    out = tmp_path / "fr"
    generate_world(WorldConfig(entities=40, scenes=200, languages=("en", "de", "fr"), dump_languages=("en", "fr"),
                               images=False), out)
    assert (out / "frwiki/latest/frwiki-latest-page_props.sql.gz").exists() and not (out / "dewiki").exists()
    truth = json.loads((out / "world.json").read_text())
    both = [e for e in truth["entities"] if {"en", "fr"} <= set(e["titles"])]
    assert sum(e["titles"]["fr"] != e["titles"]["en"] for e in both) > len(both) // 2
    french = [c for s in truth["scenes"] for c in s["captions"] if c["language"] == "fr"]
    positions = ("à gauche", "à droite", "en haut", "en bas", "d'un côté")
    assert french and any(p in c["text"] for c in french for p in positions)
    assert all(c["masked_text"].startswith("[MASK_0]") for c in french)


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="language"):
        WorldConfig(languages=("en", "xx"))
    with pytest.raises(ConfigError, match="dump-languages"):
        WorldConfig(languages=("en",), dump_languages=("de",))
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate_world(WorldConfig(entities=5, scenes=5, images=False), tmp_path)


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from wit_retrieval.cli import app

    result = CliRunner().invoke(app, ["synth", str(tmp_path / "w"), "--entities", "200", "--scenes", "300",
                                      "--no-images", "--wit-shards", "train=3,val=1,test=1", "--wit-sample"])
    assert result.exit_code == 0, result.output
    assert "WIT rows" in result.output
    wit = tmp_path / "w/gresearch/wit"
    assert len(list(wit.glob("wit_v1.train.all-0000?-of-00003.tsv.gz"))) == 3
    sample = gzip.decompress((wit / "wit_v1.train.all-1percent_sample.tsv.gz").read_bytes()).decode()
    train = "".join(gzip.decompress(p.read_bytes()).decode() for p in wit.glob("wit_v1.train.all-0000*"))
    sample_lines = sample.splitlines()[1:]
    assert sample_lines and all(line in train for line in sample_lines[:50])
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--wit-shards", "train=x"])
    assert bad.exit_code == 1 and "wit-shards" in bad.output


def _centroid(img: np.ndarray, rgb) -> tuple[float, float] | None:
    near = (np.abs(img - np.array(rgb, dtype=np.float32)).sum(-1) < 40)
    if near.sum() < 20:
        return None
    ys, xs = np.nonzero(near)
    return float(xs.mean()), float(ys.mean())


def test_scene_pictures_show_the_relation():
    from wit_retrieval.synth import draw
    from wit_retrieval.synth import lexicon as lx
    from wit_retrieval.synth.scenes import build_scenes
    from wit_retrieval.synth.world import build_entities, with_files

    config = WorldConfig(entities=40, scenes=400, images=False, seed=5)
    entities = with_files(build_entities(config)[0])
    plain = {"Silver", "Ebony"}  # too close to the snowy and foggy backgrounds' greys
    checked = 0
    for scene in build_scenes(config, entities):
        if len(scene.entities) != 2 or scene.relation == "next to" or scene.setting not in ("snow", "fog"):
            continue
        a, b = (entities[i].visual for i in scene.entities)
        if a.colour == b.colour or {lx.COLOURS[a.colour][0], lx.COLOURS[b.colour][0]} & plain:
            continue
        img = np.asarray(Image.open(io.BytesIO(draw.scene_image(scene, [a, b], 128))).convert("RGB"), np.float32)
        ca, cb = _centroid(img, lx.COLOURS[a.colour][2]), _centroid(img, lx.COLOURS[b.colour][2])
        if ca is None or cb is None:
            continue
        axis, sign = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}[scene.relation]
        assert sign * (ca[axis] - cb[axis]) > 20, (scene, ca, cb)
        checked += 1
    assert checked >= 5


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_sql_strings_and_tsv_fields_round_trip(value):
    from wit_retrieval.synth.dump_writer import sql_value
    from wit_retrieval.synth.wit_writer import tsv_field

    quoted = sql_value(value)
    assert quoted[0] == quoted[-1] == "'" and TUPLE.fullmatch(f"({quoted})")
    unescape = {"0": "\0", "n": "\n", "r": "\r", "Z": "\x1a"}
    assert re.sub(r"\\(.)", lambda m: unescape.get(m.group(1), m.group(1)), quoted[1:-1], flags=re.S) == value
    line = tsv_field(value) + "\tnext\n"
    assert next(csv.reader(io.StringIO(line, newline=""), delimiter="\t")) == [value, "next"]


def test_fewer_settings_make_text_less_informative(tmp_path):
    from wit_retrieval.errors import ConfigError
    from wit_retrieval.synth import WorldConfig, generate_world

    generate_world(WorldConfig(entities=40, scenes=150, images=False, seed=3, settings=2), tmp_path / "w")
    world = json.loads((tmp_path / "w" / "world.json").read_text())
    assert world["config"]["settings"] == 2
    assert {scene["setting"] for scene in world["scenes"]} == {"dusk", "night"}
    with pytest.raises(ConfigError, match="--settings"):
        WorldConfig(settings=11)
