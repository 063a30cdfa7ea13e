"""The C path of `build mmir` (build/fastpath.py, _fastbuild) equals the Python reference.

`shard._queries_python` is the reference: on the same batch the C path must give the same
QUERIES table and the same drop counts, and its Automaton.iter_long the same matches as
pyahocorasick's. A whole build gives the same tables and stats.json either way.
"""

from __future__ import annotations

import json
import os
import unicodedata
import zlib
from collections import Counter

import ahocorasick
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_build_inputs import wit_row, write_dumps, write_wit
from wit_retrieval.build import EntitiesConfig, MmirConfig, build_entities, build_mmir, fastpath
from wit_retrieval.build.fast_ids import image_id
from wit_retrieval.build.linker import Gazetteer, LinkerSpec
from wit_retrieval.build.mmir import read_split_table
from wit_retrieval.build.names import commons_url
from wit_retrieval.build.shard import WIT_QUERY_COLUMNS, FilterConfig, ShardTask, _queries_python
from wit_retrieval.build.stats import SplitStats, read_stats
from wit_retrieval.engine import EngineConfig
from wit_retrieval.io.shards import read_table_dir

if os.environ.get("WIT_RETRIEVAL_REQUIRE_C"):  # CI: a failed compile must fail, not skip
    from wit_retrieval.build import _fastbuild
else:
    _fastbuild = pytest.importorskip("wit_retrieval.build._fastbuild")

PURE = "WIT_RETRIEVAL_PURE_PYTHON"


# ---------------------------------------------------------------- Automaton.iter_long


def _pyahocorasick(keys: list[str], values: list[tuple]):
    automaton = ahocorasick.Automaton()
    for key, value in zip(keys, values):
        automaton.add_word(key, value)
    automaton.make_automaton()
    return automaton


def _same_iter_long(keys: list[str], text: str) -> None:
    values = [(len(key), i % 2, i % 3, i) for i, key in enumerate(keys)]
    automaton = _pyahocorasick(keys, values)
    # pyahocorasick ignores an empty key, and refuses to scan with no key at all
    expected = list(automaton.iter_long(text)) if automaton.kind == ahocorasick.AHOCORASICK else []
    assert _fastbuild.Automaton(keys, values).iter_long(text) == expected, (keys, text)


ALPHABET = "ab c\x00ßé中𝐀"
_keys = st.lists(st.tuples(st.text(alphabet=ALPHABET, max_size=5), st.booleans())
                 .map(lambda kp: kp[0] + " " * kp[1]), max_size=12)


@given(_keys, st.text(alphabet=ALPHABET, max_size=40))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_iter_long_equals_pyahocorasick(keys, text):
    _same_iter_long(keys, text)


@pytest.mark.parametrize(("keys", "text"), [
    (["abcd", "bc"], "abcx"),  # the path dies after "abc": fail-over to "bc"
    (["abc", "bcd"], "abcd"),  # leftmost-longest: "abc", and "bcd" overlaps it
    (["abcd", "bc"], "abc"),  # the text ends inside "abcd": no fail-over at the string's end
    (["b", "abcd"], "abc"),
    (["abcd", "bc", "c"], "abcabcx"),
    (["abcde", "bcd", "cd"], "abcdx abcd"),
    (["ab ", "b c", "c"], "ab c ab"),
    (["aaa", "aa", "a"], "aaaaaaa"),
    (["ab", "ab"], "xab"),  # a repeated key keeps the last value
    (["straße ", "ss"], "straße straße"),
    (["中国", "国"], "中中国x中"),
    (["𝐀b", "b"], "𝐀𝐀bb𝐀"),  # astral code points: no surrogate pairs in the indices
    (["\x00a", "a"], "\x00\x00a"),
])
def test_iter_long_fail_over_cases(keys, text):
    _same_iter_long(keys, text)


# ---------------------------------------------------------------- rows: the two paths on one batch

