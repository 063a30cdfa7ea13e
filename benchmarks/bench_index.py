"""Benchmark: our chunked exact search against a bare faiss `IndexFlatIP.search` on the same data.

Data: n random unit vectors (float32, default 1M x 512, ~2 GB) and nq random unit queries
(default 10k), k = 100, generated from one seed in every process. Each measurement runs in a
fresh subprocess:
1. timing: both indexes built from the same matrix, searches interleaved (bare, ours, bare,
   ours, ...); the best of `--reps` each. Ours is the full `Index.search` (trec_eval tie order,
   labels mapped back to string ids) with `chunk` queries at a time.
2. memory, bare and ours separately: resident memory after imports (base), the index built and
   the source matrix freed, the peak reset (/proc/self/clear_refs), one search, then the peak
   (VmHWM). The target: peak - base <= 1.1 x index bytes + one chunk, where one chunk is its
   queries, its results (k+1 scores and labels) and faiss's 4096 x 1024 score block.

Writes benchmarks/out/index.json and benchmarks/results/index.md.
Run: .venv/bin/python benchmarks/bench_index.py [--n 1000000] [--d 512] [--queries 10000] [--k 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE.parent))


def _status(field: str) -> int:
    """A memory field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _unit_rows(n: int, d: int, rng):
    import numpy as np

    out = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s : s + len(block)] = block
    return out


def make_data(n: int, d: int, nq: int, seed: int = 0):
    """Corpus [n, d], queries [nq, d] (unit float32, built block by block: no float64 copy) and ids."""
    import numpy as np

    rng = np.random.default_rng(seed)
    corpus = _unit_rows(n, d, rng)
    queries = _unit_rows(nq, d, rng)
    ids = [f"{i:016x}" for i in range(n)]
    return corpus, queries, ids


def _build(mode: str, corpus, ids):
    import faiss

    from wit_retrieval.index import IndexConfig, build_index

    if mode == "bare":
        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus)
        return index
    return build_index(corpus, ids, IndexConfig(kind="exact"))


def _search(mode: str, index, queries, k: int, chunk: int):
    if mode == "bare":
        return index.search(queries, k)
    if mode == "ours-labels":
        return index.search_labels(queries, k, chunk=chunk)
    return index.search(queries, k, chunk=chunk)


