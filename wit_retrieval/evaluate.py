"""encode -> index -> search -> run -> score, in one function (`wit-retrieval evaluate`).

torch is imported only inside functions (through wit_retrieval.models), so importing this
module stays cheap.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .io import fs
from .io.shards import read_table_dir, write_json_atomic
from .layout import DataRoot


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: which model and fusion, on which split of which build, written where."""

    data: str
    model: str = ""                  # encoder name (open_clip:ARCH:TAG, local-dir:PATH, ...)
    checkpoint: str = ""             # a checkpoint folder (same as model=local-dir:PATH)
    fusion: str = ""                 # default: the model's native fusion
    split: str = "test"
    images: str = ""                 # default: DATA/images
    out: str = ""                    # default: DATA/results/<model>-<fusion>-<split>
    cache_dir: str = ""              # default: DATA/embeddings
    measures: str = "R@1,R@5,R@10,MRR@10,nDCG@10"
    k: int = 100
    index: str = "exact"
    batch_size: int = 64
    workers: int = 4
    device: str = ""
    max_queries: int = 0
    bootstrap: int = 1000
    progress: bool = True
    # weights: int8 | int4 (post-training, or a checkpoint's quantization-aware export of that scheme),
    # fp32 (float weights, also of a QAT checkpoint); '' = the checkpoint's own (QAT export) else fp32
    quantize: str = ""
    # Matryoshka widths, e.g. "1/2,1/4,1/8" or "256,128": each also scored (embeddings truncated to the first
    # dims, re-normalised) and written beside `out` as OUT-dN; the full width is always scored
    dims: str = ""

    def model_name(self) -> str:
        """The encoder name this config selects."""
        if bool(self.model) == bool(self.checkpoint):
            raise ConfigError("give exactly one of --model NAME or --checkpoint DIR")
        return self.model or f"local-dir:{self.checkpoint}"


