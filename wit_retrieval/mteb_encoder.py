"""`OursInMteb`: one of our encoders (any fusion) behind MTEB's EncoderProtocol, lists of images per query."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder

from .errors import ConfigError


def _rgb(image):
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


class OursInMteb(AbsEncoder):
    """Queries (text + a list of entity images, [MASK_i] order) through our fusion; documents through the image tower."""

    def __init__(self, ours, fusion: str | None = None):
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        self.ours = ours
        self.fusion = fusion or getattr(ours, "native_fusion", None) or "sum"
        allowed = getattr(ours.metadata, "fusions", ()) or ()
        if allowed and self.fusion not in allowed:
            raise ConfigError(f"{ours.metadata.name} has no fusion {self.fusion!r}; it has: {', '.join(allowed)}")
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", ours.metadata.name).strip("_")[-60:]
        self.mteb_model_meta = ModelMeta.create_empty(overwrites={
            "name": f"wit-retrieval/{slug}-{self.fusion}", "revision": ours.metadata.revision,
            "modalities": ["image", "text"], "similarity_fn_name": ScoringFunction.COSINE,
            "embed_dim": ours.metadata.dim, "framework": ["PyTorch"], "use_instructions": False})

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
               **kwargs: Any) -> np.ndarray:
        out = [np.zeros((0, self.ours.metadata.dim), np.float32)]
        for batch in inputs:
            images = batch.get("image")
            texts = batch.get("query", batch.get("text"))
            if images is not None and texts is not None:
                lists = [[_rgb(i) for i in (im if isinstance(im, list) else [im])] for im in images]
                out.append(self.ours.encode_queries(list(texts), lists, fusion=self.fusion))
            elif images is not None:
                out.append(self.ours.encode_images([_rgb(i) for i in images]))
            else:
                out.append(self.ours.encode_texts(list(texts)))
        return np.concatenate(out).astype(np.float32)
