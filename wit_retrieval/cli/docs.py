"""CLI: `docs cli` renders the command reference."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `docs` commands."""
    docs = typer.Typer(help="Generated documentation.", no_args_is_help=True)
    app.add_typer(docs, name="docs")

    @docs.callback()
    def _group():
        """Generated documentation."""

    @docs.command("cli")
    def cli_reference(
        out: Path = typer.Option(Path("docs/cli.md"), "--out", help="Markdown file to write."),
    ):
        """Write the command-line reference (every command, option and example) as markdown.

        Example: wit-retrieval docs cli --out docs/cli.md
        """
        from ..cli import app as root_app
        from ..clidoc import render_cli_markdown
        from ..io.shards import write_text_atomic

        write_text_atomic(out, render_cli_markdown(root_app))
        typer.echo(f"wrote {out}")

    @docs.command("formats")
    def formats_reference(
        path: Path = typer.Option(Path("docs/formats.md"), "--path", help="The formats page to refresh."),
    ):
        """Re-render the canonical tables' columns in docs/formats.md from schema.py.

        Example: wit-retrieval docs formats --path docs/formats.md
        """
        from ..schemadoc import refresh_formats_doc

        refresh_formats_doc(path)
        typer.echo(f"refreshed {path}")
