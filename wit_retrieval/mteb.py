"""MMIR as MTEB tasks, and our encoders as MTEB models (mteb is imported lazily; extra [mteb]).

`tasks(path, image_store=None)`: task instances for a build root or an `export hf` folder: all
queries, the single- and multi-entity subsets, and one multilingual task whose subsets are the
languages with an MTEB code (wit_retrieval/data/languages.tsv; other languages are left out).
Queries are `id`, `text` (the masked text) and `image`, a list with one image per [MASK_i]; the
corpus is `id` and `image`. Embedded exports load as they are; a build or a URL export opens its
images from an image store.

`encoder(model, fusion=...)`: an MTEB encoder wrapping one of ours (a name as `--model` takes it,
or an Encoder) and any of its fusions; it takes the list of entity images of each query.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError
from .langcodes import languages
from .layout import DataRoot

SPLIT = "test"
REFERENCE = "https://arxiv.org/abs/2506.02291"
PROMPT = "Retrieve the Wikipedia image described by the text, where each [MASK_i] is the entity in image i."
SUBSETS = {"MMIRIT2IRetrieval": None, "MMIRSingleEntityIT2IRetrieval": "single",
           "MMIRMultiEntityIT2IRetrieval": "multi"}


def is_export(path: Path) -> bool:
    """An `export hf` folder: a README.md and parquet files directly under queries/."""
    return (path / "README.md").is_file() and any((path / "queries").glob("*.parquet"))


def tasks(path: str | Path, image_store: str | Path | None = None, *, split: str = SPLIT) -> list:
    """The MMIR task instances of a build root or an `export hf` folder (evaluated on `split`)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("no such build root or export folder", path=str(path))
    data = _SplitData(path, image_store, split)
    made = [_task_class(name, data, kind)() for name, kind in SUBSETS.items()]
    codes = sorted({lang for lang in data.languages if lang in languages()})
    if codes:
        made.append(_task_class("MMIRLanguageIT2IRetrieval", data, None, codes)())
    return made


class _SplitData:
    """One split's queries (id, text, image list), corpus (id, image), qrels and query attributes."""

    def __init__(self, path: Path, image_store, split: str):
        import datasets

        self.path, self.split = path, split
        hf_split = {"val": "validation"}.get(split, split)
        if is_export(path):
            queries, corpus, qrels = (_read_config(path, c, hf_split) for c in ("queries", "corpus", "qrels"))
            self.qrels = _qrels_dict(qrels["query-id"], qrels["corpus-id"], qrels["score"])
            embedded = "image" in queries.features
        else:
            from .io.shards import read_table_dir

            root = DataRoot(path)
            table = read_table_dir(root.table_split("queries", split))
            queries = datasets.Dataset.from_dict({
                "id": table["query_id"].to_pylist(), "text": table["masked_text"].to_pylist(),
                "entity_image_ids": [[_image_id(u) for u in urls] for urls in table["entity_image_urls"].to_pylist()],
                "language": table["language"].to_pylist(), "query_type": table["query_type"].to_pylist()})
            corpus = datasets.Dataset.from_dict({"id": read_table_dir(root.table_split("corpus", split),
                                                                       ["image_id"])["image_id"].to_pylist()})
            q = read_table_dir(root.table_split("qrels", split))
            self.qrels = _qrels_dict(*(q[c].to_pylist() for c in ("query_id", "image_id", "relevance")))
            embedded = False
            image_store = image_store or (root.images if root.images.is_dir() else None)
        self.languages = queries["language"]
        self.query_types = queries["query_type"]
        if not embedded:
            if image_store is None:
                raise ConfigError(f"{path} has image URLs, not images: pass image_store= (a folder from "
                                  "`wit-retrieval images fetch`), or export with --images embed")
            queries, corpus = _with_store_images(queries, corpus, image_store)
        self.queries = queries.select_columns(["id", "text", "image"])
        self.corpus = corpus.select_columns(["id", "image"])
        self.revision = _revision(path, split)

    def subset(self, keep) -> dict:
        """RetrievalSplitData for the queries where keep(language, query_type) holds."""
        rows = [i for i, (lang, kind) in enumerate(zip(self.languages, self.query_types)) if keep(lang, kind)]
        queries = self.queries.select(rows)
        qrels = {q: self.qrels[q] for q in queries["id"] if q in self.qrels}
        return {"queries": queries, "corpus": self.corpus, "relevant_docs": qrels, "top_ranked": None}


