"""Encoders: the `Encoder` protocol, the ENCODERS registry, and open_clip encoders.

Names: `open_clip:ARCH:TAG` (TAG: a pretrained tag, a weights file, or `random`) and
`local-dir:PATH` (our checkpoints, or open_clip folders with `open_clip_config.json` + weights).
The registry is keyed by the scheme before the first colon, so other encoder families
(sentence-transformers, API clients) plug in with `@ENCODERS.register("scheme")`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..registry import Registry

CONFIG_DIR = Path(__file__).parent / "configs"
TEXT_BATCH = 256


@dataclass(frozen=True)
class EncoderMetadata:
    """What results need to say about a model (MTEB-style), including whether it is zero-shot."""

    name: str
    revision: str
    dim: int
    modalities: tuple[str, ...]
    training_datasets: tuple[str, ...] = ()
    preprocessing: str = ""
    fusions: tuple[str, ...] = ()
    native_fusion: str | None = None
    quantization: str = ""           # '' (float weights) or SCHEME-SOURCE, e.g. int8-ptq, int4-qat (models/quant.py)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def zero_shot_on(self, dataset: str) -> bool:
        """True when `dataset` (e.g. 'mmir') is not among the training data."""
        return not any(dataset.lower() in d.lower() for d in self.training_datasets)


@runtime_checkable
class Encoder(Protocol):
    """Anything that maps images, texts and MMIR queries to L2-normalised float32 vectors."""

    metadata: EncoderMetadata

    def encode_images(self, images: list) -> np.ndarray: ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...

    def encode_queries(self, masked_texts: list[str], entity_images: list[list]) -> np.ndarray: ...


ENCODERS: Registry[Encoder] = Registry("encoder scheme")


def load_encoder(name: str, *, device: str | None = None) -> Encoder:
    """Build the encoder `name` ('open_clip:ARCH:TAG', 'local-dir:PATH', ...)."""
    scheme, sep, rest = name.partition(":")
    if not sep or not rest:
        raise ConfigError(f"encoder name {name!r} needs a scheme: e.g. open_clip:ViT-B-32:laion2b_s34b_b79k "
                          f"or local-dir:PATH (schemes: {', '.join(ENCODERS.names())})")
    return ENCODERS.get(scheme)(rest, name=name, device=device)


def default_device() -> str:
    """cuda when available, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register_tiny_configs() -> None:
    """Make the toolkit's own small open_clip configs (wit-tiny-*) known to open_clip."""
    import open_clip

    if "wit-tiny-vit" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def check_arch(arch: str) -> None:
    """Raise ConfigError with suggestions when open_clip does not know `arch`."""
    import open_clip

    register_tiny_configs()
    known = open_clip.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"open_clip has no model {arch!r}.{hint} See `wit-retrieval models list`, "
                          "or add a config json with open_clip.add_model_config")


class _DropRandomInitWarning:
    """A logging filter for open_clip's 'No pretrained weights loaded ... initialized randomly'.

    open_clip logs it whenever its factory itself loaded no weights, also when we load ours right
    after (a checkpoint) or chose random weights on purpose: a user then reads that a trained model
    is random. We drop that one record and say what is true instead (`note_weights`).
    """

    def filter(self, record) -> bool:
        return "No pretrained weights loaded for model" not in record.getMessage()


def quiet_create(*args, **kwargs):
    """open_clip.create_model_and_transforms without its misleading random-init warning."""
    import logging

    import open_clip

    root, drop = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        return open_clip.create_model_and_transforms(*args, **kwargs)
    finally:
        root.removeFilter(drop)


_NOTED: set[str] = set()


def note_weights(message: str) -> None:
    """Say once per process where a model's weights came from (on stderr, beside the progress bars).

    Under torchrun or srun a rank other than 0 says so, as its warnings do ("[rank N] ...").
    """
    import sys

    from ..distributed import world_from_env
    from ..errors import ConfigError

    if message in _NOTED:
        return
    _NOTED.add(message)
    try:
        world = world_from_env()
    except ConfigError:  # a half-set launcher environment: the launcher will say so itself
        world = None
    prefix = f"[rank {world.rank}] " if world is not None and world.distributed and not world.is_main else ""
    print(prefix + message, file=sys.stderr)


