"""`wit-retrieval validate | score | compare` on a small data root, through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from wit_retrieval import __version__
from wit_retrieval.cli import app
from wit_retrieval.ids import image_id
from wit_retrieval.io.runs import write_json_run, write_qrels_trec, write_trec
from wit_retrieval.io.shards import write_table_dir
from wit_retrieval.layout import DataRoot
from wit_retrieval.schema import CORPUS, QRELS, QUERIES

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data root (corpus, qrels, queries of split test) and two runs, B better than A."""
    tmp = tmp_path_factory.mktemp("scoring")
    root = DataRoot(tmp / "root")
    rng = np.random.default_rng(0)
    urls = [f"https://upload.wikimedia.org/wikipedia/commons/a/ab/Img_{i}.jpg" for i in range(200)]
    ids = [image_id(u) for u in urls]
    write_table_dir(root.table_split("corpus", "test"), [pa.table({"image_id": ids, "image_url": urls,
                                                                    "split": ["test"] * 200})], CORPUS)
    qids = [f"test-{i:03d}" for i in range(80)]
    target = {q: ids[int(t)] for q, t in zip(qids, rng.integers(0, 200, 80))}
    write_table_dir(root.table_split("qrels", "test"), [pa.table({
        "query_id": qids, "image_id": [target[q] for q in qids], "relevance": pa.array([1] * 80, pa.int32())})],
        QRELS)
    queries = {name: [None] * 80 for name in QUERIES.names}
    queries.update(query_id=qids, split=["test"] * 80, language=(["en", "de"] * 40),
                   query_type=["single", "multi", "multi", "single"] * 20, num_entities=[1, 2, 2, 1] * 20)
    write_table_dir(root.table_split("queries", "test"), [pa.table(queries, schema=QUERIES)], QUERIES)
    runs = {}
    for name, hit_rate in (("a", 0.3), ("b", 0.9)):
        run = {}
        for q in qids[:-2]:  # two queries missing
            docs = [d for d in rng.choice(ids, 10, replace=False) if d != target[q]]
            if rng.random() < hit_rate:
                docs.insert(int(rng.integers(0, 3)), target[q])
            run[q] = [(d, 10.0 - j) for j, d in enumerate(docs)]
        runs[name] = run
    write_trec(runs["a"], tmp / "a.trec", tag="a")
    write_json_run(runs["b"], tmp / "b.json", split="test")
    (tmp / "b.json.meta.json").write_text(json.dumps({"model": "clip-tiny", "fusion": "sum"}))
    write_qrels_trec({q: {target[q]: 1} for q in qids}, tmp / "qrels.txt")
    return tmp, runs


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_score_writes_results_json_and_plots(world):
    tmp, _ = world
    out = invoke("score", tmp / "b.json", "--data", tmp / "root", "--split", "test", "--json", tmp / "b.res.json",
                 "--plots", tmp / "plots", "--bootstrap", "200", "--per-query", "--measures", "R@1,R@10,Success@10,nDCG@10")
    assert out.exit_code == 0, out.output
    assert "R@10" in out.stdout and "missing_query" in out.output
    doc = json.loads((tmp / "b.res.json").read_text())
    assert list(doc["scores"]) == ["R@1", "R@10", "Success@10", "nDCG@10"]
    assert doc["scores"]["R@10"] == doc["scores"]["Success@10"] > 0.7  # one target per query
    assert doc["num_queries"] == 80 and doc["corpus_size"] == 200 and doc["chance"]["R@10"] == 10 / 200
    assert doc["run_metadata"]["model"] == "clip-tiny" and doc["run_metadata"]["split"] == "test"
    assert doc["toolkit_version"] == __version__ and len(doc["dataset_revision"]) == 16
    assert set(doc["breakdowns"]) == {"language", "query_type", "num_entities"}
    assert len(doc["per_query"]["query_id"]) == 80 and doc["evaluation_time_s"] > 0
    assert sorted(p.name for p in (tmp / "plots").iterdir()) == [
        "by_language.png", "by_num_entities.png", "by_query_type.png", "recall_at_k.png"]


