"""CLI: `export released|hf|mbeir ROOT --out DIR` (exports side by side; `build export` = `export released`)."""

from __future__ import annotations

from pathlib import Path

import typer

ROOT_HELP = "Data root from `build mmir` or `released import` (columns it lacks are written as null)."


def export_released(
    root: Path = typer.Argument(..., help=ROOT_HELP),
    out: Path | None = typer.Option(None, "--out", help="Folder for the TSV.gz files (default ROOT/exports)."),
    train_shards: int = typer.Option(5, "--train-shards", help="Number of mmir_dataset_train-*-of-N files."),
):
    """Write the released TSV.gz layout (entity_image_dataset, mmir_dataset_{train-K-of-N,validation,test}).

    Example: wit-retrieval export released data/ --out release/
    """
    from ..exports.released import export_released as run
    from ..progress import console

    for path in run(root, out, train_shards=train_shards):
        console.print(str(path))


def export_hf(
    root: Path = typer.Argument(..., help=ROOT_HELP),
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset repository to."),
    images: str = typer.Option("urls", "--images", help="urls (image URLs only; prefer this for a public push, "
                               "images keep their own Commons licences) or embed (image bytes from the store)."),
    image_store: Path | None = typer.Option(None, "--image-store", help="Image store for --images embed "
                                            "(default ROOT/images)."),
    shard_mb: int = typer.Option(500, "--shard-mb", help="Largest parquet shard, in MB of Arrow data."),
):
    """Write a Hugging Face dataset repository (corpus / queries / qrels configs, data card) MTEB also reads.

    Push it with: hf upload USER/mmir DIR . --repo-type dataset

    Example: wit-retrieval export hf data/ --out mmir-hf --images urls
    """
    from ..exports.hf import HfExportConfig
    from ..exports.hf import export_hf as run
    from ..progress import console

    stats = run(HfExportConfig(root=str(root), out=str(out), images=images,
                               image_store=str(image_store or ""), shard_bytes=shard_mb << 20))
    rows = ", ".join(f"{k} {v:,}" for k, v in stats.rows.items())
    console.print(f"{rows} -> {out} ({stats.bytes:,} bytes)")
    if stats.dropped_queries or stats.dropped_corpus:
        console.print(f"[yellow]left out for missing images: {stats.dropped_queries:,} queries, "
                      f"{stats.dropped_corpus:,} corpus images")


def export_mbeir(
    root: Path = typer.Argument(..., help=ROOT_HELP),
    out: Path = typer.Option(..., "--out", help="Folder to write the M-BEIR layout to."),
    image_store: Path | None = typer.Option(None, "--image-store", help="Image store to copy image files from "
                                            "(default ROOT/images when it exists; else paths only)."),
):
    """Write UniIR's M-BEIR layout (query / cand_pool / qrels, task 7) with an id_map.tsv back to our ids.

    Example: wit-retrieval export mbeir data/ --out mbeir/
    """
    from ..exports.mbeir import export_mbeir as run
    from ..progress import console

    stats = run(root, out, image_store=image_store)
    console.print(f"queries {stats.queries}, candidates {stats.candidates}, images {stats.images_written:,} "
                  f"written -> {out}")
    if stats.images_missing:
        console.print(f"[yellow]{stats.images_missing:,} image(s) not in the store: paths written, files absent")


def register(app: typer.Typer) -> None:
    export_app = typer.Typer(help="Export a data root: released TSVs, a Hugging Face dataset, UniIR's M-BEIR.",
                             no_args_is_help=True)
    export_app.command("released")(export_released)
    export_app.command("hf")(export_hf)
    export_app.command("mbeir")(export_mbeir)
    app.add_typer(export_app, name="export")
