"""Shared fixtures: the real WIT rows (tests/fixtures/wit), a generated miniature world, temp roots."""

from __future__ import annotations

import os
import shutil
import tempfile
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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real 2-node Ray cluster on loopback (tests/ray_cluster.py), 4 CPUs a node, token auth on.

    Skipped only when Ray is not installed (the `ray` extra); stopped by its own temp dirs."""
    pytest.importorskip("ray", reason="the 2-node cluster tests need Ray: pip install 'wit-retrieval[ray]'")
    from tests.ray_cluster import RayCluster

    # a short folder of its own: Ray's socket paths (TEMP/session_.../sockets/plasma_store) must fit in
    # 107 bytes, which pytest's folders under xdist (.../pytest-N/popen-gwN/ray0/node0/...) exceed
    root = Path(tempfile.mkdtemp(prefix="wr-", dir="/tmp"))
    cluster = RayCluster(root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
