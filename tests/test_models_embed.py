"""Batched image embedding: same vectors as one-by-one, cached (no re-embedding), resumable, missing ids reported."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.test_models_world import DictStore, one_torch_thread  # noqa: F401
from wit_retrieval.models import load_encoder
from wit_retrieval.models.embed import EmbedConfig, cache_folder, embed_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

class CountingEncoder:
    """Wraps an encoder and counts the images it encodes."""

    def __init__(self, encoder):
        self.inner = encoder
        self.metadata = encoder.metadata
        self.preprocess = encoder.preprocess
        self.encoded = 0

    def encode_pixels(self, pixels):
        self.encoded += len(pixels)
        return self.inner.encode_pixels(pixels)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("open_clip:wit-tiny-vit:random", device="cpu")


@pytest.fixture()
def store():
    rng = np.random.default_rng(0)
    return DictStore({f"{n:016x}": Image.fromarray(rng.integers(0, 255, (20 + n, 30, 3), dtype=np.uint8))
                      for n in range(23)})


@pytest.mark.parametrize("decoder", ["processes", "threads"])
def test_batched_decoding_matches_one_by_one(encoder, store, decoder):
    ids = store.ids()
    config = EmbedConfig(batch_size=5, workers=2, decoder=decoder, progress=False)
    found, matrix, missing = embed_images(encoder, store, ids, config)
    assert found == ids and missing == [] and matrix.dtype == np.float32
    one_by_one = np.vstack([encoder.encode_images([store.open(i)]) for i in ids])
    assert np.allclose(matrix, one_by_one, atol=1e-5)


def test_cache_means_a_second_run_embeds_nothing(encoder, store, tmp_path):
    config = EmbedConfig(batch_size=4, workers=2, cache_dir=str(tmp_path), part_rows=8, progress=False)
    first = CountingEncoder(encoder)
    ids, matrix, _ = embed_images(first, store, store.ids()[:10], config)
    assert first.encoded == 10
    second = CountingEncoder(encoder)
    ids2, matrix2, _ = embed_images(second, store, store.ids(), config)
    assert second.encoded == 13  # only the 13 new ones
    assert ids2[:10] == ids and np.array_equal(matrix2[:10], matrix)
    third = CountingEncoder(encoder)
    embed_images(third, store, list(reversed(store.ids())), config)
    assert third.encoded == 0
    folder = cache_folder(tmp_path, encoder.metadata)
    assert (folder / "key.json").exists() and len(list(folder.glob("part-*.parquet"))) >= 3


def test_interrupted_run_resumes_from_finished_parts(encoder, store, tmp_path):
    config = EmbedConfig(batch_size=4, workers=1, cache_dir=str(tmp_path), part_rows=8, progress=False)

    class Crash(CountingEncoder):
        def encode_pixels(self, pixels):
            if self.encoded >= 16:
                raise KeyboardInterrupt
            return super().encode_pixels(pixels)

    with pytest.raises(KeyboardInterrupt):
        embed_images(Crash(encoder), store, store.ids(), config)
    again = CountingEncoder(encoder)
    found, _, _ = embed_images(again, store, store.ids(), config)
    assert again.encoded == 23 - 16 and found == store.ids()


def test_missing_and_broken_images_are_reported(encoder, store, tmp_path):
    store.images["ffffffffffffffff"] = "not an image"
    found, matrix, missing = embed_images(encoder, store, store.ids()[:3] + ["nope", "ffffffffffffffff"],
                                          EmbedConfig(batch_size=2, progress=False, cache_dir=str(tmp_path)))
    assert found == store.ids()[:3] and sorted(missing) == ["ffffffffffffffff", "nope"] and matrix.shape == (3, 64)
