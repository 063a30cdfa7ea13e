"""`make demo`: the whole benchmark on the miniature world, through the CLI a user would type.

Every step is a `wit-retrieval` command run as a subprocess and printed before it runs, so
the demo doubles as a tutorial: generate the world, serve it on loopback at the real hosts'
paths, download, rebuild EI and MMIR, fetch the images politely, evaluate zero-shot, train a
fusion baseline, evaluate it, compare, audit, report.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()
USER_AGENT = "wit-retrieval-demo/0.1 (https://github.com/wit-retrieval; demo@example.org)"
MEASURES = "R@1,R@5,R@10,MRR@10,nDCG@10"
WIDTHS = "1/2,1/4,1/8"  # Matryoshka widths scored beside the full one (the trade-off table of the report)


@dataclass(frozen=True)
class DemoConfig:
    """Size and place of the demo world."""

    out: Path = Path("demo_out")
    entities: int = 300
    scenes: int = 3000
    languages: str = "en,de"
    seed: int = 0
    # one setting: the masked text then says only the relation, so text alone narrows 300 test images
    # to groups of dozens and R@10 measures whether a model reads the entity images
    settings: int = 1
    train_config: Path = Path("baselines/inject-mini.toml")
    text_config: Path = Path("baselines/text-only-mini.toml")
    # also train the inject model quantization-aware (int4) for the trade-off table (adds a training run)
    qat: bool = False


@dataclass
class Steps:
    """Runs commands, prints them, and keeps their timings."""

    timings: list[tuple[str, float]] = field(default_factory=list)

    def run(self, title: str, *args: str) -> None:
        """Run one `wit-retrieval` command; stop the demo with its exit code when it fails."""
        cmd = [_cli(), *args]
        console.rule(f"[bold]{title}")
        console.print("$ " + shlex.join(["wit-retrieval", *args]), style="cyan", highlight=False, soft_wrap=True)
        started = time.perf_counter()
        result = subprocess.run(cmd)
        self.timings.append((title, time.perf_counter() - started))
        if result.returncode != 0:
            console.print(f"[red]demo stopped: step '{title}' failed (exit {result.returncode})")
            raise SystemExit(result.returncode)

    def summary(self) -> Table:
        table = Table(title="demo steps")
        table.add_column("step")
        table.add_column("seconds", justify="right")
        for title, seconds in self.timings:
            table.add_row(title, f"{seconds:.1f}")
        table.add_row("[bold]total", f"[bold]{sum(s for _, s in self.timings):.1f}")
        return table


def _cli() -> str:
    exe = Path(sys.executable).with_name("wit-retrieval")
    return str(exe) if exe.exists() else shutil.which("wit-retrieval") or "wit-retrieval"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(world: Path, port: int) -> subprocess.Popen:
    cmd = [_cli(), "serve", str(world), "--port", str(port)]
    console.rule("[bold]serve the world on loopback (in the background)")
    console.print("$ " + shlex.join(["wit-retrieval", *cmd[1:]]), style="cyan", highlight=False, soft_wrap=True)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.2)
    server.kill()
    raise SystemExit("demo stopped: the loopback server did not start")


def data_steps(steps: Steps, cfg: DemoConfig, base: str) -> Path:
    """Download from the served world, rebuild, describe, fetch the images. Returns the data root."""
    out, dl, data = cfg.out, cfg.out / "downloads", cfg.out / "data"
    langs = [arg for lang in cfg.languages.split(",") for arg in ("--lang", lang)]
    steps.run("download the released EI file", "download", "ei", "--out", str(dl), "--base-url", base,
              "--user-agent", USER_AGENT)
    steps.run("download the released MMIR files", "download", "mmir", "--out", str(dl), "--base-url", base,
              "--user-agent", USER_AGENT)
    steps.run("download the WIT shards", "download", "wit", "--out", str(dl), "--base-url", base,
              "--user-agent", USER_AGENT)
    steps.run("download the Wikipedia dumps", "download", "dumps", *langs, "--out", str(dl),
              "--base-url", base, "--user-agent", USER_AGENT)
    released = dl / "gresearch" / "wit-retrieval"
    steps.run("detect the columns of a released MMIR file", "released", "inspect",
              str(released / "mmir_dataset_test.tsv.gz"))
    steps.run("import the released files", "released", "import", *sorted(map(str, released.glob("*.tsv.gz"))),
              "--out", str(out / "released"))
    wit = sorted(map(str, (dl / "gresearch" / "wit").glob("*.tsv.gz")))
    steps.run("rebuild EI from WIT and the dumps", "build", "ei", "--wit", *wit, "--dumps", str(dl),
              "--out", str(data))
    steps.run("rebuild MMIR from WIT", "build", "mmir", "--wit", *wit, "--out", str(data))
    steps.run("statistics", "stats", str(data))
    steps.run("data cards", "card", str(data), "--out", str(out / "data_cards"))
    host = base.split("//", 1)[1].split(":")[0]
    steps.run("fetch the images politely (through the loopback server)", "images", "fetch", "--data", str(data),
              "--user-agent", USER_AGENT, "--rate", "400", "--allow-host", host,
              "--host-alias", f"upload.wikimedia.org={base}")
    steps.run("image store status", "images", "status", str(data / "images"))
    return data


def model_steps(steps: Steps, cfg: DemoConfig, data: Path) -> None:
    """Zero-shot (untrained: no pretrained weights can be fetched here) vs trained, scored and compared."""
    results, runs = data / "results", data / "runs"
    steps.run("evaluate zero-shot (random-weight open_clip, sum fusion)", "evaluate",
              "--model", "open_clip:wit-tiny-rn:random", "--fusion", "sum", "--data", str(data),
              "--split", "test", "--out", str(results / "zero-shot-sum"))
    steps.run("train the inject baseline (Pic2Word-style, from random weights, on CPU)", "train",
              str(cfg.train_config), "--data", str(data), "--out", str(runs / "inject-mini"))
    checkpoint = str(runs / "inject-mini" / "model")
    steps.run("evaluate the trained inject model (and its Matryoshka widths)", "evaluate", "--checkpoint", checkpoint,
              "--fusion", "inject", "--data", str(data), "--split", "test", "--out", str(results / "trained-inject"),
              "--dims", WIDTHS)
    quantized_steps(steps, cfg, data)
    steps.run("train the same model on the masked text alone (what text can do)", "train",
              str(cfg.text_config), "--data", str(data), "--out", str(runs / "text-only-mini"))
    steps.run("evaluate the trained text-only model", "evaluate", "--checkpoint", str(runs / "text-only-mini" / "model"),
              "--fusion", "text-only", "--data", str(data), "--split", "test", "--out", str(results / "trained-text-only"))
    steps.run("validate the trained run as a submission", "validate",
              str(results / "trained-inject" / "run.trec"), "--data", str(data), "--split", "test")
    steps.run("score it with confidence intervals", "score", str(results / "trained-inject" / "run.trec"),
              "--data", str(data), "--split", "test", "--measures", MEASURES)
    steps.run("paired tests: trained vs zero-shot", "compare", str(results / "zero-shot-sum" / "run.trec"),
              str(results / "trained-inject" / "run.trec"), "--data", str(data), "--split", "test",
              "--json", str(results / "compare-trained-vs-zero-shot.json"))


def quantized_steps(steps: Steps, cfg: DemoConfig, data: Path) -> None:
    """The trained inject model with int8 and int4 weights (post-training; quantization-aware with --qat)."""
    results, runs = data / "results", data / "runs"
    checkpoint = str(runs / "inject-mini" / "model")
    for scheme in ("int8", "int4"):
        steps.run(f"evaluate it with {scheme} weights (post-training quantization)", "evaluate", "--checkpoint",
                  checkpoint, "--quantize", scheme, "--fusion", "inject", "--data", str(data), "--split", "test",
                  "--out", str(results / f"trained-inject-{scheme}"), "--dims", WIDTHS)
    if cfg.qat:
        steps.run("train the inject baseline quantization-aware (int4 weights from step 100)", "train",
                  str(cfg.train_config), "--data", str(data), "--out", str(runs / "inject-mini-qat4"),
                  "--set", "quant.bits=4", "--set", "quant.start_step=100")
        steps.run("evaluate its int4 export", "evaluate", "--checkpoint", str(runs / "inject-mini-qat4" / "model"),
                  "--fusion", "inject", "--data", str(data), "--split", "test",
                  "--out", str(results / "trained-inject-qat-int4"), "--dims", WIDTHS)


def audit_steps(steps: Steps, data: Path) -> None:
    """Export an audit, rate it with simulated raters (labelled so), and report agreement."""
    audit = data / "annotation" / "audit"
    steps.run("export an annotation audit", "annotate", "export", str(data), "--out", str(audit),
              "--task", "ei-correct", "--task", "mask-correct", "--task", "mmir-answerable", "--n", "40")
    steps.run("SIMULATED ratings (no human raters in a demo)", "annotate", "simulate", str(audit),
              "--out", str(data / "annotation" / "simulated_ratings.parquet"))
    steps.run("agreement and quality estimates", "annotate", "report",
              "--ratings", str(data / "annotation" / "simulated_ratings.parquet"),
              "--items", str(audit / "items.jsonl"), "--root", str(data),
              "--out", str(data / "annotation" / "report"))


def main(argv: list[str] | None = None) -> None:
    """Run the demo; prints where the report is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DemoConfig.out, help="Folder for everything (replaced).")
    parser.add_argument("--entities", type=int, default=DemoConfig.entities)
    parser.add_argument("--scenes", type=int, default=DemoConfig.scenes)
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    parser.add_argument("--qat", action="store_true", help="Also train and evaluate an int4 quantization-aware "
                        "inject model (the trade-off table's QAT rows; one more training run).")
    args = parser.parse_args(argv)
    cfg = DemoConfig(out=args.out, entities=args.entities, scenes=args.scenes, seed=args.seed, qat=args.qat)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if cfg.out.exists():
        shutil.rmtree(cfg.out)  # the demo always starts from nothing, so its report is this run's
    cfg.out.mkdir(parents=True)
    steps, started = Steps(), time.perf_counter()
    world = cfg.out / "world"
    port = _free_port()
    server: subprocess.Popen | None = None
    try:
        # the world must exist before it is served; generate it, then serve and go on
        steps.run("generate the miniature world", "synth", str(world), "--entities", str(cfg.entities),
                  "--scenes", str(cfg.scenes), "--languages", cfg.languages, "--seed", str(cfg.seed),
                  "--wit-shards", "train=10,val=5,test=5", "--settings", str(cfg.settings))
        server = _start_server(world, port)
        data = data_steps(steps, cfg, f"http://127.0.0.1:{port}")
        model_steps(steps, cfg, data)
        audit_steps(steps, data)
        steps.run("write the report", "report", str(data), "--title", "wit-retrieval demo: the miniature world")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    console.print(steps.summary())
    report = data / "reports" / "report.md"
    console.print(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s. "
                  f"Report: {report} (HTML: {report.with_suffix('.html')})")


if __name__ == "__main__":
    main()
