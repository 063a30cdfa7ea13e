"""`mteb:NAME`: a model from MTEB's registry (one that takes image+text queries) evaluated through our scorer.

MTEB's image+text models embed one (text, image) pair per query. A multi-entity query is fused as
documented (fusion `pair-mean`, the default): each (masked text, entity image i) pair is embedded as one
query, and the query is the mean of its pairs' L2-normalised embeddings, normalised again. Fusion
`list` hands the model all entity images of a query as one list (MTEB's `List(Image())` batches); a
model that cannot take several images per query is refused with a one-line error. Models whose
modalities lack image or text are refused when loaded. Documents (corpus images) go through
the model's document side; ranking, the run file and the scores are ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from .encoders import ENCODERS, EncoderMetadata
from .text_encoders import l2_normalise as _l2

MTEB_FUSIONS = ("pair-mean", "list")


@ENCODERS.register("mteb")
def _mteb_encoder(spec: str, *, name: str, device: str | None = None):
    """mteb:NAME (e.g. mteb:openai/clip-vit-base-patch32), loaded through mteb.get_model (local HF cache)."""
    return MtebModelEncoder(spec, name=name, device=device)


class MtebModelEncoder:
    """An MTEB model behind our evaluate(): it ranks by itself (`rank`), with our index and scorer."""

    native_fusion = "pair-mean"

    def __init__(self, model_name: str, *, name: str, device: str | None = None):
        import mteb

        try:
            meta = mteb.get_model_meta(model_name)
        except Exception as exc:  # mteb raises KeyError/ValueError with its own suggestions
            raise ConfigError(f"{name!r}: MTEB has no model {model_name!r} ({str(exc).splitlines()[0][:160]})") from None
        modalities = set(meta.modalities or ())
        if not {"image", "text"} <= modalities:
            raise ConfigError(f"{name!r} cannot take image+text queries (its modalities: "
                              f"{', '.join(sorted(modalities)) or 'none'}); MMIR needs a model with image and text")
        try:
            self.model = meta.load_model(device=device) if device else meta.load_model()
        except OSError as exc:
            raise ConfigError(f"{name!r}: the weights are not in the local Hugging Face cache and cannot be "
                              f"downloaded here ({type(exc).__name__}); run once with network access") from None
        self.metadata = EncoderMetadata(
            name=name, revision=str(meta.revision), dim=int(meta.embed_dim or 0), modalities=("image", "text",
                                                                                            "image+text"),
            training_datasets=tuple(meta.training_datasets or ()), preprocessing="mteb", fusions=MTEB_FUSIONS,
            native_fusion=self.native_fusion)

    def _encode(self, rows: dict, prompt: str, batch_size: int) -> np.ndarray:
        import datasets
        from mteb._create_dataloaders import create_dataloader
        from mteb.types import PromptType

        from ..mteb import bare_metadata

        image = datasets.List(datasets.Image()) if rows["image"] and isinstance(rows["image"][0], list) \
            else datasets.Image()
        feats = {"id": datasets.Value("string"), "image": image}
        if "text" in rows:
            feats["text"] = datasets.Value("string")
        dataset = datasets.Dataset.from_dict(rows, features=datasets.Features(feats))
        metadata = bare_metadata()
        kind = PromptType.query if prompt == "query" else PromptType.document
        loader = create_dataloader(dataset, task_metadata=metadata, prompt_type=kind, batch_size=batch_size)
        out = self.model.encode(loader, task_metadata=metadata, hf_split="test", hf_subset="default",
                                prompt_type=kind, batch_size=batch_size, show_progress_bar=False)
        return _l2(np.asarray(out.float() if hasattr(out, "float") else out))

    def encode_queries_from_store(self, queries: Sequence[dict], store, fusion: str, batch_size: int) -> np.ndarray:
        """One embedding per query from its masked text and its entity images (fused per `fusion`)."""
        from .train_data import entity_image_ids

        if fusion not in MTEB_FUSIONS:
            raise ConfigError(f"fusion {fusion!r} is not for mteb models; use one of {', '.join(MTEB_FUSIONS)}")
        ids = [[i for i in entity_image_ids(q) if i is not None and i in store] for q in queries]
        if any(not i for i in ids):
            raise ConfigError("a query has none of its entity images in the image store; fetch them first")
        if fusion == "list":
            rows = {"id": [q["query_id"] for q in queries], "text": [q["masked_text"] for q in queries],
                    "image": [[{"bytes": store.get(i), "path": None} for i in row] for row in ids]}
            try:
                return self._encode(rows, "query", batch_size)
            except Exception as exc:  # CLIP-style processors fail on nested image lists
                raise ConfigError(f"{self.metadata.name} cannot take several images per query "
                                  f"({type(exc).__name__}); use --fusion pair-mean") from None
        owner = [n for n, row in enumerate(ids) for _ in row]
        rows = {"id": [f"{queries[n]['query_id']}#{k}" for n, row in enumerate(ids) for k in range(len(row))],
                "text": [queries[n]["masked_text"] for n in owner],
                "image": [{"bytes": store.get(i), "path": None} for row in ids for i in row]}
        pairs = self._encode(rows, "query", batch_size)
        fused = np.zeros((len(queries), pairs.shape[1]), np.float32)
        np.add.at(fused, np.asarray(owner), pairs)
        return _l2(fused)

    def rank(self, queries: Sequence[dict], corpus_ids: Sequence[str], store, *, fusion: str, k: int,
             index: str = "exact", batch_size: int = 64):
        """(run, counts) as evaluate.rank_queries gives them."""
        from ..index import IndexConfig, build_index

        found = [i for i in corpus_ids if i in store]
        if not found:
            raise ConfigError("none of the corpus images is in the image store; fetch the images first")
        corpus = self._encode({"id": found, "image": [{"bytes": store.get(i), "path": None} for i in found]},
                              "document", batch_size)
        query_emb = self.encode_queries_from_store(queries, store, fusion, batch_size)
        built = build_index(corpus, found, IndexConfig(kind=index))
        scores, ids = built.search(np.ascontiguousarray(query_emb), min(k, len(found)))
        run = {q["query_id"]: [(d, float(s)) for d, s in zip(r_ids, r_scores)]
               for q, r_ids, r_scores in zip(queries, ids, scores)}
        counts = {"queries": len(queries), "corpus": len(corpus_ids), "corpus_embedded": len(found),
                  "corpus_missing": len(corpus_ids) - len(found), "entity_images_missing": 0}
        return run, counts