# the names of the entity_names table: titles, by language and entity id
TITLES = {
    "en": {"Q1": "Paris", "Q2": "Berlin", "Q3": "Angela Merkel", "Q4": "Eiffel Tower",
           "Q5": "Eiffel",  # a prefix of Q4's name
           "Q6": "York", "Q7": "New York",  # a suffix of the other
           "Q8": "Rome", "Q9": "London",
           "Q10": "Apple", "Q11": "APPLE",  # exact titles that fold alike: the surface decides
           "Q16": "Shield", "Q17": "Alpha Centauri",
           "Q18": "Atlantis",  # not in the entity table: unknown_entity
           "Q19": "Fischer",
           "Q20": "Mercury (planet)",  # its base "Mercury" is a blocker too
           "Q21": "AC/DC", "Q22": "-Minus",  # punctuation at the ends stays in the key
           "Q23": "1984"},  # digits only: never matched
    "de": {"Q30": "Straße des 17. Juni", "Q31": "München", "Q32": "Köln", "Q33": "Großglockner", "Q34": "Fischer",
           "Q35": "Berlin"},
    "fr": {"Q40": "École", "Q41": "Café de Flore", "Q42": "Paris",
           "Q43": "Café", "Q44": "CAFÉ"},  # fold alike; Q44 has no image
    "hi": {"Q50": "भारत", "Q51": "दिल्ली"},
    "zh": {"Q60": "北京", "Q61": "上海", "Q62": "𠀀𠀁"},  # astral CJK
    "ja": {"Q63": "東京", "Q64": "タワー"},
    "th": {"Q65": "กรุงเทพ", "Q66": "เชียงใหม่"},
    "ru": {"Q70": "Москва", "Q71": "Украинская гривна"},
}
# (entity_id, language, name, source): the ambiguous names (several entities, no title): blockers
REDIRECTS = [("Q12", "en", "Mercury"), ("Q13", "en", "Mercury"),
             ("Q14", "en", "Copper Shield"), ("Q15", "en", "Copper Shield")]  # hides "Shield" inside it
NAMES = [(e, lang, name, "title") for lang, titles in TITLES.items() for e, name in titles.items()] + [
    (*r, "redirect") for r in REDIRECTS]


def _image(entity: str) -> str:
    return commons_url(f"{entity}.jpg")


IMAGES = {e: (_image(e), image_id(_image(e))) for e, *_ in NAMES if e not in ("Q18", "Q44")}
NAMES_TABLE = pa.table({name: list(column) for name, column in
                        zip(["entity_id", "language", "name", "source"], zip(*NAMES))})
URL = "https://upload.wikimedia.org/wikipedia/commons/a/ab/"


def _row(language, text, image=None, *, page="https://en.wikipedia.org/wiki/Page", title="Page", image_url=...):
    """One WIT row of the five columns the shard reads (image: a file name under URL)."""
    if image_url is ...:
        image_url = URL + (image or f"{zlib.crc32(f'{language}{text}'.encode())}.jpg")
    return {"language": language, "page_url": page, "image_url": image_url, "page_title": title,
            "caption_reference_description": text}


