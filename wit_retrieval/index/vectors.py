"""Turning raw embeddings into indexed (or query) vectors: checks, Matryoshka truncation, normalisation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

# Unit length within this tolerance counts as normalised (float32 round-off, fp16 storage).
NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class VectorSpec:
    """The transformation shared by the corpus and every query batch, so both live in one space."""

    input_dim: int
    dim: int
    metric: str = "ip"
    normalize: str = "warn"

    @property
    def truncated(self) -> bool:
        return self.dim < self.input_dim

    @property
    def renormalizes(self) -> bool:
        """True when vectors are scaled to unit length (always after truncation, unless "none")."""
        return self.normalize == "l2" or (self.truncated and self.normalize != "none")

    def accepts(self, width: int) -> bool:
        """Queries may come at the input width, or already truncated to the stored width."""
        return width == self.input_dim or width == self.dim

    def prepare(self, block: np.ndarray, what: str, first_row: int = 0, ids=None) -> tuple[np.ndarray, int]:
        """Checked float32 C-contiguous vectors, and how many of them are not unit length."""
        block = np.asarray(block)
        if block.ndim != 2:
            raise InputError(f"{what} must be a 2-D array [n, d], got shape {block.shape}")
        if not self.accepts(block.shape[1]):
            extra = f" (built from {self.input_dim} with truncation to {self.dim})" if self.truncated else ""
            raise InputError(f"{what} have {block.shape[1]} dimensions but the index expects "
                             f"{self.input_dim}{extra}: embed them with the same model")
        block = block[:, : self.dim]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            name = f" (id {ids[bad]})" if ids is not None else ""
            raise InputError(f"{what} row {first_row + bad}{name} holds NaN or infinite values "
                             f"({int((~finite).sum())} such rows in this batch); re-embed or drop them")
        out = np.ascontiguousarray(block, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1)
        if self.renormalizes:
            if (norms == 0).any():
                bad = int(np.flatnonzero(norms == 0)[0])
                raise InputError(f"{what} row {first_row + bad} is a zero vector and cannot be normalised")
            if np.may_share_memory(out, block):  # never scale the caller's array in place
                return out / norms[:, None], 0
            np.divide(out, norms[:, None], out=out)
            return out, 0
        return out, int((np.abs(norms - 1.0) > NORM_TOLERANCE).sum())

    def warn_unnormalised(self, count: int, total: int, what: str) -> None:
        """Warn once when inner product meets vectors that are not unit length."""
        if count and self.metric == "ip" and self.normalize == "warn":
            warnings.warn(
                f"{count} of {total} {what} vectors are not unit length, so inner product is not cosine "
                "similarity; normalise them (normalize='l2', --normalize l2) or silence this with 'none'",
                stacklevel=3,
            )
