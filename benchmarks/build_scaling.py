"""Rows/s of `build mmir` from ~100k to ~1M rows (used by bench_build.py).

One-process builds (`wit-retrieval build mmir --workers 1`, no worker start-up; whole processes,
export on) of 1, 3 and all WIT files of the world, each the best of a few runs. A build's time is a fixed part (loading the linker's automata
and the entity table, first use of memory and kernels, writing the tables' files) plus a part
per row: the fixed part is the intercept of a least-squares line through the three builds
(at least the 0-row build's time: every build does what that one does), and rows/s after it is the rate that would drop if a build slowed down with size (memory
growth, work that is not linear). A build of a header-only WIT file (0 rows) is timed too:
it pays the loads but not the first use of the row path. End-to-end rows/s is reported as
well: at ~100k rows the fixed part is a large share of it.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np


def header_only(like: Path, folder: Path) -> Path:
    """A WIT train file holding only the header of `like`."""
    with gzip.open(like, "rb") as f:
        header = f.readline()
    path = folder / "empty_wit" / "wit_v1.train.all-00000-of-00001.tsv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header))
    return path


def scaling(files: list[Path], root: Path, run_build: Callable[..., dict], out: Path, repeats: int = 3,
            small_repeats: int = 5) -> dict:
    """One-process builds (`build mmir --workers 1`, whole processes) of 0 rows, 1, 3 and all files
    (best of `small_repeats` each, and of `repeats`); rates end to end and after the fitted fixed cost."""
    train = sorted((f for f in files if ".train." in f.name), key=lambda f: f.stat().st_size)
    empty = header_only(files[0], out)

    def build(label: str, subset: list[Path], repeats: int) -> dict:
        runs = [run_build(root, subset, workers=1) for _ in range(repeats)]
        return {"label": label, "repeats": repeats, **min(runs, key=lambda run: run["seconds"])}

    zero = build("0 rows", [empty], small_repeats)
    # short builds vary most with the machine's noise: more repeats; the last leaves the whole
    # world built (the mask comparison reads it)
    runs = [build(label, subset, repeats) for label, subset, repeats in (
        ("1 file", train[:1], small_repeats), ("3 files", train[:3], small_repeats), ("all files", files, repeats))]
    slope, fitted = np.polyfit([run["rows"] for run in runs], [run["seconds"] for run in runs], 1)
    # every build does all that the 0-row build does: a line that starts below it was bent by a
    # short build's noise, and the 0-row build's time is the fixed part's lower bound
    fixed = max(float(fitted), zero["seconds"])
    for run in runs:
        run["rows_per_s"] = run["rows"] / run["seconds"]
        run["rows_per_s_after_fixed"] = run["rows"] / max(run["seconds"] - fixed, 1e-9)
    after = [run["rows_per_s_after_fixed"] for run in runs]
    return {"zero_rows": zero, "fixed_seconds": fixed, "fitted_fixed_seconds": float(fitted),
            "seconds_per_million_rows": float(slope) * 1e6,
            "runs": runs, "end_to_end_ratio": runs[-1]["rows_per_s"] / runs[0]["rows_per_s"],
            "after_fixed_ratio": runs[-1]["rows_per_s_after_fixed"] / runs[0]["rows_per_s_after_fixed"],
            "after_fixed_spread": max(after) / min(after)}


def scaling_lines(flat: dict) -> list[str]:
    """The scaling table (markdown)."""
    zero, runs, fixed = flat["zero_rows"], flat["runs"], flat["fixed_seconds"]
    lines = [
        f"Rows/s from ~100k to {runs[-1]['rows']:,} rows (`build mmir --workers 1`: 1 process, so no worker "
        f"start-up; each build the best of {runs[0]['repeats']}, {runs[1]['repeats']} and {runs[2]['repeats']} runs, "
        "each a whole process with its defaults, export included, timed from outside):", "",
        "| build | rows | wall | CPU | rows/s | rows/s after the fixed part |",
        "|---|---:|---:|---:|---:|---:|",
        f"| a header-only WIT file | 0 | {zero['seconds']:.2f} s | {zero['cpu_seconds']:.2f} s | | |",
    ]
    lines += [f"| {run['label']} | {run['rows']:,} | {run['seconds']:.2f} s | {run['cpu_seconds']:.2f} s | "
              f"{run['rows_per_s']:,.0f} | {run['rows_per_s_after_fixed']:,.0f} |" for run in runs]
    verdict = "flat: within 20%" if 1 / 1.2 <= flat["after_fixed_ratio"] <= 1.2 else "NOT flat: beyond 20%"
    lines += [
        "",
        f"A line through the three builds: {flat['fitted_fixed_seconds']:.2f} s fixed + "
        f"{flat['seconds_per_million_rows']:.2f} s per million rows. The 0-row build takes {zero['seconds']:.2f} s, "
        f"and every build does all it does, so the fixed part is the larger of the two: {fixed:.2f} s (above the "
        f"0-row build's, the rest is the first use of the row path: memory, kernels, files). After it, rows/s changes "
        f"**{flat['after_fixed_ratio']:.2f}x** from {runs[0]['rows']:,} to {runs[-1]['rows']:,} rows ({verdict}); "
        f"the three rates lie within {flat['after_fixed_spread']:.2f}x of each other. End to end it changes "
        f"{flat['end_to_end_ratio']:.2f}x: a {runs[0]['rows']:,}-row build spends "
        f"{min(fixed / runs[0]['seconds'], 1):.0%} of its time on the fixed part.",
    ]
    return lines
