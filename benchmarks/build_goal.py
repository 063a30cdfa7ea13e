"""The build's throughput goal (used by bench_build.py): `wit-retrieval build mmir` with its
defaults and `--workers 2` against pyarrow.csv with 2 threads reading the same shards (all
columns), rows/s after each one's fixed part: within 3x.

Both sides run as whole processes, as users run them, timed from the parent (interpreter start,
imports, the work, the export, exit): `wit-retrieval build mmir --out ROOT --workers 2 FILES`
(export on, its default), and `python -c FLOOR 2 FILES`, which reads every column of every
shard with pyarrow.csv on 2 threads. CPU and peak memory come from wait4() on the process, so
they cover its whole tree (the build's workers included) and nothing else on the machine.

Each side runs on a subset of the shards and on all of them, interleaved (floor small, ours
small, floor all, ours all; then again), each size's best run kept. A side's time per row is
(T(all) - T(subset)) / (rows(all) - rows(subset)); its rows/s after the fixed part is the
inverse, and its fixed part is T(subset) minus the subset's rows at that rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = """
import sys
import pyarrow as pa, pyarrow.csv as pcsv
from wit_retrieval.schema import WIT_BOOL_COLUMNS, WIT_COLUMNS, WIT_INT_COLUMNS
threads = int(sys.argv[1])
pa.set_cpu_count(threads)
pa.set_io_thread_count(threads)
types = {c: pa.int64() if c in WIT_INT_COLUMNS else pa.bool_() if c in WIT_BOOL_COLUMNS else pa.string()
         for c in WIT_COLUMNS}
rows = 0
for path in sys.argv[2:]:
    rows += pcsv.read_csv(path, read_options=pcsv.ReadOptions(block_size=16 << 20, use_threads=True),
        parse_options=pcsv.ParseOptions(delimiter="\\t", quote_char='"', newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True, null_values=[""],
                                            true_values=["true"], false_values=["false"])).num_rows
print(rows)
"""


def cli() -> list[str]:
    """The `wit-retrieval` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "wit-retrieval"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from wit_retrieval.cli import main; main()"]


