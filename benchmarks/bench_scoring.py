"""Benchmark: our scorer against ranx and ir_measures on the same run, and reading a TREC run file.

Data (one seed): `--queries` queries x `--depth` results (default 1M x 100 = 100M rows) with
16-hex image ids, scores strictly decreasing within a query (tie-free, duplicate-free, so every
tool must agree exactly), one relevant image per query (found in 70% of runs) and 1-2 more
for 20% of queries, relevance 1 or 2. Measures: R@1, R@5, R@10, MRR@10, nDCG@10.

1. ours: `evaluate_queries` on the columnar run (what `read_run_table` returns), full size.
2. ranx: `evaluate` on prebuilt Qrels/Run after a JIT warm-up call, on the first
   `--ranx-queries` queries (building a ranx Run takes minutes and ~6 GB per 100k queries, so
   1M does not fit this machine); its time is extrapolated linearly and ours is also timed on
   the same subset. Run construction is reported separately, not counted.
3. ir_measures (`calc_aggregate`, default providers: pytrec_eval for R/nDCG, its own for
   RR@10), on the first `--ir-measures-queries` queries, extrapolated linearly.
4. Reading a TREC file of the full run with `read_run_table` (pyarrow.csv fast path); and ours
   against pandas.read_csv (C engine) on the ranx subset's file.
Values are checked equal to 1e-9 on each subset. Timings are the best of `--reps`.

Writes benchmarks/out/scoring.json and benchmarks/results/scoring.md.
Run: .venv/bin/python benchmarks/bench_scoring.py [--queries 1000000] [--depth 100]
"""

from __future__ import annotations

import argparse
import gc
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

from wit_retrieval.io.runs import read_run_table  # noqa: E402
from wit_retrieval.metrics import evaluate_queries  # noqa: E402

MEASURES = ["R@1", "R@5", "R@10", "MRR@10", "nDCG@10"]
RANX = {"R@1": "recall@1", "R@5": "recall@5", "R@10": "recall@10", "MRR@10": "mrr@10", "nDCG@10": "ndcg@10"}


