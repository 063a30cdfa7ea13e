"""open_clip encoders with random weights: protocol, fusions, inject, checkpoints, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_models_world import one_torch_thread  # noqa: F401
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.models import FUSIONS, Encoder, load_encoder
from wit_retrieval.models.checkpoint import build_retriever, save_checkpoint
from wit_retrieval.models.inject import tokenize_with_slots

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = "open_clip:wit-tiny-vit:random"
TEXTS = ["[MASK_0] left of [MASK_1] at sea", "[MASK_0] in a forest"]


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (40, 30), (220, 30, 30)), Image.new("RGB", (64, 64), (30, 60, 220)),
            Image.new("RGB", (50, 50), (20, 160, 40))]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A checkpoint folder of ours with both heads (random weights)."""
    built = build_retriever(TINY, {"inject": {}, "combiner": {}})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), built, fusion="inject", step=7,
                           training_datasets=["MMIR:test"])


def _unit(x):
    return np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_protocol_shapes_norms_and_metadata(images):
    encoder = load_encoder(TINY, device="cpu")
    assert isinstance(encoder, Encoder)
    img = encoder.encode_images(images)
    txt = encoder.encode_texts(["a red circle", "x"])
    qry = encoder.encode_queries(TEXTS, [images[:2], [images[2]]])
    for out, rows in ((img, 3), (txt, 2), (qry, 2)):
        assert out.dtype == np.float32 and out.shape == (rows, 64) and _unit(out)
    meta = encoder.metadata
    assert meta.revision == "random-seed0" and meta.dim == 64 and meta.zero_shot_on("mmir")
    assert "Resize(size=32" in meta.preprocessing and "inject" not in meta.fusions
    # random weights are seeded: a second load gives the same embeddings
    assert np.allclose(load_encoder(TINY, device="cpu").encode_images(images), img, atol=1e-6)


def test_simple_fusions_are_what_they_say(images):
    encoder = load_encoder(TINY, device="cpu")
    entity = encoder.encode_images(images[:2])
    emb = [entity, entity[:1]]
    text = encoder.encode_query_embeddings(TEXTS, emb, fusion="text-only")
    assert np.allclose(text, encoder.encode_texts(["something left of something at sea", "something in a forest"]),
                       atol=1e-5)
    mean = entity.mean(0) / np.linalg.norm(entity.mean(0))
    image_only = encoder.encode_query_embeddings(TEXTS, emb, fusion="image-only")
    assert np.allclose(image_only[0], mean, atol=1e-5) and np.allclose(image_only[1], entity[0], atol=1e-5)
    summed = encoder.encode_query_embeddings(TEXTS, emb, fusion="sum")
    expected = text[0] + mean
    assert np.allclose(summed[0], expected / np.linalg.norm(expected), atol=1e-5)
    names = encoder.encode_query_embeddings(TEXTS, emb, fusion="names", names=[["red circle", "blue square"], [None]])
    assert np.allclose(names, encoder.encode_texts(["red circle left of blue square at sea", "something in a forest"]),
                       atol=1e-5)


def test_missing_entity_images_are_skipped(images):
    encoder = load_encoder(TINY, device="cpu")
    entity = encoder.encode_images(images[:1])
    with_gap = np.vstack([entity, np.full((1, 64), np.nan, np.float32)])
    out = encoder.encode_query_embeddings(TEXTS[:1], [with_gap], fusion="image-only")
    assert np.allclose(out[0], entity[0], atol=1e-5)
    assert np.allclose(encoder.encode_queries(TEXTS[:1], [[images[0], None]], fusion="image-only"), out, atol=1e-5)


def test_tokenize_with_slots_maps_each_placeholder_to_its_mask():
    from wit_retrieval.models.encoders import _tokenizer, register_tiny_configs

    register_tiny_configs()
    tokenizer = _tokenizer("wit-tiny-vit")
    tokens, slots = tokenize_with_slots(tokenizer, ["[MASK_1] meets [MASK_0] and *[MASK_1]*", "no mask here"])
    star = tokenizer.encoder["*</w>"]
    assert (tokens[0] == star).sum() == 3 and (slots[0] >= 0).sum() == 3
    assert slots[0][slots[0] >= 0].tolist() == [1, 0, 1]
    assert (slots[1] == -1).all()


