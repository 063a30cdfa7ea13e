"""CLI: `wit-retrieval index build|check` and `wit-retrieval search`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

index_app = typer.Typer(help="Build and check nearest-neighbour indexes of embeddings.", no_args_is_help=True)

EMB_HELP = "Embeddings: parquet (id, embedding) file or folder, or .npy with .ids.txt beside it."


@index_app.command("build")
def build(
    embeddings: Path = typer.Option(..., "--embeddings", help=EMB_HELP),
    out: Path = typer.Option(..., "--out", help="Folder to write the index into."),
    kind: str = typer.Option("exact", "--kind", help="exact, auto, or a faiss factory string (HNSW32, IVF1024,Flat, "
                             "OPQ64,IVF4096,PQ64)."),
    dim: int | None = typer.Option(None, "--dim", help="Matryoshka truncation to the first DIM dims (re-normalised)."),
    quantize: str | None = typer.Option(None, "--quantize", help="Store vectors as fp16 or int8."),
    memory_budget: str | None = typer.Option(None, "--memory-budget", help="For --kind auto: e.g. 4GB, 512MB."),
    metric: str = typer.Option("ip", "--metric", help="ip (inner product) or l2."),
    normalize: str = typer.Option("warn", "--normalize", help="warn (keep, warn if not unit length), l2 or none."),
    model: str | None = typer.Option(None, "--model", help="Model name to record (default: from the embeddings)."),
    corpus_revision: str | None = typer.Option(None, "--corpus-revision", help="Corpus revision to record."),
    scratch: Path | None = typer.Option(None, "--scratch", help="Folder for the memory-mapped staging file "
                                        "(rows x dim x 4 bytes; default: the system's temp folder)."),
) -> None:
    """Build an index from embeddings and save it with its metadata.

    Parts are streamed through a memory-mapped file, never read into one array: memory holds
    the index and one block (an exact index is itself the matrix).

    Example: wit-retrieval index build --embeddings emb/images.parquet --out idx/ --kind exact
    """
    from ..index import IndexConfig, parse_memory
    from ..index.stream import build_index_from_files
    from ..io.embeddings import read_embeddings_meta

    config = IndexConfig(kind=kind, dim=dim, quantize=quantize, memory_budget_gb=parse_memory(memory_budget),
                         metric=metric, normalize=normalize)
    meta = read_embeddings_meta(embeddings)
    meta["model"] = model or meta.get("model")
    meta["corpus_revision"] = corpus_revision or meta.get("corpus_revision")
    meta["embeddings"] = str(embeddings)
    index = build_index_from_files(embeddings, config, meta, scratch=scratch)
    index.save(out)
    info = index.metadata
    typer.echo(f"indexed {info['count']} vectors ({info['dim']} dims, {info['factory']}, metric {info['metric']}) "
               f"in {out}")
    for reason in info["choice"]:
        typer.echo(f"  {reason}")


@index_app.command("check")
def check(
    index_dir: Path = typer.Option(..., "--index", help="The (ANN) index folder to check."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help="The indexed embeddings: exact reference "
                                           "and, without --queries, the query sample. " + EMB_HELP),
    exact_dir: Path | None = typer.Option(None, "--exact", help="An exact index folder to compare with instead."),
    queries: Path | None = typer.Option(None, "--queries", help="Query embeddings (e.g. text queries: "
                                        "cross-modal recall differs from image-to-image)."),
    sample: int = typer.Option(1000, "--sample", help="How many queries to sample."),
    k: int = typer.Option(100, "--k", help="Depth of the comparison."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    out: Path | None = typer.Option(None, "--out", help="Also write the results as JSON here."),
) -> None:
    """Measure an index's recall against exact search on sampled queries.

    Example: wit-retrieval index check --index idx-hnsw/ --embeddings emb/images.parquet --queries emb/texts.parquet
    """
    import numpy as np

    from ..errors import ConfigError
    from ..index import IndexConfig, build_index, check_index, load_index
    from ..io.embeddings import read_embeddings
    from ..io.shards import write_json_atomic

    ann = load_index(index_dir)
    meta = ann.metadata
    if exact_dir is None and embeddings is None:
        raise ConfigError("give --embeddings (to build the exact reference) or --exact DIR")
    if queries is None and embeddings is None:
        raise ConfigError("give --queries, or --embeddings to sample queries from")
    ids, matrix = read_embeddings(embeddings) if embeddings is not None else ([], None)
    if exact_dir is not None:
        exact = load_index(exact_dir)
    else:
        exact = build_index(matrix, ids, IndexConfig(kind="exact", dim=meta["truncation"], metric=meta["metric"],
                                                     normalize=meta["normalisation"]["mode"]))
    pool = read_embeddings(queries)[1] if queries is not None else matrix
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(pool), min(sample, len(pool)), replace=False))
    result = check_index(ann, exact, pool[picked], k)
    for name, value in result.items():
        typer.echo(f"{name:>22}  {value:.4f}" if isinstance(value, float) else f"{name:>22}  {value}")
    if out is not None:
        write_json_atomic(out, result)


def search(
    index_dir: Path = typer.Option(..., "--index", help="Index folder (from `index build`)."),
    queries: Path = typer.Option(..., "--queries", help="Query embeddings; their ids become the run's query ids. "
                                 + EMB_HELP),
    out: Path = typer.Option(..., "--out", help="Run file to write: TREC text, or parquet when it ends in .parquet."),
    k: int = typer.Option(100, "--k", help="Results per query."),
    chunk: int = typer.Option(4096, "--chunk", help="Queries searched at once (bounds memory)."),
    tag: str = typer.Option("wit-retrieval", "--tag", help="Run tag (TREC's last column)."),
    mmap: bool = typer.Option(False, "--mmap", help="Memory-map exact vectors instead of reading them in."),
    device: str = typer.Option("", "--device", help="Exact search in torch on this device (cuda, cuda:N): the "
                               "same results and tie order as faiss on the CPU. Default: faiss on the CPU."),
) -> None:
    """Search query embeddings against an index and write a run.

    Example: wit-retrieval search --index idx/ --queries emb/queries.parquet --k 100 --out runs/test.trec
    """
    from ..index import load_index
    from ..index.runfile import write_search_run
    from ..io.embeddings import read_embeddings

    index = load_index(index_dir, mmap=mmap, device=device or None)
    query_ids, matrix = read_embeddings(queries)
    stats = write_search_run(index, query_ids, matrix, out, k=k, chunk=chunk, tag=tag)
    typer.echo(json.dumps(stats))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(index_app, name="index")
    app.command("search")(search)
