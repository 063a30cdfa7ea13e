"""Text-only encoders for text-side baselines: sentence-transformers models (EmbeddingGemma, ...).

Names: `sentence-transformers:PATH[:DIM]` (alias `st:`), PATH a local model folder (no hub
access is assumed), DIM a Matryoshka prefix (e.g. 768 -> 512/256/128: truncate, re-normalise).

Text encoders index images by their texts (WIT attribution / alt text, page titles) and embed
queries with the entities' names in place of the masks, so only the `names` (and `text-only`)
query styles exist: `encode_queries` ignores entity images, and `encode_images` is an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError, require
from .encoders import ENCODERS, EncoderMetadata

TEXT_STYLES = ("names", "text-only")
# EmbeddingGemma's prompts (model card, arXiv 2509.20354); `{title}` becomes the title or "none".
GEMMA_QUERY_PROMPT = "task: search result | query: "
GEMMA_DOCUMENT_PROMPT = "title: {title} | text: "
# Files hashed whole for the revision; bigger ones by size and their first and last MiB.
_SMALL_FILE = 1 << 20


@dataclass(frozen=True)
class Prompts:
    """Prefixes for queries and documents; a `{title}` in the document prompt takes the title."""

    query: str = ""
    document: str = ""

    def document_text(self, text: str, title: str | None) -> str:
        """The document with its prompt (title 'none' when unknown, as EmbeddingGemma expects).

        Without a `{title}` slot a title is prepended to the text, so no model loses it.
        """
        if "{title}" in self.document:
            return self.document.replace("{title}", title or "none") + text
        if title:
            text = f"{title} | {text}" if text else title
        return self.document + text


def l2_normalise(matrix: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Float32 rows truncated to the first `dim` columns (Matryoshka) and scaled to unit length."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if dim is not None:
        matrix = matrix[:, :dim]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def split_dim(spec: str, name: str) -> tuple[str, int | None]:
    """'PATH_OR_MODEL[:DIM]' -> (path or model, dim); a trailing all-digit part is the dimension."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        dim = int(tail)
        if dim < 1:
            raise ConfigError(f"{name!r}: the dimension must be positive")
        return head, dim
    return spec, None