def worker_memory(args) -> dict:
    """One variant: base RSS, RSS with the index only, peak RSS during one search."""
    import gc

    import faiss  # noqa: F401 - imported before the base reading, like the library itself

    import wit_retrieval.index  # noqa: F401

    base = _status("VmRSS")
    corpus, queries, ids = make_data(args.n, args.d, args.queries)
    index = _build(args.mode, corpus, ids)
    del corpus, ids
    gc.collect()
    idle = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: measure the search alone
    t0 = time.perf_counter()
    _search(args.mode, index, queries, args.k, args.chunk)
    seconds = time.perf_counter() - t0
    print(f"memory {args.mode}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return {"mode": args.mode, "base": base, "idle": idle, "peak": _status("VmHWM"), "seconds": seconds}


def worker_timing(args) -> dict:
    """Both variants on one matrix, searches interleaved; best of reps each."""
    import gc

    corpus, queries, ids = make_data(args.n, args.d, args.queries)
    indexes = {mode: _build(mode, corpus, ids) for mode in ("bare", "ours")}
    del corpus, ids
    gc.collect()
    times: dict[str, list[float]] = {"bare": [], "ours": []}
    for _ in range(args.reps):
        for mode in ("bare", "ours"):
            t0 = time.perf_counter()
            _search(mode, indexes[mode], queries, args.k, args.chunk)
            times[mode].append(time.perf_counter() - t0)
            print(f"{mode}: {times[mode][-1]:.1f} s", file=sys.stderr, flush=True)
    bare_labels = indexes["bare"].search(queries[:200], args.k)[1]
    ours_ids = indexes["ours"].search(queries[:200], args.k)[1]
    same = all([f"{j:016x}" for j in row] == got for row, got in zip(bare_labels.tolist(), ours_ids))
    return {"times": times, "same_results_first_200": same}


def _run_worker(kind: str, args, mode: str = "") -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--mode", mode or "none", "--n", str(args.n),
           "--d", str(args.d), "--queries", str(args.queries), "--k", str(args.k), "--chunk", str(args.chunk),
           "--reps", str(args.reps)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _markdown(res: dict) -> str:
    gib = 1024**3
    lines = [
        "### Exact search (index)",
        "",
        f"{res['n']:,} x {res['d']} random unit float32 vectors ({res['index_bytes'] / gib:.2f} GiB), "
        f"{res['queries']:,} queries, k = {res['k']}, chunks of {res['chunk']:,} queries; "
        f"{os.cpu_count()} CPU cores; best of {res['reps']} interleaved runs; 1-minute load average "
        f"{res['load'][0]:.1f} at the start, {res['load'][1]:.1f} at the end (other jobs share the cores).",
        "",
        "| | bare faiss `IndexFlatIP.search` | wit-retrieval `Index.search` | ratio | target |",
        "|---|---|---|---|---|",
        f"| search time | {res['bare_s']:.1f} s | {res['ours_s']:.1f} s | {res['time_ratio']:.3f}x | <= 1.1x |",
        f"| queries/s | {res['queries'] / res['bare_s']:,.0f} | {res['queries'] / res['ours_s']:,.0f} | | |",
        f"| peak RSS during search, above imports | {res['bare_peak'] / gib:.2f} GiB | "
        f"{res['ours_peak'] / gib:.2f} GiB | {res['ours_peak'] / res['allowed']:.3f} of allowed | "
        f"<= index x 1.1 + one chunk = {res['allowed'] / gib:.2f} GiB |",
        f"| same, `Index.search_labels` (int labels like faiss) | | {res['labels_peak'] / gib:.2f} GiB | "
        f"{res['labels_peak'] / res['allowed']:.3f} of allowed | |",
        "",
        f"Same top-{res['k']} ids as bare faiss on the first 200 queries: {res['same_results']} "
        "(random data has no ties; ours orders ties by id descending like trec_eval, faiss does not). "
        "Ours returns string ids (a Python list of nq x k strings, counted in its peak); bare faiss "
        "returns int labels. Peaks include the index, the queries and the results; ours also its "
        f"string ids (arrow) and pyarrow's memory pool. Target met: {res['pass']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--worker", choices=["memory", "timing"])
    parser.add_argument("--mode", default="none")
    args = parser.parse_args()
    if args.worker:
        result = worker_memory(args) if args.worker == "memory" else worker_timing(args)
        print(json.dumps(result))
        return
    load_before = os.getloadavg()[0]
    timing = _run_worker("timing", args)
    memory = {mode: _run_worker("memory", args, mode) for mode in ("bare", "ours", "ours-labels")}
    index_bytes = args.n * args.d * 4
    chunk_bytes = min(args.chunk, args.queries) * (args.d * 4 + (args.k + 1) * 12) + 4096 * 1024 * 4
    res = {
        "n": args.n, "d": args.d, "queries": args.queries, "k": args.k, "chunk": args.chunk, "reps": args.reps,
        "bare_s": min(timing["times"]["bare"]), "ours_s": min(timing["times"]["ours"]), "timing": timing,
        "memory": memory, "index_bytes": index_bytes, "chunk_bytes": chunk_bytes,
        "bare_peak": memory["bare"]["peak"] - memory["bare"]["base"],
        "ours_peak": memory["ours"]["peak"] - memory["ours"]["base"],
        "labels_peak": memory["ours-labels"]["peak"] - memory["ours-labels"]["base"],
        "allowed": int(index_bytes * 1.1 + chunk_bytes), "same_results": timing["same_results_first_200"],
    }
    res["load"] = [load_before, os.getloadavg()[0]]
    res["time_ratio"] = res["ours_s"] / res["bare_s"]
    res["pass"] = res["time_ratio"] <= 1.1 and res["ours_peak"] <= res["allowed"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "index.json").write_text(json.dumps(res, indent=2) + "\n")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "index.md").write_text(_markdown(res))
    print(_markdown(res))


if __name__ == "__main__":
    main()