ROWS = [
    # ASCII
    _row("en", "Angela Merkel visits Paris and Berlin in spring"),
    _row("en", "Paris at night, seen from Paris outskirts"),  # a repeated entity: one mask
    _row("en", "A quiet street"),  # no entity
    _row("en", "Paris"),  # too few words
    _row("en", "Paris, Berlin, Rome, London, Eiffel Tower and Angela Merkel all here"),  # too many entities
    _row("en", "The Eiffel Tower and the Eiffel gardens of New York and York"),  # prefix / suffix names
    _row("en", "Apple and APPLE and apple and ApPlE in one row here"),  # the surface decides
    _row("en", "Mercury is a planet near the sun, Paris is not"),  # ambiguous: blocked
    _row("en", "The Western Copper Shield and a Shield in Paris"),  # a blocker hides the shorter name
    _row("en", "The lost city of Atlantis near Paris"),  # unknown entity
    _row("en", "AC/DC played the -Minus tour in 1984 in Paris"),
    _row("en", "PARIS,berlin;rome. (london) [New York]"),
    _row("en", "Parisian cafés and Berliners"),  # inside words: nothing
    _row("en", "x\x00Paris\x00 Berlin is text with a NUL"),
    _row("en", "[MASK_0] is literal text beside Paris and Rome"),
    # German, folds that expand or contract
    _row("de", "Die Straße des 17. Juni in Berlin bei Nacht"),
    _row("de", "Blick auf den GROSSGLOCKNER und die STRASSE DES 17. JUNI"),
    _row("de", "Der ﬁscher aus München fährt nach Köln"),  # the ligature fi folds to two characters
    _row("de", "ẞtraße des 17. Juni ß ß Großglockner ﬁscher Köln"),
    _row("de", "Fischer in Köln, ß Berlin"),
    # decomposed text: handed back to Python
    _row("fr", "L'E\u0301cole et le Cafe\u0301 de Flore a\u0300 Paris"),
    _row("de", "Mu\u0308nchen und Ko\u0308ln am Abend"),
    _row("fr", "L'École et le Café de Flore à Paris"),
    _row("fr", "Un Café et un CAFÉ et un café à Paris"),
    _row("fr", "Un Cafe\u0301 et un CAFE\u0301 et un Café à Paris"),
    _row("fr", "Un CAFÉ noir près de Paris"),  # the case-exact entity has no image
    # combining marks in NFC text
    _row("hi", "भारत की राजधानी दिल्ली है और यह बड़ा शहर"),
    _row("hi", "दिल्ली भारत"),
    # spaceless scripts: each character is a word
    _row("zh", "北京和上海是大城市"),
    _row("zh", "北京上海"),  # no words left
    _row("zh", "北京是"),
    _row("zh", "𠀀𠀁在北京附近的地方"),
    _row("ja", "東京タワーの夜景"),
    _row("ja", "東京タワー"),
    _row("th", "กรุงเทพและเชียงใหม่เป็นเมือง"),
    _row("ru", "Москва и Украинская гривна в тексте"),
    # astral characters
    _row("en", "𝐀lpha Centauri and 😀 Paris seen at night"),
    _row("en", "😀😀 Alpha Centauri 🎉 and Rome"),
    # image URLs
    _row("en", "Paris in spring with no image", image_url=None),
    _row("en", "Paris in spring with an empty image", image_url=""),
    _row("en", "Paris in the rain seen from above", image_url="http://upload.wikimedia.org/wikipedia/commons/a/ab/x.jpg"),
    _row("en", "Paris under the snow seen from above", image_url="https://UPLOAD.Wikimedia.org/wikipedia/commons/a/ab/y.jpg"),
    _row("en", "Paris in the fog seen from above", image_url=URL + "z.jpg?width=200"),
    _row("en", "Paris under the sun seen from above", image_url=URL + "caf%c3%a9.jpg"),
    _row("en", "Paris under the moon seen from above", image_url=URL + "caf%E9.jpg"),  # not UTF-8
    _row("en", "Paris under the clouds seen from above", image_url=URL + "a b.jpg"),
    _row("en", "Paris under the stars seen from above", image_url=URL + "caf%C3%A9.jpg"),
    _row("en", "Paris in the wind seen from above", image_url=URL + "caf%20e.jpg"),
    _row("en", "Paris in the wind seen from above", image_url=URL + "Caf\u00e9_(1).jpg"),
    _row("en", "Paris in the wind seen from above", image_url=" " + URL + "pad.jpg "),
    # the target is an entity's own image
    _row("en", "Paris in spring seen from above", image_url=_image("Q1")),
    _row("en", "Paris in summer seen from above", image_url=_image("Q1").replace("https:", "http:")),
    _row("en", "Berlin in summer seen from above", image_url=_image("Q1")),
    # languages and page URLs
    _row(None, "Paris at night, seen from afar"),
    _row("xx", "Paris at night, seen from afar"),
    _row("", "Paris at night, seen from afar"),
    _row("en", "Paris at night, seen from the river", page=None),
    _row("en", "Paris at night, seen from the bridge", page="https://en.wikipedia.org/wiki/Caf%C3%A9"),
]


def _batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in WIT_QUERY_COLUMNS]))


def _task(filters: FilterConfig, split: str = "train") -> ShardTask:
    return ShardTask(path="x.tsv", split=split, entities_path="", linker=LinkerSpec(), filters=filters)


