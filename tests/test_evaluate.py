"""evaluate(): encode -> index -> search -> run -> score, outputs on disk, cache reuse, the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.test_models_world import count_encoded, make_world, one_torch_thread  # noqa: F401
from wit_retrieval.evaluate import EvalConfig, evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), entities=6, scenes={"test": 20}, size=32)


@pytest.fixture(scope="module")
def encoder():
    from wit_retrieval.models import load_encoder

    return load_encoder("open_clip:wit-tiny-vit:random", device="cpu")


@pytest.mark.slow
def test_evaluate_writes_run_results_and_reuses_the_cache(world, encoder, tmp_path):
    calls = count_encoded(encoder)
    config = EvalConfig(data=str(world.root.root), model="open_clip:wit-tiny-vit:random", fusion="sum",
                        out=str(tmp_path / "sum"), cache_dir=str(tmp_path / "cache"), k=10, bootstrap=50,
                        progress=False)
    results = evaluate(config, store=world.store, encoder=encoder)
    assert calls["images"] == 20 + 6  # corpus scenes + the distinct entity images
    assert results["num_queries"] == 20 and 0 <= results["scores"]["R@10"] <= 1
    assert results["fusion"] == "sum" and results["zero_shot"] is True
    assert results["model"]["revision"] == "random-seed0"
    assert results["counts"]["corpus_missing"] == 0 and results["counts"]["entity_images_missing"] == 0
    lines = (tmp_path / "sum" / "run.trec").read_text().splitlines()
    assert len(lines) == 20 * 10 and lines[0].split()[1] == "Q0"
    written = json.loads((tmp_path / "sum" / "results.json").read_text())
    assert written["scores"] == results["scores"]
    assert json.loads((tmp_path / "sum" / "run.trec.meta.json").read_text())["fusion"] == "sum"
    assert (tmp_path / "sum" / "recall.png").exists()
    # a second evaluation (another fusion, same model) re-embeds nothing
    again = evaluate(EvalConfig(**{**config.__dict__, "fusion": "image-only", "out": str(tmp_path / "img")}),
                     store=world.store, encoder=encoder)
    assert calls["images"] == 26 and again["fusion"] == "image-only"
    names = evaluate(EvalConfig(**{**config.__dict__, "fusion": "names", "out": str(tmp_path / "names")}),
                     store=world.store, encoder=encoder)
    assert calls["images"] == 26 + 0 and names["num_queries"] == 20


def test_missing_images_and_bad_options(world, encoder, tmp_path):
    from tests.test_models_world import DictStore
    from wit_retrieval.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one of --model NAME or --checkpoint DIR"):
        EvalConfig(data="x").model_name()
    empty = DictStore({})
    with pytest.raises(ConfigError, match="none of the corpus images is in the image store"):
        evaluate(EvalConfig(data=str(world.root.root), model="m:x", fusion="sum", out=str(tmp_path / "o"),
                            progress=False), store=empty, encoder=encoder)


def test_cli_embed_writes_an_embeddings_file(world, tmp_path):
    from tests.test_models_world import write_store
    from wit_retrieval.cli import app
    from wit_retrieval.io.embeddings import read_embeddings

    write_store(world.store, tmp_path / "images")
    result = CliRunner().invoke(app, ["embed", "--model", "open_clip:wit-tiny-vit:random", "--images",
                                      str(tmp_path / "images"), "--out", str(tmp_path / "emb.parquet"),
                                      "--data", str(world.root.root), "--split", "test", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    ids, matrix = read_embeddings(tmp_path / "emb.parquet")
    assert len(ids) == 20 and matrix.shape == (20, 64) and json.loads(result.output.splitlines()[-1])["missing"] == 0


def test_cli_models_list_and_evaluate_errors():
    from wit_retrieval.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "inject" in result.output and "wit-tiny-vit" in result.output and "open_clip:" in result.output
    result = runner.invoke(app, ["evaluate", "--data", "/nonexistent", "--model", "open_clip:ViT-B-33:random"])
    assert result.exit_code == 1 and "Did you mean ViT-B-32" in result.output
