"""wit-retrieval: the toolkit for the Entity Image (EI) and Mixed-Modal Image Retrieval (MMIR) benchmark."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_dataset"]


def load_dataset(root, table: str = "queries", split: str | None = None):
    """A Hugging Face `datasets.Dataset` of one table of a build (or of released files)."""
    from .dataset import load_dataset as _load

    return _load(root, table, split=split)
