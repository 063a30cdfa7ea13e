"""The shared foundation: registry, ids, atomic shards, engines, the CLI's error handling."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from wit_retrieval import ids
from wit_retrieval.engine import EngineConfig, run_shards
from wit_retrieval.errors import ConfigError, InputError
from wit_retrieval.io import shards
from wit_retrieval.layout import DataRoot
from wit_retrieval.registry import Registry
from wit_retrieval.schema import CORPUS


def test_registry_did_you_mean():
    reg: Registry[int] = Registry("fusion")
    reg.register("image-only")(lambda: 1)
    reg.register("text-only")(lambda: 2)
    assert reg.create("text-only") == 2
    assert reg.names() == ["image-only", "text-only"]
    with pytest.raises(ConfigError, match="Did you mean text-only"):
        reg.get("text-onyl")
    with pytest.raises(ValueError):
        reg.register("text-only")(lambda: 3)


def test_image_id_is_stable_across_spellings():
    raw = "https://upload.wikimedia.org/wikipedia/commons/0/04/Zürich_(city).jpg"
    encoded = "https://upload.wikimedia.org/wikipedia/commons/0/04/Z%C3%BCrich_%28city%29.jpg"
    http = "http://UPLOAD.wikimedia.org/wikipedia/commons/0/04/Z%C3%BCrich_(city).jpg"
    assert ids.image_id(raw) == ids.image_id(encoded) == ids.image_id(http)
    assert len(ids.image_id(raw)) == 16
    assert ids.image_id(raw) != ids.image_id(raw.replace("04", "05"))


def test_query_id_depends_on_every_part():
    a = ids.query_id("train", "https://x/a.jpg", "https://en.wikipedia.org/wiki/A", "text")
    assert a.startswith("train-")
    assert a != ids.query_id("val", "https://x/a.jpg", "https://en.wikipedia.org/wiki/A", "text")
    assert a != ids.query_id("train", "https://x/a.jpg", "https://en.wikipedia.org/wiki/A", "text!")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), shards.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    shards.write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}


def test_arrow_files_hand_tables_over_memory_mapped(tmp_path):
    """How build workers hand the main process their parts' images: written atomically, read back
    equal and mapped from the file (not copied into the reader's memory)."""
    table = pa.table({"image_id": ["a", None, "c"], "image_number": pa.array([1, 2, 3], pa.uint64())})
    path = tmp_path / "part.images.arrow"
    shards.write_arrow_atomic(table, path)
    assert [p.name for p in tmp_path.iterdir()] == ["part.images.arrow"]
    before = pa.total_allocated_bytes()
    read = shards.read_arrow(path)
    assert read.equals(table) and pa.total_allocated_bytes() == before
    path.unlink()  # the mapping outlives the file's name (the staging folder is removed at the end)
    assert read.column("image_id").to_pylist() == ["a", None, "c"]


def test_table_dir_roundtrip_and_hive_split(tmp_path):
    root = DataRoot(tmp_path)
    for split in ("train", "test"):
        parts = [pa.table({"image_id": [f"{split}{i}" for i in range(5)],
                           "image_url": ["u"] * 5, "split": [split] * 5})]
        manifest = shards.write_table_dir(root.table_split("corpus", split), parts, CORPUS, rows_per_file=2)
        assert manifest["rows"] == 5
        assert len(manifest["files"]) == 3
    table = shards.read_table_dir(root.table_split("corpus", "test"))
    assert table.column("image_id").to_pylist() == [f"test{i}" for i in range(5)]
    dataset = ds.dataset(root.table("corpus"), partitioning="hive", format="parquet")
    assert dataset.to_table().num_rows == 10


def test_unfinished_table_is_refused(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(InputError, match="never finished"):
        shards.read_table_dir(tmp_path / "t")


def _square(x: int) -> int:
    return x * x


def test_engines_keep_task_order():
    tasks = list(range(7))
    assert list(run_shards(_square, tasks, EngineConfig(workers=1))) == [x * x for x in tasks]
    assert list(run_shards(_square, tasks, EngineConfig(workers=2))) == [x * x for x in tasks]
    with pytest.raises(ConfigError):
        EngineConfig(name="spark")


_PRELOADED: list[int] = []


def _preload() -> None:
    _PRELOADED.append(os.getpid())


def _seen(x: int) -> tuple[list[int], int]:
    return list(_PRELOADED), os.getpid()


def test_preload_runs_once_in_the_parent_and_workers_inherit_it():
    """Workers forked after `preload` see what it loaded, without loading it themselves."""
    parent = os.getpid()
    _PRELOADED.clear()
    results = list(run_shards(_seen, list(range(6)), EngineConfig(workers=2), preload=_preload))
    assert [parent] == _PRELOADED  # once, here
    assert all(loaded == [parent] for loaded, _ in results)  # inherited, not loaded again
    assert {pid for _, pid in results} - {parent}  # and the tasks ran in other processes
    _PRELOADED.clear()
    assert [pid for _, pid in run_shards(_seen, [1, 2], EngineConfig(workers=1), preload=_preload)] == [parent] * 2
    assert [parent] == _PRELOADED  # inline runs preload too, once
    _PRELOADED.clear()


def test_cli_help_and_version():
    from wit_retrieval import __version__
    from wit_retrieval.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    assert runner.invoke(app, ["--help"]).exit_code == 0


def test_import_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, wit_retrieval, wit_retrieval.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_atomic_files_get_the_umask_mode(tmp_path):
    import os

    shards.write_text_atomic(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
