"""CLI: `build ei`, `build mmir`, `build export` (alias of `export released`), `stats`, `card`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..engine import RAY_ADDRESS_HELP

_IMPORTED = time.perf_counter()

WIT_HELP = ("WIT TSV(.gz) files (repeat --wit, or list files after it); a folder means every *.tsv(.gz) in it. "
            "The split comes from each file name (train / val / test).")


def _wit_files(wit: list[str] | None, more: list[str] | None) -> tuple[str, ...]:
    """--wit values plus trailing file arguments (paths or URIs), folders expanded to their TSV files."""
    from ..io import fs

    files: list[str] = []
    for item in [*(wit or []), *(more or [])]:
        path = fs.path(item)
        if path.is_dir():
            files.extend(str(p) for p in sorted(path.iterdir()) if p.name.endswith((".tsv", ".tsv.gz")))
        else:
            files.append(str(path))
    return tuple(files)


def process_seconds() -> float:
    """Seconds since this process started (interpreter start and imports included), from /proc on
    Linux; elsewhere since this module was imported."""
    import os

    try:
        with open("/proc/self/stat", "rb") as f:
            started = int(f.read().rsplit(b")", 1)[1].split()[19])  # field 22: start time, clock ticks after boot
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - started / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


def _langs(text: str) -> tuple[str, ...]:
    return tuple(lang.strip() for lang in text.split(",") if lang.strip())


def build_ei(
    out: str = typer.Option(..., "--out", help="Data root to write the entities and entity_names tables to "
                            "(a path or an s3://, gs://, file:// URI, as every path here)."),
    dumps: str | None = typer.Option(None, "--dumps", help="Folder of {lang}wiki-latest-{page,page_props,redirect}"
                                      ".sql.gz dumps (also inside {lang}wiki/latest/ subfolders)."),
    wit: list[str] | None = typer.Option(None, "--wit", help=WIT_HELP + " Used for languages without dumps "
                                          "(their is_main_image rows) and image sizes."),
    more: list[str] | None = typer.Argument(None, metavar="FILES", help="More WIT files (so `--wit FILES...` works)."),
    prefer_lang: str = typer.Option("en", "--prefer-lang", help="Comma-separated languages whose page image wins "
                                    "when one Wikidata entity has pages in several; others follow alphabetically."),
):
    """Build the entity candidates (entities, entity_names) from Wikipedia dumps and WIT.

    Example: wit-retrieval build ei --dumps dumps/ --wit wit/ --out data/ --prefer-lang en,de
    """
    from ..build.entities import EntitiesConfig, build_entities
    from ..io import fs
    from ..progress import console

    config = EntitiesConfig(out=out, wit=_wit_files(wit, more), dumps=dumps or None,
                            prefer_lang=_langs(prefer_lang))
    with console.status("building entities"):
        stats = build_entities(config)
    console.print(f"{stats['entities']:,} entities, {stats['names']:,} names "
                  f"({len(stats['dump_languages'])} dump languages) in {stats['seconds']} s -> {fs.redact(out)}")
    if stats["bad_rows"]["count"]:
        console.print(f"[yellow]{stats['bad_rows']['count']} bad WIT row(s); see {fs.redact(out)}/stats.json")


def build_mmir(
    out: str = typer.Option(..., "--out", help="Data root (with entities from `build ei`) to write MMIR to "
                            "(a path or an s3://, gs://, file:// URI, as the WIT files may be)."),
    wit: list[str] | None = typer.Option(None, "--wit", help=WIT_HELP),
    more: list[str] | None = typer.Argument(None, metavar="FILES", help="More WIT files (so `--wit FILES...` works)."),
    engine: str = typer.Option("local", "--engine", help="Where shards run: local (processes) or ray."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0: one per CPU; 1: in this process)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    linker: str = typer.Option("gazetteer", "--linker", help="Entity linker: gazetteer (entity_names) or spans."),
    spans: Path | None = typer.Option(None, "--spans", help="JSONL of {row_id, start, end, entity_id} (implies "
                                      "--linker spans); row_id is the query id the build gives the row, "
                                      "ids.query_id(split, image_url, page_url, reference_description); start/end "
                                      "are character offsets in the reference description, end exclusive."),
    max_entities: int = typer.Option(5, "--max-entities", help="Drop rows with more distinct entities than this."),
    min_context_words: int = typer.Option(2, "--min-context-words", help="Drop rows with fewer words outside "
                                          "the masks."),
    keep_target_entity_image: bool = typer.Option(False, "--keep-target-entity-image", help="Keep rows whose "
                                                  "target image is one of their entities' canonical images."),
    min_name_length: int = typer.Option(3, "--min-name-length", help="Shortest entity name the gazetteer matches."),
    train_shards: int = typer.Option(5, "--train-shards", help="Number of mmir_dataset_train-*-of-N export files."),
    export: bool = typer.Option(True, "--export/--no-export", help="Also write the TSV.gz export."),
):
    """Build MMIR queries, corpus and qrels per split (and the EI subset) from WIT files.

    Example: wit-retrieval build mmir --wit wit/ --out data/ --workers 2
    """
    if linker == "spans" and spans is None:
        raise typer.BadParameter("--linker spans needs --spans FILE")
    if spans is not None:
        linker = "spans"
    from ..build.mmir import MmirConfig, build_mmir
    from ..build.shard import FilterConfig
    from ..engine import EngineConfig
    from ..io import fs
    from ..progress import console

    filters = FilterConfig(max_entities=max_entities, min_context_words=min_context_words,
                           drop_target_is_entity_image=not keep_target_entity_image)
    config = MmirConfig(out=out, wit=_wit_files(wit, more), linker=linker,
                        spans=str(spans) if spans else None, filters=filters,
                        engine=EngineConfig(name=engine, workers=workers, ray_address=ray_address),
                        min_name_length=min_name_length,
                        export=export, train_shards=train_shards)
    with console.status(f"building MMIR from {len(config.wit)} file(s)"):
        stats = build_mmir(config)
    for split, numbers in stats["splits"].items():
        console.print(f"{split}: {numbers['queries']:,} queries, {numbers['corpus']:,} images "
                      f"(dropped: {numbers['dropped'] or 'none'})")
    if stats["bad_rows"]["count"]:
        console.print(f"[yellow]{stats['bad_rows']['count']} bad row(s), e.g. "
                      + "; ".join(f"{s['path']}:{s['line']}: {s['reason']}" for s in stats["bad_rows"]["samples"][:3]))
    # the whole command, as a user waits for it: process start, imports, the build and the export
    console.print(f"done in {process_seconds():.2f} s -> {fs.redact(out)} (build {stats['seconds']} s"
                  + (f", export {stats['export_seconds']} s)" if export else ")"))


def build_export(
    root: Path = typer.Argument(..., help="Data root of a finished build (or of `released import`)."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the TSV.gz files (default ROOT/exports)."),
    train_shards: int = typer.Option(5, "--train-shards", help="Number of mmir_dataset_train-*-of-N files."),
):
    """Alias of `export released`: the released TSV.gz layout (under ROOT/exports unless --out).

    Example: wit-retrieval build export data/
    """
    from .export import export_released

    export_released(root, out, train_shards)


def stats(root: Path = typer.Argument(..., help="Data root of a build.")):
    """Print a build's statistics (entities, queries per split, language, query type, filters).

    Example: wit-retrieval stats data/
    """
    from ..build.stats import print_stats

    print_stats(root)


def card(
    root: Path = typer.Argument(..., help="Data root of a build (its stats.json)."),
    out: Path = typer.Option(Path("data_cards"), "--out", help="Folder to write EI.md and MMIR.md to."),
    source: str = typer.Option("", "--source", help="One line saying what was built (written into the cards)."),
):
    """Render the EI and MMIR data cards (Hugging Face front matter) from a build's statistics.

    Example: wit-retrieval card data/ --out data_cards/
    """
    from ..cards import write_cards
    from ..progress import console

    for path in write_cards(root, out, source=source or None):
        console.print(str(path))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    build_app = typer.Typer(help="Build EI and MMIR from WIT and Wikipedia dumps.", no_args_is_help=True)
    build_app.command("ei")(build_ei)
    build_app.command("mmir")(build_mmir)
    build_app.command("export")(build_export)
    app.add_typer(build_app, name="build")
    app.command("stats")(stats)
    app.command("card")(card)