def _linker() -> Gazetteer:
    return Gazetteer(LinkerSpec(names_path=None, min_length=2), names=NAMES_TABLE)  # two-character CJK names


def _both(batch: pa.RecordBatch, filters: FilterConfig, split: str = "train", linker=None, images=IMAGES):
    """(table, dropped) of the Python path and of the C path on one batch."""
    out = []
    for fast in (False, True):
        stats = SplitStats()
        gazetteer = linker or _linker()
        if fast:
            table = fastpath.FastShard(gazetteer, images).queries(batch, split, filters, stats)
        else:
            table = _queries_python(batch, _task(filters, split), gazetteer, images, stats)
        out.append((table, dict(stats.dropped)))
    return out


def _assert_same(batch, filters, split="train", linker=None, images=IMAGES) -> pa.Table:
    (slow, slow_dropped), (fast, fast_dropped) = _both(batch, filters, split, linker, images)
    assert fast.schema == slow.schema
    assert fast.to_pylist() == slow.to_pylist()
    assert fast.equals(slow)
    assert fast_dropped == slow_dropped
    return slow


FILTERS = [
    FilterConfig(),
    FilterConfig(max_entities=2, min_context_words=0, drop_target_is_entity_image=False),
    FilterConfig(min_entities=2, max_entities=64, min_context_words=4),
    FilterConfig(min_entities=0, max_entities=1, min_context_words=1),
]


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_rows_equal_on_tricky_rows(filters, monkeypatch):
    handed_back = []  # rows the C path gave to Python: decomposed text
    fallback = fastpath.FastShard._fallback
    monkeypatch.setattr(fastpath.FastShard, "_fallback",
                        lambda self, *args: handed_back.append(args[-1]) or fallback(self, *args))
    table = _assert_same(_batch(ROWS), filters)
    assert sorted(ROWS[i]["caption_reference_description"] for i in handed_back) == sorted(
        t for r in ROWS if not unicodedata.is_normalized("NFC", t := r["caption_reference_description"]))
    if filters == FilterConfig():
        # the rows do reach every part of the paths, not only the drops
        dropped = _both(_batch(ROWS), filters)[0][1]
        assert set(dropped) == {"no_entity", "too_many_entities", "no_target_image", "unknown_entity",
                                "target_is_entity_image", "too_few_words"}
        kept = set(table["original_text"].to_pylist())
        for text in ("Blick auf den GROSSGLOCKNER und die STRASSE DES 17. JUNI",
                     "L'E\u0301cole et le Cafe\u0301 de Flore a\u0300 Paris", "भारत की राजधानी दिल्ली है और यह बड़ा शहर",
                     "北京和上海是大城市", "𝐀lpha Centauri and 😀 Paris seen at night",
                     "Apple and APPLE and apple and ApPlE in one row here", "Der ﬁscher aus München fährt nach Köln"):
            assert text in kept, text


def test_rows_equal_row_by_row():
    """Each row alone (no neighbours in the batch) and the batch in other splits."""
    for row in ROWS:
        _assert_same(_batch([row]), FilterConfig(max_entities=64, min_context_words=0))
    _assert_same(_batch(ROWS[::-1]), FilterConfig(), split="val")


def test_rows_equal_on_a_sliced_batch():
    """A batch that is a slice of a larger one: its buffers start at an offset."""
    batch = _batch(ROWS * 2).slice(7, len(ROWS))
    _assert_same(batch, FilterConfig())


def test_batches_share_one_fast_shard():
    """As in a shard: one FastShard (and one linker) for every batch, the counts summed over them.

    Entities met only while a batch runs (an exact title without an image) are added to the
    FastShard's table between batches."""
    filters = FilterConfig()
    linker, slow_stats, fast_stats = _linker(), SplitStats(), SplitStats()
    fast = fastpath.FastShard(linker, IMAGES)
    for start in range(0, len(ROWS), 9):
        batch = _batch(ROWS[start:start + 9] + ROWS[:2])
        slow = _queries_python(batch, _task(filters), linker, IMAGES, slow_stats)
        assert fast.queries(batch, "train", filters, fast_stats).to_pylist() == slow.to_pylist()
    assert fast_stats.dropped == slow_stats.dropped
    assert "Q44" in fast.index


