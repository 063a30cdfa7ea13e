"""The `wit-retrieval` command: one typer app, one module per noun.

Command modules only parse options, call the library and print; they import the library
inside each command so `--help` stays fast and torch is never imported by accident.
Library errors (WitRetrievalError) become one clean line on stderr and exit code 1.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from typer.core import TyperGroup

from ..errors import WitRetrievalError, missing_extra

# Each module defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "synth", "serve", "download", "released", "build", "export", "images",
    "scoring", "index", "models", "mining", "soup", "text_baseline", "annotate", "report", "docs",
)


class _CleanErrors(TyperGroup):
    """Turn library errors anywhere below into one line and exit code 1.

    An optional dependency missing deep inside a command (torch under `evaluate` installed
    without `[clip]`) becomes the same kind of line, naming the extra to install.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except WitRetrievalError as exc:
            _fail(exc)
        except ModuleNotFoundError as exc:
            hint = missing_extra(exc)
            if hint is None:
                raise
            _fail(hint)
        except OSError as exc:  # disk full, permissions, a path that is a folder: the user's to fix
            _fail(exc)


def _fail(exc: BaseException) -> None:
    """One line on stderr, and exit 1; under torchrun the line names its rank (torchrun then stops the others)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    where = f"[rank {os.environ.get('RANK', '?')}] " if world > 1 else ""
    typer.echo(f"{where}error: {exc}", err=True)
    raise typer.Exit(1) from None


app = typer.Typer(
    cls=_CleanErrors,
    name="wit-retrieval",
    help="Rebuild, fetch, train on and score the EI and MMIR retrieval benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
):
    """Rebuild, fetch, train on and score the EI and MMIR retrieval benchmark."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
