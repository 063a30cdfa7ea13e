"""Quantized weights: CPU embedding throughput of int8 against fp32 (ViT-B-32, random init), the same images,
as users run it (`wit-retrieval embed ... [--quantize int8]`, whole process, defaults), interleaved; the largest
cosine difference of the two embeddings; and, from a demo run (`python -m wit_retrieval.demo --qat`), R@10 of the
trained inject model with int8 / int4 post-training and int4 quantization-aware weights against fp32.

Run from the repository root:
    .venv/bin/python benchmarks/bench_quant.py --images 256 --rounds 2 [--demo demo_out]

Writes benchmarks/out/quant.json and benchmarks/results/quant.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
MODEL = "open_clip:ViT-B-32:random"
DEMO_RUNS = {"fp32": "trained-inject", "int8 post-training": "trained-inject-int8",
             "int4 post-training": "trained-inject-int4", "int4 quantization-aware": "trained-inject-qat-int4"}
TARGETS = {"int8 post-training": 0.02, "int4 quantization-aware": 0.05}


def cli() -> str:
    exe = Path(sys.executable).with_name("wit-retrieval")
    return str(exe) if exe.exists() else "wit-retrieval"


def embed_once(store: Path, out: Path, scheme: str) -> tuple[float, float]:
    """(wall seconds of one `wit-retrieval embed` process, seconds of its embedding phase as it reports them)."""
    cmd = [cli(), "embed", "--model", MODEL, "--images", str(store), "--out", str(out), "--quantize", scheme]
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, json.loads(done.stdout.splitlines()[-1])["seconds"]


def throughput(count: int, rounds: int) -> dict:
    from bench_embed import make_store

    from wit_retrieval.io.embeddings import read_embeddings

    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        store = Path(tmp) / "images"
        make_store(store, count, 384)
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        walls: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(rounds):  # interleaved, so both see the same machine load
            for scheme in times:
                wall, seconds = embed_once(store, Path(tmp) / f"{scheme}.parquet", scheme)
                walls[scheme].append(wall)
                times[scheme].append(seconds)
        (ids_a, fp32), (ids_b, int8) = (read_embeddings(Path(tmp) / f"{s}.parquet") for s in ("fp32", "int8"))
    assert list(ids_a) == list(ids_b)
    cosine = np.sum(fp32 * int8, axis=1)
    best = {s: min(t) for s, t in times.items()}
    return {"images": count, "rounds": rounds, "seconds": times, "best_seconds": best, "wall_seconds": walls,
            "best_wall": {s: min(t) for s, t in walls.items()},
            "load_average": os.getloadavg()[0],
            "images_per_s": {s: round(count / t, 2) for s, t in best.items()},
            "speedup": round(best["fp32"] / best["int8"], 2),
            "max_cosine_difference": float(1 - cosine.min()), "mean_cosine": float(cosine.mean())}


def demo_recalls(demo: Path) -> dict:
    """R@10 (and R@1) with intervals of each kind of weights, full width, from a demo run's results."""
    found = {}
    for label, name in DEMO_RUNS.items():
        path = demo / "data" / "results" / name / "results.json"
        if path.is_file():
            doc = json.loads(path.read_text())
            found[label] = {m: doc["scores"][m] for m in ("R@1", "R@10")} | {
                "ci_R@10": doc.get("ci", {}).get("R@10"), "size_bytes": doc["quantization"].get("size_bytes"),
                "queries": doc.get("num_queries")}
    return found


def markdown(result: dict) -> str:
    t = result["throughput"]
    lines = ["### quantized weights (`embed --quantize int8` vs fp32; R@10 of quantized inject models on the demo world)",
             "", f"Embedding: {t['images']} 510x384 JPEG images from a real image store, `{MODEL}`, "
             f"`wit-retrieval embed` as users run it (whole process, defaults: batch 64, fp32 takes the oneDNN fast "
             f"path), best of {t['rounds']} interleaved runs each, on {result['machine']} (1-minute load average at "
             f"the end: {t['load_average']:.1f}: a shared machine, so ratios, not absolute times). Embedding phase: "
             "decode + preprocess + encode, as `embed` reports it; process wall adds start-up and model building.", "",
             "| weights | embedding phase (best) | images/s | ratio | process wall (best) | wall ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for scheme in ("fp32", "int8"):
        ratio = "1.00" if scheme == "fp32" else f"**{t['speedup']:.2f}x**"
        wall_ratio = t["best_wall"]["fp32"] / t["best_wall"][scheme]
        lines.append(f"| {scheme} | {t['best_seconds'][scheme]:.1f} s | {t['images_per_s'][scheme]} | {ratio} | "
                     f"{t['best_wall'][scheme]:.1f} s | {wall_ratio:.2f}x |")
    lines += ["", f"Largest cosine difference between the fp32 and int8 embeddings of the same image: "
              f"{t['max_cosine_difference']:.4f} (mean cosine {t['mean_cosine']:.4f}).", ""]
    demo = result.get("demo") or {}
    if demo:
        fp32 = demo.get("fp32", {}).get("R@10")
        lines += ["Miniature world (`python -m wit_retrieval.demo --qat`: the trained inject model, test split, "
                  "full width; 95% bootstrap intervals):", "",
                  "| weights | size | R@1 | R@10 [95% CI] | R@10 - fp32 | target |", "|---|---:|---:|---|---:|---|"]
        for label, row in demo.items():
            ci = row.get("ci_R@10")
            ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list) else ""
            delta = f"{row['R@10'] - fp32:+.3f}" if fp32 is not None else "-"
            target = TARGETS.get(label)
            verdict = "-" if target is None else (f"within {target}: " + (
                "yes" if fp32 is not None and abs(row["R@10"] - fp32) <= target else "**no**"))
            size = f"{row['size_bytes'] / 2**20:.2f} MiB" if row.get("size_bytes") else "-"
            lines.append(f"| {label} | {size} | {row['R@1']:.3f} | {row['R@10']:.3f}{ci_text} | {delta} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--demo", type=Path, default=None, help="A demo output folder run with --qat.")
    parser.add_argument("--demo-only", action="store_true", help="Keep the throughput of benchmarks/out/quant.json "
                        "and only (re)read the demo's results.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    saved = REPO / "benchmarks" / "out" / "quant.json"
    if args.demo_only:
        result = json.loads(saved.read_text())
    else:
        result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                  "throughput": throughput(args.images, args.rounds)}
    if args.demo:
        result["demo"] = demo_recalls(args.demo)
    (REPO / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=2))
    (REPO / "benchmarks" / "results" / "quant.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