def test_many_entities_and_masks_past_63():
    names = pa.table({"entity_id": [f"E{i}" for i in range(80)], "language": ["en"] * 80,
                      "name": [f"name{i:03d}" for i in range(80)], "source": ["title"] * 80})
    images = {f"E{i}": (_image(f"E{i}"), image_id(_image(f"E{i}"))) for i in range(80)}
    text = " and ".join(f"name{i:03d}" for i in range(80)) + " name005 again"
    batch = _batch([_row("en", text), _row("en", "only name001 and name002 here")])
    linker = Gazetteer(LinkerSpec(names_path=None), names=names)
    table = _assert_same(batch, FilterConfig(max_entities=100), linker=linker, images=images)
    assert table["num_entities"].to_pylist() == [80, 2]
    _assert_same(batch, FilterConfig(max_entities=5), linker=linker, images=images)


LINKER = _linker()  # shared by the random examples (its automata are built once)

# random rows built from the names, their fold variants and tricky characters
PIECES = ["Paris", "PARIS", "paris", "Berlin", "Eiffel", "Tower", "New", "York", "Apple", "APPLE", "Mercury",
          "Copper", "Shield", "Atlantis", "Fischer", "ﬁscher", "Straße", "STRASSE", "ẞ", "ß", "des 17. Juni",
          "München", "Mu\u0308nchen", "Köln", "École", "E\u0301cole", "Café", "de", "Flore", "भारत", "दिल्ली",
          "北京", "上海", "東京", "タワー", "กรุงเทพ", "𝐀lpha", "Alpha", "Centauri", "😀", "𠀀𠀁", "Москва", "ǅ",
          "Ⅻ", "½", "İ", "ΣΑΣ", "ﬃ", "\u0301", "\u200d", "_", "1984", "AC/DC", "-Minus", "word"]
SEPARATORS = [" ", " ", " ", "", ", ", "-", "/", "\t", "\u00a0", "\u3000", "."]
_texts = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), min_size=1, max_size=12).map(
    lambda parts: "".join(p + s for p, s in parts))
_rows = st.lists(st.tuples(st.sampled_from(["en", "de", "fr", "hi", "zh", "ja", "th", "ru"]), _texts,
                           st.sampled_from([None, "", "a.jpg", "Q1"])), min_size=1, max_size=6)


@given(_rows, st.sampled_from(FILTERS))
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_rows_equal_on_random_rows(rows, filters):
    batch = _batch([_row(lang, text, image_url=None if image is None else "" if image == "" else
                         _image(image) if image.startswith("Q") else URL + image) for lang, text, image in rows])
    _assert_same(batch, filters, linker=LINKER)


def test_rows_equal_on_real_wit_text(wit_fixtures):
    """The real rows' page descriptions as reference text, linked to their own titles and words."""
    from wit_retrieval.io.tsv import read_wit_batches

    columns = [*WIT_QUERY_COLUMNS, "context_page_description", "context_section_description"]
    table = pa.Table.from_batches(list(read_wit_batches(wit_fixtures / "wit_train_sample.tsv", columns=columns)))
    real = table.to_pylist()
    assert len(real) == 3
    names = [(f"R{i}", row["language"], row["page_title"], "title") for i, row in enumerate(real)]
    for i, row in enumerate(real):  # a few words of each text as names, and a shared word as an ambiguous one
        words = [w for w in (row["context_page_description"] or "").split() if len(w) > 4][:6]
        names += [(f"R{i}w{j}", row["language"], w.strip(".,;:()"), "redirect") for j, w in enumerate(words)]
        names += [(f"R{i}x{j}", row["language"], "Familie", "redirect") for j in range(2)]
    names_table = pa.table({k: list(v) for k, v in zip(["entity_id", "language", "name", "source"], zip(*names))})
    images = {e: (_image(e), image_id(_image(e))) for e, *_ in names}
    rows = []
    for row in real:
        for column in ("context_page_description", "context_section_description"):
            if row[column]:
                rows.append({**{c: row[c] for c in WIT_QUERY_COLUMNS}, "caption_reference_description": row[column]})
    linker = Gazetteer(LinkerSpec(names_path=None), names=names_table)
    kept = _assert_same(_batch(rows), FilterConfig(max_entities=10), linker=linker, images=images)
    assert kept.num_rows >= 3


