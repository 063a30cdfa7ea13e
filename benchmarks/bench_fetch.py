"""Image fetching: wit-retrieval `images fetch` against img2dataset on one loopback server.

Two scenarios, both tools as subprocess CLIs with the same processes, threads, resize and
output format (webdataset tar), fetching the same 5,000 PNGs at Commons paths:
1. throughput: an unlimited server; images/s (wall clock of the whole command);
2. politeness: a server that enforces R requests/s (429 beyond, Retry-After); ours runs with
   --rate R; we report the achieved rate and success rate of both, and the server's count of
   requests over its limit.
img2dataset lives in its own venv (.venv-peers, created here if missing) because of its pins.

Usage: .venv/bin/python benchmarks/bench_fetch.py [--images 5000] [--processes 2] [--threads 16]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
PEERS = REPO / ".venv-peers"
AGENT = "wit-retrieval-bench/1.0 (https://example.org/wit-retrieval-bench; bench@example.org)"
sys.path.insert(0, str(REPO))


def make_world(root: Path, n: int, size: tuple[int, int] = (320, 240)) -> list[str]:
    """n PNGs (smooth random colour fields) at Commons paths; returns their real URLs (cached)."""
    marker = root / f".complete-{n}"
    urls = []
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"Bench_image_{i:05d}.png"
        h = hashlib.md5(name.encode()).hexdigest()
        path = f"wikipedia/commons/{h[0]}/{h[:2]}/{name}"
        urls.append(f"https://upload.wikimedia.org/{path}")
        if marker.exists():
            continue
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(buf.getvalue())
    marker.touch()
    return urls


def ensure_img2dataset() -> Path:
    """The img2dataset CLI in .venv-peers (created on first use)."""
    exe = PEERS / "bin" / "img2dataset"
    if not exe.exists():
        if not (PEERS / "bin" / "pip").exists():
            subprocess.run(["python3", "-m", "venv", str(PEERS)], check=True)
        subprocess.run([str(PEERS / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def run_ours(urls: list[str], server_url: str, out: Path, args, rate: float | None) -> dict:
    """Our CLI in a subprocess; returns wall time and counts from `images status`."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    url_file = out.parent / f"{out.name}-urls.tsv"
    url_file.write_text("image_url\n" + "\n".join(urls) + "\n", encoding="utf-8")
    cmd = [str(REPO / ".venv" / "bin" / "wit-retrieval"), "images", "fetch", "--urls", str(url_file),
           "--out", str(out), "--user-agent", AGENT, "--allow-host", "127.0.0.1",
           "--host-alias", f"upload.wikimedia.org={server_url}", "--rate", str(rate or 0),
           "--workers", str(args.processes), "--concurrency", str(args.threads), "--resize", "center-crop",
           "--image-size", str(args.size), "--quality", "90", "--shard-size", str(args.shard_size),
           "--timeout", "10", "--max-retries", "3", "--no-progress"]
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.monotonic() - start
    from wit_retrieval.images.status import store_status

    status = store_status(out)
    return {"wall_s": round(wall, 2), "ok": status["ok"], "failed": status["failed"], "errors": status["errors"],
            "images_per_s": round(status["ok"] / wall, 1), "fetch_rate": status["urls_per_s"]}


