"""embed --out DIR: a plan of parts shared by every rank, failures with reasons, resume, torchrun equivalence."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_models_world import count_encoded, make_world, one_torch_thread, write_store  # noqa: F401
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.images import open_store
from wit_retrieval.images.decode import StoredImage
from wit_retrieval.images.store import ShardWriter
from wit_retrieval.io.embeddings import read_embeddings
from wit_retrieval.models.embed import EmbedConfig, embed_images
from wit_retrieval.models.embed_corpus import FAILURES, embed_to_folder, plan_parts, rank_block

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = "open_clip:wit-tiny-vit:random"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A real image store: the world's images in shard 0, a broken image in shard 1."""
    base = tmp_path_factory.mktemp("embed-corpus")
    world = make_world(base / "data", entities=6, scenes={"test": 30}, size=24)
    write_store(world.store, base / "images")
    writer = ShardWriter(base / "images", 1)
    junk = b"not an image at all"
    writer.add_ok("ffffffffffffffff", "https://upload.wikimedia.org/broken.jpg",
                  StoredImage(junk, "jpg", 10, 10, hashlib.sha256(junk).hexdigest()), "mirror")
    writer.commit({"ok": 1})
    return base / "images"


@pytest.fixture(scope="module")
def encoder():
    from wit_retrieval.models import load_encoder

    return load_encoder(TINY, device="cpu")


def test_plan_is_contiguous_and_every_part_has_one_rank():
    ids = [f"{i:04d}" for i in range(23)]
    plan = plan_parts(ids, 5)
    assert [len(p.ids) for p in plan] == [5, 5, 5, 5, 3]
    assert [i for p in plan for i in p.ids] == ids
    assert len({p.file for p in plan}) == 5 and plan_parts(ids, 5)[2].file == plan[2].file
    for world in (1, 2, 3, 7):
        blocks = [list(rank_block(len(plan), r, world)) for r in range(world)]
        assert [n for b in blocks for n in b] == list(range(len(plan)))  # contiguous, disjoint, complete
    with pytest.raises(ConfigError):
        rank_block(5, 2, 2)


def test_parts_manifest_failures_and_equal_to_one_matrix(store_dir, encoder, tmp_path):
    store = open_store(store_dir)
    ids = store.ids() + ["0000000000000000"]  # not in the store at all
    config = EmbedConfig(batch_size=4, workers=1, part_rows=8, progress=False)
    summary = embed_to_folder(encoder, store, ids, tmp_path / "emb", config)
    out = tmp_path / "emb"
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["parts_total"] == len(manifest["parts"]) == -(-len(ids) // 8)
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(p["file"] for p in manifest["parts"])
    failures = {f["id"]: f["reason"] for f in map(json.loads, (out / FAILURES).read_text().splitlines())}
    assert failures["0000000000000000"].startswith("missing")
    assert failures["ffffffffffffffff"].startswith("undecodable")
    assert manifest["rows"] == len(ids) - 2 and manifest["failed"] == 2
    got_ids, got = read_embeddings(out)
    ref_ids, ref, missing = embed_images(encoder, store, ids, EmbedConfig(batch_size=4, workers=1, progress=False))
    assert sorted(missing) == sorted(failures)
    order = {i: n for n, i in enumerate(ref_ids)}
    assert sorted(got_ids) == sorted(ref_ids)
    np.testing.assert_allclose(got, ref[[order[i] for i in got_ids]], atol=1e-5)


def test_resume_embeds_only_missing_parts_and_a_finished_run_nothing(store_dir, encoder, tmp_path):
    store = open_store(store_dir)
    config = EmbedConfig(batch_size=4, workers=1, part_rows=8, progress=False)
    out = tmp_path / "emb"
    embed_to_folder(encoder, store, store.ids(), out, config)
    calls = count_encoded(encoder)
    embed_to_folder(encoder, store, store.ids(), out, config)
    assert calls["images"] == 0  # finished: nothing re-embedded
    parts = json.loads((out / "manifest.json").read_text())["parts"]
    (out / parts[1]["file"]).unlink()
    with pytest.raises(InputError, match="missing"):
        read_embeddings(out)  # readers trust the manifest: a listed part that is gone is an error
    (out / "manifest.json").unlink()
    summary = embed_to_folder(encoder, store, store.ids(), out, config)
    assert summary["parts_written"] == 1 and calls["images"] == parts[1]["rows"]
    encoder.encode_pixels = type(encoder).encode_pixels.__get__(encoder)


def test_another_model_or_dtype_is_refused_and_float16_halves_the_parts(store_dir, encoder, tmp_path):
    store = open_store(store_dir)
    config = EmbedConfig(batch_size=8, workers=1, part_rows=64, progress=False)
    embed_to_folder(encoder, store, store.ids(), tmp_path / "a", config)
    with pytest.raises(ConfigError, match="dtype"):
        embed_to_folder(encoder, store, store.ids(), tmp_path / "a", config, dtype="float16")
    embed_to_folder(encoder, store, store.ids(), tmp_path / "b", config, dtype="float16")
    size = lambda d: sum(p.stat().st_size for p in (tmp_path / d).glob("*.parquet"))  # noqa: E731
    assert size("b") < 0.75 * size("a")
    ids_a, a = read_embeddings(tmp_path / "a")
    ids_b, b = read_embeddings(tmp_path / "b")
    assert ids_a == ids_b and b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=2e-3)