# ---------------------------------------------------------------- whole builds


PAGES = ["Paris", "Berlin", "Angela_Merkel", "Eiffel_Tower", "Apple", "APPLE", "Mercury_(planet)",
         "Mercury_(element)"]
DE_PAGES = ["Straße_des_17._Juni", "München", "Köln", "Großglockner"]


def _world(tmp_path):
    """WIT files of three splits with tricky rows, and the entity tables of two roots built from them."""
    for lang, pages in (("en", PAGES), ("de", DE_PAGES)):
        write_dumps(tmp_path / "dumps", lang, [(i + 1, 0, t, False) for i, t in enumerate(pages)],
                    [p for i, t in enumerate(pages) for p in ((i + 1, "page_image_free", f"{lang}_{t}.jpg"),
                                                              (i + 1, "wikibase_item", f"Q{lang}{i + 1}"))],
                    [(100, 0, "Mercury")])
    train = [wit_row(r["language"] or "en", r["page_title"], f"t{i}.jpg", r["caption_reference_description"])
             for i, r in enumerate(ROWS) if r["language"] in ("en", "de", "fr") and "\x00" not in r["caption_reference_description"]]
    train += [  # more than max_entities; a blocker beside its qualified title; the entity's image; a duplicate
        wit_row("en", "All", "a2.jpg", "Paris, Berlin, Angela Merkel, Eiffel Tower, Apple and APPLE together"),
        wit_row("en", "Sky", "m1.jpg", "Mercury (planet) and Mercury near Paris at dawn"),
        {**wit_row("en", "Trip", "x", "Paris skyline at dusk"), "image_url": commons_url("en_Paris.jpg")},
        *[wit_row("en", "Trip", "t2.jpg", "Paris at night, seen from Paris outskirts")] * 2,
    ]
    wit = tmp_path / "wit"
    files = [write_wit(wit / "wit_v1.train.all-00000-of-00002.tsv", train[::2]),
             write_wit(wit / "wit_v1.train.all-00001-of-00002.tsv.gz", train[1::2]),
             write_wit(wit / "wit_v1.val.all-00000-of-00001.tsv",
                       [wit_row("en", "City", "v1.jpg", "The Eiffel Tower of Paris by night")]),
             write_wit(wit / "wit_v1.test.all-00000-of-00001.tsv.gz",
                       [wit_row("de", "Nacht", "n1.jpg", "Köln und München bei Nacht"),
                        wit_row("en", "Nuit", "n2.jpg", None)])]
    files = tuple(map(str, files))
    roots = []
    for name in ("python", "c"):
        root = tmp_path / name
        build_entities(EntitiesConfig(out=str(root), wit=files, dumps=str(tmp_path / "dumps")))
        roots.append(root)
    return roots, files


def _count_c_batches(monkeypatch) -> Counter:
    """calls["c"]: how many batches FastShard.queries has run from now on."""
    calls = Counter()
    real = fastpath.FastShard.queries

    def counted(self, *args):
        calls["c"] += 1
        return real(self, *args)

    monkeypatch.setattr(fastpath.FastShard, "queries", counted)
    return calls


def _build_both(monkeypatch, roots, files, **options) -> list[dict]:
    """Build the first root with WIT_RETRIEVAL_PURE_PYTHON=1, the second without; their stats sections."""
    calls = _count_c_batches(monkeypatch)
    sections = []
    for root, pure in zip(roots, (True, False)):
        if pure:
            monkeypatch.setenv(PURE, "1")
        else:
            monkeypatch.delenv(PURE, raising=False)
        assert fastpath.enabled() is not pure
        before = calls["c"]
        build_mmir(MmirConfig(out=str(root), wit=files, engine=EngineConfig(workers=1), **options))
        with_reference = sum(s["with_reference"] for s in read_stats(root)["mmir"]["splits"].values())
        assert (calls["c"] > before) is (not pure and with_reference > 0)  # the path the switch chose ran
        sections.append(read_stats(root)["mmir"])
    return sections