def _read_config(path: Path, config: str, hf_split: str):
    """One config's split of an export, read from its parquet shards.

    Not through `datasets.load_dataset`: offline, that returns the cached copy of an earlier export
    written to a folder of the same name (checked with datasets 5.2), so a re-export would go unseen.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((path / config).glob(f"{hf_split}-*.parquet"))
    if not files:
        raise InputError(f"no {config} shards for split {hf_split}", path=str(path / config))
    return datasets.Dataset(pa.concat_tables([pq.read_table(f) for f in files]))  # features from the metadata


def _image_id(url: str) -> str:
    from .ids import image_id

    return image_id(url)


def _qrels_dict(qids, dids, scores) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for q, d, s in zip(qids, dids, scores):
        out.setdefault(q, {})[d] = int(1 if s is None else s)
    return out


def _revision(path: Path, split: str) -> str:
    stamp = ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(path.rglob("*.parquet"))
                     if split in str(p) or "validation" in str(p))
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def _with_store_images(queries, corpus, image_store):
    """Cast the entity / corpus image ids to `Image()` values read from the store (missing ones refused)."""
    import datasets

    from .images import open_store

    store = image_store if hasattr(image_store, "get") else open_store(image_store)
    wanted = set(corpus["id"]) | {i for ids in queries["entity_image_ids"] for i in ids}
    missing = [i for i in wanted if i not in store]
    if missing:
        raise InputError(f"{len(missing)} image(s) of this split are not in the image store (e.g. {missing[0]}); "
                         "fetch them with `wit-retrieval images fetch`")

    def one(key):
        return {"bytes": store.get(key), "path": None}

    queries = queries.map(lambda r: {"image": [one(i) for i in r["entity_image_ids"]]},
                          features=datasets.Features({**queries.features,
                                                      "image": datasets.List(datasets.Image())}))
    corpus = corpus.map(lambda r: {"image": one(r["id"])},
                        features=datasets.Features({**corpus.features, "image": datasets.Image()}))
    return queries, corpus


def metadata(name: str, data: _SplitData, kind: str | None, codes: list[str] | None = None):
    """TaskMetadata of one MMIR task (passes TaskMetadata._validate_metadata())."""
    from mteb.abstasks.task_metadata import TaskMetadata

    from .exports.hf_card import CITATION

    table = languages()
    if codes:
        eval_langs: Any = {c: [table[c].mteb] for c in codes}
    else:
        eval_langs = sorted({table[c].mteb for c in set(data.languages) if c in table}) or ["eng-Latn"]
    what = {None: "all queries", "single": "single-entity queries", "multi": "multi-entity queries"}[kind]
    return TaskMetadata(
        name=name, description=f"MMIR (WIT) mixed-modal image retrieval, {what}"
        + (", per language" if codes else "") + ": masked Wikipedia text plus one image per masked entity.",
        reference=REFERENCE, dataset={"path": str(data.path), "revision": data.revision},
        type="Any2AnyRetrieval", category="it2i", modalities=["image", "text"], eval_splits=[data.split],
        eval_langs=eval_langs, main_score="ndcg_at_10", date=("2021-01-01", "2025-06-01"),
        domains=["Encyclopaedic"], task_subtypes=["Image Text Retrieval"], license="cc-by-sa-3.0",
        annotations_creators="derived", dialect=[], sample_creation="found", bibtex_citation=CITATION,
        prompt={"query": PROMPT})


def bare_metadata():
    """An MMIR-shaped TaskMetadata with no data behind it (to encode for `mteb:NAME` models)."""
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name="MMIRIT2IRetrieval", description="MMIR (WIT) mixed-modal image retrieval.", reference=REFERENCE,
        dataset={"path": "wit-retrieval/mmir", "revision": "local"}, type="Any2AnyRetrieval", category="it2i",
        modalities=["image", "text"], eval_splits=[SPLIT], eval_langs=["eng-Latn"], main_score="ndcg_at_10",
        prompt={"query": PROMPT})


def _task_class(name: str, data: _SplitData, kind: str | None, codes: list[str] | None = None):
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    def load_data(self, num_proc=None, **kwargs):
        if self.data_loaded:
            return
        if codes:
            self.dataset = {c: {data.split: data.subset(lambda lang, _k, c=c: lang == c)} for c in codes}
        else:
            self.dataset = {"default": {data.split: data.subset(lambda _l, k: kind is None or k == kind)}}
        self.data_loaded = True

    return type(name, (AbsTaskRetrieval,), {"metadata": metadata(name, data, kind, codes), "load_data": load_data})


def encoder(model, fusion: str | None = None, *, device: str | None = None):
    """An MTEB encoder for one of our encoders (a name as --model takes it, or an Encoder) and a fusion."""
    from .mteb_encoder import OursInMteb

    if isinstance(model, str):
        from .models import load_encoder

        model = load_encoder(model, device=device)
    return OursInMteb(model, fusion)
