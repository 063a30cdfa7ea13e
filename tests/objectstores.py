"""Real object-store servers on loopback for the storage tests: moto_server (S3) and
gcp-storage-emulator (GCS), each started as a subprocess and stopped by its own pid."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _executable(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def _serve(argv: list[str], port: int, log: Path):
    """Start a server and wait until its port answers; yields its endpoint, then stops it by pid."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{argv[0]} did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: only the server and its children
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    yield from _serve([_executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, log)


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("gcs") / "gcs.log"
    argv = [_executable("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    yield from _serve(argv, port, log)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
          "AWS_REGION": "us-east-1"}


@pytest.fixture
def s3_bucket(moto_endpoint, monkeypatch) -> str:
    """A fresh bucket on the loopback S3 server, with the environment pointing at it: 's3://NAME'."""
    import pyarrow.fs as pafs

    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = f"wit-{secrets.token_hex(4)}"
    pafs.S3FileSystem(endpoint_override=moto_endpoint, region="us-east-1", access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
                      secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"], allow_bucket_creation=True).create_dir(bucket)
    return f"s3://{bucket}"


@pytest.fixture
def gcs_bucket(gcs_endpoint, monkeypatch) -> str:
    """A fresh bucket on the loopback GCS emulator, with WIT_RETRIEVAL_GCS_ENDPOINT set: 'gs://NAME'."""
    import pyarrow.fs as pafs

    monkeypatch.setenv("WIT_RETRIEVAL_GCS_ENDPOINT", gcs_endpoint)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    bucket = f"wit-{secrets.token_hex(4)}"
    host = gcs_endpoint.split("://", 1)[1]
    pafs.GcsFileSystem(anonymous=True, endpoint_override=host, scheme="http", project_id="test").create_dir(bucket)
    return f"gs://{bucket}"


def raw_keys(uri: str) -> list[str]:
    """Every key under a bucket's prefix, as the server lists it (markers and temporaries included),
    relative to the prefix: what "only committed keys" is checked against."""
    import json
    import urllib.request

    scheme, rest = uri.split("://", 1)
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    if scheme == "s3":
        import boto3

        client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
        keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])]
    else:
        base = os.environ["WIT_RETRIEVAL_GCS_ENDPOINT"]
        keys, token = [], ""
        while True:
            url = f"{base}/storage/v1/b/{bucket}/o?prefix={prefix}&pageToken={token}"
            with urllib.request.urlopen(url) as response:
                page = json.load(response)
            keys += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                break
    return sorted(key[len(prefix):] for key in keys)
