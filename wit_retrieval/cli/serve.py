"""CLI: `wit-retrieval serve`: the miniature world (or any folder) on loopback at the real hosts' paths."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    directory: Path = typer.Argument(..., help="Folder to serve (e.g. written by `wit-retrieval synth`)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; keep it on loopback."),
    fault: list[str] = typer.Option(
        [], "--fault", help="Inject a fault into a fraction of the paths: KIND=FRACTION (repeatable), "
        "e.g. http_429=0.05. Kinds: timeout, slow, http_429, http_503, http_404, truncated, reset, "
        "corrupt_image, zero_bytes, html, redirect_allowed, redirect_disallowed, redirect_loop, huge_dimensions.",
    ),
    fault_seed: int = typer.Option(0, "--fault-seed", help="Seed that decides which paths fail."),
    fault_under: str = typer.Option(
        "/wikipedia/", "--fault-under", help="Only paths under this prefix get faults ('/' for all)."
    ),
    transient: int | None = typer.Option(
        None, "--transient", help="Faults clear after this many hits of a path (default: they stay)."
    ),
    rate_limit: float | None = typer.Option(
        None, "--rate-limit", help="Enforce this many requests/s (token bucket); beyond it answer 429."
    ),
) -> None:
    """Serve a folder over HTTP on loopback with the paths of WIT, the dumps and upload.wikimedia.org.

    Runs until Ctrl-C, then prints the request statistics.

    Example: wit-retrieval serve world/ --port 8123 --fault http_429=0.05 --rate-limit 200
    """
    import json
    import threading

    from ..synth.faults import FaultPlan, parse_fault_spec
    from ..synth.server import serve_directory

    rules = [parse_fault_spec(spec, under=fault_under, transient_attempts=transient) for spec in fault]
    plan = FaultPlan(seed=fault_seed, rules=tuple(rules)) if rules else None
    server = serve_directory(directory, host=host, port=port, faults=plan, rate_limit=rate_limit)
    typer.echo(f"serving {server.root} at {server.url}", err=False)
    typer.echo("point clients at it with:")
    for real_host, url in server.host_aliases().items():
        typer.echo(f"  --host-alias {real_host}={url}")
    typer.echo(f"  --base-url {server.url}   (downloads of the released files)")
    typer.echo("press Ctrl-C to stop")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stats = server.stats()
        server.close()
        stats.pop("attempts")
        typer.echo(json.dumps(stats, sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("serve")(serve)
