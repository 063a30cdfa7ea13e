"""Teacher embeddings and hard negatives read by id from converted stores: same values as the whole files."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.test_models_world import make_world, one_torch_thread  # noqa: F401
from wit_retrieval.errors import InputError
from wit_retrieval.io.embeddings import write_embeddings
from wit_retrieval.models import id_store
from wit_retrieval.models.distill import TeacherCache
from wit_retrieval.models.hard_store import HardNegativeStore, build_hard_store
from wit_retrieval.models.teacher_store import TeacherStore, build_teacher_store
from wit_retrieval.models.train_shards import PrepareInputs, ensure_prepared, read_hard_negatives


@pytest.fixture
def small_buckets(monkeypatch):
    """Many buckets even on small files, so the bucket split and merge are exercised."""
    monkeypatch.setattr(id_store, "BUCKET_BYTES", 4096)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.mark.parametrize("kind", ["parts", "npy"])
def test_teacher_store_gives_the_rows_of_the_whole_file(tmp_path, small_buckets, kind):
    rng = np.random.default_rng(1)
    ids = [f"img-{n}" for n in range(1500)] + ["img-3", "img-77"]      # repeated ids keep their first row
    matrix = (rng.standard_normal((len(ids), 12)) * rng.uniform(0.1, 9, (len(ids), 1))).astype(np.float32)
    if kind == "parts":
        path = tmp_path / "teacher"
        path.mkdir()
        write_embeddings(path / "part-00000.parquet", ids[:700], matrix[:700])
        write_embeddings(path / "part-00001.parquet", ids[700:], matrix[700:].astype(np.float16))
    else:
        path = tmp_path / "teacher.npy"
        write_embeddings(path, ids, matrix)
    build_teacher_store(path, tmp_path / "store", progress=False)
    store, whole = TeacherStore(tmp_path / "store"), TeacherCache(path)
    assert len(list((tmp_path / "store").iterdir())) == 3                 # the spill is gone
    asked = ids[::7] + ["unknown", "img-3", "img-77", "img-1499"]
    assert len(store) == len(whole) == 1500 and store.dim == 12
    assert _same(store.lookup(asked), whole.lookup(asked))
    assert store.lookup(["unknown"]).isnan().all() and "img-5" in store and "nope" not in store
    assert store.coverage(["img-1", "x"]) == whole.coverage(["img-1", "x"]) == 0.5


def _expected_trec():
    """A run whose queries are split over pieces and interleaved, with tied scores."""
    lines = []
    rng = np.random.default_rng(2)
    for n in range(60):
        for q in (f"q{n}", f"q{n % 7}"):
            score = float(rng.integers(0, 4)) / 2
            lines.append(f"{q} Q0 img{rng.integers(0, 40)} {len(lines) + 1} {score} run")
    return "\n".join(lines) + "\n"


def test_hard_negative_store_gives_the_lists_of_the_whole_file(tmp_path, small_buckets):
    table = pa.table({"query_id": ["q1", "q2", "q3", "q1"], "image_ids": [["a", "b"], ["c"], [], ["z", "y"]],
                      "scores": [[0.9, 0.5], [0.3], [], [0.2, 0.1]]})
    pq.write_table(table, tmp_path / "hard.parquet")
    (tmp_path / "run.trec").write_text(_expected_trec())
    pq.write_table(pa.table({"query_id": ["q1", "q2", "q1"], "image_id": ["a", "b", "c"], "score": [0.1, 0.5, 0.7]}),
                   tmp_path / "run.parquet")
    (tmp_path / "run.json").write_text(json.dumps({"version": "1", "q1": ["x", "y"], "q2": ["z"]}))
    for name in ("hard.parquet", "run.trec", "run.parquet", "run.json"):
        whole = read_hard_negatives(tmp_path / name)
        build_hard_store(tmp_path / name, tmp_path / f"store-{name}", chunk_bytes=200)
        store = HardNegativeStore(tmp_path / f"store-{name}")
        assert len(store) == len(whole), name
        assert {q: store.get(q) for q in whole} == whole, name
        assert store.get("never") is None and store.get("never", []) == []
    assert HardNegativeStore(tmp_path / "store-hard.parquet").get("q1") == ["z", "y"]   # the last row wins
    # a bad line in a later piece of a TREC run is named by its line in the whole file
    text = _expected_trec().splitlines()
    text[100] = "q1 Q0 only-three"
    (tmp_path / "bad.trec").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"bad\.trec.*101|101.*bad\.trec"):
        build_hard_store(tmp_path / "bad.trec", tmp_path / "store-bad", chunk_bytes=200)


def _shard_samples(folder):
    samples = []
    for shard in sorted(folder.glob("samples-*.tar")):
        with tarfile.open(shard) as tar:
            samples += [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    return samples


def test_prepared_shards_carry_the_hard_negatives_of_the_whole_file(tmp_path, small_buckets):
    world = make_world(tmp_path / "root", entities=5, scenes={"train": 30}, size=16)
    queries = pq.read_table(world.root.table_split("queries", "train")).to_pylist()
    targets = sorted({q["target_image_id"] for q in queries})
    rng = np.random.default_rng(3)
    lists = [[targets[i] for i in rng.permutation(len(targets))[:4]] + ["not-in-store"] for _ in queries]
    pq.write_table(pa.table({"query_id": [q["query_id"] for q in queries[::-1]] + ["foreign"],
                             "image_ids": lists[::-1] + [["x"]], "scores": [[1.0] * 5] * len(queries) + [[1.0]]}),
                   tmp_path / "hard.parquet")
    inputs = PrepareInputs(str(world.root.root), "train", hard_negatives=str(tmp_path / "hard.parquet"),
                           hard_per_query=2)
    folder = ensure_prepared(inputs, world.store, progress=False)
    whole = read_hard_negatives(tmp_path / "hard.parquet")
    samples = _shard_samples(folder)
    assert len(samples) == len(queries)
    for sample in samples:
        ranked = [i for i in whole[sample["query_id"]] if i != sample["target"] and i in world.store]
        assert sample["hard"] == ranked[:2]
    assert sum(len(s["hard"]) for s in samples) == 2 * len(samples)
    assert not list(folder.glob("hard-negatives-*"))                      # dropped once every shard is written
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["entity_images"] >= len({h for s in samples for h in s["hard"]})


def test_training_with_the_teacher_store_equals_the_whole_teacher(tmp_path):
    from wit_retrieval.models.train import prepare, train_step
    from wit_retrieval.models.train_config import config_from_dict
    from wit_retrieval.models.train_data import read_queries

    world = make_world(tmp_path / "root", entities=6, scenes={"train": 24, "val": 4}, size=32)
    queries = read_queries(world.root.root, "train")
    ids = [q["query_id"] for q in queries[::2]] + sorted({q["target_image_id"] for q in queries})[:-3]
    teacher = np.random.default_rng(4).standard_normal((len(ids), 48)).astype(np.float32) * 3
    write_embeddings(tmp_path / "teacher.parquet", ids, teacher)

    def run(out, whole: bool):
        config = config_from_dict({
            "model": {"base": "open_clip:wit-tiny-vit:random", "fusion": "inject"},
            "data": {"root": str(world.root.root), "shuffle_buffer": 8},
            "optim": {"steps": 3, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1},
            "distill": {"teacher_embeddings": str(tmp_path / "teacher.parquet"), "kind": "similarity", "on": "both"},
            "run": {"out": str(tmp_path / out), "eval_every": 0, "checkpoint_every": 0, "threads": 1}})
        trainer = prepare(config, world.store)
        assert isinstance(trainer.teacher, TeacherStore)
        if whole:  # what streamed runs did before: the teacher file loaded whole
            trainer.teacher = TeacherCache(tmp_path / "teacher.parquet")
        parts = [train_step(trainer)[0] for _ in range(3)]
        return parts, {k: v.detach().clone() for k, v in trainer.built.model.state_dict().items()}

    store_parts, store_weights = run("a", whole=False)
    whole_parts, whole_weights = run("b", whole=True)
    assert store_parts == whole_parts and all(p["distill_queries"] > 0 for p in store_parts)
    assert all(torch.equal(store_weights[k], whole_weights[k]) for k in store_weights)


def _rss() -> dict[str, int]:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile")}


def _growth(kind, base, rows):
    """RSS growth from before opening the teacher and hard negatives to after 20 batches of lookups."""
    rng = np.random.default_rng(0)
    before = _rss()
    teacher = TeacherCache(base / "teacher.parquet") if kind == "whole" else TeacherStore(base / "teacher")
    negatives = HardNegativeStore(base / "hard")
    for _ in range(20):      # 20 batches of 64 queries and their targets
        picked = rng.integers(0, rows, 64)
        assert not teacher.lookup([f"img-{n}" for n in picked]).isnan().any()
        assert all(len(negatives.get(f"q-{n}")) == 5 for n in picked)
    after = _rss()
    del teacher, negatives
    return {k: after[k] - before[k] for k in after}


def _stores(base, rows):
    ids = [f"img-{n}" for n in range(rows)]
    write_embeddings(base / "teacher.parquet", ids, np.random.default_rng(5).standard_normal((rows, 64), np.float32))
    build_teacher_store(base / "teacher.parquet", base / "teacher", progress=False)
    pq.write_table(pa.table({"query_id": [f"q-{n}" for n in range(rows)],
                             "image_ids": [[f"img-{(n + k) % rows}" for k in range(5)] for n in range(rows)],
                             "scores": [[1.0] * 5] * rows}), base / "hard.parquet")
    build_hard_store(base / "hard.parquet", base / "hard")


def test_memory_does_not_grow_with_the_teacher_or_hard_negative_files(tmp_path):
    """RSS growth over 20 batches of lookups: the same for a 10x larger teacher and hard-negatives file.

    The stores read by pread (no memory map), so neither anonymous nor file-backed RSS holds the
    files; the whole-file path, measured the same way, grows by the matrix. (Measured in this
    process: torch is loaded already, and the stores allocate nothing that could hide a change.)
    """
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir(), large.mkdir()
    _stores(small, 6_000)
    _stores(large, 60_000)
    _growth("store", small, 6_000)  # warm-up: first-use allocations of the libraries
    found = {kind: {"small": _growth(kind, small, 6_000), "large": _growth(kind, large, 60_000)}
             for kind in ("store", "whole")}
    mib = 1 << 20
    store = found["store"]
    for part in ("RssAnon", "RssFile"):
        assert store["large"][part] - store["small"][part] < 2 * mib, found
    # the same measure on the whole-file path sees its 15 MB matrix (the check above can fail)
    assert found["whole"]["large"]["RssAnon"] - found["whole"]["small"]["RssAnon"] > 12 * mib, found


def test_prepare_command_converts_the_teacher_and_names_a_wrong_one(tmp_path):
    from typer.testing import CliRunner

    from tests.test_models_world import write_store
    from wit_retrieval.cli import app

    world = make_world(tmp_path / "root", entities=4, scenes={"train": 12}, size=16)
    write_store(world.store, world.root.images)
    targets = sorted(world.store.ids())
    write_embeddings(tmp_path / "teacher.parquet", targets, np.eye(len(targets), 8, dtype=np.float32))
    write_embeddings(tmp_path / "other.parquet", ["x", "y"], np.eye(2, 8, dtype=np.float32))
    base = ["prepare", "baselines/inject-mini.toml", "--data", str(world.root.root), "--out", str(tmp_path / "p")]
    result = CliRunner().invoke(app, [*base, "--set", f"distill.teacher_embeddings={tmp_path / 'teacher.parquet'}"])
    assert result.exit_code == 0, result.output
    teacher = TeacherStore(json.loads(result.stdout)["teacher"])
    assert teacher.folder.parent == tmp_path / "p" and len(teacher) == len(targets)
    wrong = CliRunner().invoke(app, [*base, "--set", f"distill.teacher_embeddings={tmp_path / 'other.parquet'}"])
    assert wrong.exit_code == 1 and "none of the" in wrong.output and "other.parquet" in wrong.output


def test_block_find_in_a_strided_memory_mapped_index(tmp_path):
    from wit_retrieval.models.id_store import block_find, sample_of
    from wit_retrieval.models.train_shards import INDEX_DTYPE

    rng = np.random.default_rng(6)
    hashes = np.unique(rng.integers(1, 2**63, 5000, dtype=np.uint64))
    index = np.zeros(len(hashes), INDEX_DTYPE)
    index["hash"] = hashes
    np.save(tmp_path / "idx.npy", index)
    mapped = np.load(tmp_path / "idx.npy", mmap_mode="r")
    column = mapped["hash"]
    assert not column.flags.c_contiguous      # the case searchsorted copies whole
    sample = sample_of(column, 64)
    present = rng.integers(0, len(hashes), 300)
    assert [block_find(column, sample, index["hash"][r], 64) for r in present] == present.tolist()
    absent = [np.uint64(0), hashes[0] - np.uint64(1), hashes[-1] + np.uint64(1), hashes[7] + np.uint64(1)]
    assert [block_find(column, sample, k, 64) for k in absent] == [-1] * 4
    assert block_find(column[:0], sample_of(column[:0]), np.uint64(5)) == -1


def test_concurrent_trainers_convert_the_teacher_once(tmp_path, small_buckets):
    import threading

    from wit_retrieval.models.distill import DistillConfig
    from wit_retrieval.models.teacher_store import open_teacher_store

    world = make_world(tmp_path / "root", entities=4, scenes={"train": 10}, size=16)
    folder = ensure_prepared(PrepareInputs(str(world.root.root), "train"), world.store, progress=False)
    targets = sorted(world.store.ids())
    write_embeddings(tmp_path / "teacher.parquet", targets, np.random.default_rng(7).standard_normal((len(targets), 6),
                                                                                                    np.float32))
    config = DistillConfig(teacher_embeddings=str(tmp_path / "teacher.parquet"))
    stores = []
    threads = [threading.Thread(target=lambda: stores.append(open_teacher_store(config, folder, progress=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores) == 3 and len({s.folder for s in stores}) == 1
    assert [p.name for p in folder.iterdir() if "teacher" in p.name and p.is_dir()] == [stores[0].folder.name]
    assert _same(stores[0].lookup(targets), TeacherCache(tmp_path / "teacher.parquet").lookup(targets))
    built = (stores[0].folder / "store.json").stat().st_mtime_ns
    assert open_teacher_store(config, folder, progress=False).folder == stores[0].folder   # reused, not rebuilt
    assert (stores[0].folder / "store.json").stat().st_mtime_ns == built
