"""What a store folder holds: counts per status and error class, throughput, time left; progress bars."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..io import fs
from .sources import read_plan
from .store import done_shards, read_done, read_each


def store_status(out: str | Path) -> dict[str, Any]:
    """Counts, error classes, throughput and an estimate of the time left, from the done-markers."""
    out = fs.path(out)
    plan = read_plan(out)
    try:
        config = json.loads((out / "_fetch.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        config = {}
    rate = (config.get("http") or {}).get("rate")
    totals: Counter = Counter()
    errors: Counter = Counter()
    sources: Counter = Counter()
    samples: dict[str, list] = {}
    spans, busy, fetched = [], 0.0, 0
    for done in read_each(out, read_done, done_shards(out)):
        done = done or {}
        for key in ("items", "ok", "failed", "retryable"):
            totals[key] += done.get(key, 0)
        errors.update(done.get("errors", {}))
        sources.update(done.get("sources", {}))
        for error, found in done.get("samples", {}).items():
            samples.setdefault(error, found)
        spans.append((done.get("started", 0.0), done.get("finished", 0.0)))
        busy += done.get("seconds", 0.0)
        fetched += done.get("fetched", 0)
    wall = (max(f for _, f in spans) - min(s for s, _ in spans)) if spans else 0.0
    planned = plan.items if plan else totals["items"]
    pending = max(0, planned - totals["items"])
    throughput = fetched / wall if wall > 0 else None
    left = pending + totals["retryable"]
    speed = min(rate, throughput) if rate and throughput else (rate or throughput)
    return {
        "out": fs.redact(out), "planned": planned, "shards": plan.shards if plan else None,
        "shards_done": len(spans), "accounted": totals["items"], "pending": pending,
        "ok": totals["ok"], "failed": totals["failed"], "retryable": totals["retryable"],
        "errors": dict(errors.most_common()), "sources": dict(sources), "samples": samples,
        "urls_per_s": round(throughput, 2) if throughput else None,
        "rate_limit": rate, "eta_s": round(left / speed, 1) if speed and left else 0.0,
    }


def status_tables(status: dict[str, Any]):
    """Two rich tables: the totals, and the failures per error class with whether they are retryable."""
    from rich.table import Table

    from .http import RETRYABLE_ERRORS

    totals = Table(title=f"images in {status['out']}", show_header=False)
    rows = [
        ("planned URLs", status["planned"]), ("finished shards", f"{status['shards_done']} / {status['shards']}"),
        ("ok", status["ok"]), ("failed", status["failed"]), ("retryable failures", status["retryable"]),
        ("not fetched yet", status["pending"]),
        ("sources", ", ".join(f"{k} {v}" for k, v in sorted(status["sources"].items())) or "-"),
        ("throughput", f"{status['urls_per_s']} URLs/s" if status["urls_per_s"] else "-"),
        ("rate limit per host", f"{status['rate_limit']} requests/s" if status["rate_limit"] else "unlimited"),
        ("estimated time left", _duration(status["eta_s"])),
    ]
    for key, value in rows:
        totals.add_row(key, str(value))
    errors = Table(title="failures by error class")
    for column in ("error", "count", "retryable", "example"):
        errors.add_column(column)
    for error, count in status["errors"].items():
        example = (status["samples"].get(error) or [{}])[0]
        detail = f"{example.get('url', '')} {example.get('detail', '')}".strip()
        errors.add_row(error, str(count), "yes" if error in RETRYABLE_ERRORS else "no", detail[:80])
    return totals, errors


def _duration(seconds: float) -> str:
    if not seconds:
        return "0 s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


@contextlib.contextmanager
def fetch_progress(total: int) -> Iterator[Any]:
    """A rich progress bar with ok, failed and URLs/s; yields advance(ok, failed)."""
    import time

    from rich.progress import TextColumn

    from ..progress import make_progress

    columns = (TextColumn("[green]ok {task.fields[ok]}"), TextColumn("[red]failed {task.fields[failed]}"),
               TextColumn("{task.fields[speed]:.1f} URLs/s"))
    with make_progress(*columns) as progress:
        task = progress.add_task("fetching images", total=total, ok=0, failed=0, speed=0.0)
        start = time.monotonic()
        seen = Counter()

        def advance(ok: int, failed: int) -> None:
            seen.update(ok=ok, failed=failed)
            speed = (seen["ok"] + seen["failed"]) / max(1e-6, time.monotonic() - start)
            progress.update(task, advance=ok + failed, ok=seen["ok"], failed=seen["failed"], speed=speed)

        yield advance