def _assert_same_build(roots, sections) -> None:
    python, c = roots
    for name in ("queries", "corpus", "qrels"):
        slow, fast = read_split_table(python, name), read_split_table(c, name)
        assert fast.to_pylist() == slow.to_pylist(), name
        assert fast.equals(slow), name
    assert read_table_dir(c / "ei").equals(read_table_dir(python / "ei"))
    slow, fast = sections
    assert fast["splits"] == slow["splits"]
    assert json.dumps(fast["bad_rows"], sort_keys=True) == json.dumps(slow["bad_rows"], sort_keys=True)
    assert (fast["files"], fast["filters"]) == (slow["files"], slow["filters"])


def test_whole_build_same_with_and_without_c(tmp_path, monkeypatch):
    roots, files = _world(tmp_path)
    sections = _build_both(monkeypatch, roots, files, export=False)
    _assert_same_build(roots, sections)
    train = sections[1]["splits"]["train"]
    assert train["queries"] > 10 and train["duplicates"] >= 1
    assert set(train["dropped"]) >= {"no_entity", "too_many_entities", "target_is_entity_image", "too_few_words"}
    assert sections[1]["splits"]["test"]["queries"] == 1


def test_whole_build_on_real_wit_rows(tmp_path, monkeypatch, wit_fixtures):
    roots, _ = _world(tmp_path)
    files = (str(wit_fixtures / "wit_train_sample.tsv"), str(wit_fixtures / "wit_test_truncated.tsv"))
    sections = _build_both(monkeypatch, roots, files, export=False)
    _assert_same_build(roots, sections)
    assert sections[1]["splits"]["train"]["rows_read"] == 3
    assert sections[1]["bad_rows"]["count"] == 1


# ---------------------------------------------------------------- the switch


def test_enabled_follows_the_environment(monkeypatch):
    monkeypatch.delenv(PURE, raising=False)
    assert fastpath.enabled() is True
    for value in ("1", "true", "yes"):
        monkeypatch.setenv(PURE, value)
        assert fastpath.enabled() is False
    monkeypatch.setenv(PURE, "0")
    assert fastpath.enabled() is True


def test_shard_dispatches_on_the_switch(monkeypatch):
    """shard._queries takes the C path only when enabled (and the result does not tell them apart)."""
    import pyarrow.compute as pc

    from wit_retrieval.build import shard

    calls = _count_c_batches(monkeypatch)
    linker, task = _linker(), _task(FilterConfig())
    # rows without a reference description in between: the C path skips them by the mask, in place
    rows = [r for row in ROWS for r in (row, {**row, "caption_reference_description": None},
                                        {**row, "caption_reference_description": " \t"})]
    batch = _batch(rows)
    text = batch.column("caption_reference_description")
    has_text = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
    assert has_text.true_count == len(ROWS)
    monkeypatch.setenv(PURE, "1")
    slow_stats, fast_stats = SplitStats(), SplitStats()
    slow = shard._queries(batch, has_text, task, linker, IMAGES, slow_stats)
    assert calls["c"] == 0
    monkeypatch.delenv(PURE)
    fast = shard._queries(batch, has_text, task, linker, IMAGES, fast_stats)
    assert calls["c"] == 1
    assert fast.num_rows and fast.equals(slow)
    assert fast_stats.dropped == slow_stats.dropped


