"""Benchmark: `wit-retrieval score` against `ir_measures` as whole processes, and reading a TREC run.

Data (one seed per block of 100k queries): Q queries x 100 results, 16-hex image ids, scores
strictly decreasing within a query (tie-free, duplicate-free, so both tools must agree
exactly), one relevant image per query (found in 70% of runs) and 1-2 more for 20% of
queries, relevance 1 or 2; written as TREC run and qrels files.

1. Whole processes on the same files, as users run them (our package byte-compiled first, as an
   installed one is), interleaved (ours, peer, ours, ...),
   best wall time of `--reps` and the CPU time (user + sys) of that run:
   `wit-retrieval score RUN --qrels QRELS` (defaults: 9 measures, 1000 bootstrap resamples for
   the CIs, validation) against `python -m ir_measures QRELS RUN <the same 9 measures>`, at
   20k x 100 and 100k x 100. Values are checked equal to 1e-9.
2. 1M x 100: ours once as a whole process; ir_measures would need far more than this machine's
   24 GiB, so its time is extrapolated linearly from 100k (labelled so).
3. Reading the 100k x 100 file (10M lines): `read_run_table` against `pandas.read_csv` with the C
   engine, in one process, interleaved, best wall and CPU time of `--reps`.

Writes benchmarks/out/scoring.json and benchmarks/results/scoring.md.
Run: .venv/bin/python benchmarks/bench_scoring.py [--sizes 20000,100000] [--big 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

OURS_MEASURES = ["R@1", "R@5", "R@10", "Success@1", "Success@5", "Success@10", "MRR@10", "nDCG@10", "AP@10"]
PEER_MEASURES = {"R@1": "R@1", "R@5": "R@5", "R@10": "R@10", "Success@1": "Success@1", "Success@5": "Success@5",
                 "Success@10": "Success@10", "MRR@10": "RR@10", "nDCG@10": "nDCG@10", "AP@10": "AP@10"}
BLOCK = 100_000  # queries generated at a time (bounds memory at 1M queries)


def make_data(num_queries: int, depth: int, seed: int = 0, first_query: int = 0) -> tuple[pa.Table, pa.Table]:
    """A tie-free, duplicate-free run and its qrels (see the module docstring)."""
    rng = np.random.default_rng(seed)
    num_docs = 10 * num_queries
    hexes = pa.array([f"{x:016x}" for x in rng.choice(2**62, num_docs + 3 * num_queries, replace=False)])
    qids = pa.array([f"q{i:07d}" for i in range(first_query, first_query + num_queries)])
    # Docs of query q: base_q + j * stride (mod num_docs), distinct within the query.
    stride = max(1, num_docs // depth - 1)
    base = rng.integers(0, num_docs, num_queries)
    doc = (base[:, None] + np.arange(depth)[None, :] * stride) % num_docs
    targets = num_docs + np.arange(3 * num_queries).reshape(num_queries, 3)  # fresh ids, never in the base docs
    first = rng.integers(0, depth, num_queries)
    second = (first + 1 + rng.integers(0, depth - 1, num_queries)) % depth  # another slot than `first`
    found = np.flatnonzero(rng.random(num_queries) < 0.7)
    doc[found, first[found]] = targets[found, 0]
    extra = rng.random(num_queries) < 0.2
    found = np.flatnonzero(extra & (rng.random(num_queries) < 0.5))
    doc[found, second[found]] = targets[found, 1]
    score = -np.arange(depth)[None, :] + rng.random((num_queries, 1)) * 0.5
    run = pa.table({"query_id": qids.take(pa.array(np.repeat(np.arange(num_queries), depth))),
                    "image_id": hexes.take(pa.array(doc.ravel())),
                    "score": np.broadcast_to(score, (num_queries, depth)).ravel().copy()})
    q_rel, d_rel, rel = [np.arange(num_queries)], [targets[:, 0]], [rng.integers(1, 3, num_queries)]
    for column in (1, 2):
        pick = np.flatnonzero(extra if column == 1 else extra & (rng.random(num_queries) < 0.5))
        q_rel.append(pick)
        d_rel.append(targets[pick, column])
        rel.append(rng.integers(1, 3, len(pick)))
    qrels = pa.table({"query_id": qids.take(pa.array(np.concatenate(q_rel))),
                      "image_id": hexes.take(pa.array(np.concatenate(d_rel))),
                      "relevance": np.concatenate(rel).astype(np.int64)})
    return run, qrels


def write_files(folder: Path, num_queries: int, depth: int) -> tuple[Path, Path]:
    """run_Q.trec and qrels_Q.txt, generated and written block by block."""
    import pyarrow.csv as pcsv

    run_path, qrels_path = folder / f"run_{num_queries}.trec", folder / f"qrels_{num_queries}.txt"
    options = pcsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    run_schema = pa.schema([("q", pa.string()), ("q0", pa.string()), ("d", pa.string()), ("rank", pa.int64()),
                            ("score", pa.float64()), ("tag", pa.string())])
    qrels_schema = pa.schema([("q", pa.string()), ("it", pa.string()), ("d", pa.string()), ("rel", pa.int64())])
    with pcsv.CSVWriter(run_path, run_schema, write_options=options) as runs, \
            pcsv.CSVWriter(qrels_path, qrels_schema, write_options=options) as qrels:
        for block, start in enumerate(range(0, num_queries, BLOCK)):
            run, rel = make_data(min(BLOCK, num_queries - start), depth, seed=block, first_query=start)
            n = run.num_rows
            runs.write_table(pa.table({"q": run["query_id"], "q0": pa.array(["Q0"] * n), "d": run["image_id"],
                                       "rank": np.arange(n) % depth + 1, "score": run["score"],
                                       "tag": pa.array(["bench"] * n)}, schema=run_schema))
            qrels.write_table(pa.table({"q": rel["query_id"], "it": pa.array(["0"] * rel.num_rows),
                                        "d": rel["image_id"], "rel": rel["relevance"]}, schema=qrels_schema))
    return run_path, qrels_path


def timed(command: list[str], folder: Path) -> dict:
    """Run a command as a whole process: wall seconds, its CPU seconds (user + sys) and peak RSS, stdout."""
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{command[:3]} failed (exit {proc.returncode}; -9 is the OOM killer):\n"
                         f"{err_path.read_text()[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "max_rss_mib": usage.ru_maxrss / 1024,
            "stdout": out_path.read_text()}


def compile_package() -> None:
    """Byte-compile wit_retrieval as `pip install` does, so ours starts from bytecode as ir_measures (an
    installed package) does: with PYTHONDONTWRITEBYTECODE set and no __pycache__ in the checkout, every
    run would otherwise compile our modules from source first (~0.03-0.05 s a process)."""
    import compileall

    import wit_retrieval

    compileall.compile_dir(Path(wit_retrieval.__file__).parent, quiet=1)


def ours_command(run: Path, qrels: Path, json_out: Path) -> list[str]:
    script = Path(sys.executable).with_name("wit-retrieval")
    entry = [str(script)] if script.exists() else [sys.executable, "-c", "from wit_retrieval.cli import main; main()"]
    return [*entry, "score", str(run), "--qrels", str(qrels), "--json", str(json_out)]


def peer_command(run: Path, qrels: Path) -> list[str]:
    return [sys.executable, "-m", "ir_measures", str(qrels), str(run), " ".join(PEER_MEASURES.values()), "-p", "12"]


def compare_values(json_out: Path, peer_stdout: str) -> float:
    ours = json.loads(json_out.read_text())["scores"]
    peer = dict(line.split("\t") for line in peer_stdout.strip().splitlines())
    worst = max(abs(ours[m] - float(peer[p])) for m, p in PEER_MEASURES.items())
    if worst > 1e-9:
        raise SystemExit(f"ir_measures disagrees with us by {worst}: {ours} vs {peer}")
    return worst


def side_by_side(folder: Path, num_queries: int, depth: int, reps: int) -> dict:
    run, qrels = write_files(folder, num_queries, depth)
    json_out = folder / "ours.json"
    best: dict[str, dict] = {}
    for _ in range(reps):  # interleaved: both tools see the same machine load
        for name, command in (("ours", ours_command(run, qrels, json_out)), ("ir_measures", peer_command(run, qrels))):
            result = timed(command, folder)
            if name == "ir_measures":
                best["max_abs_difference"] = compare_values(json_out, result["stdout"])
            result.pop("stdout")
            if name not in best or result["wall"] < best[name]["wall"]:
                best[name] = result
            print(f"  {num_queries:,} x {depth} {name}: {result['wall']:.2f} s wall, {result['cpu']:.2f} s CPU",
                  flush=True)
    return {"queries": num_queries, "rows": num_queries * depth, "bytes": run.stat().st_size, **best}


def reading(path: Path, reps: int) -> dict:
    """read_run_table against pandas.read_csv (C engine) on one file, interleaved, in a fresh process."""
    code = f"""
