"""CLI: `report` writes the end-to-end report of a data root."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `report` command."""

    @app.command("report")
    def report(
        root: Path = typer.Argument(..., help="Data root of a build (stats, images, results, annotation)."),
        out: Path = typer.Option(None, "--out", help="Folder for report.md, report.html and PNGs (default ROOT/reports)."),
        title: str = typer.Option("wit-retrieval report", "--title", help="Title of the report."),
    ):
        """Write one markdown report (and an HTML version) with PNG plots from what a run left under ROOT.

        Example: wit-retrieval report demo_out/data
        """
        from ..report import write_report

        path = write_report(root, out, title)
        typer.echo(f"report: {path} (HTML: {path.with_suffix('.html')})")
