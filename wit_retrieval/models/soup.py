"""Model soups: the weights of several checkpoints of one architecture, averaged (`wit-retrieval soup`).

Checkpoints fine-tuned from one base (different seeds, data mixtures or steps) often average
into a model better than each (Wortsman et al. 2022; EmbeddingGemma and Gemini Embedding
merge their final checkpoints this way). Floating tensors are averaged tensor by tensor, so
memory holds the result plus one tensor per ingredient; integer buffers (step counters) are
taken from the first checkpoint. The soup is a checkpoint folder like its ingredients, written
to a temporary sibling and renamed into place, with its ingredients listed in retriever.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io.shards import write_json_atomic
from .checkpoint import FORMAT, OPEN_CLIP_CONFIG, SPEC, WEIGHTS, _sha256

TRAINER_STATE = "trainer_state.pt"  # optimizer state of a training checkpoint: meaningless for a soup


@dataclass(frozen=True)
class SoupConfig:
    """Which checkpoint folders to average, with which weights (uniform when None), into where."""

    checkpoints: tuple[str, ...]
    out: str
    weights: tuple[float, ...] | None = None
    overwrite: bool = False

    def __post_init__(self):
        if not self.checkpoints:
            raise ConfigError("a soup needs at least one checkpoint folder")
        if self.weights is not None:
            if len(self.weights) != len(self.checkpoints):
                raise ConfigError(f"{len(self.weights)} weights for {len(self.checkpoints)} checkpoints")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ConfigError("soup weights must be non-negative with a positive sum")

    def normalised_weights(self) -> list[float]:
        """Weights summing to one."""
        raw = self.weights or (1.0,) * len(self.checkpoints)
        return [w / sum(raw) for w in raw]


def read_spec(folder: Path) -> tuple[dict, dict]:
    """(retriever.json, open_clip_config.json) of a checkpoint folder, with clear errors."""
    if not folder.is_dir():
        raise InputError("checkpoint folder not found", path=str(folder))
    if not (folder / SPEC).is_file():
        hint = f"; did you mean {folder / 'model'}?" if (folder / "model" / SPEC).is_file() else ""
        raise InputError(f"not a wit-retrieval checkpoint folder ({SPEC} is missing){hint}", path=str(folder))
    for name in (WEIGHTS, OPEN_CLIP_CONFIG):
        if not (folder / name).is_file():
            raise InputError(f"{name} is missing from the checkpoint folder", path=str(folder))
    spec = json.loads((folder / SPEC).read_text(encoding="utf-8"))
    if spec.get("format") != FORMAT:
        raise InputError(f"{SPEC} is not a {FORMAT} spec", path=str(folder / SPEC))
    return spec, json.loads((folder / OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))


def first_difference(a, b, where: str = "") -> str | None:
    """The dotted path of the first place two JSON values differ, or None when equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = first_difference(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{where}.{key}".strip("."))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{where}[{i}]"))), None)
    return None if a == b else f"{where or '<root>'} ({a!r} != {b!r})"


def check_compatible(folders: Sequence[Path]) -> list[dict]:
    """Specs of the folders; ConfigError naming the first differing config entry or tensor key."""
    from safetensors import safe_open

    specs, first_config, first_tensors = [], None, None
    for folder in folders:
        spec, config = read_spec(folder)
        arch = {"model_cfg": config.get("model_cfg"), "heads": spec.get("heads", {}), "embed_dim": spec.get("embed_dim")}
        with safe_open(str(folder / WEIGHTS), framework="pt") as handle:
            tensors = {k: (tuple(handle.get_slice(k).get_shape()), handle.get_slice(k).get_dtype())
                       for k in handle.keys()}  # noqa: SIM118 - safe_open is not a mapping
        if first_config is None:
            first_config, first_tensors = arch, tensors
        else:
            _compare(folders[0], folder, first_config, arch, first_tensors, tensors)
        specs.append(spec)
    return specs


def _compare(first: Path, other: Path, arch_a: dict, arch_b: dict, tensors_a: dict, tensors_b: dict) -> None:
    difference = first_difference(arch_a, arch_b)
    if difference:
        raise ConfigError(f"{other} has another architecture than {first}: {difference}")
    for key in sorted(set(tensors_a) | set(tensors_b)):
        if key not in tensors_b or key not in tensors_a:
            holder, lacking = (first, other) if key in tensors_a else (other, first)
            raise ConfigError(f"tensor {key!r} is in {holder} but not in {lacking}; soups need identical keys")
        if tensors_a[key] != tensors_b[key]:
            raise ConfigError(f"tensor {key!r} differs: {tensors_a[key]} in {first}, {tensors_b[key]} in {other}")


def average_state(folders: Sequence[Path], weights: Sequence[float]) -> dict:
    """The weighted mean of each floating tensor (float32 or better accumulation); others from the first."""
    import torch
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(safe_open(str(f / WEIGHTS), framework="pt")) for f in folders]
        state = {}
        for key in handles[0].keys():  # noqa: SIM118 - safe_open is not a mapping
            first = handles[0].get_tensor(key)
            if not first.is_floating_point():
                state[key] = first
                continue
            accumulate = torch.float64 if first.dtype == torch.float64 else torch.float32
            total = first.to(accumulate) * weights[0]
            for handle, weight in zip(handles[1:], weights[1:]):
                total += handle.get_tensor(key).to(accumulate) * weight
            state[key] = total.to(first.dtype).contiguous()
    return state


def soup(config: SoupConfig) -> dict:
    """Average the checkpoints into `config.out`; returns the soup's retriever.json contents."""
    from safetensors.torch import save_file

    folders = [Path(c) for c in config.checkpoints]
    out = Path(config.out)
    if any(out.resolve() == f.resolve() for f in folders):
        raise ConfigError(f"--out {out} is one of the ingredients; write the soup to a new folder")
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise ConfigError(f"{out} exists and is not empty; pass --force to replace it")
    specs = check_compatible(folders)
    weights = config.normalised_weights()
    state = average_state(folders, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folders[0], tmp, ignore=shutil.ignore_patterns(WEIGHTS, SPEC, TRAINER_STATE))
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
    spec = _soup_spec(folders, specs, weights, _sha256(tmp / WEIGHTS), uniform=config.weights is None)
    write_json_atomic(tmp / SPEC, spec)
    _replace_folder(tmp, out)
    return spec


def _soup_spec(folders: Sequence[Path], specs: list[dict], weights: list[float], digest: str, *, uniform: bool) -> dict:
    datasets: list[str] = []
    for spec in specs:
        datasets.extend(d for d in spec.get("training_datasets", []) if d not in datasets)
    ingredients = [{"path": str(f), "weights_sha256": s.get("weights_sha256"), "step": s.get("step"), "weight": w}
                   for f, s, w in zip(folders, specs, weights)]
    steps = [s.get("step") for s in specs if isinstance(s.get("step"), int)]
    return {**specs[0], "weights_sha256": digest, "training_datasets": datasets, "step": max(steps, default=0),
            "soup": {"method": "uniform" if uniform else "weighted", "ingredients": ingredients}}


def _replace_folder(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an old `out` is moved aside first and removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