def load_eval_config(path: str | Path, **overrides: Any) -> EvalConfig:
    """EvalConfig from the [evaluate] table of a TOML file (baselines/zs-*.toml); non-empty overrides win."""
    from .models.train_config import read_toml, section_from_dict

    data = read_toml(path)
    unknown = set(data) - {"evaluate"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; an evaluation config has [evaluate]")
    values = {**data.get("evaluate", {}), **{k: v for k, v in overrides.items() if v not in ("", None)}}
    values.setdefault("data", "")
    return section_from_dict(EvalConfig, values, f"{path}: [evaluate]")


def evaluate(config: EvalConfig, *, store=None, encoder=None) -> dict[str, Any]:
    """Run the whole evaluation; writes run.trec (+ .meta.json), results.json and plots; returns results."""
    from .metrics import load_qrels, score
    from .models import load_encoder
    from .models.train_data import read_queries
    from .results import dataset_revision

    started = time.perf_counter()
    root = DataRoot(config.data)
    if encoder is None:
        from .models.qat import quantize_encoder

        encoder = quantize_encoder(load_encoder(config.model_name(), device=config.device or None), config.quantize)
    quantization = getattr(encoder, "quantization", None) or {"scheme": "fp32", "source": "float", "bits": 32}
    fusion = config.fusion or getattr(encoder, "native_fusion", None) or "sum"
    store = store if store is not None else _open_store(config)
    queries = read_queries(root.root, config.split, config.max_queries)
    corpus = read_table_dir(root.table_split("corpus", config.split), columns=["image_id"])["image_id"].to_pylist()
    from .models.embed import EmbedConfig

    embed = EmbedConfig(batch_size=config.batch_size, workers=config.workers, progress=config.progress,
                        cache_dir=str(config.cache_dir or root.embeddings))
    names = load_query_names(root, queries) if fusion == "names" else None
    ranked = None
    if hasattr(encoder, "rank"):  # mteb:NAME models embed text and image together (models/mteb_models.py)
        if config.dims:
            raise ConfigError("--dims (Matryoshka widths) needs one of our encoders, not an mteb: model")
        ranked = encoder.rank(queries, corpus, store, fusion=fusion, k=config.k, index=config.index,
                              batch_size=config.batch_size)
        counts = ranked[1]
    else:
        encoded = encode_for_search(encoder, queries, corpus, store, fusion=fusion, embed=embed, names=names)
        counts = encoded["counts"]
    qrels = load_qrels(root.root, config.split)
    queries_table = read_table_dir(root.table_split("queries", config.split))
    scheme = "" if quantization["scheme"] == "fp32" else f"-{quantization['scheme']}"
    out = Path(config.out) if config.out else root.results / f"{_slug(encoder.metadata.name)}-{fusion}-{config.split}{scheme}"
    full = encoder.metadata.dim
    for dim in (full, *parse_dims(config.dims, full)):
        run = ranked[0] if ranked is not None else search_run(encoded, queries, k=config.k, index=config.index,
                                                              dim=dim if dim != full else None)
        kept = {q: qrels[q] for q in run if q in qrels} if config.max_queries else qrels
        results = _as_dict(score(run, kept, config.measures, queries_table=queries_table, bootstrap=config.bootstrap,
                                 corpus_size=len(corpus), split=config.split,
                                 dataset_revision=dataset_revision(root.root)))
        results.update({
            "model": encoder.metadata.to_dict(), "fusion": fusion, "split": config.split, "quantization": quantization,
            "dim": dim, "zero_shot": encoder.metadata.zero_shot_on("mmir"), "config": fs.redact_all(dataclasses.asdict(config)),
            "counts": counts, "evaluation_seconds": round(time.perf_counter() - started, 3),
        })
        where = out if dim == full else out.with_name(f"{out.name}-d{dim}")
        _write_outputs(where, run, results, tag=f"{_slug(encoder.metadata.name)}-{fusion}", config=config)
        results["out"] = str(where)
        if dim == full:
            first = results
    return first


def parse_dims(text: str, full: int) -> list[int]:
    """Matryoshka widths from "1/2,1/4" (fractions of `full`) or "256,128"; the full width left out."""
    dims = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            top, _, bottom = item.partition("/")
            dim = full * int(top) // int(bottom) if bottom else int(item)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--dims {item!r}: use widths (256) or fractions of the full width (1/2)") from None
        if not 0 < dim <= full:
            raise ConfigError(f"--dims {item!r}: the width must be between 1 and the model's {full}")
        if dim != full and dim not in dims:
            dims.append(dim)
    return dims


def rank_queries(encoder, queries: Sequence[dict], corpus_ids: Sequence[str], store, *, fusion: str, k: int = 100,
                 embed=None, names: list | None = None, index: str = "exact", with_counts: bool = False):
    """The run {query_id: [(image_id, score), ...]} of `queries` against the corpus images."""
    encoded = encode_for_search(encoder, queries, corpus_ids, store, fusion=fusion, embed=embed, names=names)
    run = search_run(encoded, queries, k=k, index=index)
    return (run, encoded["counts"]) if with_counts else run


def search_run(encoded: dict, queries: Sequence[dict], *, k: int, index: str = "exact", dim: int | None = None):
    """The run of `encode_for_search`'s embeddings through an index (truncated to `dim` when given)."""
    from .index import IndexConfig, build_index

    built = build_index(encoded["corpus"], encoded["corpus_ids"], IndexConfig(kind=index, dim=dim))
    scores, ids = built.search(encoded["queries"], min(k, len(encoded["corpus_ids"])))
    return {q["query_id"]: [(d, float(s)) for d, s in zip(row_ids, row_scores)]
            for q, row_ids, row_scores in zip(queries, ids, scores)}


def encode_for_search(encoder, queries: Sequence[dict], corpus_ids: Sequence[str], store, *, fusion: str,
                      embed=None, names: list | None = None) -> dict:
    """Corpus and query embeddings ({'corpus', 'corpus_ids', 'queries', 'counts'}) of one evaluation."""
    from .models.embed import EmbedConfig, embed_images
    from .models.fusion import get_fusion
    from .models.train_data import entity_image_ids

    embed = embed or EmbedConfig(progress=False)
    uses_images = get_fusion(fusion).uses_images
    entity_ids = [entity_image_ids(q) for q in queries]
    wanted = list(corpus_ids) + ([i for ids in entity_ids for i in ids if i] if uses_images else [])
    found, matrix, missing = embed_images(encoder, store, wanted, embed)
    row_of = {image: n for n, image in enumerate(found)}
    corpus_rows = [row_of[i] for i in corpus_ids if i in row_of]
    if not corpus_rows:
        raise ConfigError("none of the corpus images is in the image store; fetch the images first")
    entity_embeddings = [_entity_matrix(ids, row_of, matrix) for ids in entity_ids]
    query_emb = encoder.encode_query_embeddings([q["masked_text"] for q in queries], entity_embeddings,
                                                fusion=fusion, names=names)
    missing_set = set(missing)
    counts = {"queries": len(queries), "corpus": len(corpus_ids), "corpus_embedded": len(corpus_rows),
              "corpus_missing": len(corpus_ids) - len(corpus_rows),
              "entity_images_missing": sum(1 for ids in entity_ids for i in ids if i is None or i in missing_set)
              if uses_images else None}
    return {"corpus": matrix[corpus_rows], "corpus_ids": [found[r] for r in corpus_rows], "counts": counts,
            "queries": np.ascontiguousarray(query_emb, dtype=np.float32)}


def _entity_matrix(ids: Sequence[str | None], row_of: dict[str, int], matrix: np.ndarray) -> np.ndarray:
    """[n_masks, D] with NaN rows where an entity image is missing."""
    out = np.full((len(ids), matrix.shape[1]), np.nan, np.float32)
    for n, image in enumerate(ids):
        if image is not None and image in row_of:
            out[n] = matrix[row_of[image]]
    return out


def load_query_names(root: DataRoot, queries: Sequence[dict]) -> list[list[str | None]]:
    """Each query's entity names in its language (entity_names table, else entities.page_title)."""
    by_language: dict[tuple[str, str], str] = {}
    fallback: dict[str, str] = {}
    names_dir = root.table("entity_names")
    if names_dir.exists():
        table = read_table_dir(names_dir, columns=["entity_id", "language", "name", "source"])
        rows = zip(*(table[c].to_pylist() for c in ("entity_id", "language", "name", "source")))
        # A page title beats a redirect or other alias: titles come first, the first name wins.
        for entity, language, name, _ in sorted(rows, key=lambda r: r[3] != "title"):
            by_language.setdefault((entity, language), name)
            fallback.setdefault(entity, name)
    entities_dir = root.table("entities")
    if entities_dir.exists():
        table = read_table_dir(entities_dir, columns=["entity_id", "page_title"])
        for entity, title in zip(table["entity_id"].to_pylist(), table["page_title"].to_pylist()):
            fallback.setdefault(entity, title)
    if not by_language and not fallback:
        raise ConfigError(f"fusion 'names' needs {names_dir} or {entities_dir}; neither exists")
    return [[by_language.get((e, q.get("language")), fallback.get(e)) for e in (q.get("entity_ids") or [])]
            for q in queries]


def _write_outputs(out: Path, run, results: dict, *, tag: str, config: EvalConfig) -> None:
    from .io.runs import write_trec

    out.mkdir(parents=True, exist_ok=True)
    write_trec(run, out / "run.trec", tag=tag[:64])
    write_json_atomic(out / "run.trec.meta.json", {"model": results["model"], "fusion": results["fusion"],
                                                   "split": config.split, "data": fs.redact(config.data), "k": config.k,
                                                   "index": config.index, "tag": tag})
    write_json_atomic(out / "results.json", results)
    try:
        from .plots import breakdown_bars_png, recall_curve_png

        recall_curve_png({tag: results}, out / "recall.png")
        if results.get("breakdowns", {}).get("query_type"):
            breakdown_bars_png(results, "query_type", out / "by_query_type.png")
    except ImportError:  # plots are an extra ([plots]); results stand without them
        pass


def _as_dict(results) -> dict[str, Any]:
    if isinstance(results, dict):
        return dict(results)
    for method in ("to_dict", "as_dict"):
        if hasattr(results, method):
            return getattr(results, method)()
    return dataclasses.asdict(results)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-80:]


def _open_store(config: EvalConfig):
    from .images import open_store

    return open_store(config.images or DataRoot(config.data).images)