def test_score_with_qrels_file_matches_data_root(world):
    tmp, _ = world
    by_root = invoke("score", tmp / "a.trec", "--data", tmp / "root", "--split", "test", "--json", tmp / "r1.json",
                     "--bootstrap", "0")
    by_file = invoke("score", tmp / "a.trec", "--qrels", tmp / "qrels.txt", "--json", tmp / "r2.json",
                     "--bootstrap", "0")
    assert by_root.exit_code == 0 and by_file.exit_code == 0, by_file.output
    one, two = (json.loads((tmp / n).read_text()) for n in ("r1.json", "r2.json"))
    assert one["scores"] == two["scores"] and two["breakdowns"] == {} and two["corpus_size"] is None


def test_compare_finds_the_better_run(world):
    tmp, _ = world
    out = invoke("compare", tmp / "a.trec", tmp / "b.json", "--data", tmp / "root", "--split", "test",
                 "--permutations", "2000", "--bootstrap", "200", "--json", tmp / "cmp.json")
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp / "cmp.json").read_text())
    test = doc["tests"]["R@10"]
    assert doc["run_a"] == "a.trec" and test["mean_difference"] > 0.3 and test["p_permutation"] < 0.01
    assert set(doc["breakdowns"]["language"]) == {"de", "en"}


def test_validate_exit_codes_and_one_line_errors(world):
    tmp, runs = world
    assert invoke("validate", tmp / "a.trec", "--data", tmp / "root", "--split", "test").exit_code == 0
    assert invoke("validate", tmp / "a.trec", "--data", tmp / "root", "--split", "test", "--strict").exit_code == 1
    bad = tmp / "bad.trec"
    bad.write_text((tmp / "a.trec").read_text() + "test-000 Q0 nope 99 0.1 a\n")
    out = invoke("validate", bad, "--data", tmp / "root", "--split", "test", "--json", tmp / "report.json")
    assert out.exit_code == 1 and "unknown_image" in out.output
    report = json.loads((tmp / "report.json").read_text())
    assert report["problems"][-1]["line"] == len((tmp / "a.trec").read_text().splitlines()) + 1
    scored = invoke("score", bad, "--data", tmp / "root", "--split", "test")
    assert scored.exit_code == 1 and scored.output.strip().splitlines()[-1].startswith("error: ")
    no_split = invoke("score", bad, "--data", tmp / "root")
    assert no_split.exit_code == 1 and no_split.output.strip() == "error: --data needs --split (train | val | test)"
    bad_measure = invoke("score", tmp / "a.trec", "--qrels", tmp / "qrels.txt", "--measures", "nDGC@10")
    assert bad_measure.exit_code == 1 and "Did you mean nDCG" in bad_measure.output


def test_library_loaders_on_the_data_root(world):
    from wit_retrieval.metrics import evaluate_run, load_qrels
    from wit_retrieval.results import dataset_revision, load_split_inputs

    tmp, runs = world
    qrels = load_qrels(tmp / "root", "test")
    assert len(qrels) == 80 and all(len(docs) == 1 for docs in qrels.values())
    inputs = load_split_inputs(tmp / "root", "test")
    assert inputs.corpus_size == 200 and inputs.queries.num_rows == 80
    assert inputs.revision == dataset_revision(tmp / "root")
    assert evaluate_run(runs["a"], qrels, "R@10") == evaluate_run(runs["a"], inputs.qrels, "R@10")


def test_compare_names_evaluate_outputs_by_their_folder(world):
    tmp, _ = world
    for name in ("zero-shot", "trained"):
        (tmp / name).mkdir(exist_ok=True)
        (tmp / name / "run.trec").write_text((tmp / "a.trec").read_text())
    out = invoke("compare", tmp / "zero-shot" / "run.trec", tmp / "trained" / "run.trec", "--data", tmp / "root",
                 "--split", "test", "--permutations", "200", "--bootstrap", "50", "--json", tmp / "cmp2.json")
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp / "cmp2.json").read_text())
    assert (doc["run_a"], doc["run_b"]) == ("zero-shot", "trained")
    assert doc["tests"]["R@10"]["mean_difference"] == 0.0
