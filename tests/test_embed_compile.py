"""The fp32 oneDNN fast path of image embedding: same embeddings as eager, eager when it cannot apply."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from tests.test_models_world import DictStore, one_torch_thread  # noqa: F401
from wit_retrieval.errors import ConfigError
from wit_retrieval.models import load_encoder
from wit_retrieval.models.embed import EmbedConfig, embed_images
from wit_retrieval.models.onednn import FastBlock, fast_encoding

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ATOL = 1e-5  # float rounding of another summation order; measured ~1e-7 on unit vectors


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("open_clip:wit-tiny-vit:random", device="cpu")


@pytest.fixture(scope="module")
def store():
    rng = np.random.default_rng(1)
    return DictStore({f"{n:016x}": Image.fromarray(rng.integers(0, 255, (24 + n, 36, 3), dtype=np.uint8))
                      for n in range(13)})


def embed(encoder, store, fast_path: str):
    config = EmbedConfig(batch_size=5, workers=2, progress=False, fast_path=fast_path)  # last batch: 3 rows
    return embed_images(encoder, store, store.ids(), config)


def test_fast_path_equals_eager_within_float_rounding(encoder, store):
    blocks = encoder.model.clip.visual.transformer.resblocks
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the fast path ran
        with fast_encoding(encoder, "onednn", 5) as encode:
            assert all(isinstance(b, FastBlock) for b in blocks)
            blocks[0].register_forward_hook(lambda *_: seen.append(True))
            encode(encoder.pixels([store.open(store.ids()[0])]))
    assert seen and not any(isinstance(b, FastBlock) for b in blocks)  # restored
    eager_ids, eager, _ = embed(encoder, store, "eager")
    fast_ids, fast, _ = embed(encoder, store, "onednn")
    assert fast_ids == eager_ids and fast.dtype == np.float32
    assert np.abs(fast - eager).max() < ATOL
    assert (fast * eager).sum(1).min() > 1 - 1e-6


def test_fast_path_shares_the_eager_cache(encoder, store, tmp_path, monkeypatch):
    # the cache key names what the embeddings mean (model, revision, preprocessing); the path only rounds
    # differently, so a cache filled eager serves the fast path and the other way round
    config = EmbedConfig(batch_size=5, workers=2, progress=False, cache_dir=str(tmp_path), fast_path="eager")
    embed_images(encoder, store, store.ids(), config)
    encoded = []
    monkeypatch.setattr(encoder, "encode_pixels", lambda pixels: encoded.append(len(pixels)))
    found, _, _ = embed_images(encoder, store, store.ids(), replace(config, fast_path="onednn"))
    assert found == store.ids() and encoded == []


def test_failure_in_the_first_batch_falls_back_to_eager(encoder, store, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(FastBlock, "forward", broken)
    with pytest.warns(RuntimeWarning, match="fast path failed"):
        _, fast, _ = embed(encoder, store, "onednn")
    _, eager, _ = embed(encoder, store, "eager")
    assert np.array_equal(fast, eager)
    assert not any(isinstance(b, FastBlock) for b in encoder.model.clip.visual.transformer.resblocks)


def test_packing_failure_falls_back_to_eager(encoder, store, monkeypatch):
    import torch

    def broken(*_args, **_kwargs):
        raise RuntimeError("no oneDNN")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", broken)
    with pytest.warns(RuntimeWarning, match="unavailable"):
        _, fast, _ = embed(encoder, store, "onednn")
    _, eager, _ = embed(encoder, store, "eager")
    assert np.array_equal(fast, eager)


def test_models_without_vit_blocks_run_eager(store):
    resnet = load_encoder("open_clip:wit-tiny-rn:random", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, auto, _ = embed(resnet, store, "auto")  # auto: quietly eager
    with pytest.warns(RuntimeWarning, match="not a ViT"):
        _, asked, _ = embed(resnet, store, "onednn")
    assert np.array_equal(auto, asked)


def test_unknown_fast_path_is_a_config_error(encoder):
    with pytest.raises(ConfigError, match="fast_path"):
        EmbedConfig(fast_path="inductor")
    with pytest.raises(ConfigError, match="fast_path"), fast_encoding(encoder, "jit"):
        pass


def test_auto_leaves_narrow_towers_eager(encoder):
    # wit-tiny-vit is 64 wide: packing and oneDNN's first calls would cost more than they save
    with fast_encoding(encoder, "auto", 5) as encode:
        assert encode == encoder.encode_pixels
        assert not any(isinstance(b, FastBlock) for b in encoder.model.clip.visual.transformer.resblocks)
