"""The build's fast paths equal the slow paths they replace, on tricky text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wit_retrieval.build.linker import Gazetteer, LinkerSpec
from wit_retrieval.build.names import fold_with_offset_map, fold_with_offsets

# ß, ligatures, Turkish İ, Greek final sigma, combining marks, fractions, Kelvin sign, emoji, NUL
TRICKY = "aZ ßẞﬁﬂﬃİıΣσςé\u0301\u0308Ǆ½\u212a😀🎉-.\x00Straße"
texts = st.text(alphabet=st.sampled_from(TRICKY), max_size=40)


def _same_map(text: str) -> None:
    folded, offsets = fold_with_offsets(text)
    fast, mapped = fold_with_offset_map(text)
    assert fast == folded
    if offsets is None:
        assert mapped is None
    else:
        assert [mapped[i] for i in range(len(offsets))] == offsets


@given(texts)
@settings(max_examples=300, deadline=None)
def test_offset_map_equals_offset_list(text):
    _same_map(text)


def test_offset_map_on_known_expansions():
    for text in ("Straße ßß", "ﬁsh ﬃ ½", "İstanbul", "e\u0301cole Straße", "😀ßﬁ", "ß"):
        _same_map(text)


@given(st.lists(texts, min_size=1, max_size=6))
@settings(max_examples=150, deadline=None)
def test_batch_linking_equals_row_by_row(rows):
    import pyarrow as pa

    names = pa.table({
        "entity_id": ["Q1", "Q2", "Q3", "Q4"],
        "language": ["de"] * 4,
        "name": ["Straße", "ﬁsh", "İstanbul", "École"],
        "source": ["title"] * 4,
    })
    linker = Gazetteer(LinkerSpec(names_path=None), names=names)
    texts = [f"die {row} Straße und fish in istanbul école" for row in rows]
    assert linker.link_batch(texts, ["de"] * len(texts)) == [linker.link(t, "de") for t in texts]
