"""The `wit-retrieval` command: one typer app, one module per noun.

Command modules only parse options, call the library and print; they import the library
inside each command so `--help` stays fast and torch is never imported by accident.
A command's module is imported when the command is looked up (click's lazy-group pattern),
so `wit-retrieval score` neither imports the other fifteen modules nor builds their commands;
`--help` and `docs cli` look every command up, and get them all.
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
# Each top-level command or group -> the module that registers it, in the order `--help` lists
# them (typer's: the commands in module order, then the groups). Kept in step with what the
# modules register by tests/test_cli_lazy.py.
COMMANDS = {
    "synth": "synth", "serve": "serve", "download": "download", "stats": "build", "card": "build",
    "validate": "scoring", "score": "scoring", "compare": "scoring", "search": "index", "train": "models",
    "prepare": "models", "evaluate": "models", "embed": "models", "mine-negatives": "mining", "soup": "soup",
    "text-baseline": "text_baseline", "report": "report", "released": "released", "build": "build",
    "export": "export", "images": "images", "index": "index", "models": "models", "annotate": "annotate",
    "docs": "docs",
}
RICH_MARKUP_MODE = "rich"


def module_commands(module: str) -> dict:
    """The click commands and groups one command module registers, by name."""
    sub = typer.Typer(add_completion=False, rich_markup_mode=RICH_MARKUP_MODE)
    importlib.import_module(f"{__name__}.{module}").register(sub)
    built = typer.main.get_command(sub)  # a group, or the command itself when the module has one
    return dict(built.commands) if isinstance(built, TyperGroup) else {built.name: built}


class _CleanErrors(TyperGroup):
    """Commands loaded on first look-up; library errors anywhere below become one line and exit code 1.

    An optional dependency missing deep inside a command (torch under `evaluate` installed
    without `[clip]`) becomes the same kind of line, naming the extra to install.
    """

    def list_commands(self, ctx) -> list[str]:
        return list(dict.fromkeys([*COMMANDS, *self.commands]))

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands.update(module_commands(COMMANDS[cmd_name]))
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx, args):
        if args and args[0] not in COMMANDS:  # a typo: load every command, so typer can suggest the nearest
            for module in COMMAND_MODULES:
                self.commands.update(module_commands(module))
        return super().resolve_command(ctx, args)

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
    rich_markup_mode=RICH_MARKUP_MODE,
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


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
