"""The torch model behind every open_clip encoder: a CLIP model plus optional fusion heads.

One nn.Module so a checkpoint is one state dict (`clip.*` and `heads.<name>.*`), and training
and evaluation call the same feature functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Retriever(nn.Module):
    """An open_clip model with named fusion heads (inject, combiner, ...)."""

    def __init__(self, clip: nn.Module, embed_dim: int, heads: dict[str, nn.Module] | None = None):
        super().__init__()
        self.clip = clip
        self.embed_dim = embed_dim
        self.heads = nn.ModuleDict(heads or {})

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 image embeddings."""
        return F.normalize(self.clip.encode_image(pixels).float(), dim=-1)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 text embeddings."""
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    def head(self, name: str) -> nn.Module:
        """The fusion head `name`; a clear error when this model was built without it."""
        if name not in self.heads:
            from ..errors import ConfigError

            have = ", ".join(self.heads) or "none"
            raise ConfigError(
                f"this model has no {name!r} head (heads: {have}); train one with a config whose "
                f"fusion is {name!r} (see baselines/{name}-mini.toml)"
            )
        return self.heads[name]



def build_heads(clip: nn.Module, embed_dim: int, head_configs: dict[str, dict]) -> dict[str, nn.Module]:
    """Fresh fusion heads by name ('inject', 'combiner') with their keyword options."""
    from ..errors import ConfigError
    from .combiner import Combiner
    from .inject import InjectHead

    heads: dict[str, nn.Module] = {}
    for name, options in head_configs.items():
        if name == "inject":
            if not hasattr(clip, "token_embedding"):
                raise ConfigError("the inject head needs an open_clip model with its own text transformer")
            heads[name] = InjectHead(embed_dim, clip.token_embedding.embedding_dim, **options)
        elif name == "combiner":
            heads[name] = Combiner(embed_dim, **options)
        else:
            raise ConfigError(f"unknown head {name!r}; known: combiner, inject")
    return heads
