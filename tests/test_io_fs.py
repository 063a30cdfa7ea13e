"""io.fs against real servers on loopback: moto_server (S3), gcp-storage-emulator (GCS), local disk."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pytest

from tests.objectstores import gcs_bucket, gcs_endpoint, moto_endpoint, s3_bucket  # noqa: F401
from wit_retrieval.errors import ConfigError
from wit_retrieval.io import fs
from wit_retrieval.io.shards import (
    atomic_path,
    read_manifest,
    read_table_dir,
    write_json_atomic,
    write_parquet_atomic,
    write_table_dir,
)

SCHEMA = pa.schema([("id", pa.string()), ("n", pa.int64())])


@pytest.fixture(params=["local", "file", "s3", "gs"])
def store(request, tmp_path) -> str:
    """A writable root on each kind of storage."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "file":
        return f"file://{tmp_path}/root"
    return request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket") + "/root"


def _table(rows: int) -> pa.Table:
    return pa.table({"id": [f"q{i}" for i in range(rows)], "n": list(range(rows))}, schema=SCHEMA)


def test_table_dir_round_trip_leaves_only_committed_keys(store):
    folder = fs.join(store, "queries", "split=train")
    manifest = write_table_dir(folder, [_table(25), _table(10)], SCHEMA, rows_per_file=20)
    assert manifest["rows"] == 35 and [f["rows"] for f in manifest["files"]] == [20, 5, 10]
    assert read_table_dir(folder).equals(pa.concat_tables([_table(25), _table(10)]))
    assert read_manifest(folder)["rows"] == 35
    assert fs.walk_files(store) == ["queries/split=train/_manifest.json", "queries/split=train/part-00000.parquet",
                                    "queries/split=train/part-00001.parquet",
                                    "queries/split=train/part-00002.parquet"]
    # rewriting with fewer parts removes the old ones
    write_table_dir(folder, [_table(3)], SCHEMA)
    assert fs.listdir(folder) == ["_manifest.json", "part-00000.parquet"]
    assert read_table_dir(folder).num_rows == 3


def test_failed_atomic_write_leaves_nothing(store):
    target = fs.join(store, "stats.json")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert not fs.exists(target)
    assert fs.walk_files(store) == []
    write_json_atomic(target, {"a": 1})
    assert fs.path(target).read_text() == '{\n  "a": 1\n}\n'
    assert fs.walk_files(store) == ["stats.json"]


def test_orphan_temporaries_are_swept_by_the_next_table_write(store):
    folder = fs.join(store, "corpus")
    fs.makedirs(folder)
    with fs.open_file(folder / ".tmp-part-00000.parquet.dead", "wb") as f:  # what a killed writer leaves
        f.write(b"partial")
    assert read_manifest(folder) is None
    write_table_dir(folder, [_table(4)], SCHEMA)
    assert fs.listdir(folder) == ["_manifest.json", "part-00000.parquet"]


def test_text_gzip_and_listing(store):
    root = fs.path(store)
    with fs.open_file(root / "a" / "x.tsv.gz", "wt", compression="gzip") as f:
        f.write("id\ttext\n1\tÄpfel\n")
    write_parquet_atomic(_table(2), root / "a" / "y.parquet")
    with fs.open_file(root / "a" / "x.tsv.gz", "rt", compression="gzip") as f:
        assert f.read() == "id\ttext\n1\tÄpfel\n"
    assert gzip.decompress(fs.path(root / "a" / "x.tsv.gz").read_bytes()).startswith(b"id\t")
    assert fs.listdir(root / "a") == ["x.tsv.gz", "y.parquet"]
    assert [p.name for p in fs.glob(root / "a", "*.tsv.gz")] == ["x.tsv.gz"]
    assert fs.exists(root / "a" / "y.parquet") and not fs.exists(root / "a" / "z")
    assert fs.listdir(root / "missing") == []
    with fs.local_copy(root / "a" / "y.parquet") as local:
        assert local.stat().st_size > 0


def test_uri_paths_keep_their_scheme():
    p = fs.path("s3://bucket/data/root")
    assert str(p / "entities" / "_manifest.json") == "s3://bucket/data/root/entities/_manifest.json"
    assert p.name == "root" and str(p.parent) == "s3://bucket/data" and str(p.parent.parent.parent) == "s3://bucket"
    assert str(fs.path("file:///tmp/x")) == "/tmp/x"
    assert fs.is_remote("gs://b/k") and not fs.is_remote("/tmp/x") and not fs.is_remote("file:///x")
    with pytest.raises(ConfigError, match="unsupported URI scheme 'ftp'"):
        fs.path("ftp://host/x")
    with pytest.raises(TypeError):  # never silently a local folder named 's3:'
        open(fs.path("s3://bucket/key"))  # noqa: SIM115


def test_credentials_in_uris_are_used_but_never_shown(s3_bucket, monkeypatch):  # noqa: F811
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    bucket = s3_bucket.split("://")[1]
    uri = f"s3://AKIDSECRETID:VERYSECRET@{bucket}/x.json"
    write_json_atomic(uri, {"ok": True})
    assert fs.path(uri).exists()
    shown = fs.redact(uri + "?session_token=TOK&region=us-east-1")
    assert shown == f"s3://{bucket}/x.json?region=us-east-1"
    assert "SECRET" not in repr(fs.path(uri)) and "TOK" not in shown


def test_gcs_emulator_host_is_honoured_like_googles_clients(gcs_bucket, gcs_endpoint, monkeypatch):  # noqa: F811
    monkeypatch.delenv("WIT_RETRIEVAL_GCS_ENDPOINT")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    write_json_atomic(f"{gcs_bucket}/k.json", [1])
    assert fs.path(f"{gcs_bucket}/k.json").read_text().split() == ["[", "1", "]"]
