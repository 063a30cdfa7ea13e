"""open_clip's image transform split in two: per-image PIL work (decode, resize, crop, mode) that
decoding threads or processes run, and one vectorised ToTensor + Normalize over the whole batch.

The PIL stage applies open_clip's own transform objects as they are, and the batch stage performs
ToTensor's and Normalize's arithmetic (x / 255, then (x - mean) / std) in the same order on the same
values, so pixels equal the transform's output exactly. A transform of another shape falls back to
applying it whole, per image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

_TENSOR_STAGE = ("ToTensor", "MaybeToTensor")


@dataclass(frozen=True)
class SplitTransform:
    """The PIL transforms before ToTensor, Normalize's mean/std, the whole transform as a fallback."""

    pil_stage: tuple = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    whole: Any = None
    draft_size: int | None = None  # JPEG draft (reduced-size DCT decoding): faster, changes pixels

    @property
    def vectorised(self) -> bool:
        return self.mean is not None


def split_transform(preprocess, *, draft: bool = False) -> SplitTransform:
    """Split a torchvision Compose of the open_clip shape; anything else becomes a whole-transform fallback."""
    steps = list(getattr(preprocess, "transforms", ()))
    names = [type(s).__name__ for s in steps]
    draft_size = _resize_target(steps) if draft else None
    if len(steps) >= 2 and names[-2] in _TENSOR_STAGE and names[-1] == "Normalize":
        normalize = steps[-1]
        if not getattr(normalize, "inplace", False) and all(callable(s) for s in steps[:-2]):
            return SplitTransform(tuple(steps[:-2]), tuple(float(m) for m in normalize.mean),
                                  tuple(float(s) for s in normalize.std), preprocess, draft_size)
    return SplitTransform(whole=preprocess, draft_size=draft_size)


def _resize_target(steps: list) -> int | None:
    """The shortest-side size of the first Resize (the smallest size a JPEG draft may decode to)."""
    for step in steps:
        if type(step).__name__ == "Resize":
            size = step.size
            return int(size if isinstance(size, int) else min(size))
    return None


def open_image(store, image_id: str, split: SplitTransform):
    """The stored image as an RGB PIL image (JPEG draft decoding only when asked for)."""
    if split.draft_size is None or not hasattr(store, "get"):
        return store.open(image_id)
    from PIL import Image

    image = Image.open(io.BytesIO(store.get(image_id)))
    if image.format == "JPEG":
        image.draft("RGB", (split.draft_size, split.draft_size))
    return image.convert("RGB")


def prepare(image, split: SplitTransform):
    """One image after the PIL stage: a uint8 HWC array (RGB), or the whole transform's tensor as a fallback."""
    if not split.vectorised:
        return split.whole(image)
    for step in split.pil_stage:
        image = step(image)
    if getattr(image, "mode", None) != "RGB":
        return split.whole(image)  # e.g. a transform without a mode conversion given a greyscale image
    return np.asarray(image)


def to_batch(items: list, split: SplitTransform):
    """Stack prepared items into one float32 NCHW tensor: uint8 -> /255 -> (x - mean) / std on the whole batch."""
    import torch

    arrays = [i for i, item in enumerate(items) if isinstance(item, np.ndarray)]
    if not arrays:
        return torch.stack(items)
    shapes = {items[i].shape for i in arrays}
    if len(shapes) > 1:  # a PIL stage without a fixed output size: per image
        return torch.stack([_normalised(torch.from_numpy(np.ascontiguousarray(item))[None], split)[0]
                            if isinstance(item, np.ndarray) else item for item in items])
    pixels = _normalised(torch.from_numpy(np.stack([items[i] for i in arrays])), split)
    if len(arrays) == len(items):
        return pixels
    out = torch.empty((len(items), *pixels.shape[1:]), dtype=pixels.dtype)
    out[arrays] = pixels
    for i, item in enumerate(items):
        if not isinstance(item, np.ndarray):
            out[i] = item
    return out


def _normalised(uint8_nhwc, split: SplitTransform):
    """ToTensor (HWC -> CHW, /255) and Normalize, in the same operations and order as torchvision's."""
    import torch

    pixels = uint8_nhwc.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255)
    mean = torch.tensor(split.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(split.std, dtype=torch.float32).view(1, -1, 1, 1)
    return pixels.sub_(mean).div_(std)
