"""CLI: `soup` (average checkpoints' weights into one checkpoint)."""

from __future__ import annotations

from pathlib import Path

import typer


def soup(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoint folders of one architecture (e.g. runs/a/model)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the soup checkpoint to."),
    weights: str = typer.Option("", "--weights", help="Comma-separated weight per checkpoint (default: uniform)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
):
    """Average the weights of checkpoints (a model soup) into a new checkpoint folder.

    Example: wit-retrieval soup runs/seed0/model runs/seed1/model --out runs/soup
    """
    from ..errors import ConfigError
    from ..models.soup import SoupConfig
    from ..models.soup import soup as make_soup
    from ..progress import console

    try:
        parsed = tuple(float(w) for w in weights.split(",")) if weights.strip() else None
    except ValueError:
        raise ConfigError(f"--weights {weights!r}: expected comma-separated numbers, e.g. 0.5,0.25,0.25") from None
    with console.status(f"averaging {len(checkpoints)} checkpoint(s)"):
        spec = make_soup(SoupConfig(tuple(map(str, checkpoints)), str(out), parsed, overwrite=force))
    ingredients = spec["soup"]["ingredients"]
    console.print(f"soup of {len(ingredients)} checkpoint(s) ({spec['soup']['method']}) -> {out} "
                  f"(weights sha256 {spec['weights_sha256'][:12]})")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("soup")(soup)
