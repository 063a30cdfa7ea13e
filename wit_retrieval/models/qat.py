"""Quantization-aware training: fake-quantized weights with a straight-through estimator (the [quant] section).

`attach_qat` is a model transformation, agnostic of the training loop: every weight `quant.find_targets`
selects gets a torch parametrization that rounds it to the int4/int8 grid in the forward pass (per output
channel, symmetric, as post-training quantization does) and passes gradients straight through to the float
weight. The optimizer keeps updating the float weights; a step hook on the optimizer switches the rounding
on at `start_step`, so a single-process loop and a DDP loop (same Parameter objects) need nothing more.
The model's state dict keeps the plain float keys (`...weight`, not `...parametrizations.weight.original`),
so checkpoints, resume and `load_state_dict` work unchanged; `save_checkpoint` adds the quantized export
(`quantized-int4.safetensors`, the state dict of `quant.quantize_model` of the float weights) and a
`quant` entry in retriever.json, and evaluating the checkpoint uses the export unless told otherwise.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from .quant import GROUPS, check_scheme, export_bytes, fake_quantize, find_targets, quantize_model

EXPORT = "quantized-{scheme}.safetensors"


class FakeQuant(nn.Module):
    """A parametrization: the weight on the int grid (straight-through gradient) once `state['on']`."""

    def __init__(self, bits: int, axis: int | None, state: dict):
        super().__init__()
        self.bits, self.axis, self.state = bits, axis, state

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.bits, self.axis) if self.state["on"] else weight


def attach_qat(model: nn.Module, quant, optimizer=None, *, step: int = 0, spec: dict | None = None) -> dict | None:
    """Fake-quantize `model`'s weights as [quant] says (bits 0: only check that nothing asks for QAT).

    Returns the shared state ({'on', 'step', ...}) or None when QAT is off."""
    base_quant = (spec or {}).get("quant")
    if not quant.bits:
        if base_quant:
            raise ConfigError(f"{(spec or {}).get('base', 'the base model')} is a quantization-aware "
                              f"{base_quant['scheme']} checkpoint but this config has no [quant] section; add "
                              f"[quant] bits = {base_quant['bits']} (or start from its float base)")
        return None
    if quant.bits not in (4, 8):
        raise ConfigError(f"[quant] bits must be 4 or 8, got {quant.bits}")
    if quant.start_step < 0:
        raise ConfigError(f"[quant] start_step must be >= 0, got {quant.start_step}")
    state = {"on": step >= quant.start_step, "step": step, "start_step": quant.start_step,
             "scheme": f"int{quant.bits}", "bits": quant.bits, "per_channel": quant.per_channel,
             "modules": list(quant.modules)}
    targets = find_targets(model, tuple(quant.modules))
    for target in targets:
        axis = target.axis if quant.per_channel else None
        parametrize.register_parametrization(target.module, target.name, FakeQuant(quant.bits, axis, state))
    model.register_state_dict_post_hook(_plain_keys)
    model.register_load_state_dict_pre_hook(_parametrized_keys)
    model._qat = state
    if optimizer is not None:
        optimizer.register_step_post_hook(lambda *_: _tick(state))
    return state


def _tick(state: dict) -> None:
    state["step"] += 1
    state["on"] = state["step"] >= state["start_step"]


def _plain_keys(module, state_dict, prefix, local_metadata) -> None:
    """`a.parametrizations.weight.original` -> `a.weight` (checkpoints hold the float weights by their names)."""
    for key in [k for k in state_dict if ".parametrizations." in k or k.startswith("parametrizations.")]:
        if key.endswith(".original"):
            plain = ("." + key).replace(".parametrizations.", ".")[1:].removesuffix(".original")
            state_dict[plain] = state_dict.pop(key)


def _parametrized_keys(module, state_dict, prefix, *_args) -> None:
    """The reverse of `_plain_keys` for every parametrized weight of `module`."""
    for path, sub in module.named_modules():
        if not parametrize.is_parametrized(sub):
            continue
        for name in sub.parametrizations:
            stem = prefix + (f"{path}." if path else "")
            if stem + name in state_dict:
                state_dict[f"{stem}parametrizations.{name}.original"] = state_dict.pop(stem + name)


def float_copy(model: nn.Module) -> nn.Module:
    """A deep copy of a QAT model with its parametrizations removed (the float weights, rounding off)."""
    clone = copy.deepcopy(model)
    for sub in list(clone.modules()):
        if parametrize.is_parametrized(sub):
            # not remove_parametrizations: it deletes the weight property from the parametrized class, which
            # the deep copy shares with the training model (whose weights would vanish mid-training)
            originals = {name: sub.parametrizations[name].original for name in sub.parametrizations}
            sub.__class__ = type(sub).__bases__[0]
            del sub._modules["parametrizations"]
            for name, original in originals.items():
                sub.register_parameter(name, original)
    clone._qat = None
    return clone


def write_export(model: nn.Module, directory: Path) -> dict | None:
    """Write the quantized export of a QAT model into a checkpoint folder; the spec's `quant` entry."""
    from safetensors.torch import save_file

    from ..io.shards import atomic_path

    state = getattr(model, "_qat", None)
    if not state:
        return None
    quantized = float_copy(model).cpu()
    quantize_model(quantized, state["scheme"], tuple(state["modules"]), per_channel=state["per_channel"])
    name = EXPORT.format(scheme=state["scheme"])
    tensors = {k: v.detach().cpu().contiguous() for k, v in quantized.state_dict().items()}
    with atomic_path(Path(directory) / name) as tmp:
        save_file(tensors, str(tmp))
    return {key: state[key] for key in ("scheme", "bits", "per_channel", "modules", "start_step")} | {
        "export": name, "export_bytes": export_bytes(quantized), "active": state["on"]}


