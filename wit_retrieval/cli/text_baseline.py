"""CLI: `text-baseline` (images by their WIT texts, queries with the entities' names, scored)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

FIELD_ALIASES = {"attribution": "caption_attribution_description", "alt": "caption_alt_text_description",
                 "reference": "caption_reference_description", "section": "context_section_description",
                 "page": "context_page_description"}


def text_baseline(
    data: Path = typer.Option(..., "--data", help="Data root of a build (queries, corpus, qrels, entities)."),
    model: str = typer.Option(..., "--model", help="Text encoder: st:PATH[:DIM] (a local sentence-transformers "
                              "folder, e.g. EmbeddingGemma) or gemini:gemini-embedding-001[:DIM] (GEMINI_API_KEY)."),
    wit: list[Path] = typer.Option(..., "--wit", help="WIT TSV(.gz) files or folders the build was made from "
                                   "(the images' texts come from them; repeatable)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val or test."),
    fields: str = typer.Option("attribution,alt", "--fields", help="WIT texts per image: attribution, alt, section, "
                               "page, reference (reference leaks the query text: an upper bound only)."),
    title: bool = typer.Option(True, "--title/--no-title", help="Title each image by the pages that show it."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: DATA/results/MODEL-text-side-SPLIT)."),
    k: int = typer.Option(100, "--k", help="Ranked images kept per query."),
    measures: str = typer.Option("R@1,R@5,R@10,MRR@10,nDCG@10", "--measures", help="Measures to report."),
    max_queries: int = typer.Option(0, "--max-queries", help="Evaluate only the first N queries (0: all)."),
    device: str = typer.Option("", "--device", help="cpu or cuda (default: cuda when available)."),
    cache_dir: str = typer.Option("", "--cache-dir", help="Where document embeddings are cached and reused "
                                  "(default: DATA/embeddings; 'none' turns the cache off)."),
):
    """Text-side baseline: index images by their WIT texts, query with entity names, and score the run.

    Example: wit-retrieval text-baseline --data data/ --wit wit/ --model st:models/embeddinggemma-300m:256
    """
    from ..errors import ConfigError
    from ..models.text_baseline import TextBaselineConfig, WitTextConfig, evaluate_text_baseline
    from .build import _wit_files

    chosen = tuple(FIELD_ALIASES.get(f.strip(), f.strip()) for f in fields.split(",") if f.strip())
    files = _wit_files(wit, None)  # folders expand to their TSV files, as in `build mmir`
    if not files:
        raise ConfigError("no WIT .tsv/.tsv.gz files found in --wit")
    texts = WitTextConfig(fields=chosen, title_field="page_title" if title else None)
    config = TextBaselineConfig(data=str(data), model=model, wit=files, split=split,
                                out=str(out) if out else "", k=k, measures=measures, texts=texts,
                                max_queries=max_queries, device=device, cache_dir=cache_dir)
    results = evaluate_text_baseline(config)
    if texts.leaks_query_text:
        typer.echo("warning: the reference description is what MMIR queries are made from; these scores are an "
                   "upper bound, not a baseline", err=True)
    typer.echo(json.dumps({"out": results["out"], "scores": results["scores"], "counts": results["counts"]},
                          indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("text-baseline")(text_baseline)
