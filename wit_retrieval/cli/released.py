"""CLI: `released inspect` and `released import` for the published EI / MMIR files."""

from __future__ import annotations

from pathlib import Path

import typer

COLUMN_HELP = "Set a column's role by its header name (or 0-based index), e.g. --column masked_text=text2. Repeatable."


def parse_column_overrides(values: list[str] | None) -> dict[str, str]:
    """`role=header` options to a dict (ConfigError on a malformed one)."""
    from ..errors import ConfigError

    overrides = {}
    for value in values or []:
        role, sep, header = value.partition("=")
        if not sep or not role.strip() or not header:
            raise ConfigError(f"--column {value!r}: expected ROLE=HEADER, e.g. masked_text=text")
        overrides[role.strip()] = header
    return overrides


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    released = typer.Typer(help="Inspect and import the released EI / MMIR TSV files.", no_args_is_help=True)
    app.add_typer(released, name="released")

    @released.command("inspect")
    def inspect(
        file: Path = typer.Argument(..., help="A released TSV(.gz) file (EI or MMIR)."),
        kind: str = typer.Option(None, "--kind", help="ei or mmir (default: from the file name or its content)."),
        column: list[str] = typer.Option(None, "--column", help=COLUMN_HELP),
    ):
        """Print which column plays which role in a released file, with the evidence.

        Example: wit-retrieval released inspect mmir_dataset_test.tsv.gz --column masked_text=text
        """
        from ..io.roles import detect_columns

        mapping = detect_columns(file, kind, parse_column_overrides(column))
        typer.echo(str(mapping))

    @released.command("import")
    def import_(
        files: list[Path] = typer.Argument(..., help="Released TSV(.gz) files: the EI file and/or MMIR splits."),
        out: Path = typer.Option(..., "--out", help="Data root to write the canonical tables into."),
        column: list[str] = typer.Option(None, "--column", help=COLUMN_HELP),
    ):
        """Import released files as canonical queries/corpus/qrels (per split) and ei tables.

        Example: wit-retrieval released import downloads/gresearch/wit-retrieval/*.tsv.gz --out data/released
        """
        from ..io.released import import_released

        summary = import_released(files, out, parse_column_overrides(column),
                                  on_mapping=lambda m: typer.echo(str(m)))
        for split, counts in summary["splits"].items():
            typer.echo(f"{split}: {counts['queries']} queries, {counts['corpus']} images, {counts['qrels']} qrels")
        if "ei" in summary:
            typer.echo(f"ei: {summary['ei']} entities")
        bad = summary["bad_rows"]
        if bad["count"]:
            typer.echo(f"{bad['count']} bad row(s) skipped, e.g. "
                       + "; ".join(f"{s['path']}:{s['line']}: {s['reason']}" for s in bad["samples"][:3]), err=True)
        typer.echo(f"wrote {out}")
