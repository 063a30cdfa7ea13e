"""Shared fixtures: the real WIT rows (tests/fixtures/wit), a generated miniature world, temp roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


WIT_FIXTURES = REPO / "tests" / "fixtures" / "wit"
WIT_FIXTURE_FILES = ("wit_train_sample.tsv", "wit_test_truncated.tsv")


@pytest.fixture(scope="session")
def wit_fixtures() -> Path:
    """Folder of the real WIT rows (wit_train_sample.tsv, wit_test_truncated.tsv), in the repository."""
    missing = [name for name in WIT_FIXTURE_FILES if not (WIT_FIXTURES / name).is_file()]
    assert not missing, f"WIT fixtures missing from {WIT_FIXTURES}: {missing}"
    return WIT_FIXTURES
