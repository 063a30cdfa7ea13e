"""Text-side baseline: images indexed by their WIT texts, queries with the entities' names filled in.

Each corpus image becomes a document from what WIT says about the image itself: its Commons
attribution description and alt text (several rows of one image are merged, distinct texts
kept), titled by the pages that show it. The query is the masked text with each [MASK_i]
replaced by entity i's name. This is the `names` reference of a text encoder: it needs no
pixels, and shows how far the images' own captions get without seeing the entity images.

`caption_reference_description` can be added to the fields, but MMIR queries are made from
it, so the baseline then reads the answer: `WitTextConfig.leaks_query_text` says so, and the
run metadata carries it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, InputError

IMAGE_FIELDS = ("caption_attribution_description", "caption_alt_text_description")
QUERY_SOURCE_FIELDS = ("caption_reference_description",)  # MMIR masks these: using them leaks the query
KNOWN_FIELDS = (*IMAGE_FIELDS, *QUERY_SOURCE_FIELDS, "context_section_description", "context_page_description",
                "section_title", "hierarchical_section_title")

Run = dict[str, list[tuple[str, float]]]


class DocumentText(NamedTuple):
    """What an image is indexed by: a title (the page(s) showing it) and its texts."""

    title: str | None
    text: str


@dataclass(frozen=True)
class WitTextConfig:
    """Which WIT columns make an image's document, and how much of them to keep."""

    fields: tuple[str, ...] = IMAGE_FIELDS
    title_field: str | None = "page_title"
    max_texts: int = 4             # distinct texts kept per image (WIT repeats an image on many pages)
    max_titles: int = 2
    max_chars: int = 1000          # per document; encoders truncate tokens anyway

    def __post_init__(self):
        unknown = [f for f in (*self.fields, self.title_field) if f and f not in (*KNOWN_FIELDS, "page_title")]
        if unknown:
            raise ConfigError(f"unknown WIT text field(s) {unknown}; known: {', '.join(KNOWN_FIELDS)}, page_title")
        if not self.fields and not self.title_field:
            raise ConfigError("no WIT field selected for the documents")

    @property
    def leaks_query_text(self) -> bool:
        """True when a field MMIR queries are made from is part of the documents."""
        return any(f in QUERY_SOURCE_FIELDS for f in self.fields)


def collect_wit_texts(files: Iterable[str | Path], image_ids: Collection[str] | None = None,
                      config: WitTextConfig = WitTextConfig(), errors=None) -> dict[str, DocumentText]:
    """Documents per image_id from WIT TSV(.gz) files, streamed; only `image_ids` when given."""
    from ..build.fast_ids import image_id
    from ..io.tsv import RowErrors, read_wit_batches

    wanted = set(image_ids) if image_ids is not None else None
    errors = errors if errors is not None else RowErrors()
    texts: dict[str, list[str]] = {}
    titles: dict[str, list[str]] = {}
    columns = ["image_url", *config.fields, *([config.title_field] if config.title_field else [])]
    for path in files:
        for batch in read_wit_batches(path, columns=columns, errors=errors):
            values = {c: batch.column(c).to_pylist() for c in columns}
            for row, url in enumerate(values["image_url"]):
                if not url:
                    continue
                key = image_id(url)
                if wanted is not None and key not in wanted:
                    continue
                kept = texts.setdefault(key, [])
                for field in config.fields:
                    _add_distinct(kept, values[field][row], config.max_texts)
                if config.title_field:
                    _add_distinct(titles.setdefault(key, []), values[config.title_field][row], config.max_titles)
    return {key: DocumentText("; ".join(titles.get(key, [])) or None, " | ".join(kept)[: config.max_chars])
            for key, kept in texts.items() if kept or titles.get(key)}


def _add_distinct(kept: list[str], value: str | None, limit: int) -> None:
    if value and len(kept) < limit:
        value = " ".join(value.split())
        if value and value not in kept:
            kept.append(value)


def shuffled_documents(wit_texts: Mapping[str, DocumentText | str], seed: int = 0) -> dict:
    """The same documents dealt to other images: a control that keeps the text but breaks the link."""
    keys = sorted(wit_texts)
    values = [wit_texts[k] for k in keys]
    random.Random(seed).shuffle(values)
    return dict(zip(keys, values))


