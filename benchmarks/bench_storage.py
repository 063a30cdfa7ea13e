"""Storage: reading the WIT shards from a loopback S3 server (moto_server) against from local disk,
and loading the gazetteer cache (Arrow IPC, since pickle was dropped) against the old pickle.

Same files, same reader (`io.tsv.read_wit_batches`, as `build mmir`'s workers call it); the rounds
alternate local / S3 so both see the same machine load; the best of each is reported as a ratio.
The S3 read includes what it costs for real: the copy to a local temporary file (io.fs.local_copy).

Usage: .venv/bin/python benchmarks/bench_storage.py WORLD [--rounds 3]
  (WORLD: a `wit-retrieval synth` folder, e.g. --entities 5000 --scenes 100000 --no-images)
"""

from __future__ import annotations

import argparse
import os
import pickle
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.objectstores import _free_port  # noqa: E402
from wit_retrieval.io import fs  # noqa: E402
from wit_retrieval.io.tsv import read_wit_batches  # noqa: E402

COLUMNS = ["language", "page_title", "image_url", "caption_reference_description"]


def read_all(paths: list[str]) -> tuple[int, float]:
    started = time.perf_counter()
    rows = sum(b.num_rows for p in paths for b in read_wit_batches(p, columns=COLUMNS, background=False))
    return rows, time.perf_counter() - started


def gazetteer_loads(world: Path, out: Path) -> dict:
    """Build EI on the world, then time loading each language's keys: Arrow cache vs pickle of the same."""
    from wit_retrieval.build.entities import EntitiesConfig, build_entities
    from wit_retrieval.build.gazetteer_cache import load_language
    from wit_retrieval.build.linker import GAZETTEER_CACHE, _Language

    build_entities(EntitiesConfig(out=str(out), dumps=str(world)))
    files = sorted((out / "entity_names" / GAZETTEER_CACHE).glob("*.keys.arrow"))
    arrow_best = pickle_best = float("inf")
    pickled = [pickle.dumps(load_language(f, _Language), protocol=pickle.HIGHEST_PROTOCOL) for f in files]
    keys = sum(len(load_language(f, _Language).keys) for f in files)
    for _ in range(5):
        started = time.perf_counter()
        for f in files:
            load_language(f, _Language)
        arrow_best = min(arrow_best, time.perf_counter() - started)
        started = time.perf_counter()
        for blob in pickled:
            pickle.loads(blob)
        pickle_best = min(pickle_best, time.perf_counter() - started)
    return {"keys": keys, "arrow_s": arrow_best, "pickle_s": pickle_best}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("world", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    local = sorted(str(p) for p in (args.world / "gresearch" / "wit").glob("wit_v1.*.tsv.gz"))
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(3)
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                          AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
        import pyarrow.fs as pafs

        bucket = f"bench-{secrets.token_hex(3)}"
        pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{port}", allow_bucket_creation=True).create_dir(bucket)
        remote = []
        for path in local:
            target = f"s3://{bucket}/wit/{Path(path).name}"
            with fs.open_file(target, "wb") as sink:
                sink.write(Path(path).read_bytes())
            remote.append(target)
        size = sum(Path(p).stat().st_size for p in local)
        best = {"local": float("inf"), "s3": float("inf")}
        for _ in range(args.rounds):
            for name, paths in (("local", local), ("s3", remote)):
                rows, seconds = read_all(paths)
                best[name] = min(best[name], seconds)
        print(f"WIT: {len(local)} files, {rows:,} rows, {size / 2**20:.1f} MiB gzip")
        print(f"local disk: {best['local']:.2f} s ({rows / best['local']:,.0f} rows/s)")
        print(f"loopback S3: {best['s3']:.2f} s ({rows / best['s3']:,.0f} rows/s)")
        print(f"ratio S3 / local: {best['s3'] / best['local']:.2f}x (best of {args.rounds}, interleaved)")
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        g = gazetteer_loads(args.world, Path(folder))
    print(f"gazetteer keys cache: {g['keys']:,} keys; Arrow IPC load {g['arrow_s'] * 1000:.1f} ms, "
          f"pickle of the same {g['pickle_s'] * 1000:.1f} ms: ratio {g['arrow_s'] / g['pickle_s']:.2f}x")


if __name__ == "__main__":
    main()
