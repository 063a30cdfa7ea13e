"""Shared fixtures: the real WIT rows from ../shared, a generated miniature world, temp roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    for candidate in (REPO.parent / "shared", REPO / "shared"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("../shared (with fixtures/wit) is missing beside the repository")


@pytest.fixture(scope="session")
def wit_fixtures() -> Path:
    """Folder of the real WIT rows (wit_train_sample.tsv, wit_test_truncated.tsv)."""
    return _shared_dir() / "fixtures" / "wit"