def timed(command: list[str], env: dict | None = None) -> dict:
    """Run a command as a whole process: wall seconds, CPU of its tree (user + sys), largest RSS, output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode:
        raise SystemExit(f"{command[:4]} failed: {stderr[-3000:]}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "maxrss_mib": usage.ru_maxrss / 1024,
            "stdout": stdout + stderr}


def run_floor(files: list[Path], threads: int = 2) -> dict:
    """pyarrow.csv reading every column of `files` on `threads` threads, as a whole process."""
    run = timed([sys.executable, "-c", FLOOR, str(threads), *map(str, files)])
    run["rows"] = int(run.pop("stdout").split()[-1])
    return run


def run_build(root: Path, files: list[Path], workers: int = 2) -> dict:
    """`wit-retrieval build mmir --out ROOT --workers N FILES` with its defaults (export on)."""
    run = timed([*cli(), "build", "mmir", "--out", str(root), "--workers", str(workers), *map(str, files)])
    printed = run.pop("stdout")
    stats = json.loads((root / "stats.json").read_text())["mmir"]
    run.update(rows=sum(s["rows_read"] for s in stats["splits"].values()),
               queries=sum(s["queries"] for s in stats["splits"].values()),
               with_reference=sum(s["with_reference"] for s in stats["splits"].values()),
               build_seconds=stats["seconds"], done_line=_done_line(printed))
    return run


def _done_line(printed: str) -> str:
    """The command's last line ("done in ... s -> ROOT (build ... s, export ... s)"), which the
    console may have wrapped, with the data root left out."""
    import re

    found = re.search(r"done in (\S+ s) -> .*?(\(build [^)]*\))", " ".join(printed.split()))
    return f"done in {found.group(1)} {found.group(2)}" if found else ""


def goal(root: Path, small: list[Path], files: list[Path], rounds: int) -> dict:
    """The interleaved runs and each side's rows/s after its fixed part (wall, and CPU for reference)."""
    runs: dict[str, dict[str, list[dict]]] = {"floor": {"small": [], "all": []}, "ours": {"small": [], "all": []}}
    for number in range(rounds):
        for size, subset in (("small", small), ("all", files)):
            for side in ("floor", "ours"):
                one = run_floor(subset) if side == "floor" else run_build(root, subset)
                runs[side][size].append(one)
                print(f"round {number + 1} {size} {side}: {one['rows']:,} rows, {one['seconds']:.2f} s, "
                      f"CPU {one['cpu_seconds']:.2f} s", flush=True)
    result = {"rounds": rounds, "runs": runs}
    for side, sizes in runs.items():
        best = {size: min(items, key=lambda r: r["seconds"]) for size, items in sizes.items()}
        cpu = {size: min(items, key=lambda r: r["cpu_seconds"]) for size, items in sizes.items()}
        rows = best["all"]["rows"] - best["small"]["rows"]
        per_row = (best["all"]["seconds"] - best["small"]["seconds"]) / rows
        cpu_per_row = (cpu["all"]["cpu_seconds"] - cpu["small"]["cpu_seconds"]) / rows
        result[side] = {"small": best["small"], "all": best["all"], "rows_per_s_after_fixed": 1 / per_row,
                        "fixed_seconds": best["small"]["seconds"] - per_row * best["small"]["rows"],
                        "cpu_us_per_row": cpu_per_row * 1e6,
                        "fixed_cpu_seconds": cpu["small"]["cpu_seconds"] - cpu_per_row * cpu["small"]["rows"]}
    floor, ours = result["floor"], result["ours"]
    result["ratio"] = floor["rows_per_s_after_fixed"] / ours["rows_per_s_after_fixed"]
    result["cpu_ratio"] = ours["cpu_us_per_row"] / floor["cpu_us_per_row"]
    result["end_to_end_ratio"] = ours["all"]["seconds"] / floor["all"]["seconds"]
    return result


def goal_lines(result: dict, small_files: int) -> list[str]:
    """The goal's table (markdown)."""
    floor, ours = result["floor"], result["ours"]
    met = "met" if result["ratio"] <= 3 else "NOT met"
    lines = [
        f"The goal: `wit-retrieval build mmir` with its defaults (export included) and `--workers 2` against "
        f"pyarrow.csv with 2 threads reading the same shards (all columns), rows/s after each one's fixed part: "
        f"within 3x. Both as whole processes timed from outside (start-up and exit included), on {small_files} "
        f"train shards and on all {floor['all']['rows']:,} rows, interleaved, best of {result['rounds']} per size; "
        f"CPU is the process tree's (user + sys, from wait4).", "",
        "| side | rows (subset / all) | wall (subset / all) | rows/s after the fixed part | fixed part | "
        "CPU (subset / all) | CPU µs per row | largest process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, side in (("floor: pyarrow.csv, 2 threads, all columns", floor),
                       ("ours: `wit-retrieval build mmir --workers 2` (export on)", ours)):
        lines.append(
            f"| {name} | {side['small']['rows']:,} / {side['all']['rows']:,} | {side['small']['seconds']:.2f} s / "
            f"{side['all']['seconds']:.2f} s | {side['rows_per_s_after_fixed']:,.0f} | {side['fixed_seconds']:.2f} s | "
            f"{side['small']['cpu_seconds']:.2f} s / {side['all']['cpu_seconds']:.2f} s | "
            f"{side['cpu_us_per_row']:.2f} | {side['all']['maxrss_mib']:,.0f} MiB |")
    lines += [
        "",
        f"**Ours / floor, rows/s after the fixed part: {result['ratio']:.2f}x** (goal: within 3x, {met}). "
        f"In CPU per row: {result['cpu_ratio']:.2f}x. End to end on all rows (whole processes): "
        f"{result['end_to_end_ratio']:.2f}x. Our command printed: `{ours['all']['done_line']}` "
        f"({ours['all']['queries']:,} queries).",
    ]
    return lines
