"""Annotation sampling and export on a small build written with pyarrow to schema.py."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from wit_retrieval import schema
from wit_retrieval.annotation.export import label_studio_config, write_export
from wit_retrieval.annotation.sampling import SampleConfig, allocate, sample_items
from wit_retrieval.annotation.tasks import TASK_KINDS, get_kind, read_items
from wit_retrieval.errors import ConfigError
from wit_retrieval.ids import image_id
from wit_retrieval.io.shards import write_table_dir
from wit_retrieval.layout import DataRoot

COMMONS = "https://upload.wikimedia.org/wikipedia/commons"


def make_build(root: Path, queries_per_stratum: dict[tuple[str, str], int] | None = None,
               evil: str = "") -> DataRoot:
    """A tiny build: entities, test queries/corpus/qrels; `evil` is put into titles and texts."""
    strata = queries_per_stratum or {("en", "single"): 12, ("en", "multi"): 6, ("de", "single"): 5, ("de", "multi"): 3}
    root = DataRoot(root)
    entities = []
    for n in range(12):
        lang = "en" if n < 8 else "de"
        entities.append({
            "entity_id": f"Q{100 + n}", "language": lang, "page_title": f"Entity {n}{evil}",
            "page_url": f"https://{lang}.wikipedia.org/wiki/Entity_{n}",
            "image_url": f"{COMMONS}/a/ab/Entity_{n}.jpg", "image_id": image_id(f"{COMMONS}/a/ab/Entity_{n}.jpg"),
            "image_source": "page_props", "qid": f"Q{100 + n}", "languages": [lang], "mime_type": "image/jpeg",
            "width": 64, "height": 64,
        })
    write_table_dir(root.table("entities"), [pa.Table.from_pylist(entities, schema.ENTITIES)], schema.ENTITIES)
    queries, corpus, qrels = [], [], []
    q = 0
    for (lang, qtype), count in sorted(strata.items()):
        for _ in range(count):
            ents = [q % 12, (q + 5) % 12] if qtype == "multi" else [q % 12]
            names = [f"Entity {e}" for e in ents]
            text = " and ".join(names) + f" at the harbour {q}{evil}"
            masked = " and ".join(f"[MASK_{i}]" for i in range(len(ents))) + f" at the harbour {q}{evil}"
            mentions, pos = [], 0
            for i, name in enumerate(names):
                mentions.append({"mask": i, "entity_id": f"Q{100 + ents[i]}", "surface": name,
                                 "start": pos, "end": pos + len(name)})
                pos += len(name) + len(" and ")
            target = f"{COMMONS}/c/cd/Scene_{q}.jpg"
            qid = f"test-{q:04d}"
            queries.append({
                "query_id": qid, "split": "test", "language": lang, "page_title": f"Page {q}",
                "page_url": f"https://{lang}.wikipedia.org/wiki/Page_{q}", "target_image_id": image_id(target),
                "target_image_url": target, "masked_text": masked, "entity_ids": [f"Q{100 + e}" for e in ents],
                "entity_image_urls": [f"{COMMONS}/a/ab/Entity_{e}.jpg" for e in ents], "mentions": mentions,
                "query_type": qtype, "num_entities": len(ents), "original_text": text,
            })
            corpus.append({"image_id": image_id(target), "image_url": target, "split": "test"})
            qrels.append({"query_id": qid, "image_id": image_id(target), "relevance": 1})
            q += 1
    for name, rows, sch in (("queries", queries, schema.QUERIES), ("corpus", corpus, schema.CORPUS),
                            ("qrels", qrels, schema.QRELS)):
        write_table_dir(root.table_split(name, "test"), [pa.Table.from_pylist(rows, sch)], sch)
    return root


def make_run(root: DataRoot) -> dict[str, list[tuple[str, float]]]:
    """A run ranking every corpus image for every query, target first for even queries."""
    from wit_retrieval.io.shards import read_table_dir

    queries = read_table_dir(root.table_split("queries", "test")).to_pylist()
    corpus = [r["image_id"] for r in read_table_dir(root.table_split("corpus", "test")).to_pylist()]
    run = {}
    for n, query in enumerate(queries):
        others = [i for i in corpus if i != query["target_image_id"]][n % 7: n % 7 + 4]
        ranked = ([query["target_image_id"]] + others) if n % 2 == 0 else (others + [query["target_image_id"]])
        run[query["query_id"]] = [(iid, 1.0 - 0.1 * r) for r, iid in enumerate(ranked)]
    return run


def test_registry_lists_every_kind_with_labels():
    assert TASK_KINDS.names() == ["ei-correct", "mask-correct", "mmir-answerable", "relevance"]
    assert get_kind("mmir-answerable").ordinal and not get_kind("ei-correct").ordinal
    with pytest.raises(ConfigError, match="Did you mean ei-correct"):
        get_kind("ei-corect")


@pytest.mark.parametrize("mode", ["equal", "proportional"])
def test_allocate_sums_to_n_and_respects_sizes(mode):
    sizes = {("en", "single"): 100, ("en", "multi"): 3, ("de", "single"): 20, ("de", "multi"): 0}
    out = allocate(sizes, 40, mode)
    assert sum(out.values()) == 40 and all(out[k] <= sizes[k] for k in sizes)
    if mode == "equal":  # the small stratum is exhausted, the others share the rest
        assert out[("en", "multi")] == 3 and abs(out[("en", "single")] - out[("de", "single")]) <= 1
    else:
        assert out[("en", "single")] > out[("de", "single")] > out[("en", "multi")]


def test_sampling_is_stratified_seeded_and_has_gold(tmp_path):
    root = make_build(tmp_path / "build")
    config = SampleConfig(task_kinds=("mmir-answerable",), n=12, seed=3, overlap=4, gold_fraction=0.25)
    items, manifest = sample_items(root.root, config)
    again, _ = sample_items(root.root, config)
    assert [i.item_id for i in items] == [i.item_id for i in again]
    other, _ = sample_items(root.root, SampleConfig(task_kinds=("mmir-answerable",), n=12, seed=4))
    assert {i.item_id for i in other if not i.is_gold} != {i.item_id for i in items if not i.is_gold}
    regular = [i for i in items if not i.is_gold]
    assert len(regular) == 12 and len({i.item_id for i in regular}) == 12
    assert Counter((i.language, i.query_type) for i in regular) == {
        ("en", "single"): 3, ("en", "multi"): 3, ("de", "single"): 3, ("de", "multi"): 3}
    gold = [i for i in items if i.is_gold]
    assert len(gold) == 3 and all(g.gold_label == "no" for g in gold)
    for g in gold:  # a gold item shows another query's target
        assert g.candidate["image_url"] != f"{COMMONS}/c/cd/Scene_{int(g.source_id[-4:])}.jpg"
    assert all(i.overlap == 4 for i in items)
    strata = manifest["task_kinds"]["mmir-answerable"]["strata"]
    assert {(s["language"], s["query_type"]): s["population"] for s in strata}[("en", "single")] == 12


def test_every_task_kind_samples(tmp_path):
    root = make_build(tmp_path / "build")
    config = SampleConfig(task_kinds=tuple(TASK_KINDS.names()), n=8, gold_fraction=0.25)
    items, manifest = sample_items(root.root, config, run=make_run(root))
    by_kind = Counter(i.task_kind for i in items if not i.is_gold)
    assert by_kind == dict.fromkeys(TASK_KINDS.names(), 8)
    ei = next(i for i in items if i.task_kind == "ei-correct" and not i.is_gold)
    assert ei.title.startswith("Entity ") and ei.candidate["image_url"].endswith(".jpg") and ei.query_type is None
    mask = next(i for i in items if i.task_kind == "mask-correct" and not i.is_gold)
    assert all(mask.text[m["start"]:m["end"]] == m["surface"] for m in mask.mentions)
    assert [e["name"] for e in mask.entities] == [m["surface"] for m in mask.mentions]
    for item in items:
        if item.task_kind == "mask-correct" and item.is_gold:  # linked to entities the text does not mention
            assert not {e["name"] for e in item.entities} & {m["surface"] for m in item.mentions}
    for item in (i for i in items if i.task_kind == "relevance"):
        if item.is_gold:
            assert item.candidate == item.reference and item.gold_label == "yes"
        else:
            assert item.candidate["image_id"] != item.reference["image_id"] and item.rank >= 1
            assert item.candidate["image_url"].startswith(COMMONS)
    with pytest.raises(ConfigError, match="needs a run"):
        sample_items(root.root, SampleConfig(task_kinds=("relevance",)))


def test_export_writes_every_format_without_gold_answers(tmp_path):
    root = make_build(tmp_path / "build")
    items, manifest = sample_items(root.root, SampleConfig(task_kinds=("ei-correct", "mask-correct"), n=6))
    out = tmp_path / "export"
    write_export(items, manifest, out)
    assert [i.item_id for i in read_items(out)] == [i.item_id for i in items]
    with (out / "crowd.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(items) and "gold_label" not in rows[0] and "is_gold" not in rows[0]
    for kind in ("ei-correct", "mask-correct"):
        tasks = json.loads((out / "label_studio" / f"{kind}.tasks.json").read_text(encoding="utf-8"))
        assert tasks and all("gold_label" not in t["data"] and "is_gold" not in t["data"] for t in tasks)
        config = ET.fromstring((out / "label_studio" / f"{kind}.config.xml").read_text(encoding="utf-8"))
        choices = [c.get("value") for c in config.iter("Choice")]
        assert choices == list(get_kind(kind).labels)
        names = {el.get("name") for el in config.iter() if el.get("name")}
        assert next(config.iter("Choices")).get("toName") in names
        # every $variable the config uses is a field of the tasks
        variables = {v[1:] for el in config.iter() for k in ("value", "valueList") if (v := el.get(k) or "")
                     .startswith("$")}
        assert variables <= set(tasks[0]["data"])
    assert json.loads((out / "manifest.json").read_text())["task_kinds"]["mask-correct"]["items"] == 6


def test_committed_label_studio_configs_match_the_code():
    folder = Path(__file__).resolve().parents[1] / "annotation" / "label_studio"
    for kind in TASK_KINDS.names():
        committed = (folder / f"{kind}.xml").read_text(encoding="utf-8")
        assert committed == label_studio_config(get_kind(kind)), f"annotation/label_studio/{kind}.xml is stale"


def test_every_kind_has_a_guideline_naming_its_labels():
    folder = Path(__file__).resolve().parents[1] / "annotation" / "guidelines"
    for kind in TASK_KINDS.names():
        text = (folder / f"{kind}.md").read_text(encoding="utf-8")
        assert get_kind(kind).question in text
        for n, label in enumerate(get_kind(kind).labels, 1):
            assert f"**{n} = {label}**" in text, f"{kind}: key {n} = {label} is not explained"


def test_cli_exports_relevance_items_from_a_trec_run(tmp_path):
    from typer.testing import CliRunner

    from wit_retrieval.cli import app
    from wit_retrieval.io.runs import write_trec

    root = make_build(tmp_path / "build")
    write_trec(make_run(root), tmp_path / "run.trec", tag="test")
    result = CliRunner().invoke(app, ["annotate", "export", str(root.root), "--out", str(tmp_path / "audit"),
                                      "--task", "relevance", "--run", str(tmp_path / "run.trec"), "--n", "9"])
    assert result.exit_code == 0, result.output
    items = read_items(tmp_path / "audit")
    regular = [i for i in items if not i.is_gold]
    assert len(regular) == 9 and all(i.candidate["image_id"] != i.reference["image_id"] for i in regular)
    assert all(1 <= i.rank <= 5 for i in regular)
