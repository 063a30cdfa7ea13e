"""Checkpoint folders: build, save and load Retrievers (open_clip model + fusion heads).

A checkpoint folder holds `model.safetensors` (the whole Retriever state dict),
`open_clip_config.json` (model_cfg + preprocess_cfg, so open_clip rebuilds the architecture and
its transforms) and `retriever.json` (heads, native fusion, training data, step, weights hash).
Folders without `retriever.json` are plain open_clip folders and load through open_clip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..io.shards import atomic_path, write_json_atomic

WEIGHTS = "model.safetensors"
SPEC = "retriever.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"
FORMAT = "wit-retrieval/retriever"


@dataclasses.dataclass
class Built:
    """A freshly built or loaded Retriever with what is needed to encode and to save it."""

    model: Any            # Retriever
    preprocess: Any
    tokenizer: Any
    model_cfg: dict
    preprocess_cfg: dict
    revision: str
    spec: dict            # retriever.json contents (heads, fusion, training_datasets, ...)


def build_retriever(base: str, heads: dict[str, dict] | None = None, *, seed: int = 0) -> Built:
    """A Retriever from `base` (open_clip:ARCH:TAG or local-dir:PATH) with any missing heads added."""
    import torch

    from .retriever import Retriever, build_heads

    scheme, _, rest = base.partition(":")
    if scheme == "local-dir":
        built = _load_folder(Path(rest))
    elif scheme == "open_clip":
        from .encoders import create_open_clip, embed_dim_of

        arch, _, tag = rest.partition(":")
        model, preprocess, tokenizer, revision = create_open_clip(arch, tag or "random", seed=seed)
        import open_clip

        built = Built(Retriever(model, embed_dim_of(arch)), preprocess, tokenizer,
                      open_clip.get_model_config(arch), dict(model.visual.preprocess_cfg), revision,
                      {"base": base, "heads": {}, "training_datasets": []})
    else:
        raise ConfigError(f"cannot train from {base!r}: use open_clip:ARCH:TAG or local-dir:PATH")
    missing = {k: v for k, v in (heads or {}).items() if k not in built.model.heads}
    if missing:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            for name, head in build_heads(built.model.clip, built.model.embed_dim, missing).items():
                built.model.heads[name] = head
        built.spec = {**built.spec, "heads": {**built.spec.get("heads", {}), **missing}}
    return built


def save_checkpoint(directory: Path, built: Built, **spec_updates) -> Path:
    """Write model.safetensors, open_clip_config.json and retriever.json into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in built.model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    digest = _sha256(directory / WEIGHTS)
    from .qat import write_export

    quant = write_export(built.model, directory)  # QAT models: the quantized export beside the float weights
    if quant:
        spec_updates = {**spec_updates, "quant": quant}
    write_json_atomic(directory / OPEN_CLIP_CONFIG,
                      {"model_cfg": built.model_cfg, "preprocess_cfg": _jsonable(built.preprocess_cfg)})
    spec = {**built.spec, **spec_updates, "format": FORMAT, "version": 1, "weights_sha256": digest,
            "embed_dim": built.model.embed_dim}
    write_json_atomic(directory / SPEC, spec)
    built.spec = spec
    return directory


def load_local_dir(directory: Path | str, *, name: str, device: str | None = None):
    """An OpenClipEncoder from a checkpoint folder (ours or open_clip's), local or on an object store
    (then read from this node's cached copy: train_uri.local_checkpoint)."""
    from .encoders import OpenClipEncoder
    from .train_uri import local_checkpoint

    directory = local_checkpoint(directory)
    built = _load_folder(Path(directory))
    encoder = OpenClipEncoder(built.model, built.preprocess, built.tokenizer, name=name, revision=built.revision,
                              training_datasets=built.spec.get("training_datasets", ()),
                              native_fusion=built.spec.get("fusion"), device=device)
    encoder.checkpoint, encoder.spec = Path(directory), built.spec  # a QAT export is loaded from here
    return encoder


def _load_folder(directory: Path) -> Built:
    if not directory.is_dir():
        raise InputError("checkpoint folder not found", path=str(directory))
    if not (directory / OPEN_CLIP_CONFIG).is_file():
        raise InputError(f"not a checkpoint folder: {OPEN_CLIP_CONFIG} is missing (a folder needs the "
                         "open_clip config json beside its weights)", path=str(directory))
    if (directory / SPEC).is_file():
        return _load_ours(directory)
    return _load_open_clip_folder(directory)


def _load_ours(directory: Path) -> Built:
    from safetensors.torch import load_file

    from .encoders import _tokenizer, note_weights, quiet_create
    from .retriever import Retriever, build_heads

    spec = json.loads((directory / SPEC).read_text(encoding="utf-8"))
    if spec.get("format") != FORMAT:
        raise InputError(f"{SPEC} is not a {FORMAT} spec", path=str(directory / SPEC))
    config = json.loads((directory / OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))
    model, _, preprocess = quiet_create(f"local-dir:{directory}", load_weights=False)
    retriever = Retriever(model, int(spec.get("embed_dim") or config["model_cfg"]["embed_dim"]))
    for head_name, head in build_heads(model, retriever.embed_dim, spec.get("heads", {})).items():
        retriever.heads[head_name] = head
    state = load_file(str(directory / WEIGHTS))
    result = retriever.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(f"weights do not match the config: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}", path=str(directory / WEIGHTS))
    revision = f"step{spec.get('step', 0)}-{spec.get('weights_sha256', '')[:12]}"
    note_weights(f"local-dir:{directory}: trained weights loaded from the checkpoint (step {spec.get('step', 0)})")
    return Built(retriever, preprocess, _tokenizer(f"local-dir:{directory}"), config["model_cfg"],
                 config.get("preprocess_cfg", {}), revision, spec)


def _load_open_clip_folder(directory: Path) -> Built:
    from .encoders import _tokenizer, note_weights, quiet_create
    from .retriever import Retriever

    config = json.loads((directory / OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))
    try:
        model, _, preprocess = quiet_create(f"local-dir:{directory}")
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"open_clip could not load this folder: {exc}", path=str(directory)) from None
    weights = sorted(p.name for p in directory.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    revision = f"local:{weights[0] if weights else 'no-weights'}"
    note_weights(f"local-dir:{directory}: weights loaded from {weights[0]}" if weights else
                 f"local-dir:{directory}: no weights file in the folder, an untrained model (random weights)")
    return Built(Retriever(model, int(config["model_cfg"]["embed_dim"])), preprocess,
                 _tokenizer(f"local-dir:{directory}"), config["model_cfg"], config.get("preprocess_cfg", {}),
                 revision, {"base": f"local-dir:{directory}", "heads": {}, "training_datasets": []})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
