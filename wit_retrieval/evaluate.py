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
    encoder = encoder or load_encoder(config.model_name(), device=config.device or None)
    fusion = config.fusion or getattr(encoder, "native_fusion", None) or "sum"
    store = store if store is not None else _open_store(config)
    queries = read_queries(root.root, config.split, config.max_queries)
    corpus = read_table_dir(root.table_split("corpus", config.split), columns=["image_id"])["image_id"].to_pylist()
    from .models.embed import EmbedConfig

    embed = EmbedConfig(batch_size=config.batch_size, workers=config.workers, progress=config.progress,
                        cache_dir=str(config.cache_dir or root.embeddings))
    names = load_query_names(root, queries) if fusion == "names" else None
    if hasattr(encoder, "rank"):  # mteb:NAME models embed text and image together (models/mteb_models.py)
        run, counts = encoder.rank(queries, corpus, store, fusion=fusion, k=config.k, index=config.index,
                                   batch_size=config.batch_size)
    else:
        run, counts = rank_queries(encoder, queries, corpus, store, fusion=fusion, k=config.k, embed=embed,
                                   names=names, index=config.index, with_counts=True)
    qrels = load_qrels(root.root, config.split)
    if config.max_queries:
        qrels = {q: qrels[q] for q in run if q in qrels}
    queries_table = read_table_dir(root.table_split("queries", config.split))
    results = _as_dict(score(run, qrels, config.measures, queries_table=queries_table, bootstrap=config.bootstrap,
                                   corpus_size=len(corpus), split=config.split,
                                   dataset_revision=dataset_revision(root.root)))
    out = Path(config.out) if config.out else root.results / f"{_slug(encoder.metadata.name)}-{fusion}-{config.split}"
    results.update({
        "model": encoder.metadata.to_dict(), "fusion": fusion, "split": config.split,
        "zero_shot": encoder.metadata.zero_shot_on("mmir"), "config": dataclasses.asdict(config),
        "counts": counts, "evaluation_seconds": round(time.perf_counter() - started, 3),
    })
    _write_outputs(out, run, results, tag=f"{_slug(encoder.metadata.name)}-{fusion}", config=config)
    results["out"] = str(out)
    return results


def rank_queries(encoder, queries: Sequence[dict], corpus_ids: Sequence[str], store, *, fusion: str, k: int = 100,
                 embed=None, names: list | None = None, index: str = "exact", with_counts: bool = False):
    """The run {query_id: [(image_id, score), ...]} of `queries` against the corpus images."""
    from .index import IndexConfig, build_index
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
    corpus_found = [found[r] for r in corpus_rows]
    built = build_index(matrix[corpus_rows], corpus_found, IndexConfig(kind=index))
    scores, ids = built.search(np.ascontiguousarray(query_emb, dtype=np.float32), min(k, len(corpus_found)))
    run = {q["query_id"]: [(d, float(s)) for d, s in zip(row_ids, row_scores)]
           for q, row_ids, row_scores in zip(queries, ids, scores)}
    if not with_counts:
        return run
    missing_set = set(missing)
    counts = {"queries": len(queries), "corpus": len(corpus_ids), "corpus_embedded": len(corpus_rows),
              "corpus_missing": len(corpus_ids) - len(corpus_rows),
              "entity_images_missing": sum(1 for ids in entity_ids for i in ids if i is None or i in missing_set)
              if uses_images else None}
    return run, counts


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
                                                   "split": config.split, "data": config.data, "k": config.k,
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