def text_side_run(encoder, queries_table: pa.Table, corpus_table: pa.Table,
                  wit_texts: Mapping[str, DocumentText | str], k: int = 100, *,
                  names: Sequence[Sequence[str | None]] | None = None, counts: dict | None = None,
                  cache_dir: str | Path | None = None) -> Run:
    """Rank the corpus images (by their texts) for each query (names filled in), by exact search.

    `encoder` is a text encoder (text_encoders, gemini) or any Encoder with `encode_texts`
    (e.g. a CLIP text tower, for a text-side run of the same model).

    `names[i][j]` is the name of query i's entity j; without it the table's `entity_names`
    column is used. Images without any text cannot be retrieved; `counts` (if given) says how many.
    With `cache_dir`, document embeddings are kept there (keyed by model and texts) and reused.
    """
    from ..index import IndexConfig, build_index

    query_ids = queries_table.column("query_id").to_pylist()
    masked = queries_table.column("masked_text").to_pylist()
    if names is None:
        if "entity_names" not in queries_table.column_names:
            raise ConfigError("the text-side baseline needs the entities' names: pass names= "
                              "(see text_side_baseline) or a queries table with an entity_names column")
        names = queries_table.column("entity_names").to_pylist()
    corpus = [i for i in corpus_table.column("image_id").to_pylist() if i in wit_texts]
    if not corpus:
        raise InputError("no corpus image has a WIT text; check that the WIT files are those of this split")
    doc_vectors = document_vectors(encoder, corpus, [_as_document(wit_texts[i]) for i in corpus], cache_dir)
    query_vectors = _encode_name_queries(encoder, masked, [list(n or []) for n in names])
    index = build_index(doc_vectors, corpus, IndexConfig(kind="exact"))
    scores, ranked = index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), min(k, len(corpus)))
    if counts is not None:
        counts.update({"queries": len(query_ids), "corpus": corpus_table.num_rows, "corpus_with_text": len(corpus),
                       "corpus_without_text": corpus_table.num_rows - len(corpus),
                       "queries_missing_a_name": sum(1 for n in names if not n or not all(n))})
    return {q: [(d, float(s)) for d, s in zip(ids, row)] for q, ids, row in zip(query_ids, ranked, scores)}


def _as_document(value: DocumentText | str) -> DocumentText:
    return value if isinstance(value, DocumentText) else DocumentText(None, value)


def document_vectors(encoder, ids: Sequence[str], documents: list[DocumentText],
                     cache_dir: str | Path | None = None) -> np.ndarray:
    """Document embeddings; with `cache_dir`, read from or written to an embedding file named by a
    hash of the model (name, revision, preprocessing) and of every id, title and text."""
    if cache_dir is None:
        return _encode_documents(encoder, documents)
    import hashlib
    import json

    from ..io.embeddings import read_embeddings, write_embeddings

    digest = hashlib.sha256(json.dumps(encoder.metadata.to_dict(), sort_keys=True).encode())
    for key, document in zip(ids, documents):
        digest.update(f"{key}\0{document.title or ''}\0{document.text}\0".encode())
    path = Path(cache_dir) / f"text-documents-{digest.hexdigest()[:20]}.parquet"
    if path.exists():
        cached_ids, matrix = read_embeddings(path)
        if cached_ids == list(ids):
            return matrix
    vectors = _encode_documents(encoder, documents)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_embeddings(path, list(ids), vectors, {"model": encoder.metadata.to_dict(), "what": "text-side documents"})
    return vectors


def _encode_documents(encoder, documents: list[DocumentText]) -> np.ndarray:
    """Text encoders take titles their own way; any other encoder (a CLIP text tower) gets 'title | text'."""
    from .text_encoders import Prompts, TextEncoder

    if isinstance(encoder, TextEncoder):
        return encoder.encode_documents([d.text for d in documents], [d.title for d in documents])
    return encoder.encode_texts([Prompts().document_text(d.text, d.title) for d in documents])


def _encode_name_queries(encoder, masked: list[str], names: list[list[str | None]]) -> np.ndarray:
    from .fusion import fill_masks
    from .text_encoders import TextEncoder

    if isinstance(encoder, TextEncoder):
        return encoder.encode_queries(masked, None, fusion="names", names=names)
    return encoder.encode_texts([fill_masks(t, n) for t, n in zip(masked, names)])