def make_data(num_queries: int, depth: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """A tie-free, duplicate-free run and its qrels (see the module docstring)."""
    rng = np.random.default_rng(seed)
    num_docs = 10 * num_queries
    hexes = pa.array([f"{x:016x}" for x in rng.choice(2**62, num_docs + 3 * num_queries, replace=False)])
    qids = pa.array([f"q{i:07d}" for i in range(num_queries)])
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


def best_of(reps: int, fn):
    """(best seconds, last result) of `reps` calls."""
    best, result = float("inf"), None
    for _ in range(reps):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def subset(run: pa.Table, qrels: pa.Table, num_queries: int, depth: int) -> tuple[pa.Table, pa.Table]:
    """The first `num_queries` queries (runs are grouped by query)."""
    import pyarrow.compute as pc

    run_part = run.slice(0, num_queries * depth)
    keep = pc.is_in(qrels["query_id"], value_set=pc.unique(run_part["query_id"]))
    return run_part, qrels.filter(keep)


def time_ranx(run: pa.Table, qrels: pa.Table, reps: int) -> dict:
    from ranx import Qrels, Run, evaluate

    def frame(table, names):
        df = table.to_pandas()
        df.columns = names
        for c in names[:2]:
            df[c] = df[c].astype(object)  # ranx wants object (str) columns
        return df

    start = time.perf_counter()
    ranx_run = Run.from_df(frame(run, ["q_id", "doc_id", "score"]), q_id_col="q_id", doc_id_col="doc_id",
                           score_col="score")
    ranx_qrels = Qrels.from_df(frame(qrels, ["q_id", "doc_id", "score"]), q_id_col="q_id", doc_id_col="doc_id",
                               score_col="score")
    build = time.perf_counter() - start
    evaluate(ranx_qrels, ranx_run, list(RANX.values()))  # JIT warm-up (and its cache)
    seconds, values = best_of(reps, lambda: evaluate(ranx_qrels, ranx_run, list(RANX.values())))
    return {"seconds": seconds, "build_seconds": build, "values": {m: float(values[RANX[m]]) for m in MEASURES}}


def time_ir_measures(run: pa.Table, qrels: pa.Table, reps: int) -> dict:
    import ir_measures
    from ir_measures import RR, R, nDCG

    objs = {"R@1": R @ 1, "R@5": R @ 5, "R@10": R @ 10, "MRR@10": RR @ 10, "nDCG@10": nDCG @ 10}
    qrels_list = [ir_measures.Qrel(q, d, int(r)) for q, d, r in zip(*(qrels[c].to_pylist() for c in qrels.column_names))]
    run_list = [ir_measures.ScoredDoc(q, d, s) for q, d, s in zip(*(run[c].to_pylist() for c in run.column_names))]
    seconds, values = best_of(reps, lambda: ir_measures.calc_aggregate(list(objs.values()), qrels_list, run_list))
    return {"seconds": seconds, "values": {m: float(values[o]) for m, o in objs.items()}}


def write_trec_streaming(source: Path, target: Path, depth: int) -> None:
    """A TREC file from a parquet run, batch by batch (whole queries per batch) to bound memory."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    with pcsv.CSVWriter(target, pa.schema([("q", pa.string()), ("q0", pa.string()), ("d", pa.string()),
                                           ("rank", pa.int64()), ("score", pa.float64()), ("tag", pa.string())]),
                        write_options=pcsv.WriteOptions(include_header=False, delimiter=" ",
                                                        quoting_style="none")) as writer:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=depth * 10_000):
            n = batch.num_rows
            writer.write_table(pa.table({"q": batch["query_id"], "q0": pa.array(["Q0"] * n), "d": batch["image_id"],
                                         "rank": np.arange(n) % depth + 1, "score": batch["score"],
                                         "tag": pa.array(["bench"] * n)}))


def time_reading(data: Path, depth: int, reps: int) -> dict:
    """Our TREC reader on the full run; ours and pandas.read_csv (C engine) on the ranx subset's file."""
    import pandas as pd

    full, part = data / "full.trec", data / "part.trec"
    write_trec_streaming(data / "run.parquet", full, depth)
    write_trec_streaming(data / "run_ranx.parquet", part, depth)
    ours, rows = best_of(reps, lambda: read_run_table(full).table.num_rows)  # keep no table between calls
    size = full.stat().st_size
    full.unlink()
    names = ["query_id", "q0", "image_id", "rank", "score", "tag"]
    ours_part, part_rows = best_of(reps, lambda: read_run_table(part).table.num_rows)
    pandas_part, _ = best_of(reps, lambda: len(pd.read_csv(part, sep=" ", header=None, names=names, engine="c")))
    return {"rows": rows, "bytes": size, "ours_seconds": ours, "subset_rows": part_rows,
            "subset_bytes": part.stat().st_size, "ours_subset_seconds": ours_part, "pandas_subset_seconds": pandas_part}


def generate(data: Path, args) -> int:
    """Write the run, its qrels and the peers' subsets as parquet; returns the number of rows."""
    import pyarrow.parquet as pq

    run, qrels = make_data(args.queries, args.depth)
    pq.write_table(run, data / "run.parquet")
    pq.write_table(qrels, data / "qrels.parquet")
    for peer, size in (("ranx", args.ranx_queries), ("ir_measures", args.ir_measures_queries)):
        run_part, qrels_part = subset(run, qrels, size, args.depth)
        pq.write_table(run_part, data / f"run_{peer}.parquet")
        pq.write_table(qrels_part, data / f"qrels_{peer}.parquet")
    return run.num_rows


def worker(phase: str, data: Path, args) -> dict:
    """One measurement in a fresh process (so one phase's memory never weighs on the next)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    reps = args.reps
    if phase == "generate":
        return {"rows": generate(data, args)}
    if phase == "reading":
        return time_reading(data, args.depth, reps)
    suffix = "" if phase == "ours" else f"_{phase}"
    run, qrels = pq.read_table(data / f"run{suffix}.parquet"), pq.read_table(data / f"qrels{suffix}.parquet")
    evaluate_queries(run.slice(0, 1000), qrels, MEASURES)  # warm-up: first-call costs, like ranx's JIT
    ours, values = best_of(reps, lambda: evaluate_queries(run, qrels, MEASURES).mean())
    result = {"ours_seconds": ours, "ours_values": values, "rows": run.num_rows,
              "queries": pc.count_distinct(qrels["query_id"]).as_py()}
    if phase != "ours":
        timer = time_ranx if phase == "ranx" else time_ir_measures
        result.update(timer(run, qrels, reps if phase == "ranx" else 1))
        result["max_abs_difference"] = check_equal(values, result["values"], phase)
        result["speedup_same_subset"] = result["seconds"] / ours
    return result


def check_equal(ours: dict, theirs: dict, name: str) -> float:
    worst = max(abs(ours[m] - theirs[m]) for m in MEASURES)
    if worst > 1e-9:
        raise SystemExit(f"{name} disagrees with us by {worst}: {ours} vs {theirs}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--ranx-queries", type=int, default=100_000)
    parser.add_argument("--ir-measures-queries", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-reading", action="store_true", help="Do not time reading a TREC file.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-scoring-", dir=os.environ.get("BENCH_TMP")) as tmp:
        data = Path(tmp)
        out: dict = {"queries": args.queries, "depth": args.depth, "measures": MEASURES,
                     "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0]}
        phases = ["generate", "ours", "ranx", "ir_measures"] + ([] if args.skip_reading else ["reading"])
        for phase in phases:
            flags = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                     if name not in ("worker", "data", "skip_reading")]
            done = subprocess.run([sys.executable, __file__, "--worker", phase, "--data", str(data), *flags],
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{phase} failed (exit {done.returncode}; -9 is the OOM killer):\n{done.stderr[-3000:]}")
            out[phase] = json.loads(done.stdout.strip().splitlines()[-1])
            if phase == "generate":
                out["rows"] = out.pop("generate")["rows"]
                continue
            print(f"{phase}: {json.dumps(out[phase])[:300]}", flush=True)
    for peer in ("ranx", "ir_measures"):
        r = out[peer]
        r["extrapolated_seconds"] = r["seconds"] * args.queries / r["queries"]
        r["speedup_full"] = r["extrapolated_seconds"] / out["ours"]["ours_seconds"]
    write_outputs(out)


def write_outputs(out: dict) -> None:
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "scoring.json").write_text(json.dumps(out, indent=2) + "\n")
    ranx, irm = out["ranx"], out["ir_measures"]
    lines = [
        f"Scoring {out['queries']:,} queries x {out['depth']} results ({out['rows']:,} rows), measures "
        f"{', '.join(out['measures'])}; tie-free runs, values equal to 1e-9 (max difference: ranx "
        f"{ranx['max_abs_difference']:.1e}, ir_measures {irm['max_abs_difference']:.1e}).", "",
        "| tool | queries timed | seconds | ours, same queries | speed-up, same queries | "
        "extrapolated to full size | speed-up at full size |",
        "|---|---|---|---|---|---|---|",
        f"| wit-retrieval | {out['queries']:,} | {out['ours']['ours_seconds']:.2f} | - | - | - | - |",
    ]
    for name, r in (("ranx (after JIT warm-up)", ranx), ("ir_measures", irm)):
        lines.append(f"| {name} | {r['queries']:,} | {r['seconds']:.2f} | {r['ours_seconds']:.2f} | "
                     f"{r['speedup_same_subset']:.1f}x | {r['extrapolated_seconds']:.1f} | {r['speedup_full']:.1f}x |")
    lines += ["", f"ranx Run/Qrels construction for {ranx['queries']:,} queries (not counted; includes numba "
              f"compilation on a cold cache): {ranx['build_seconds']:.0f} s. Machine: {out['cpu_count']} cores, "
              f"shared with other jobs while measured (load average {out['load_average']:.1f}); each tool in a "
              "fresh process; peers extrapolated linearly from their subsets."]
    if "reading" in out:
        r = out["reading"]
        lines += ["", f"Reading a TREC run of {r['rows']:,} lines ({r['bytes'] / 2**30:.1f} GiB) with `read_run_table` "
                  f"(pyarrow.csv fast path): {r['ours_seconds']:.1f} s. On the ranx subset's file ({r['subset_rows']:,} "
                  f"lines, {r['subset_bytes'] / 2**30:.2f} GiB): ours {r['ours_subset_seconds']:.2f} s, "
                  f"pandas.read_csv (C engine) {r['pandas_subset_seconds']:.2f} s."]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scoring.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
