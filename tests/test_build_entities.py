"""`build ei`: articles, canonical images, QID merge, names (qualifiers, redirects), WIT fallback."""

from __future__ import annotations

import pytest

from tests.test_build_inputs import wit_row, write_dumps, write_wit
from wit_retrieval.build.entities import EntitiesConfig, build_entities
from wit_retrieval.build.names import commons_url, strip_qualifier
from wit_retrieval.build.stats import read_stats
from wit_retrieval.errors import ConfigError
from wit_retrieval.io.shards import read_table_dir


def make_inputs(tmp_path):
    dumps = tmp_path / "dumps"
    write_dumps(dumps, "en", [
        (1, 0, "Nirvana_(band)", False), (2, 0, "Mercury_(planet)", False), (3, 0, "Mercury_(element)", False),
        (4, 0, "Paris", False), (5, 0, "Paname", True), (6, 0, "Mercury_(disambiguation)", False),
        (7, 6, "Paris.jpg", False), (8, 0, "No_image", False), (9, 0, "Lone", False),
    ], [
        (1, "page_image", "Nirvana.jpg"), (1, "wikibase_item", "Q11649"),
        (2, "page_image_free", "Mercury.png"), (2, "page_image", "Other.png"), (2, "wikibase_item", "Q308"),
        (3, "page_image_free", "Hg.jpg"), (3, "wikibase_item", "Q925"),
        (4, "page_image_free", "Paris en.jpg"), (4, "wikibase_item", "Q90"),
        (6, "page_image_free", "Dis.jpg"), (6, "disambiguation", ""), (7, "page_image_free", "X.jpg"),
        (8, "wikibase_item", "Q1000"), (9, "wikibase_item", "Q77"),
    ], [(5, 0, "Paris")])
    write_dumps(dumps, "de", [(10, 0, "Paris", False), (11, 0, "Ohne_Bild", False), (12, 0, "Lokal", False)], [
        (10, "page_image_free", "Paris_de.jpg"), (10, "wikibase_item", "Q90"),
        (11, "page_image", "Q1000_de.jpg"), (11, "wikibase_item", "Q1000"), (12, "page_image", "Lokal.jpg"),
    ], nested=False)
    mercury = commons_url("Mercury.png").rsplit("/", 1)[0] + "/"
    wit = write_wit(tmp_path / "wit_v1.train.all-00000-of-00001.tsv.gz", [
        wit_row("fr", "Tour Eiffel", "b.jpg", None, main=True),
        wit_row("fr", "Tour Eiffel", "a.jpg", None, main=True),
        wit_row("fr", "Tour Eiffel", "0.jpg", None, main=False),
        wit_row("fr", "Sans image", "z.jpg", None, main=False),
        wit_row("en", "Lone", "lone.jpg", None, main=True),  # en has dumps: WIT is not its source
        {**wit_row("en", "Mercury (planet)", "", "x", main=True), "image_url": mercury + "Mercury.png",
         "mime_type": "image/png", "original_width": 640},
    ])
    return dumps, wit


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ei")
    dumps, wit = make_inputs(tmp_path)
    stats = build_entities(EntitiesConfig(out=str(tmp_path / "root"), wit=(str(wit),), dumps=str(dumps),
                                          prefer_lang=("en", "de")))
    entities = {r["entity_id"]: r for r in read_table_dir(tmp_path / "root" / "entities").to_pylist()}
    names = read_table_dir(tmp_path / "root" / "entity_names").to_pylist()
    return tmp_path, stats, entities, names


def test_articles_only_with_images(built):
    _, stats, entities, _ = built
    assert sorted(entities) == ["Q1000", "Q11649", "Q308", "Q90", "Q925", "de:Lokal", "fr:Tour_Eiffel"]
    assert stats["entities"] == 7


def test_page_image_free_first_then_page_image(built):
    _, _, entities, _ = built
    assert entities["Q308"]["image_url"] == commons_url("Mercury.png")
    assert entities["Q11649"]["image_url"] == commons_url("Nirvana.jpg")
    assert entities["Q11649"]["image_source"] == "page_props"
    assert commons_url("Nirvana.jpg").startswith("https://upload.wikimedia.org/wikipedia/commons/")


def test_qid_merge_and_prefer_lang(built, tmp_path):
    root, _, entities, _ = built
    assert entities["Q90"]["language"] == "en" and entities["Q90"]["languages"] == ["de", "en"]
    assert entities["Q90"]["image_url"] == commons_url("Paris_en.jpg")
    assert entities["Q1000"]["language"] == "de"  # the en page has no image
    dumps, wit = make_inputs(tmp_path)
    build_entities(EntitiesConfig(out=str(tmp_path / "r2"), dumps=str(dumps), prefer_lang=("de",)))
    again = {r["entity_id"]: r for r in read_table_dir(tmp_path / "r2" / "entities").to_pylist()}
    assert again["Q90"]["image_url"] == commons_url("Paris_de.jpg") and again["Q90"]["page_title"] == "Paris"


def test_wit_main_image_fallback_smallest_url(built):
    _, _, entities, _ = built
    eiffel = entities["fr:Tour_Eiffel"]
    assert eiffel["image_url"].endswith("/a.jpg") and eiffel["image_source"] == "wit_main_image"
    assert eiffel["qid"] is None and eiffel["page_title"] == "Tour Eiffel"
    assert entities["Q308"]["mime_type"] == "image/png" and entities["Q308"]["width"] == 640


def test_names_qualifiers_and_redirects(built):
    _, _, _, names = built
    by_entity = {}
    for row in names:
        by_entity.setdefault(row["entity_id"], set()).add((row["language"], row["name"], row["source"]))
    assert ("en", "Nirvana", "title_unqualified") in by_entity["Q11649"]
    assert ("en", "Nirvana (band)", "title") in by_entity["Q11649"]
    assert not any(n == "Mercury" for _, n, _ in by_entity["Q308"] | by_entity["Q925"])  # collision
    assert ("en", "Paname", "redirect") in by_entity["Q90"]
    assert {("en", "No image", "title"), ("de", "Ohne Bild", "title")} <= by_entity["Q1000"]
    assert strip_qualifier("X (band)") == "X" and strip_qualifier("(band)") is None


def test_resolved_config_and_stats_written(built):
    root, stats, _, _ = built
    assert (root / "root" / "config" / "build_ei.json").exists()
    assert read_stats(root / "root")["entities"]["dump_languages"] == ["de", "en"]
    assert stats["dump_counts"]["en"]["disambiguation"] == 1
    assert stats["dump_counts"]["en"]["other_namespace"] == 1


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="nothing to build"):
        EntitiesConfig(out=str(tmp_path))
    with pytest.raises(ConfigError, match="not found"):
        EntitiesConfig(out=str(tmp_path), wit=(str(tmp_path / "missing.tsv"),))
