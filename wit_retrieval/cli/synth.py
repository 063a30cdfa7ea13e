"""CLI: `wit-retrieval synth`: generate the miniature world in the real formats."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_shards(spec: str) -> dict[str, int]:
    from ..errors import ConfigError

    shards = {"train": 2, "val": 1, "test": 1}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        split, _, n = part.partition("=")
        if split not in shards or not n.isdigit():
            raise ConfigError(f"--wit-shards: bad entry {part!r}; expected e.g. train=2,val=1,test=1")
        shards[split] = int(n)
    return shards


def _languages(spec: str | None) -> tuple[str, ...] | None:
    if spec is None:
        return None
    return tuple(code.strip() for code in spec.split(",") if code.strip())


def synth(
    out: Path = typer.Argument(..., help="Folder to write (new, empty, or a previous synth world)."),
    entities: int = typer.Option(300, "--entities", help="Number of entities."),
    scenes: int = typer.Option(2000, "--scenes", help="Number of scene images (each a WIT row, some two)."),
    languages: str = typer.Option("en,de", "--languages", help="WIT languages, comma-separated (en, de, fr)."),
    dump_languages: str | None = typer.Option(
        None, "--dump-languages", help="Languages that get Wikipedia dumps (default: all of --languages)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and options give identical files."),
    image_size: int = typer.Option(128, "--image-size", help="Side of the square PNG images in pixels."),
    no_images: bool = typer.Option(False, "--no-images", help="Skip drawing images (fast, for scale tests)."),
    wit_sample: bool = typer.Option(
        False, "--wit-sample", help="Also write the 1% train sample file (its rows repeat train rows)."
    ),
    wit_shards: str = typer.Option(
        "train=2,val=1,test=1", "--wit-shards", help="WIT shards per split, e.g. train=10,val=5,test=5."
    ),
    settings: int = typer.Option(
        10, "--settings", help="Settings (backgrounds) scenes use, 1-10: fewer make the masked text alone "
        "less able to pick the target, so the entity images must do it."
    ),
) -> None:
    """Generate a miniature Wikipedia world: WIT shards, SQL dumps, released EI/MMIR files, images.

    The folder's paths are the real hosts' URL paths; serve it with `wit-retrieval serve`.
    world.json holds the ground truth, SHA256SUMS the checksums.

    Example: wit-retrieval synth world/ --entities 300 --scenes 2000 --languages en,de --seed 0
    """
    from ..progress import make_progress
    from ..synth import WorldConfig, generate_world

    config = WorldConfig(
        entities=entities, scenes=scenes, languages=_languages(languages),
        dump_languages=_languages(dump_languages), seed=seed, images=not no_images,
        image_size=image_size, wit_shards=_parse_shards(wit_shards), wit_sample=wit_sample, settings=settings,
    )
    with make_progress() as progress:
        tasks: dict[str, tuple] = {}

        def report(stage: str, advance: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = (progress.add_task(stage, total=total), total)
            progress.update(tasks[stage][0], advance=advance)

        summary = generate_world(config, out, progress=report)
        for task, total in tasks.values():  # stages report in steps; show them complete
            progress.update(task, completed=total)
    typer.echo(f"wrote {summary.out} in {summary.seconds:.1f} s")
    typer.echo(f"  entities {summary.entities:,}, scenes {summary.scenes:,}, images {summary.images:,}")
    typer.echo("  WIT rows " + ", ".join(f"{k} {v:,}" for k, v in summary.wit_rows.items()))
    typer.echo("  MMIR rows " + ", ".join(f"{k} {v:,}" for k, v in summary.mmir_rows.items())
               + f"; EI rows {summary.ei_rows:,}")
    for code, counts in summary.dump_counts.items():
        typer.echo(f"  {code}wiki dumps: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    typer.echo(f"  ground truth {summary.world_json}")
    typer.echo(f"serve it at the real hosts' paths with: wit-retrieval serve {summary.out} --port 8123")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("synth")(synth)
