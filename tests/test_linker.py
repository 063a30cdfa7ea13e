"""The gazetteer linker: folding with offsets, boundaries, ambiguity, lengths; the spans linker."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from wit_retrieval.build.linker import LINKERS, Gazetteer, LinkerSpec, leftmost_longest
from wit_retrieval.build.names import fold_with_offsets
from wit_retrieval.build.spans import SpansLinker
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.schema import ENTITY_NAMES


def gazetteer(rows, **spec) -> Gazetteer:
    names = pa.Table.from_pylist(
        [dict(zip(("entity_id", "language", "name", "source"), row)) for row in rows], ENTITY_NAMES
    )
    return Gazetteer(LinkerSpec(**spec), names)


def surfaces(linker, text, language="en"):
    return [(text[s:e], entity) for s, e, entity in linker.link(text, language, "")]


def test_registered_names():
    assert LINKERS.names() == ["gazetteer", "spans"]
    with pytest.raises(ConfigError, match="gazeteer|gazetteer"):
        LinkerSpec(name="gazeteer")


def test_casefold_and_nfkc_with_offsets_back_to_the_original():
    linker = gazetteer([("Q1", "de", "Straße", "title"), ("Q2", "de", "Café Müller", "title"),
                        ("Q3", "de", "fish", "title")])
    text = "In der STRASSE und im Cafe\u0301 Müller: ﬁsh."  # decomposed é, ligature ﬁ
    found = surfaces(linker, text, "de")
    assert found == [("STRASSE", "Q1"), ("Cafe\u0301 Müller", "Q2"), ("ﬁsh", "Q3")]


def test_fold_offsets_map_expansions():
    folded, offsets = fold_with_offsets("aß b")
    assert folded == "ass b"
    assert offsets == [0, 1, -1, 2, 3, 4]
    assert fold_with_offsets("plain ascii") == ("plain ascii", None)


def test_leftmost_longest_non_overlapping():
    linker = gazetteer([("Q1", "en", "New York", "title"), ("Q2", "en", "New York City", "title"),
                        ("Q3", "en", "City Hall", "title"), ("Q4", "en", "York", "title")])
    assert surfaces(linker, "New York City Hall") == [("New York City", "Q2")]
    assert leftmost_longest([(5, 9, "b"), (0, 4, "a"), (0, 6, "c")]) == [(0, 6, "c")]


def test_word_boundaries_for_spaced_scripts_only():
    linker = gazetteer([("Q1", "en", "Paris", "title"), ("Q2", "en", "New York", "title"),
                        ("Q3", "ja", "北海道", "title")])
    assert surfaces(linker, "Parisian food in Paris.") == [("Paris", "Q1")]
    assert surfaces(linker, "New Yorker magazine") == []  # longest fails the boundary: no match inside
    assert surfaces(linker, "北海道に住む", "ja") == [("北海道", "Q3")]


def test_min_length_and_digit_names():
    linker = gazetteer([("Q1", "en", "Io", "title"), ("Q2", "en", "1984", "title"), ("Q3", "en", "Ivy", "title")])
    assert surfaces(linker, "Io and Ivy in 1984") == [("Ivy", "Q3")]
    linker = gazetteer([("Q2", "en", "1984", "title")], allow_digit_names=True, min_length=2)
    assert surfaces(linker, "in 1984") == [("1984", "Q2")]


def test_ambiguous_surface_not_linked_unless_one_exact_title():
    linker = gazetteer([("Q1", "en", "Mercury", "redirect"), ("Q2", "en", "Mercury", "redirect"),
                        ("Q3", "en", "Venus", "title"), ("Q4", "en", "Venus", "redirect")])
    assert surfaces(linker, "Mercury and Venus") == [("Venus", "Q3")]
    assert linker.language("en").ambiguous == 1
    # two titles that fold alike: the one spelled exactly as the surface wins
    linker = gazetteer([("Q5", "en", "NASA", "title"), ("Q6", "en", "Nasa", "title")])
    assert surfaces(linker, "NASA and Nasa and nasa") == [("NASA", "Q5"), ("Nasa", "Q6")]


def test_language_isolation():
    linker = gazetteer([("Q1", "de", "Berlin", "title")])
    assert surfaces(linker, "Berlin", "en") == []
    assert surfaces(linker, "Berlin", "de") == [("Berlin", "Q1")]


def test_spans_linker(tmp_path):
    path = tmp_path / "spans.jsonl"
    lines = [{"row_id": "r1", "start": 0, "end": 5, "entity_id": "Q1"},
             {"row_id": "r1", "start": 0, "end": 3, "entity_id": "Q9"},
             {"row_id": "r1", "start": 40, "end": 45, "entity_id": "Q2"}]  # past the end: ignored
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    linker = SpansLinker(LinkerSpec(name="spans", spans_path=str(path)))
    assert linker.link("Paris is nice", "en", "r1") == [(0, 5, "Q1")]
    assert linker.link("Paris is nice", "en", "r2") == []
    path.write_text('{"row_id": "r1", "start": 0}\n')
    with pytest.raises(InputError, match=":1:"):
        SpansLinker(LinkerSpec(name="spans", spans_path=str(path)))


def test_batch_linking_equals_row_by_row():
    linker = gazetteer([("Q1", "en", "New York", "title"), ("Q2", "en", "York", "title"),
                        ("Q3", "en", "Straße", "title"), ("Q4", "en", "Café Müller", "title"),
                        ("Q5", "de", "Berlin", "title"), ("Q6", "en", "NASA", "title"), ("Q7", "en", "Nasa", "title")])
    texts = ["I love New", "York and New York", "die STRASSE", "Café Müller, York", "Berlin", "new", "york",
             "NASA Nasa", "Cafe\u0301 Müller", "", "Newyork York", "Die ﬁne Straße, größer als Café Müller"]
    languages = ["en"] * 4 + ["de"] + ["en"] * 7
    batch = linker.link_batch(texts, languages)
    assert batch == [linker.link(t, lang) for t, lang in zip(texts, languages)]
    assert batch[0] == [] and batch[5] == [] and batch[6] == [(0, 4, "Q2")]  # no match across rows
    assert batch[1] == [(0, 4, "Q2"), (9, 17, "Q1")]
    assert [texts[-1][s:e] for s, e, _ in batch[-1]] == ["Straße", "Café Müller"]


def test_ambiguous_name_blocks_the_names_inside_it():
    linker = gazetteer([("Q1", "en", "Western Copper Shield", "title_unqualified"),
                        ("Q2", "en", "Western Copper Shield", "title_unqualified"),
                        ("Q3", "en", "Copper Shield", "title")])
    assert surfaces(linker, "The Western Copper Shield and a Copper Shield") == [("Copper Shield", "Q3")]


def test_names_ending_in_punctuation_keep_it():
    linker = gazetteer([("Q1", "en", "Copper Ring (Ostrand)", "title"), ("Q2", "en", "AC/DC", "title")])
    assert surfaces(linker, "Near Copper Ring (Ostrand), AC/DC played") == [
        ("Copper Ring (Ostrand)", "Q1"), ("AC/DC", "Q2")]