def _embed_cmd(store_dir, out, *extra):
    return ["-m", "wit_retrieval", "embed", "--model", TINY, "--images", str(store_dir), "--out", str(out),
            "--batch-size", "4", "--workers", "1", "--part-rows", "6", "--device", "cpu", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_torchrun_two_ranks_write_what_one_process_writes(store_dir, tmp_path):
    one = subprocess.run([sys.executable, *_embed_cmd(store_dir, tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run([*torchrun, *_embed_cmd(store_dir, tmp_path / "two")[1:]], env=_env(),
                         capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('"out"') == 1  # rank 0 reports, once
    ids1, m1 = read_embeddings(tmp_path / "one")
    ids2, m2 = read_embeddings(tmp_path / "two")
    assert ids1 == ids2
    np.testing.assert_allclose(m1, m2, atol=1e-5)
    assert (tmp_path / "one" / FAILURES).read_text() == (tmp_path / "two" / FAILURES).read_text()


@pytest.mark.slow
def test_sigkill_then_rerun_embeds_only_the_missing_parts(store_dir, tmp_path):
    out = tmp_path / "emb"
    proc = subprocess.Popen([sys.executable, *_embed_cmd(store_dir, out, "--part-rows", "2")], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "manifest.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert len(before) >= 3
    again = subprocess.run([sys.executable, *_embed_cmd(store_dir, out, "--part-rows", "2")], env=_env(),
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["parts_written"] == summary["parts_total"] - len(before)
    assert all((out / n).stat().st_mtime_ns == t for n, t in before.items())  # finished parts untouched
    shutil.rmtree(out)


@pytest.mark.slow
def test_an_error_on_one_rank_ends_every_rank_with_its_one_line_error(store_dir, tmp_path):
    from wit_retrieval.models.embed_corpus import plan_parts as plan_of

    store = open_store(store_dir)
    plan = plan_of(store.disk_order(store.ids()), 6)
    blocked = tmp_path / "emb" / plan[list(rank_block(len(plan), 1, 2))[0]].file
    blocked.mkdir(parents=True)  # rank 1 cannot write its first part there
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    started = time.time()
    done = subprocess.run([*torchrun, *_embed_cmd(store_dir, tmp_path / "emb")[1:]], env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert time.time() - started < 120  # start-up included; no wait for a collective's timeout
    lines = [ln for ln in done.stderr.splitlines() if "error:" in ln and "[rank 1]" in ln]
    assert len(lines) == 1 and "Is a directory" in lines[0], done.stderr[-2000:]
    assert not (tmp_path / "emb" / "manifest.json").exists()