class TextEncoder:
    """What every text-only encoder shares: name-filled queries, documents, no images."""

    metadata: EncoderMetadata
    native_fusion = "names"

    def encode_documents(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> np.ndarray:
        """L2-normalised embeddings of documents (the retrieved side), with optional titles."""
        raise NotImplementedError

    def encode_query_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings of finished query texts (the query prompt or task applied)."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts embedded as documents (the side that is indexed)."""
        return self.encode_documents(texts)

    def encode_images(self, images: list) -> np.ndarray:
        """Not available: text encoders index images by their texts (see models.text_baseline)."""
        raise ConfigError(f"{self.metadata.name} is a text-only encoder: it cannot embed images; index the "
                          "images by their WIT texts instead (wit_retrieval.models.text_baseline)")

    def encode_queries(self, masked_texts: list[str], entity_images: list[list] | None = None, *,
                       fusion: str | None = None, names: list[list[str | None]] | None = None) -> np.ndarray:
        """Queries as text: each [MASK_i] replaced by entity i's name (`names`), or a neutral word
        (`text-only`). Entity images are ignored: a text encoder cannot see them."""
        style = fusion or self.native_fusion
        if style not in TEXT_STYLES:
            raise ConfigError(f"{self.metadata.name} is a text-only encoder: query style {style!r} needs images; "
                              f"use one of {', '.join(TEXT_STYLES)}")
        if style == "names" and names is None:
            raise ConfigError("the 'names' query style needs the entities' names (names=[[name, ...], ...])")
        from .fusion import fill_masks

        texts = [fill_masks(t, names[i] if style == "names" else None) for i, t in enumerate(masked_texts)]
        return self.encode_query_texts(texts)

    def encode_query_embeddings(self, masked_texts: Sequence[str], entity_embeddings=None, *,
                                fusion: str | None = None, names=None, batch_size: int = 0) -> np.ndarray:
        """As encode_queries (precomputed entity embeddings are ignored, like entity images)."""
        return self.encode_queries(list(masked_texts), None, fusion=fusion, names=names)


def folder_revision(folder: Path) -> str:
    """A fingerprint of a model folder: file names, sizes, small files whole, big files' ends."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as handle:
            if size <= _SMALL_FILE:
                digest.update(handle.read())
            else:  # reading gigabytes of weights on every load is too slow; the ends change with them
                digest.update(handle.read(_SMALL_FILE))
                handle.seek(size - _SMALL_FILE)
                digest.update(handle.read(_SMALL_FILE))
    return "folder-sha256:" + digest.hexdigest()[:16]


def default_prompts(folder: Path, model_prompts: dict[str, str] | None) -> Prompts:
    """EmbeddingGemma's prompts when the name says so; else the model's own query/document prompts."""
    if "embeddinggemma" in str(folder).lower().replace("-", "").replace("_", ""):
        return Prompts(GEMMA_QUERY_PROMPT, GEMMA_DOCUMENT_PROMPT)
    model_prompts = model_prompts or {}
    return Prompts(model_prompts.get("query", ""), model_prompts.get("document", ""))


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model from a local folder behind the Encoder protocol."""

    def __init__(self, path: str | Path, *, dim: int | None = None, prompts: Prompts | None = None,
                 name: str | None = None, device: str | None = None, batch_size: int = 64,
                 training_datasets: Sequence[str] = ()):
        folder = Path(path).expanduser()
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise InputError("not a sentence-transformers model folder (no modules.json or config.json); "
                             "download the model on a machine with network and pass its folder", path=str(folder))
        st = require("sentence_transformers", "text")
        # local_files_only: never try the hub, even when HF_HUB_OFFLINE is unset
        self.model = st.SentenceTransformer(str(folder), device=device or _default_device(),
                                            local_files_only=True)
        native = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                     else self.model.get_sentence_embedding_dimension())
        if dim is not None and dim > native:
            raise ConfigError(f"{folder.name} gives {native} dimensions; cannot truncate to {dim}")
        self.dim = dim if dim is not None and dim < native else None
        self.prompts = prompts if prompts is not None else default_prompts(folder, self.model.prompts)
        self.batch_size = batch_size
        self.metadata = EncoderMetadata(
            name=name or f"sentence-transformers:{folder}", revision=folder_revision(folder), dim=dim or native,
            modalities=("text",), training_datasets=tuple(training_datasets),
            preprocessing=f"query prompt {self.prompts.query!r}; document prompt {self.prompts.document!r}"
                          + (f"; MRL {native}->{dim}" if self.dim else ""),
            fusions=TEXT_STYLES, native_fusion="names")

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.metadata.dim), np.float32)
        raw = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=False, show_progress_bar=False)
        return l2_normalise(raw, self.dim)

    def encode_documents(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> np.ndarray:
        """Documents with the document prompt (its `{title}` filled per document)."""
        titles = titles if titles is not None else [None] * len(texts)
        return self._encode([self.prompts.document_text(t, title) for t, title in zip(texts, titles)])

    def encode_query_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Query texts with the query prompt."""
        return self._encode([self.prompts.query + t for t in texts])


def _default_device() -> str:
    from .encoders import default_device

    return default_device()


@ENCODERS.register("sentence-transformers")
def _sentence_transformers(spec: str, *, name: str, device: str | None = None) -> SentenceTransformerEncoder:
    """sentence-transformers:PATH[:DIM]."""
    path, dim = split_dim(spec, name)
    return SentenceTransformerEncoder(path, dim=dim, name=name, device=device)


ENCODERS.register("st")(_sentence_transformers)