def load_export(model: nn.Module, directory: Path, quant_spec: dict) -> None:
    """Turn a float Retriever into the quantized one saved in a QAT checkpoint folder (in place)."""
    from safetensors.torch import load_file

    from ..errors import InputError

    path = Path(directory) / quant_spec["export"]
    if not path.is_file():
        raise InputError("the quantized export named in retriever.json is missing; evaluate the float weights "
                         "with --quantize fp32", path=str(path))
    quantize_model(model, check_scheme(quant_spec["scheme"]), tuple(quant_spec.get("modules", GROUPS)),
                   per_channel=quant_spec.get("per_channel", True))
    result = model.load_state_dict(load_file(str(path)), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(f"the quantized export does not match the model: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}", path=str(path))


def check_resume(out: Path, quant) -> None:
    """A run folder whose checkpoints were trained with another [quant] than this config is an error."""
    from ..io import fs

    spec_path = fs.path(out) / "model" / "retriever.json"
    if not spec_path.is_file():
        return
    saved = json.loads(spec_path.read_text(encoding="utf-8")).get("quant")
    if bool(saved) != bool(quant.bits) or (saved and saved["bits"] != quant.bits):
        had = f"{saved['scheme']} quantization-aware" if saved else "float (no [quant])"
        raise ConfigError(f"{fs.redact(out)} holds a {had} run but this config has "
                          f"{f'[quant] bits = {quant.bits}' if quant.bits else 'no [quant] section'}; "
                          "use the same [quant] section or another --out")


def quantize_encoder(encoder, scheme: str = ""):
    """The encoder with quantized weights: '' is the checkpoint's own export (QAT) or fp32; int8/int4 use a
    QAT export of the same scheme when the checkpoint has one, else post-training quantization."""
    import dataclasses

    from .encoders import OpenClipEncoder

    spec = getattr(encoder, "spec", None) or {}
    trained = spec.get("quant")
    scheme = check_scheme(scheme or (trained["scheme"] if trained else "fp32"))
    if scheme == "fp32":
        model = getattr(encoder, "model", None)
        size = {"size_bytes": export_bytes(model)} if isinstance(model, nn.Module) else {}
        encoder.quantization = {"scheme": "fp32", "source": "float", "bits": 32, **size}
        return encoder
    if not isinstance(encoder, OpenClipEncoder):
        raise ConfigError(f"--quantize {scheme} needs an open_clip model or one of our checkpoints; "
                          f"{encoder.metadata.name} is a {type(encoder).__name__}")
    model = encoder.model.cpu()
    if trained and trained["scheme"] == scheme:
        load_export(model, encoder.checkpoint, trained)
        info = {"scheme": scheme, "source": "qat", "export": trained["export"]}
    else:
        info = {"scheme": scheme, "source": "ptq", **quantize_model(model, scheme)}
    encoder.model = model.to(encoder.device).eval()
    info.update(bits=int(scheme[3:]), size_bytes=export_bytes(model))
    encoder.quantization = info
    encoder.metadata = dataclasses.replace(encoder.metadata, quantization=f"{scheme}-{info['source']}")
    return encoder