def test_inject_puts_each_entity_at_its_own_mask(trained_dir, images):
    encoder = load_encoder(f"local-dir:{trained_dir}", device="cpu")
    assert encoder.native_fusion == "inject" and not encoder.metadata.zero_shot_on("mmir")
    a, b = encoder.encode_images(images[:2])
    text = ["[MASK_0] left of [MASK_1] at sea"]
    ab = encoder.encode_query_embeddings(text, [np.stack([a, b])], fusion="inject")
    ba = encoder.encode_query_embeddings(text, [np.stack([b, a])], fusion="inject")
    assert _unit(ab) and not np.allclose(ab, ba, atol=1e-4)  # order matters: relations are read in context
    # with no entity image the placeholders keep their word embedding: plain encode_text of "*" text
    empty = encoder.encode_query_embeddings(text, [np.full((2, 64), np.nan, np.float32)], fusion="inject")
    assert np.allclose(empty, encoder.encode_texts(["* left of * at sea"]), atol=1e-5)


def test_combiner_head_and_missing_head_error(trained_dir, images):
    encoder = load_encoder(f"local-dir:{trained_dir}", device="cpu")
    out = encoder.encode_queries(TEXTS, [images[:2], [images[2]]], fusion="combiner")
    assert _unit(out)
    with pytest.raises(ConfigError, match="no 'inject' head"):
        load_encoder(TINY, device="cpu").encode_queries(TEXTS, [images[:2], [images[2]]], fusion="inject")


def test_checkpoint_round_trip_is_exact(trained_dir, images):
    built = build_retriever(f"local-dir:{trained_dir}")
    again = save_checkpoint(trained_dir.parent / "again", built, fusion="inject", step=7)
    first = load_encoder(f"local-dir:{trained_dir}", device="cpu")
    second = load_encoder(f"local-dir:{again}", device="cpu")
    assert np.array_equal(first.encode_images(images), second.encode_images(images))
    assert first.metadata.revision.startswith("step7-") and first.metadata.preprocessing == second.metadata.preprocessing
    spec = json.loads((trained_dir / "retriever.json").read_text())
    assert set(spec["heads"]) == {"inject", "combiner"} and len(spec["weights_sha256"]) == 64


def test_open_clip_folder_with_pt_state_dict(tmp_path, images):
    import open_clip

    from wit_retrieval.models.encoders import register_tiny_configs

    register_tiny_configs()
    model = open_clip.create_model("wit-tiny-vit")
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config("wit-tiny-vit")}))
    encoder = load_encoder(f"local-dir:{tmp_path}", device="cpu")
    with torch.no_grad():
        pixels = encoder.pixels(images)
        expected = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()
    assert np.allclose(encoder.encode_images(images), expected, atol=1e-5)
    assert encoder.metadata.revision == "local:open_clip_pytorch_model.bin"


def test_clear_errors():
    with pytest.raises(ConfigError, match=r"not in the local cache.*open_clip:ViT-B-32:/path"):
        load_encoder("open_clip:ViT-B-32:laion2b_s34b_b79k", device="cpu")
    with pytest.raises(ConfigError, match="Did you mean ViT-B-32"):
        load_encoder("open_clip:ViT-B-33:random")
    with pytest.raises(ConfigError, match="no pretrained tag 'nope'"):
        load_encoder("open_clip:ViT-B-32:nope")
    with pytest.raises(ConfigError, match="needs a scheme"):
        load_encoder("ViT-B-32")
    with pytest.raises(ConfigError, match="unknown encoder scheme 'open-clip'.*Did you mean open_clip"):
        load_encoder("open-clip:ViT-B-32:random")
    with pytest.raises(InputError, match="checkpoint folder not found"):
        load_encoder("local-dir:/nonexistent/folder")


def test_every_registered_fusion_encodes(trained_dir, images):
    encoder = load_encoder(f"local-dir:{trained_dir}", device="cpu")
    for name in FUSIONS.names():
        out = encoder.encode_queries(TEXTS, [images[:2], [images[2]]], fusion=name, names=[["a", "b"], ["c"]])
        assert out.shape == (2, 64) and _unit(out), name


def test_loading_a_checkpoint_says_its_weights_are_loaded_not_random(trained_dir):
    # open_clip logs "No pretrained weights loaded ... Model initialized randomly" when it builds the
    # architecture; our weights are loaded right after, so the user must read what is true, once
    code = ("import sys\nfrom wit_retrieval.models import load_encoder\n"
            "for _ in range(3):\n    load_encoder('local-dir:' + sys.argv[1], device='cpu')\n"
            "load_encoder('open_clip:wit-tiny-vit:random', device='cpu')\n")
    done = subprocess.run([sys.executable, "-c", code, str(trained_dir)], capture_output=True, text=True,
                          timeout=120, check=True)
    assert "initialized randomly" not in done.stderr
    assert done.stderr.count("trained weights loaded from the checkpoint (step 7)") == 1
    assert done.stderr.count("open_clip:wit-tiny-vit:random: random weights (seed 0), an untrained model") == 1