import json, time, gc
import pandas as pd
from wit_retrieval.io.runs import read_run_table
names = ["query_id", "q0", "image_id", "rank", "score", "tag"]
best = {{"ours": 1e9, "pandas": 1e9, "ours_cpu": 1e9, "pandas_cpu": 1e9}}
for _ in range({reps}):
    for name in ("ours", "pandas"):
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        if name == "ours":
            rows = read_run_table({str(path)!r}).table.num_rows
        else:
            rows = len(pd.read_csv({str(path)!r}, sep=" ", header=None, names=names, engine="c"))
        best[name] = min(best[name], time.perf_counter() - start)
        best[name + "_cpu"] = min(best[name + "_cpu"], time.process_time() - cpu)
print(json.dumps({{"rows": rows, **best}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {"bytes": path.stat().st_size, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000", help="Query counts timed for both tools.")
    parser.add_argument("--big", type=int, default=1_000_000, help="Query count timed for ours only (0: skip).")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    compile_package()
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict = {"depth": args.depth, "measures": OURS_MEASURES, "cpu_count": os.cpu_count(),
                 "load_average_start": os.getloadavg()[0], "sizes": []}
    with tempfile.TemporaryDirectory(prefix="bench-scoring-", dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        for num_queries in sizes:
            reps = args.reps if num_queries <= 20_000 else max(1, args.reps - 1)
            out["sizes"].append(side_by_side(folder, num_queries, args.depth, reps))
        largest = max(sizes)
        out["reading"] = reading(folder / f"run_{largest}.trec", args.reps)
        print(f"  reading {out['reading']}", flush=True)
        for name in os.listdir(folder):
            (folder / name).unlink()
        if args.big:
            run, qrels = write_files(folder, args.big, args.depth)
            result = timed(ours_command(run, qrels, folder / "ours.json"), folder)
            result.pop("stdout")
            peer = next(s for s in out["sizes"] if s["queries"] == largest)["ir_measures"]
            out["big"] = {"queries": args.big, "rows": args.big * args.depth, "bytes": run.stat().st_size,
                          "ours": result, "ir_measures_extrapolated_from": largest,
                          "ir_measures_extrapolated_wall": peer["wall"] * args.big / largest,
                          "ir_measures_extrapolated_cpu": peer["cpu"] * args.big / largest}
            print(f"  {args.big:,} x {args.depth} ours: {result['wall']:.1f} s wall", flush=True)
    out["load_average_end"] = os.getloadavg()[0]
    write_outputs(out)


def write_outputs(out: dict) -> None:
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "scoring.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "`wit-retrieval score RUN --qrels QRELS` (defaults: validation, 9 measures, 1000 bootstrap resamples) "
        f"against `python -m ir_measures QRELS RUN` with the same 9 measures, as whole processes on the same TREC "
        f"files, {out['depth']} results per query, interleaved; best wall time of the repetitions and the CPU time "
        "(user + sys) of that run. Tie-free runs: every value equal to 1e-9.", "",
        "| queries x depth | lines | file | ours wall | ours CPU | ours peak RSS | ir_measures wall | ir_measures CPU "
        "| ir_measures peak RSS | speed-up (wall) | speed-up (CPU) | max difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in out["sizes"]:
        ours, peer = s["ours"], s["ir_measures"]
        lines.append(f"| {s['queries']:,} x {out['depth']} | {s['rows']:,} | {s['bytes'] / 2**20:.0f} MiB | "
                     f"{ours['wall']:.2f} s | {ours['cpu']:.2f} s | {ours['max_rss_mib']:.0f} MiB | {peer['wall']:.2f} s | "
                     f"{peer['cpu']:.2f} s | {peer['max_rss_mib']:.0f} MiB | **{peer['wall'] / ours['wall']:.1f}x** | "
                     f"{peer['cpu'] / ours['cpu']:.1f}x | {s['max_abs_difference']:.1e} |")
    if "big" in out:
        b = out["big"]
        ours = b["ours"]
        lines.append(f"| {b['queries']:,} x {out['depth']} | {b['rows']:,} | {b['bytes'] / 2**30:.1f} GiB | "
                     f"{ours['wall']:.1f} s | {ours['cpu']:.1f} s | {ours['max_rss_mib'] / 1024:.1f} GiB | "
                     f"{b['ir_measures_extrapolated_wall']:.0f} s (extrapolated from {b['ir_measures_extrapolated_from']:,}) | "
                     f"{b['ir_measures_extrapolated_cpu']:.0f} s (extrapolated) | not run: would need far more than 24 GiB | "
                     f"{b['ir_measures_extrapolated_wall'] / ours['wall']:.1f}x (vs extrapolated) | "
                     f"{b['ir_measures_extrapolated_cpu'] / ours['cpu']:.1f}x (vs extrapolated) | - |")
    r = out["reading"]
    lines += ["", f"Reading a TREC run of {r['rows']:,} lines ({r['bytes'] / 2**20:.0f} MiB), best of the interleaved "
              f"repetitions in one process: `read_run_table` {r['ours']:.2f} s, `pandas.read_csv(engine='c')` "
              f"{r['pandas']:.2f} s: ours reads at **{r['pandas'] / r['ours']:.2f}x** pandas' speed (CPU time, all threads: "
              f"ours {r['ours_cpu']:.2f} s, pandas {r['pandas_cpu']:.2f} s).", "",
              f"Machine: {out['cpu_count']} cores shared with other jobs (load average {out['load_average_start']:.1f} "
              f"at the start, {out['load_average_end']:.1f} at the end); the ratios, measured interleaved, are the "
              "numbers to read."]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scoring.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
