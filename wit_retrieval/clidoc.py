"""Render the typer app as markdown (docs/cli.md), so the reference never drifts from the code."""

from __future__ import annotations

import re
from collections.abc import Iterator

import typer

EXAMPLE = re.compile(r"^\s*Example:\s*(.+)$", re.MULTILINE)


def iter_commands(group, prefix: str = "wit-retrieval") -> Iterator[tuple[str, object]]:
    """Yield (full name, command) for every leaf command, depth first, in name order."""
    # typer vendors its own click, so groups are recognised by shape, not by class
    ctx = typer.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        full = f"{prefix} {name}"
        if hasattr(command, "list_commands"):
            yield from iter_commands(command, full)
        else:
            yield full, command


def command_help(command) -> tuple[str, str | None]:
    """The help text without its example line, and the example (None when missing)."""
    text = command.help or ""
    match = EXAMPLE.search(text)
    body = EXAMPLE.sub("", text).strip()
    return body, (match.group(1).strip() if match else None)


def _param_rows(command) -> list[str]:
    rows = []
    for param in command.params:
        if param.name == "help":
            continue
        if param.param_type_name == "argument":
            name = f"`{param.name.upper()}`"
            kind = "argument"
            help_text = getattr(param, "help", None) or ""
        else:
            name = ", ".join(f"`{o}`" for o in param.opts + param.secondary_opts)
            kind = "flag" if getattr(param, "is_flag", False) else "option"
            help_text = param.help or ""
        default = param.default
        shown = "" if default in (None, False, (), []) or callable(default) else f" (default: `{default}`)"
        rows.append(f"| {name} | {kind} | {help_text.strip()}{shown} |".replace("\n", " "))
    return rows


def render_cli_markdown(app: typer.Typer) -> str:
    """The whole CLI reference as one markdown document."""
    root = typer.main.get_command(app)
    lines = [
        "# Command-line reference",
        "",
        "Generated from the typer app by `wit-retrieval docs cli --out docs/cli.md`; a test keeps it in sync.",
        "",
    ]
    for full, command in iter_commands(root):
        body, example = command_help(command)
        lines += [f"## `{full}`", "", body or "(no help)", ""]
        if example:
            lines += ["```bash", example, "```", ""]
        rows = _param_rows(command)
        if rows:
            lines += ["| name | kind | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"
