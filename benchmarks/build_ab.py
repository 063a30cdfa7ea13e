"""A/B of a build trick: CPU microseconds per WIT row of `wit-retrieval build mmir`, with and without it.

Each run is the command as users run it (a fresh process, its defaults, export included) with
`--workers 2`, on a small subset of the world's shards and on all of them; its CPU is the
user + sys time of the whole process tree (the build process and its workers, from
getrusage(RUSAGE_CHILDREN) around the run), so other jobs on the machine do not count. The
per-row cost after the fixed part is (CPU(all) - CPU(subset)) / (rows(all) - rows(subset)).
Variants run interleaved (A small, B small, A all, B all, then again), and each variant's
per-row cost is taken from its best (lowest-CPU) run of each size.

Variants (applied in the child before the command runs; its forked workers inherit them):
- `default`: the tree as built;
- `allocator`: glibc's mmap and trim thresholds raised to 32 MiB and 256 MiB with mallopt (what the
  removed io/allocator.py did in build processes; its A/B was `default` against this);
- `no-fasttsv`: io/_fasttsv.c not used (pyarrow.csv parses every segment);
- `portable-sha`: build/_fastbuild.c compiled without OpenSSL (its portable SHA-256), loaded from
  --portable-lib (`WIT_RETRIEVAL_NO_OPENSSL=1 python setup.py build_ext --build-lib DIR`);
- `python`: WIT_RETRIEVAL_PURE_PYTHON=1, the Python path of the shard rows.

Run: python benchmarks/build_ab.py --root ROOT --world WORLD --variants default,allocator [--rounds 3]
(ROOT must hold `build ei` of WORLD, as bench_build.py leaves in benchmarks/out/build_root.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def patch(variant: str, portable_lib: str | None) -> None:
    """Switch the trick off in this process (before the command imports what uses it)."""
    if variant == "allocator":
        import ctypes
        import ctypes.util

        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    elif variant == "no-fasttsv":
        from wit_retrieval.io import segments, tsv

        tsv._fasttsv = segments._fasttsv = None
    elif variant == "portable-sha":
        import importlib.machinery
        import importlib.util

        name = "wit_retrieval.build._fastbuild"
        path = next(Path(portable_lib, "wit_retrieval", "build").glob("_fastbuild*.so"))
        spec = importlib.util.spec_from_file_location(name, path,
                                                      loader=importlib.machinery.ExtensionFileLoader(name, str(path)))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    elif variant == "python":
        os.environ["WIT_RETRIEVAL_PURE_PYTHON"] = "1"
    elif variant != "default":
        raise SystemExit(f"unknown variant {variant}")


def run(variant: str, root: str, files: list[str], portable_lib: str | None, workers: int) -> dict:
    """One build in a fresh process; CPU of its whole tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, __file__, "--child", variant, "--root", root, "--workers", str(workers),
                             *(["--portable-lib", portable_lib] if portable_lib else []), "--files", *files],
                            capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        raise SystemExit(f"{variant} failed: {result.stderr[-3000:]}")
    stats = json.loads((Path(root) / "stats.json").read_text())["mmir"]
    rows = sum(s["rows_read"] for s in stats["splits"].values())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"variant": variant, "rows": rows, "cpu_seconds": cpu, "wall_seconds": wall}


def child(args: argparse.Namespace) -> None:
    patch(args.child, args.portable_lib)
    from wit_retrieval.cli import app

    sys.argv = ["wit-retrieval", "build", "mmir", "--out", args.root, "--workers", str(args.workers), *args.files]
    app()


def ab(root: str, small: list[str], full: list[str], variants: list[str], rounds: int, portable_lib: str | None,
       workers: int = 2) -> dict:
    """Interleaved runs; per variant: best CPU of each size and µs per row after the fixed part."""
    runs: dict[str, dict[str, list[dict]]] = {v: {"small": [], "full": []} for v in variants}
    for number in range(rounds):
        for size, files in (("small", small), ("full", full)):
            for variant in variants:
                one = run(variant, root, files, portable_lib, workers)
                runs[variant][size].append(one)
                print(f"round {number + 1} {size} {variant}: {one['rows']:,} rows, CPU {one['cpu_seconds']:.2f} s, "
                      f"wall {one['wall_seconds']:.2f} s", flush=True)
    result = {}
    for variant, sizes in runs.items():
        s = min(sizes["small"], key=lambda r: r["cpu_seconds"])
        f = min(sizes["full"], key=lambda r: r["cpu_seconds"])
        per_row = (f["cpu_seconds"] - s["cpu_seconds"]) / (f["rows"] - s["rows"]) * 1e6
        result[variant] = {"small": s, "full": f, "us_per_row": per_row,
                           "fixed_cpu_seconds": s["cpu_seconds"] - per_row * s["rows"] / 1e6, "runs": sizes}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--world", help="folder with the WIT shards (wit_v1.*.tsv.gz)")
    parser.add_argument("--variants", default="default,allocator,no-fasttsv,portable-sha")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=1, help="train shards in the small build")
    parser.add_argument("--full-files", type=int, default=0, help="shards in the full build (0: all)")
    parser.add_argument("--portable-lib")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="JSON file to write the results to")
    parser.add_argument("--child")
    parser.add_argument("--files", nargs="*", default=[])
    args = parser.parse_args()
    if args.child:
        return child(args)
    files = sorted(str(p) for p in Path(args.world).rglob("wit_v1.*.tsv.gz"))
    train = [f for f in files if ".train." in Path(f).name]
    full = files if not args.full_files else sorted(train[:args.full_files - 2] + [f for f in files if f not in train])
    result = ab(args.root, train[:args.small_files], full, args.variants.split(","), args.rounds, args.portable_lib,
                args.workers)
    base = result.get("default", {}).get("us_per_row")
    for variant, r in result.items():
        print(f"{variant}: {r['us_per_row']:.3f} µs/row after the fixed part ({r['small']['rows']:,} -> "
              f"{r['full']['rows']:,} rows; fixed {r['fixed_cpu_seconds']:.2f} s)"
              + (f", {r['us_per_row'] / base - 1:+.1%} vs default" if base else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
