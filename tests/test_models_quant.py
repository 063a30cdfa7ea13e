"""Post-training quantization: the weights really are int8 / packed int4 with per-channel scales, the
embeddings stay close to fp32, the export round-trips, the cache key and results record the scheme,
and bad input gives one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tests.test_models_world import make_world, one_torch_thread, write_store  # noqa: F401
from wit_retrieval.cli import app
from wit_retrieval.errors import ConfigError
from wit_retrieval.models.checkpoint import build_retriever
from wit_retrieval.models.quant import (
    Int8Attention,
    Int8Linear,
    QuantEmbedding,
    export_bytes,
    pack_int4,
    quantize_model,
    unpack_int4,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def built():
    return build_retriever("open_clip:wit-tiny-vit:random", {"inject": {}, "combiner": {}})


def _features(model, built):
    pixels = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = built.tokenizer(["red circle left of blue square at sea", "a cat", "three things in a row"])
    with torch.inference_mode():
        return model.image_features(pixels), model.text_features(tokens)


def test_int8_weights_are_int8_per_channel_and_run_int8_kernels(built):
    model = copy.deepcopy(built.model).eval()
    fc = model.clip.visual.transformer.resblocks[0].mlp.c_fc.weight.detach().clone()
    info = quantize_model(model, "int8")
    assert info["scheme"] == "int8" and info["int8_kernels"] > 0
    layer = model.clip.visual.transformer.resblocks[0].mlp.c_fc
    assert isinstance(layer, Int8Linear) and layer.weight_q.dtype == torch.int8
    assert layer.weight_scale.shape == (fc.shape[0], 1)
    torch.testing.assert_close(layer.weight_scale, fc.abs().amax(1, keepdim=True) / 127)
    assert layer.weight_q.abs().amax(1).eq(127).all()  # each row uses its own full range
    assert (layer.weight_q.float() * layer.weight_scale - fc).abs().max() <= layer.weight_scale.max() / 2 + 1e-7
    assert isinstance(model.clip.transformer.resblocks[0].attn, Int8Attention)
    assert isinstance(model.heads["inject"].proj[0], Int8Linear)
    assert isinstance(model.clip.token_embedding, QuantEmbedding)
    assert model.clip.token_embedding.weight_q.dtype == torch.int8
    conv = model.clip.visual.conv1  # no int8 conv kernel: stored int8, dequantized at use
    assert conv.weight_q.dtype == torch.int8 and "weight" not in dict(conv.named_parameters())
    assert model.clip.text_projection_q.dtype == torch.int8
    projection = built.model.clip.text_projection.detach()  # x @ P: output channels are P's columns
    torch.testing.assert_close(model.clip.text_projection_scale, projection.abs().amax(0)[:, None] / 127)
    assert not any(p.ndim >= 2 for n, p in model.named_parameters() if "positional" not in n
                   and "class_embedding" not in n)
    for got, want in zip(_features(model, built), _features(built.model, built)):
        assert (got * want).sum(1).min() > 0.995
    assert export_bytes(model) < 0.3 * export_bytes(built.model)


def test_int4_weights_are_packed_two_per_byte(built):
    model = copy.deepcopy(built.model).eval()
    fc = model.clip.visual.transformer.resblocks[0].mlp.c_fc.weight.detach().clone()
    quantize_model(model, "int4")
    layer = model.clip.visual.transformer.resblocks[0].mlp.c_fc
    assert layer.weight_q4.dtype == torch.uint8 and layer.weight_q4.shape == (fc.shape[0], fc.shape[1] // 2)
    values = unpack_int4(layer.weight_q4, fc.shape[1])
    assert values.min() >= -7 and values.max() <= 7 and values.abs().amax(1).eq(7).all()
    torch.testing.assert_close(layer.weight_scale, fc.abs().amax(1, keepdim=True) / 7)
    assert (layer.weight - fc).abs().max() <= layer.weight_scale.max() / 2 + 1e-6  # dequantized at use
    assert model.clip.token_embedding.weight_q4.dtype == torch.uint8
    image, text = _features(model, built)
    ref_image, ref_text = _features(built.model, built)
    assert (image * ref_image).sum(1).min() > 0.9 and (text * ref_text).sum(1).min() > 0.8
    assert export_bytes(model) < 0.17 * export_bytes(built.model)


def test_int4_packing_round_trips_odd_widths():
    q = torch.randint(-7, 8, (5, 9), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.shape == (5, 5) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, 9), q)


def test_export_loads_into_a_fresh_quantized_model(built, tmp_path):
    from safetensors.torch import load_file, save_file

    model = copy.deepcopy(built.model).eval()
    quantize_model(model, "int8")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "q.safetensors"))
    fresh = build_retriever("open_clip:wit-tiny-vit:random", {"inject": {}, "combiner": {}}, seed=5).model.eval()
    quantize_model(fresh, "int8")
    fresh.load_state_dict(load_file(str(tmp_path / "q.safetensors")))
    for got, want in zip(_features(fresh, built), _features(model, built)):
        torch.testing.assert_close(got, want)


def test_unknown_scheme_and_unquantizable_modules_are_one_line(built):
    with pytest.raises(ConfigError, match="unknown quantization scheme 'int3'"):
        quantize_model(copy.deepcopy(built.model), "int3")
    odd = copy.deepcopy(built.model)
    odd.heads["pair"] = nn.Bilinear(4, 4, 2)
    with pytest.raises(ConfigError, match=r"heads\.pair\.weight \(Bilinear\)"):
        quantize_model(odd, "int8")
    with pytest.raises(ConfigError, match="nothing to quantize"):
        quantize_model(nn.Module(), "int4")


def test_evaluate_and_embed_record_the_scheme_and_key_the_cache(tmp_path):
    world = make_world(tmp_path / "root", entities=6, scenes={"test": 20}, size=32)
    write_store(world.store, world.root.images)
    runner = CliRunner()
    results_dir = world.root.results
    common = ["evaluate", "--model", "open_clip:wit-tiny-vit:random", "--data", str(world.root.root),
              "--fusion", "sum", "--bootstrap", "0", "--cache-dir", str(tmp_path / "cache")]
    for scheme in ("fp32", "int8", "int4"):
        result = runner.invoke(app, [*common, "--quantize", scheme, "--out", str(results_dir / scheme),
                                     "--dims", "1/2,16" if scheme == "fp32" else ""])
        assert result.exit_code == 0, result.output
    widths = {d: json.loads((results_dir / f"fp32-d{d}" / "results.json").read_text()) for d in (32, 16)}
    assert widths[32]["dim"] == 32 and widths[16]["dim"] == 16 and widths[16]["quantization"]["scheme"] == "fp32"
    results = {s: json.loads((results_dir / s / "results.json").read_text()) for s in ("fp32", "int8", "int4")}
    assert results["fp32"]["dim"] == 64 and results["int8"]["quantization"]["scheme"] == "int8" and results["int8"]["quantization"]["source"] == "ptq"
    assert results["int4"]["model"]["quantization"] == "int4-ptq" and results["fp32"]["model"]["quantization"] == ""
    assert results["int4"]["quantization"]["size_bytes"] < results["int8"]["quantization"]["size_bytes"]
    assert len(list((tmp_path / "cache").glob("images-*"))) == 3  # one cache per scheme
    result = runner.invoke(app, ["embed", "--model", "open_clip:wit-tiny-vit:random", "--images",
                                 str(world.root.images), "--out", str(tmp_path / "e.parquet"), "--quantize", "int8"])
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[-1])["quantization"] == "int8", result.output
    result = runner.invoke(app, [*common, "--quantize", "int3"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "unknown quantization scheme 'int3'; use int8, int4 or fp32" in result.output
    result = runner.invoke(app, [*common, "--dims", "1/0"])
    assert result.exit_code == 1 and "--dims '1/0'" in result.output
    result = runner.invoke(app, ["report", str(world.root.root), "--out", str(tmp_path / "report"),
                                 "--title", "the miniature world"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Small retrievers: quantized weights x embedding width" in report and "(the miniature world)" in report
    section = report.split("## Small retrievers")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| fp32") or line.startswith("| int")]
    assert {line.split(" | ")[1] for line in table} == {"fp32", "int8 post-training", "int4 post-training"}
    assert {line.split(" | ")[2] for line in table} == {"64", "32", "16"} and "tradeoff.png" in report
    assert (tmp_path / "report" / "tradeoff.png").stat().st_size > 10_000
