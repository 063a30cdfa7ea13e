"""CLI: train, evaluate and embed with mixed-modal retrievers; list models and fusions."""

from __future__ import annotations

import json
from pathlib import Path

import typer

models_app = typer.Typer(help="List the encoders, open_clip architectures and fusions available.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("embed")(embed)
    app.add_typer(models_app, name="models")


def _parse_sets(values: list[str]) -> dict[str, str]:
    from ..errors import ConfigError

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: use section.key=value, e.g. --set optim.steps=100")
        out[key.strip()] = value.strip()
    return out


def train(
    config: Path = typer.Argument(..., help="A TOML training config (see baselines/*.toml)."),
    data: str = typer.Option("", "--data", help="Data root to train on (overrides [data] root)."),
    images: str = typer.Option("", "--images", help="Image store folder (default: DATA/images)."),
    out: str = typer.Option("", "--out", help="Output folder (overrides [run] out)."),
    sets: list[str] = typer.Option([], "--set", help="Override a config value: section.key=value (repeatable)."),
    stop_after: int = typer.Option(None, "--stop-after", help="Stop (with a checkpoint) after this many steps; "
                                   "running again resumes."),
):
    """Train a retriever from a TOML config; resumes from the output folder's latest checkpoint.

    Example: wit-retrieval train baselines/inject-mini.toml --data mini/root --out runs/inject-mini
    """
    from ..models.train import train as run_training
    from ..models.train_config import load_train_config

    overrides = _parse_sets(sets)
    for key, value in (("data.root", data), ("data.images", images), ("run.out", out)):
        if value:
            overrides[key] = value
    summary = run_training(load_train_config(config, overrides), stop_after=stop_after)
    typer.echo(json.dumps(summary, indent=2))


def evaluate(
    config: Path = typer.Option(None, "--config", help="An evaluation TOML with an [evaluate] table "
                                "(baselines/zs-*.toml); options given here override it."),
    data: str = typer.Option("", "--data", help="Data root of a build (queries, corpus, qrels)."),
    model: str = typer.Option("", "--model", help="Encoder name: open_clip:ARCH:TAG, local-dir:PATH, or mteb:NAME "
                              "(an MTEB model taking image+text queries, from the local Hugging Face cache)."),
    checkpoint: str = typer.Option("", "--checkpoint", help="A checkpoint folder (e.g. runs/inject-mini/model)."),
    fusion: str = typer.Option("", "--fusion", help="text-only, image-only, sum, names, combiner, inject "
                               "(default: the model's own); for mteb:NAME pair-mean (default: one (text, image) "
                               "pair per entity image, embeddings averaged) or list (all images at once)."),
    split: str = typer.Option("", "--split", help="Split to evaluate: train, val or test (default: test)."),
    images: str = typer.Option("", "--images", help="Image store folder (default: DATA/images)."),
    out: str = typer.Option("", "--out", help="Output folder (default: DATA/results/MODEL-FUSION-SPLIT)."),
    measures: str = typer.Option("", "--measures", help="Measures (default: R@1,R@5,R@10,MRR@10,nDCG@10)."),
    k: int = typer.Option(None, "--k", help="Ranked images kept per query (default: 100)."),
    index: str = typer.Option("", "--index", help="exact (default), auto or a faiss factory string."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per encoder batch (default: 64)."),
    workers: int = typer.Option(None, "--workers", help="Image decoding threads (default: 4)."),
    device: str = typer.Option("", "--device", help="cpu or cuda (default: cuda when available)."),
    max_queries: int = typer.Option(None, "--max-queries", help="Evaluate only the first N queries."),
    bootstrap: int = typer.Option(None, "--bootstrap", help="Bootstrap samples for confidence intervals "
                                  "(default: 1000)."),
    cache_dir: str = typer.Option("", "--cache-dir", help="Embedding cache (default: DATA/embeddings)."),
):
    """Encode, index, search and score one split; writes the run, results.json and plots.

    Example: wit-retrieval evaluate --checkpoint runs/inject-mini/model --fusion inject --data mini/root --split test
    """
    from ..evaluate import EvalConfig, load_eval_config
    from ..evaluate import evaluate as run_evaluation
    from ..models.train_config import section_from_dict

    given = {"data": data, "model": model, "checkpoint": checkpoint, "fusion": fusion, "split": split,
             "images": images, "out": out, "measures": measures, "k": k, "index": index, "batch_size": batch_size,
             "workers": workers, "device": device, "max_queries": max_queries, "bootstrap": bootstrap,
             "cache_dir": cache_dir}
    given = {key: value for key, value in given.items() if value not in ("", None)}
    if config is not None:
        eval_config = load_eval_config(config, **given)
    else:
        eval_config = section_from_dict(EvalConfig, {"data": "", **given}, "options")
    if not eval_config.data:
        from ..errors import ConfigError

        raise ConfigError("--data ROOT is required (or data = ... in the [evaluate] table)")
    results = run_evaluation(eval_config)
    typer.echo(json.dumps({"out": results["out"], "fusion": results["fusion"],
                           "scores": results.get("scores", {})}, indent=2, default=str))


def embed(
    images: str = typer.Option(..., "--images", help="Image store folder."),
    out: Path = typer.Option(..., "--out", help="Embeddings parquet to write (id, embedding)."),
    model: str = typer.Option("", "--model", help="Encoder name: open_clip:ARCH:TAG or local-dir:PATH."),
    checkpoint: str = typer.Option("", "--checkpoint", help="A checkpoint folder."),
    data: str = typer.Option("", "--data", help="Embed only this data root's corpus of --split (default: "
                             "every image in the store)."),
    split: str = typer.Option("test", "--split", help="Corpus split, with --data."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per encoder batch."),
    workers: int = typer.Option(4, "--workers", help="Image decoding threads."),
    device: str = typer.Option("", "--device", help="cpu or cuda (default: cuda when available)."),
    cache_dir: str = typer.Option("", "--cache-dir", help="Embedding cache folder (resumable; default: none)."),
    fast_path: str = typer.Option("auto", "--fast-path", help="CPU fast path of ViT image towers: auto (prepacked "
                                  "oneDNN linears where they apply, fp32, same embeddings up to float rounding), "
                                  "onednn (also narrow towers; warns when unusable) or eager."),
):
    """Embed the images of a store (or of one corpus split) into an embeddings file.

    Example: wit-retrieval embed --model open_clip:ViT-B-32:laion2b_s34b_b79k --images root/images --out emb.parquet
    """
    from ..errors import ConfigError
    from ..images import open_store
    from ..io.embeddings import write_embeddings
    from ..layout import DataRoot
    from ..models import load_encoder
    from ..models.embed import EmbedConfig, embed_images

    if bool(model) == bool(checkpoint):
        raise ConfigError("give exactly one of --model NAME or --checkpoint DIR")
    config = EmbedConfig(batch_size=batch_size, workers=workers, cache_dir=cache_dir or None, fast_path=fast_path)
    encoder = load_encoder(model or f"local-dir:{checkpoint}", device=device or None)
    store = open_store(images)
    if data:
        from ..io.shards import read_table_dir

        ids = read_table_dir(DataRoot(data).table_split("corpus", split), columns=["image_id"])["image_id"]
        ids = ids.to_pylist()
    else:
        ids = store.ids()
    found, matrix, missing = embed_images(encoder, store, ids, config)
    write_embeddings(out, found, matrix, {"model": encoder.metadata.to_dict()})
    typer.echo(json.dumps({"out": str(out), "embedded": len(found), "missing": len(missing),
                           "dim": encoder.metadata.dim}))


@models_app.command("list")
def list_models(
    pretrained: bool = typer.Option(False, "--pretrained", help="Also list open_clip's (architecture, tag) pairs."),
):
    """List encoder schemes, fusions, the toolkit's tiny configs and open_clip architectures.

    Example: wit-retrieval models list --pretrained
    """
    import open_clip

    from ..models import ENCODERS, FUSIONS, get_fusion
    from ..models.encoders import register_tiny_configs

    register_tiny_configs()
    typer.echo("encoder schemes: " + ", ".join(f"{s}:" for s in ENCODERS.names()))
    typer.echo("fusions:")
    for name in FUSIONS.names():
        fusion = get_fusion(name)
        needs = f" (needs a trained {fusion.head} head)" if fusion.head else ""
        typer.echo(f"  {name:<11} {fusion.description}{needs}")
    tiny = [m for m in open_clip.list_models() if m.startswith("wit-")]
    typer.echo("tiny configs (random weights, for tests and the miniature world): " + ", ".join(tiny))
    if pretrained:
        typer.echo("open_clip pretrained (use open_clip:ARCH:TAG):")
        for arch, tag in open_clip.list_pretrained():
            typer.echo(f"  open_clip:{arch}:{tag}")
    else:
        others = [m for m in open_clip.list_models() if not m.startswith("wit-")]
        typer.echo(f"open_clip architectures ({len(others)}): " + ", ".join(others))