def test_build_ei_leaves_the_automata_that_workers_load(tmp_path):
    """`build ei` caches each language's automata (with the C one as bytes); loaded, the C one scans
    as one built from the keys, and `build mmir` finds nothing left to build."""
    from wit_retrieval.build import gazetteer_cache
    from wit_retrieval.build.linker import GAZETTEER_CACHE, _Language

    (root, _), _ = _world(tmp_path)
    folder = root / "entity_names" / GAZETTEER_CACHE
    cached = sorted(folder.glob("*.keys.arrow"))
    assert {path.name.split("-")[0] for path in cached} == {"en", "de"}
    # data files only: nothing there is unpickled (or pickled)
    assert {p.name.split(".", 1)[1] for p in folder.iterdir()} == {"keys.arrow", "fast.arrow", "automaton"}
    gazetteer = Gazetteer(LinkerSpec(names_path=str(root / "entity_names")))
    assert gazetteer.warm_cache() == 0  # all there already
    for path in cached:
        lang = gazetteer_cache.load_language(path, _Language)
        fast_path = path.with_name(path.name.replace(".keys.", ".fast."))
        compiled = gazetteer_cache.load_compiled(fast_path)  # what workers load: no keys
        assert compiled["blob"], path
        loaded = _fastbuild.Automaton(compiled["blob"])
        built = _fastbuild.Automaton(lang.keys, [(*v[:3], -1) for v in lang.values])
        text = " " + " ".join(k.strip() for k in lang.keys[:50]) + " paris köln x \x00"
        assert loaded.iter_long(text) == built.iter_long(text) and built.iter_long(text)
        assert compiled["targets"].to_pylist() == [v[3] if isinstance(v[3], str) else None for v in lang.values]
        assert compiled["others"] == {k: v[3] for k, v in enumerate(lang.values) if not isinstance(v[3], str)}
    with pytest.raises(ValueError, match="blob"):
        _fastbuild.Automaton(compiled["blob"][:-4])
    path.unlink()  # a missing cache is rebuilt once by warm_cache
    assert gazetteer.warm_cache() == 1 and path.exists()
    fast_path.unlink()  # so is a missing compiled form
    assert gazetteer.warm_cache() == 1 and fast_path.exists()
    # a damaged or foreign file is rebuilt, never trusted: here a pickle that would run code
    fast_path.write_bytes(b"\x80\x04cos\nsystem\n.")
    fresh = Gazetteer(LinkerSpec(names_path=str(root / "entity_names")))
    assert fresh.compiled(path.name.split("-")[0])["targets"].equals(compiled["targets"])
    assert gazetteer_cache.load_compiled(fast_path)["targets"].equals(compiled["targets"])


def test_the_portable_sha256_build_gives_the_same_rows(tmp_path, monkeypatch):
    """Machines without OpenSSL's headers compile the portable SHA-256: built here that way, the C
    path still equals the Python one (ids included)."""
    import importlib.util
    import shutil
    import subprocess
    import sysconfig
    from pathlib import Path

    if not shutil.which("gcc"):
        pytest.skip("no gcc")
    source = Path(fastpath.__file__).with_name("_fastbuild.c")
    target = tmp_path / f"_fastbuild{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(["gcc", "-O1", "-std=c11", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    str(source), "-o", str(target)], check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("_fastbuild", target)
    portable = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(portable)
    monkeypatch.setattr(fastpath, "_fastbuild", portable)
    table = _assert_same(_batch(ROWS), FilterConfig())
    assert table.num_rows > 10  # ids of many kept rows compared
    monkeypatch.undo()
    fastpath._fastbuild.set_charinfo(fastpath.char_info)  # the module in use again


@pytest.mark.skipif(_fastbuild is None, reason="C extension not compiled")
def test_a_tampered_automaton_blob_is_refused_not_followed():
    """The cached blob may come from shared storage: links out of its arrays (the root's edge run
    first among them) are refused with ValueError before any is followed."""
    import struct

    blob = bytearray(_fastbuild.Automaton(["paris ", "berlin "], [(6, 1, 0, -1), (7, 1, 0, -1)]).to_bytes())
    assert _fastbuild.Automaton(bytes(blob)).iter_long(" paris \x00")
    for offset, value in ((16 + 4, 0x00FFFFFF), (16, 0x7FFFFFF0), (16 + 16 + 12, -7)):  # count, first, a value
        tampered = bytearray(blob)
        tampered[offset:offset + 4] = struct.pack("<i" if value < 0 else "<I", value)
        with pytest.raises(ValueError, match="blob"):
            _fastbuild.Automaton(bytes(tampered))