def create_open_clip(arch: str, tag: str, *, seed: int = 0):
    """(model, preprocess_val, tokenizer, revision) for open_clip ARCH with weights TAG."""
    import open_clip
    import torch

    check_arch(arch)
    if tag == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random weights are reproducible and so get a revision
            model, _, preprocess = quiet_create(arch)
        revision = f"random-seed{seed}"
        note_weights(f"open_clip:{arch}:random: random weights (seed {seed}), an untrained model")
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags and not Path(tag).is_file():
            raise ConfigError(f"open_clip {arch} has no pretrained tag {tag!r} and no such file; "
                              f"tags: {', '.join(tags) or 'none'}, or use 'random'")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag)
        except Exception as exc:  # open_clip raises RuntimeError/OSError when the hub cannot be reached
            raise ConfigError(_missing_weights_hint(arch, tag, exc)) from None
        revision = tag if not Path(tag).is_file() else f"file:{Path(tag).name}:{Path(tag).stat().st_size}"
    return model, preprocess, _tokenizer(arch), revision


def _tokenizer(model_name: str):
    import open_clip

    try:
        return open_clip.get_tokenizer(model_name)
    except Exception as exc:  # HF tokenizers (XLM-R) need the hub cache
        raise ConfigError(f"the tokenizer of {model_name} is not in the local Hugging Face cache "
                          f"({type(exc).__name__}); run once with network access to cache it") from None


def _missing_weights_hint(arch: str, tag: str, exc: Exception) -> str:
    return (f"pretrained weights open_clip:{arch}:{tag} are not in the local cache and cannot be downloaded "
            f"here ({type(exc).__name__}). On a machine with network run: python -c \"import open_clip; "
            f"open_clip.create_model_and_transforms('{arch}', pretrained='{tag}')\" and copy ~/.cache/huggingface, "
            f"or pass the weights file: open_clip:{arch}:/path/to/open_clip_pytorch_model.bin")


@ENCODERS.register("open_clip")
def _open_clip_encoder(spec: str, *, name: str, device: str | None = None) -> Encoder:
    """open_clip:ARCH:TAG."""
    from .retriever import Retriever

    arch, sep, tag = spec.partition(":")
    if not sep or not tag:
        raise ConfigError(f"{name!r}: name the weights as open_clip:ARCH:TAG (a pretrained tag, a weights "
                          "file, or 'random')")
    model, preprocess, tokenizer, revision = create_open_clip(arch, tag)
    retriever = Retriever(model, embed_dim_of(arch))
    datasets = (tag.split("_")[0],) if tag != "random" else ()
    return OpenClipEncoder(retriever, preprocess, tokenizer, name=name, revision=revision,
                           training_datasets=datasets, device=device)


@ENCODERS.register("local-dir")
def _local_dir_encoder(spec: str, *, name: str, device: str | None = None) -> Encoder:
    """local-dir:PATH: our checkpoint folder, or an open_clip folder (open_clip_config.json + weights)."""
    from ..io import fs
    from .checkpoint import load_local_dir

    # a URI (s3://, gs://) stays a string; its credentials never reach the encoder's name (results carry it)
    return load_local_dir(spec if fs.is_remote(spec) else Path(spec), name=name.replace(spec, fs.redact(spec)),
                          device=device)


def embed_dim_of(model_name: str) -> int:
    """The joint embedding width from open_clip's config of `model_name`."""
    import open_clip

    register_tiny_configs()
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ConfigError(f"open_clip has no config for {model_name!r}")
    return int(cfg["embed_dim"])