def run_img2dataset(exe: Path, urls: list[str], out: Path, args) -> dict:
    """img2dataset in its venv on the same (direct loopback) URLs; counts from its _stats.json files."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    url_file = out.parent / f"{out.name}-urls.txt"
    url_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
    cmd = [str(exe), "--url_list", str(url_file), "--input_format", "txt", "--output_folder", str(out),
           "--output_format", "webdataset", "--processes_count", str(args.processes),
           "--thread_count", str(args.threads), "--image_size", str(args.size), "--resize_mode", "center_crop",
           "--encode_quality", "90", "--timeout", "10", "--retries", "0", "--number_sample_per_shard",
           str(args.shard_size), "--distributor", "multiprocessing", "--disallowed_header_directives", "[]",
           "--user_agent_token", "wit-bench"]
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.monotonic() - start
    ok = total = 0
    for stats in out.glob("*_stats.json"):
        data = json.loads(stats.read_text())
        ok += data.get("successes", 0)
        total += data.get("count", 0)
    return {"wall_s": round(wall, 2), "ok": ok, "failed": total - ok, "images_per_s": round(ok / wall, 1),
            "success_rate": round(ok / max(1, total), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s the politeness server enforces "
                        "(keep it well below what both tools reach unlimited, or it measures CPU, not politeness)")
    parser.add_argument("--rate-images", type=int, default=1200, help="URLs in the politeness scenario")
    args = parser.parse_args()
    from wit_retrieval.synth.server import serve_directory

    OUT.mkdir(parents=True, exist_ok=True)
    urls = make_world(OUT / "fetch_world", args.images)
    exe = ensure_img2dataset()
    result: dict = {"images": args.images, "processes": args.processes, "threads": args.threads,
                    "resize": f"center-crop {args.size}", "rate": args.rate,
                    "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"}
    with serve_directory(OUT / "fetch_world") as server:
        direct = [u.replace("https://upload.wikimedia.org", server.url) for u in urls]
        result["throughput"] = {"ours": run_ours(urls, server.url, OUT / "fetch_ours", args, None),
                                "img2dataset": run_img2dataset(exe, direct, OUT / "fetch_i2d", args)}
    subset = urls[: args.rate_images]
    polite = {}
    for name in ("ours", "img2dataset"):
        with serve_directory(OUT / "fetch_world", rate_limit=args.rate) as server:
            if name == "ours":
                polite[name] = run_ours(subset, server.url, OUT / "fetch_ours_rate", args, args.rate)
            else:
                direct = [u.replace("https://upload.wikimedia.org", server.url) for u in subset]
                polite[name] = run_img2dataset(exe, direct, OUT / "fetch_i2d_rate", args)
            stats = server.stats()
            polite[name].update(requests=stats["requests"], over_limit=stats["over_limit"])
    polite["ours"]["achieved_rate_vs_limit"] = round((polite["ours"]["fetch_rate"] or 0) / args.rate, 3)
    result["politeness"] = polite
    t = result["throughput"]
    result["throughput_ratio"] = round(t["ours"]["images_per_s"] / max(1e-9, t["img2dataset"]["images_per_s"]), 2)
    (OUT / "fetch.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result, REPO / "benchmarks" / "results" / "fetch.md")
    print(json.dumps(result, indent=2))


def write_markdown(r: dict, path: Path) -> None:
    """The results table fragment."""
    t, p = r["throughput"], r["politeness"]
    lines = [
        f"### Image fetching: {r['images']} PNGs on a loopback server, {r['processes']} processes x "
        f"{r['threads']} threads, {r['resize']}, webdataset output",
        "",
        f"Machine: {r.get('machine', 'unknown')}. Wall time includes start-up and planning; both tools read "
        "the same server (ours through `--host-alias`).",
        "",
        "| scenario | tool | images ok | wall s | images/s | success rate | requests over server limit |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    scenarios = (("unlimited server", t), (f"server enforcing {r['rate']:g} req/s", p))
    for scenario, rows in scenarios:
        for name in ("ours", "img2dataset"):
            row = rows[name]
            rate = row["ok"] / max(1, row["ok"] + row["failed"])
            over = f"{row['over_limit']} of {row['requests']}" if "requests" in row else "-"
            lines.append(f"| {scenario} | {name} | {row['ok']} | {row['wall_s']} | {row['images_per_s']} | "
                         f"{rate:.1%} | {over} |")
    lines += ["", f"Throughput ratio (ours / img2dataset, images/s): **{r['throughput_ratio']}**. "
              f"With `--rate {r['rate']:g}` our fetch ran at {p['ours']['fetch_rate']} URLs/s between the first "
              f"and the last shard, **{p['ours']['achieved_rate_vs_limit']:.0%} of the limit**.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
