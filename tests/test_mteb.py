"""wit_retrieval.mteb: MMIR as MTEB tasks (build root and hf export), our encoder inside mteb.evaluate."""

from __future__ import annotations

import json

import pytest

from tests.test_models_world import make_world, one_torch_thread, write_store  # noqa: F401

pytest.importorskip("mteb")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = "open_clip:wit-tiny-vit:random"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("mteb")
    built = make_world(base / "root", entities=6, scenes={"test": 16}, size=32)
    write_store(built.store, base / "root" / "images")
    return built


def test_language_table_codes_are_mteb_codes():
    from mteb.languages.check_language_code import check_language_code

    from wit_retrieval.langcodes import languages, mteb_code

    for language in languages().values():
        check_language_code(language.mteb)
    assert mteb_code("de") == "deu-Latn" and mteb_code("zh-TW") == "zho-Hant" and mteb_code("xx") is None


def test_tasks_metadata_validates_and_url_exports_need_a_store(world, tmp_path):
    from wit_retrieval.errors import ConfigError
    from wit_retrieval.exports.hf import HfExportConfig, export_hf
    from wit_retrieval.mteb import tasks

    made = tasks(world.root.root)
    assert [t.metadata.name for t in made] == ["MMIRIT2IRetrieval", "MMIRSingleEntityIT2IRetrieval",
                                               "MMIRMultiEntityIT2IRetrieval", "MMIRLanguageIT2IRetrieval"]
    for task in made:
        task.metadata._validate_metadata()
    assert made[3].metadata.eval_langs == {"en": ["eng-Latn"]}
    made[1].load_data()
    single = made[1].dataset["default"]["test"]
    assert 0 < len(single["queries"]) < 16 and all(len(i) == 1 for i in single["queries"]["image"])
    export_hf(HfExportConfig(root=str(world.root.root), out=str(tmp_path / "urls"), progress=False))
    with pytest.raises(ConfigError, match="has image URLs, not images: pass image_store="):
        tasks(tmp_path / "urls")
    from_urls = tasks(tmp_path / "urls", image_store=world.root.images)[0]
    from_urls.load_data()
    made[0].load_data()
    ours, theirs = made[0].dataset["default"]["test"], from_urls.dataset["default"]["test"]
    assert ours["queries"]["id"] == theirs["queries"]["id"] and ours["relevant_docs"] == theirs["relevant_docs"]
    assert ours["queries"][0]["image"][0].tobytes() == theirs["queries"][0]["image"][0].tobytes()
    # re-exported into the same folder (now embedded): the tasks see the new files, not a cached copy
    export_hf(HfExportConfig(root=str(world.root.root), out=str(tmp_path / "urls"), images="embed", progress=False))
    assert tasks(tmp_path / "urls")[0].metadata.dataset["path"] == str(tmp_path / "urls")


def _our_scores(run: dict, qrels: dict) -> dict:
    from wit_retrieval.metrics import score

    results = score(run, qrels, "R@1,R@5,R@10,Success@1,Success@5,Success@10,nDCG@10", bootstrap=0)
    return dict(results["scores"] if isinstance(results, dict) else results.scores)


def _find_run(node, qids: set) -> dict:
    """The {query: {doc: score}} part of mteb's predictions file, wherever it nests it."""
    if isinstance(node, dict):
        if qids & set(node):
            return node
        for value in node.values():
            found = _find_run(value, qids)
            if found:
                return found
    return {}


def test_our_encoder_through_mteb_evaluate_scores_as_ours(world, tmp_path):
    import mteb

    from wit_retrieval.exports.hf import HfExportConfig, export_hf
    from wit_retrieval.mteb import encoder, tasks

    export_hf(HfExportConfig(root=str(world.root.root), out=str(tmp_path / "hf"), images="embed", progress=False))
    task = tasks(tmp_path / "hf")[0]
    model = encoder(TINY, fusion="sum", device="cpu")
    result = mteb.evaluate(model, tasks=[task], cache=None, prediction_folder=tmp_path / "pred",
                           encode_kwargs={"batch_size": 8, "show_progress_bar": False})
    theirs = result.task_results[0].scores["test"][0]
    predictions = json.loads(next((tmp_path / "pred").glob("*predictions.json")).read_text())
    from wit_retrieval.metrics import load_qrels

    qrels = load_qrels(world.root.root, "test")  # mteb drops task.dataset after evaluating
    ranked = _find_run(predictions, set(qrels))
    run = {q: sorted(docs.items(), key=lambda kv: -kv[1]) for q, docs in ranked.items()}
    ours = _our_scores(run, qrels)
    for k in (1, 5, 10):
        assert ours[f"R@{k}"] == pytest.approx(theirs[f"recall_at_{k}"], abs=1e-4)
        assert ours[f"Success@{k}"] == pytest.approx(theirs[f"hit_rate_at_{k}"], abs=1e-4)
    assert ours["nDCG@10"] == pytest.approx(theirs["ndcg_at_10"], abs=1e-4)
    # the same rankings as our own pipeline gives (rank_queries over the store)
    from wit_retrieval.evaluate import rank_queries
    from wit_retrieval.models.train_data import read_queries

    corpus = sorted({d for docs in qrels.values() for d in docs})
    own = rank_queries(model.ours, read_queries(world.root.root, "test"), corpus, world.store, fusion="sum", k=10)
    assert {q: r[0][0] for q, r in own.items()} == {q: r[0][0] for q, r in run.items()}


def test_encoder_wraps_checkpoints_and_every_fusion_with_image_lists(world, tmp_path):
    import numpy as np

    from wit_retrieval.errors import ConfigError
    from wit_retrieval.models.checkpoint import build_retriever, save_checkpoint
    from wit_retrieval.mteb import encoder

    ckpt = save_checkpoint(tmp_path / "ckpt", build_retriever(TINY, {"inject": {}, "combiner": {}}),
                           fusion="inject", step=1)
    images = [world.store.open(i) for i in world.store.ids()[:3]]
    texts = ["[MASK_0] left of [MASK_1] at sea", "[MASK_0] in a forest"]
    lists = [images[:2], [images[2]]]
    for fusion in ("inject", "combiner", "sum", "image-only"):
        model = encoder(f"local-dir:{ckpt}", fusion=fusion, device="cpu")
        got = model.encode([{"id": ["a", "b"], "text": texts, "query": texts, "image": lists}], task_metadata=None,
                           hf_split="test", hf_subset="default")
        assert np.allclose(got, model.ours.encode_queries(texts, lists, fusion=fusion), atol=1e-5)
    assert encoder(f"local-dir:{ckpt}", device="cpu").fusion == "inject"  # the checkpoint's own
    docs = model.encode([{"id": ["x"], "image": images[:1]}], task_metadata=None, hf_split="test",
                        hf_subset="default")
    assert np.allclose(docs, model.ours.encode_images(images[:1]), atol=1e-5)
    with pytest.raises(ConfigError, match="has no fusion 'inject'"):
        encoder(TINY, fusion="inject", device="cpu")
