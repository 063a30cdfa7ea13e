"""CLI: `wit-retrieval mine-negatives` (hard negatives for training from a first-pass model)."""

from __future__ import annotations

import json

import typer


def mine_negatives(
    data: str = typer.Option(..., "--data", help="Data root of a build (or of `released import`)."),
    out: str = typer.Option(..., "--out", help="Hard-negatives parquet to write (query_id, image_ids, scores)."),
    model: str = typer.Option(..., "--model", help="First-pass encoder: open_clip:ARCH:TAG or local-dir:PATH."),
    fusion: str = typer.Option("", "--fusion", help="Query fusion (default: the model's native one)."),
    split: str = typer.Option("train", "--split", help="Split whose queries are mined (against its corpus)."),
    images: str = typer.Option("", "--images", help="Image store folder (default: DATA/images)."),
    cache_dir: str = typer.Option("", "--cache-dir", help="Where the first-pass embeddings go, as folders of "
                                  "parts (resumable; default: DATA/embeddings)."),
    depth: int = typer.Option(100, "--depth", help="Candidates searched per query."),
    keep: int = typer.Option(32, "--keep", help="Hard negatives kept per query."),
    false_negative_ratio: float = typer.Option(0.95, "--false-negative-ratio", help="Drop candidates whose "
                                               "first-pass similarity is above this fraction of the positive's "
                                               "(likely false negatives); 0 keeps all."),
    index: str = typer.Option("exact", "--index", help="exact, or a faiss factory string for a big corpus."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per encoder batch."),
    workers: int = typer.Option(4, "--workers", help="Image decoding threads."),
    device: str = typer.Option("", "--device", help="cpu or cuda (default: cuda when available)."),
    max_queries: int = typer.Option(0, "--max-queries", help="Mine only the first N queries (0: all)."),
):
    """Mine hard negatives for training: top candidates of a first-pass model minus positives and duplicates.

    The file is what `[loss] hard_negatives` in a training config reads.

    Example: wit-retrieval mine-negatives --model open_clip:ViT-B-32:laion2b_s34b_b79k --data data --out hn.parquet
    """
    from ..models.mining import MineConfig
    from ..models.mining import mine_negatives as mine

    config = MineConfig(data=data, out=out, model=model, fusion=fusion, split=split, images=images,
                        cache_dir=cache_dir, depth=depth, keep=keep, false_negative_ratio=false_negative_ratio,
                        index=index, batch_size=batch_size, workers=workers, device=device, max_queries=max_queries)
    typer.echo(json.dumps(mine(config), default=str))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("mine-negatives")(mine_negatives)
