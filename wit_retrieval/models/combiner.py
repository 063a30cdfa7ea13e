"""CLIP4Cir's Combiner: a learned head over text and (mean) entity image features.

Projections of both features, an MLP over their concatenation, and a learned gate that
mixes the raw text and image features into the output (Baldrati et al., CLIP4Cir).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Combiner(nn.Module):
    """out = MLP([proj(t), proj(i)]) + g * t + (1 - g) * i, with g = sigmoid(MLP(...))."""

    def __init__(self, dim: int, projection_dim: int | None = None, hidden_dim: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        projection_dim = projection_dim or 4 * dim
        hidden_dim = hidden_dim or 8 * dim
        self.text_projection = nn.Linear(dim, projection_dim)
        self.image_projection = nn.Linear(dim, projection_dim)
        self.dropout = nn.Dropout(dropout)
        self.combiner_layer = nn.Linear(2 * projection_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, dim)
        self.dynamic_scalar = nn.Sequential(
            nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1), nn.Sigmoid(),
        )

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Combined features (unnormalised) of text and image features [B, D]."""
        text_proj = self.dropout(F.relu(self.text_projection(text)))
        image_proj = self.dropout(F.relu(self.image_projection(image)))
        raw = torch.cat([text_proj, image_proj], dim=-1)
        combined = self.dropout(F.relu(self.combiner_layer(raw)))
        gate = self.dynamic_scalar(raw)
        return self.output_layer(combined) + gate * text + (1 - gate) * image
