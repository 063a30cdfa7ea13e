"""CLI: train, evaluate and embed with mixed-modal retrievers; list models and fusions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from ..engine import RAY_ADDRESS_HELP

QUANTIZE_HELP = ("Weights: int8 (int8 kernels on CPU) or int4 (weight-only, packed), per output channel; fp32 "
                 "for float weights. Default: a quantization-aware checkpoint's own export, else fp32.")

models_app = typer.Typer(help="List the encoders, open_clip architectures and fusions available.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("train")(train)
    app.command("prepare")(prepare)
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


# options shared by `train` and `prepare`
CONFIG_ARG = typer.Argument(..., help="A TOML training config (see baselines/*.toml).")
DATA_OPT = typer.Option("", "--data", help="Data root: a folder or an s3:// / gs:// URI (overrides the root in "
                        "the config).")
IMAGES_OPT = typer.Option("", "--images", help="Image store folder or URI (default: DATA/images).")
SETS_OPT = typer.Option([], "--set", help="Override a config value: section.key=value (repeatable).")


def train(
    config: Path = CONFIG_ARG,
    data: str = DATA_OPT,
    images: str = IMAGES_OPT,
    out: str = typer.Option("", "--out", help="Output folder or s3:// / gs:// URI (overrides [run] out)."),
    sets: list[str] = SETS_OPT,
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
    if summary.get("rank", 0) == 0:  # under torchrun / SLURM only rank 0 prints
        typer.echo(json.dumps(summary, indent=2))


def prepare(
    config: Path = CONFIG_ARG, data: str = DATA_OPT, images: str = IMAGES_OPT,
    out: str = typer.Option("", "--out", help="Output folder or URI (default: DATA/train_shards/<key>)."),
    sets: list[str] = SETS_OPT,
):
    """Write the streamed training layout (sample shards, entity image store, [distill] teacher store); resumable.

    `train` does this itself on first use; run it ahead to prepare once for many runs.
    Example: wit-retrieval prepare baselines/inject-mini.toml --data mini/root
    """
    from ..images import open_store
    from ..io import fs
    from ..layout import DataRoot
    from ..models.teacher_store import open_teacher_store
    from ..models.train_config import load_train_config
    from ..models.train_shards import PrepareInputs, disk_cost_note, ensure_prepared, read_prepared

    overrides = _parse_sets(sets)
    for key, value in (("data.root", data), ("data.images", images)):
        if value:
            overrides[key] = value
    cfg = load_train_config(config, overrides)
    if not cfg.data.root:
        from ..errors import ConfigError

        raise ConfigError("--data ROOT is required (or [data] root in the config)")
    store = open_store(cfg.data.images or DataRoot(cfg.data.root).images)
    inputs = PrepareInputs(cfg.data.root, cfg.data.train_split, cfg.data.max_train_queries, cfg.loss.hard_negatives,
                           cfg.loss.hard_negatives_per_query)
    folder = ensure_prepared(inputs, store, out or cfg.data.prepared or None)
    manifest = read_prepared(folder)
    teacher = open_teacher_store(cfg.distill, folder)  # [distill]: the teacher's id-keyed store too
    typer.echo(json.dumps({"out": fs.redact(folder), "summary": disk_cost_note(manifest), **manifest["counts"],
                           "bytes": manifest["bytes"], **({"teacher": str(teacher.folder)} if teacher else {})},
                          indent=2))


def evaluate(
    config: Path = typer.Option(None, "--config", help="An evaluation TOML with an [evaluate] table "
                                "(baselines/zs-*.toml); options given here override it."),
    data: str = typer.Option("", "--data", help="Data root of a build (queries, corpus, qrels)."),
    model: str = typer.Option("", "--model", help="Encoder name: open_clip:ARCH:TAG, local-dir:PATH, or mteb:NAME "
                              "(an MTEB model taking image+text queries, from the local Hugging Face cache)."),
    checkpoint: str = typer.Option("", "--checkpoint", help="A checkpoint folder (e.g. runs/inject-mini/model) or "
                                   "its s3:// / gs:// URI."),
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
    quantize: str = typer.Option("", "--quantize", help=QUANTIZE_HELP),
    dims: str = typer.Option("", "--dims", help="Matryoshka widths also scored, e.g. 1/2,1/4,1/8 or 256,128 "
                             "(written beside --out as OUT-dN)."),
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
             "cache_dir": cache_dir, "quantize": quantize,
             "dims": dims}
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
    out: Path = typer.Option(..., "--out", help="A folder of parts (part-*.parquet, manifest.json last, "
                             "failures.jsonl; resumable, any number of ranks) or one FILE.parquet."),
    model: str = typer.Option("", "--model", help="Encoder name: open_clip:ARCH:TAG or local-dir:PATH."),
    checkpoint: str = typer.Option("", "--checkpoint", help="A checkpoint folder."),
    data: str = typer.Option("", "--data", help="Embed only this data root's corpus of --split (default: "
                             "every image in the store)."),
    split: str = typer.Option("test", "--split", help="Corpus split, with --data."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per encoder batch."),
    workers: int = typer.Option(4, "--workers", help="Image decoding threads."),
    device: str = typer.Option("", "--device", help="cpu or cuda (default: cuda when available; under torchrun "
                               "cuda:LOCAL_RANK)."),
    cache_dir: str = typer.Option("", "--cache-dir", help="Embedding cache folder, with --out FILE.parquet "
                                  "(resumable; default: none)."),
    part_rows: int = typer.Option(8192, "--part-rows", help="Images per part (memory holds one part)."),
    dtype: str = typer.Option("float32", "--dtype", help="Stored embedding type: float32, or float16 (half "
                              "the disk; see docs/embedding.md for its effect on recall)."),
    fast_path: str = typer.Option("auto", "--fast-path", help="CPU fast path of ViT image towers: auto (prepacked "
                                  "oneDNN linears where they apply, fp32, same embeddings up to float rounding), "
                                  "onednn (also narrow towers; warns when unusable) or eager."),
    engine: str = typer.Option("local", "--engine", help="local (this process, or torchrun's ranks) or ray (Ray "
                               "Data: a CPU decode stage and an encoder actor pool; --out must be a folder)."),
    ray_address: str = typer.Option("", "--ray-address", help=RAY_ADDRESS_HELP),
    actors: int = typer.Option(0, "--actors", help="Encoder actors with --engine ray (default: one per GPU, "
                               "else 1)."),
    quantize: str = typer.Option("", "--quantize", help=QUANTIZE_HELP),
):
    """Embed the images of a store (or of one corpus split) into a folder of parts or one parquet file.

    Under `torchrun --nproc_per_node N -m wit_retrieval embed ...` each rank embeds its own
    contiguous block of parts; a re-run embeds only the parts still missing.

    Example: wit-retrieval embed --model open_clip:ViT-B-32:laion2b_s34b_b79k --images root/images --out emb/
    """
    from ..errors import ConfigError
    from ..images import open_store
    from ..models.embed import EmbedConfig

    if bool(model) == bool(checkpoint):
        raise ConfigError("give exactly one of --model NAME or --checkpoint DIR")
    config = EmbedConfig(batch_size=batch_size, workers=workers, cache_dir=cache_dir or None, fast_path=fast_path,
                         part_rows=part_rows)
    store = open_store(images)
    ids = _ids_to_embed(store, data, split)
    name = model or f"local-dir:{checkpoint}"
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray":
        if out.suffix == ".parquet":
            raise ConfigError("--engine ray writes a folder of parts: give --out DIR")
        from ..engine import EngineConfig, connect
        from ..models.embed_ray import embed_with_ray

        connect(EngineConfig(name="ray", ray_address=ray_address or None))
        summary = embed_with_ray(name, images, ids, out, config, dtype=dtype, actors=actors,
                                 device=device or None, quantize=quantize)
    elif out.suffix == ".parquet":
        summary = _embed_to_file(name, device, store, ids, out, config, dtype, quantize)
    else:
        summary = _embed_to_parts(name, device, store, ids, out, config, dtype, quantize)
    if summary is not None:
        typer.echo(json.dumps(summary))


def _ids_to_embed(store, data: str, split: str) -> list[str]:
    if not data:
        return store.ids()
    from ..io.shards import read_table_dir
    from ..layout import DataRoot

    return read_table_dir(DataRoot(data).table_split("corpus", split), columns=["image_id"])["image_id"].to_pylist()


def _encoder(name: str, device: str | None, quantize: str):
    """The encoder with the weights asked for (--quantize; a QAT checkpoint's own export by default)."""
    from ..models import load_encoder
    from ..models.qat import quantize_encoder

    return quantize_encoder(load_encoder(name, device=device or None), quantize)


def _embed_to_file(name, device, store, ids, out, config, dtype, quantize) -> dict:
    from ..io.embeddings import write_embeddings
    from ..models.embed import embed_images

    encoder = _encoder(name, device, quantize)
    started = time.perf_counter()
    found, matrix, missing = embed_images(encoder, store, ids, config)
    seconds = time.perf_counter() - started
    write_embeddings(out, found, matrix, {"model": encoder.metadata.to_dict(), "quantization": encoder.quantization},
                     dtype=dtype)
    return {"out": str(out), "embedded": len(found), "missing": len(missing), "dim": encoder.metadata.dim,
            "quantization": encoder.quantization["scheme"], "seconds": round(seconds, 3),
            "images_per_s": round(len(found) / seconds, 2) if seconds else None}


def _embed_to_parts(name, device, store, ids, out, config, dtype, quantize) -> dict | None:
    """A folder of parts; under torchrun or srun each rank its block (rank 0 reports)."""
    from dataclasses import replace

    from .. import distributed as dist
    from ..models.embed_corpus import embed_to_folder

    world = dist.world_from_env()
    if world.distributed and device in ("", "cuda"):
        device = dist.device_for(world)  # cuda:LOCAL_RANK (cpu without CUDA)
    # ranks may finish their blocks far apart: the final barrier waits up to a day, while an error on
    # any rank still ends every rank at once (the process group's error relay)
    with dist.process_group(world, device or "cpu", timeout_minutes=24 * 60):
        encoder = _encoder(name, device, quantize)
        config = replace(config, progress=config.progress and world.is_main)
        started = time.perf_counter()
        summary = embed_to_folder(encoder, store, ids, out, config, dtype=dtype, rank=world.rank,
                                  world=world.world_size, barrier=(lambda: dist.barrier(world)) if world.distributed
                                  else None)
    summary.update(quantization=encoder.quantization["scheme"], seconds=round(time.perf_counter() - started, 3))
    return summary if world.is_main else None


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