class OpenClipEncoder:
    """An open_clip model (plus fusion heads) behind the Encoder protocol."""

    def __init__(self, model, preprocess, tokenizer, *, name: str, revision: str,
                 training_datasets: Sequence[str] = (), native_fusion: str | None = None,
                 device: str | None = None):
        from .fusion import FUSIONS, get_fusion

        self.device = device or default_device()
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        fusions = tuple(f for f in FUSIONS.names() if get_fusion(f).head in (None, *model.heads.keys()))
        self.native_fusion = native_fusion or ("inject" if "inject" in model.heads else "sum")
        self.metadata = EncoderMetadata(
            name=name, revision=revision, dim=model.embed_dim, modalities=("image", "text", "image+text"),
            training_datasets=tuple(training_datasets), preprocessing=preprocessing_key(preprocess),
            fusions=fusions, native_fusion=self.native_fusion,
        )

    def _context(self):
        """inference_mode, plus bf16 autocast on GPUs."""
        import contextlib

        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.device.startswith("cuda"):
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        return stack

    def pixels(self, images: Sequence) -> Any:
        """Preprocess PIL images into one tensor batch (open_clip's own transforms)."""
        import torch

        return torch.stack([self.preprocess(im) for im in images])

    def encode_pixels(self, pixels) -> np.ndarray:
        """Embeddings of a preprocessed batch."""
        if self.device.startswith("cuda") and not pixels.is_cuda:
            # pinned host memory: the copy runs asynchronously and the next batch decodes meanwhile
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        with self._context():
            return self.model.image_features(pixels.to(self.device)).float().cpu().numpy()

    def encode_images(self, images: list) -> np.ndarray:
        """L2-normalised image embeddings [N, D]."""
        if not images:
            return np.zeros((0, self.metadata.dim), np.float32)
        return self.encode_pixels(self.pixels(images))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings [N, D]."""
        out = [np.zeros((0, self.metadata.dim), np.float32)]
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = self.tokenizer(list(texts[start: start + TEXT_BATCH])).to(self.device)
            with self._context():
                out.append(self.model.text_features(tokens).float().cpu().numpy())
        return np.concatenate(out)

    def encode_queries(self, masked_texts: list[str], entity_images: list[list], *, fusion: str | None = None,
                       names: list[list[str | None]] | None = None) -> np.ndarray:
        """Query embeddings from masked texts and one PIL image per mask (None for a missing one)."""
        embeddings = []
        for images in entity_images:
            present = [im for im in images if im is not None]
            emb = self.encode_images(present)
            full = np.full((len(images), self.metadata.dim), np.nan, np.float32)
            full[[i for i, im in enumerate(images) if im is not None]] = emb
            embeddings.append(full)
        return self.encode_query_embeddings(masked_texts, embeddings, fusion=fusion, names=names)

    def encode_query_embeddings(self, masked_texts: Sequence[str], entity_embeddings: Sequence[np.ndarray | None],
                                *, fusion: str | None = None, names=None, batch_size: int = TEXT_BATCH) -> np.ndarray:
        """Query embeddings from masked texts and precomputed entity embeddings (NaN rows = missing)."""
        from .fusion import get_fusion, make_query_batch, pad_entities

        chosen = get_fusion(fusion or self.native_fusion)
        if chosen.head is not None:
            self.model.head(chosen.head)  # fail early with a clear message
        out = [np.zeros((0, self.metadata.dim), np.float32)]
        for start in range(0, len(masked_texts), batch_size):
            stop = start + batch_size
            entity, valid = pad_entities(list(entity_embeddings[start:stop]), self.metadata.dim)
            batch = make_query_batch(chosen, self.tokenizer, masked_texts[start:stop], entity, valid,
                                     names[start:stop] if names is not None else None)
            with self._context():
                out.append(chosen.encode(self.model, batch.to(self.device)).float().cpu().numpy())
        return np.concatenate(out)


def preprocessing_key(preprocess) -> str:
    """A stable one-line description of open_clip's transform (part of the embedding cache key)."""
    # Saved configs come back with lists where open_clip built tuples; the key must not change.
    return " ".join(repr(preprocess).split()).replace("[", "(").replace("]", ")")
