"""The CLI imports a command's module only when that command is looked up."""

from __future__ import annotations

import importlib
import subprocess
import sys

import typer
from typer.testing import CliRunner

from wit_retrieval.cli import COMMAND_MODULES, COMMANDS, app, module_commands


def test_command_table_matches_what_the_modules_register():
    """COMMANDS names every command and group, in the order an eager app lists them, with its module."""
    eager = typer.Typer(add_completion=False)
    for name in COMMAND_MODULES:
        importlib.import_module(f"wit_retrieval.cli.{name}").register(eager)
    assert list(typer.main.get_group(eager).commands) == list(COMMANDS)
    for name, module in COMMANDS.items():
        assert name in module_commands(module), (name, module)
    assert set(COMMANDS.values()) == set(COMMAND_MODULES)


def test_typos_still_get_a_suggestion_and_help_lists_everything():
    runner = CliRunner()
    out = runner.invoke(app, ["scor"])
    assert out.exit_code == 2 and "Did you mean 'score'" in out.output
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert all(f" {name} " in listed for name in COMMANDS)


def test_score_imports_only_what_scoring_needs(tmp_path):
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.8 t\nq2 Q0 d3 1 0.5 t\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d2 1\nq2 0 d3 1\n")
    code = ("import sys; from wit_retrieval.cli import main\n"
            f"sys.argv = ['wit-retrieval', 'score', {str(tmp_path / 'run.trec')!r}, '--qrels', "
            f"{str(tmp_path / 'qrels.txt')!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.splitlines()[-1].split())
    commands = {m for m in modules if m.startswith("wit_retrieval.cli.")}
    assert commands == {"wit_retrieval.cli.scoring"}
    # the other commands' dependencies; progress bars, the engines and object stores are not used
    assert not modules & {"wit_retrieval.engine", "concurrent.futures.process", "rich.progress",
                          "pyarrow.fs", "pandas", "torch", "scipy"}
