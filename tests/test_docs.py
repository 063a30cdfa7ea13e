"""docs/cli.md stays in sync with the app; every command has help text and an example."""

from __future__ import annotations

import typer

from wit_retrieval.cli import app
from wit_retrieval.clidoc import command_help, iter_commands, render_cli_markdown

from .conftest import REPO


def test_every_command_has_help_and_example():
    commands = list(iter_commands(typer.main.get_command(app)))
    assert len(commands) >= 1
    missing = []
    for full, command in commands:
        body, example = command_help(command)
        if not body:
            missing.append(f"{full}: no help text")
        if not example or not example.startswith("wit-retrieval "):
            missing.append(f"{full}: no 'Example: wit-retrieval ...' line")
        for param in command.params:
            if param.name != "help" and not getattr(param, "help", None):
                missing.append(f"{full}: option {param.name} has no help")
    assert not missing, "\n".join(missing)


def test_cli_reference_is_in_sync():
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render_cli_markdown(app), "docs/cli.md is stale: run `make docs`"
