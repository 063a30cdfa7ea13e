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


def test_split_preprocessing_equals_open_clip_transform(encoder):
    import open_clip
    import torch

    from wit_retrieval.models.preprocess import prepare, split_transform, to_batch

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(20, 31), (64, 40), (7, 90)]]
    images += [Image.fromarray(rng.integers(0, 255, (33, 50), dtype=np.uint8)),  # greyscale
               Image.fromarray(rng.integers(0, 255, (45, 45, 4), dtype=np.uint8), "RGBA"),
               images[0].convert("P")]
    bigger = open_clip.image_transform(48, is_train=False)  # another size
    for preprocess in (encoder.preprocess, bigger):
        split = split_transform(preprocess)
        assert split.vectorised
        batch = to_batch([prepare(im, split) for im in images], split)
        expected = torch.stack([preprocess(im) for im in images])
        assert torch.equal(batch, expected)  # the same operations on the same values


def test_unknown_transform_falls_back_to_applying_it_whole(encoder, store):
    import torch

    from wit_retrieval.models.preprocess import prepare, split_transform, to_batch

    def preprocess(image):
        return torch.full((3, 4, 4), float(image.size[1]))

    split = split_transform(preprocess)
    assert not split.vectorised
    batch = to_batch([prepare(store.open(i), split) for i in store.ids()[:3]], split)
    assert batch[:, 0, 0, 0].tolist() == [20.0, 21.0, 22.0]


def test_jpeg_draft_is_opt_in_and_keyed_separately(encoder, tmp_path):
    import io

    class JpegStore(DictStore):
        def get(self, image_id):
            buffer = io.BytesIO()
            self.images[image_id].save(buffer, format="JPEG", quality=95)
            return buffer.getvalue()

        def open(self, image_id):
            return Image.open(io.BytesIO(self.get(image_id))).convert("RGB")

    rng = np.random.default_rng(2)
    jpegs = JpegStore({f"{n:016x}": Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
                       for n in range(3)})
    exact = embed_images(encoder, jpegs, jpegs.ids(), EmbedConfig(progress=False))[1]
    assert np.allclose(exact, encoder.encode_images([jpegs.open(i) for i in jpegs.ids()]), atol=1e-5)
    drafted = embed_images(encoder, jpegs, jpegs.ids(), EmbedConfig(progress=False, draft=True))[1]
    assert drafted.shape == exact.shape and not np.allclose(drafted, exact, atol=1e-5)
    assert cache_folder(tmp_path, encoder.metadata) != cache_folder(tmp_path, encoder.metadata, draft=True)