def text_side_baseline(root: str | Path, split: str, encoder, wit_files: Sequence[str | Path], *, k: int = 100,
                       config: WitTextConfig = WitTextConfig(), max_queries: int = 0,
                       cache_dir: str | Path | None = None) -> tuple[Run, dict]:
    """The text-side run of one split of a build, and counts (documents, missing names, leak flag)."""
    from ..evaluate import load_query_names
    from ..io.shards import read_table_dir
    from ..layout import DataRoot

    data = DataRoot(root)
    queries = read_table_dir(data.table_split("queries", split),
                             columns=["query_id", "masked_text", "entity_ids", "language"])
    if max_queries:
        queries = queries.slice(0, max_queries)
    corpus = read_table_dir(data.table_split("corpus", split), columns=["image_id"])
    names = load_query_names(data, queries.to_pylist())
    texts = collect_wit_texts(wit_files, corpus.column("image_id").to_pylist(), config)
    counts: dict = {"leaks_query_text": config.leaks_query_text, "fields": list(config.fields),
                    "title_field": config.title_field}
    run = text_side_run(encoder, queries, corpus, texts, k, names=names, counts=counts, cache_dir=cache_dir)
    return run, counts


@dataclass(frozen=True)
class TextBaselineConfig:
    """One text-side evaluation: which text encoder, which build split, which WIT files, written where."""

    data: str
    model: str                       # sentence-transformers:PATH[:DIM] (st:...) or gemini:MODEL[:DIM]
    wit: tuple[str, ...]             # the WIT files the build was made from (the documents' source)
    split: str = "test"
    out: str = ""                    # default: DATA/results/<model>-text-side-<split>
    k: int = 100
    measures: str = "R@1,R@5,R@10,MRR@10,nDCG@10"
    texts: WitTextConfig = WitTextConfig()
    max_queries: int = 0
    bootstrap: int = 1000
    device: str = ""
    cache_dir: str = ""              # document embeddings; default: DATA/embeddings ("none": no cache)


def evaluate_text_baseline(config: TextBaselineConfig, *, encoder=None) -> dict:
    """Run, score and write (run.trec, run.trec.meta.json, results.json) the text-side baseline."""
    import dataclasses
    import re
    import time

    import pyarrow.compute as pc

    from ..io.runs import write_trec
    from ..io.shards import write_json_atomic
    from ..layout import DataRoot
    from ..results import load_split_inputs, score_run
    from . import gemini, text_encoders  # noqa: F401 - register their encoder schemes
    from .encoders import load_encoder

    if not config.wit:
        raise ConfigError("the text-side baseline needs the WIT files of the build (--wit FILES)")
    started = time.perf_counter()
    encoder = encoder or load_encoder(config.model, device=config.device or None)
    cache = None if config.cache_dir == "none" else (config.cache_dir or DataRoot(config.data).embeddings)
    run, counts = text_side_baseline(config.data, config.split, encoder, config.wit, k=config.k,
                                     config=config.texts, max_queries=config.max_queries, cache_dir=cache)
    inputs = load_split_inputs(config.data, config.split)
    qrels = inputs.qrels
    if config.max_queries:
        qrels = qrels.filter(pc.is_in(qrels["query_id"], value_set=pa.array(list(run), pa.string())))
    results = score_run(run, qrels, config.measures, queries_table=inputs.queries, bootstrap=config.bootstrap,
                        corpus_size=inputs.corpus_size, dataset_revision=inputs.revision, split=config.split,
                        metadata={"model": encoder.metadata.to_dict(), "fusion": "names", "text_side": True}).to_dict()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.metadata.name).strip("_")[-60:]
    out = Path(config.out) if config.out else DataRoot(config.data).results / f"{slug}-text-side-{config.split}"
    results.update({"model": encoder.metadata.to_dict(), "fusion": "names", "text_side": True, "counts": counts,
                    "zero_shot": encoder.metadata.zero_shot_on("mmir"), "config": dataclasses.asdict(config),
                    "evaluation_seconds": round(time.perf_counter() - started, 3)})
    out.mkdir(parents=True, exist_ok=True)
    write_trec(run, out / "run.trec", tag=f"{slug}-text-side"[:64])
    write_json_atomic(out / "run.trec.meta.json", {"model": results["model"], "fusion": "names", "text_side": True,
                                                   "split": config.split, "data": config.data, "k": config.k,
                                                   "leaks_query_text": counts["leaks_query_text"]})
    write_json_atomic(out / "results.json", results)
    results["out"] = str(out)
    return results
