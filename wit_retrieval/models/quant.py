"""Post-training weight quantization of Retrievers: int8 (real int8 kernels on CPU) and int4 (weight-only).

Every weight of the chosen parts (image tower, text tower, fusion heads) is quantized symmetrically per
output channel: q = round(w / s), s = max|w_row| / qmax (qmax 127 for int8, 7 for int4), w ~ q * s.

- **int8**: `nn.Linear` layers and standard self-attention (`nn.MultiheadAttention`) become `Int8Linear` /
  `Int8Attention`, which run torch's dynamic-quantization kernels on CPU (`quantized::linear_dynamic`:
  activations quantized per batch, int8 x int8 GEMM in fbgemm/x86; the same kernels as
  `torch.ao.quantization.quantize_dynamic`, which quantizes neither attention projections nor convs nor
  embeddings, so we call the kernels ourselves). Weights that no int8 kernel takes here (convolutions, the
  attention pool of ResNet towers, projection matrices) are stored int8 and dequantized when used; on GPUs
  every int8 weight is dequantized at use.
- **int4**: weight-only. Two values per byte (uint8, offset 8), a float32 scale per output channel; the
  weight is dequantized where it is used (torch has no general int4 CPU matmul), so int4 is a measurement
  of quality and of size on disk, not of speed.
- Embedding tables (token embeddings) are quantized per row in both schemes and dequantized per lookup.
  Positional/class embeddings, norms, biases and the temperature stay float32.

The quantized model's state dict *is* the export (`weight_q`, `weight_q4`, `weight_scale` buffers), so
`export_bytes` is its size on disk and a saved export loads back into `quantize_model(fresh model)`.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

SCHEMES = ("fp32", "int8", "int4")
GROUPS = ("image", "text", "heads")
QMAX = {8: 127, 4: 7}
# 2-D parameters that stay float: tables added to activations, not multiplied (tiny next to the weights)
KEPT_FLOAT = ("positional_embedding", "class_embedding")
# a module's own 2-D parameter used as `x @ P` ([in, out]): its output channels are its columns
MATRICES = ("proj", "text_projection")


def check_scheme(scheme: str) -> str:
    """The scheme normalised ('' and 'none' mean fp32); a ConfigError naming the known ones otherwise."""
    scheme = (scheme or "fp32").lower()
    scheme = "fp32" if scheme in ("none", "float", "float32") else scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown quantization scheme {scheme!r}; use int8, int4 or fp32")
    return scheme


def bits_of(scheme: str) -> int:
    """8 for int8, 4 for int4, 32 for fp32."""
    return {"fp32": 32, "int8": 8, "int4": 4}[check_scheme(scheme)]


def quantize_tensor(weight: torch.Tensor, bits: int, axis: int | None = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 [out, n], scale float32 [out, 1]) of `weight` with output channels on `axis` (None: one scale)."""
    rows = _rows(weight.detach().float(), axis)
    amax = rows.abs().amax(dim=1, keepdim=True) if axis is not None else rows.abs().amax().reshape(1, 1)
    scale = (amax / QMAX[bits]).clamp(min=1e-12)
    q = torch.clamp(torch.round(rows / scale), -QMAX[bits], QMAX[bits]).to(torch.int8)
    return q, scale.float()


def fake_quantize(weight: torch.Tensor, bits: int, axis: int | None = 0) -> torch.Tensor:
    """The weight rounded to the grid, with a straight-through gradient (d out / d weight = 1)."""
    rows = _rows(weight, axis)
    amax = rows.detach().abs().amax(dim=1, keepdim=True) if axis is not None else rows.detach().abs().amax()
    scale = (amax / QMAX[bits]).clamp(min=1e-12)
    snapped = torch.clamp(torch.round(rows / scale), -QMAX[bits], QMAX[bits]) * scale
    return _unrows(rows + (snapped - rows).detach(), weight.shape, axis)


def dequantize(q: torch.Tensor, scale: torch.Tensor, shape, axis: int | None, bits: int,
               dtype=torch.float32) -> torch.Tensor:
    """The float weight of `shape` from int8 rows or packed int4 rows and their scales."""
    values = unpack_int4(q, _numel_per_row(shape, axis)) if bits == 4 else q
    return _unrows(values.to(dtype) * scale.to(dtype), shape, axis)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 rows in [-7, 7] -> uint8 rows of half the width (low nibble first, offset 8)."""
    if q.shape[1] % 2:
        q = F.pad(q, (0, 1))
    biased = (q.to(torch.int16) + 8).to(torch.uint8)
    return biased[:, 0::2] | (biased[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, width: int) -> torch.Tensor:
    """The int8 rows of `pack_int4` (first `width` columns)."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=2).reshape(packed.shape[0], -1)[:, :width]


def _rows(weight: torch.Tensor, axis: int | None) -> torch.Tensor:
    moved = weight if not axis else weight.movedim(axis, 0)
    return moved.reshape(moved.shape[0], -1)


def _unrows(rows: torch.Tensor, shape, axis: int | None) -> torch.Tensor:
    if not axis:
        return rows.reshape(shape)
    moved_shape = list(shape)
    moved_shape.insert(0, moved_shape.pop(axis))
    return rows.reshape(moved_shape).movedim(0, axis)


def _numel_per_row(shape, axis: int | None) -> int:
    total = 1
    for n in shape:
        total *= n
    return total // shape[axis or 0]


@dataclasses.dataclass(frozen=True)
class Target:
    """One weight to quantize: `module.name`, output channels on `axis`."""

    path: str
    module: nn.Module
    name: str
    axis: int | None


def find_targets(model: nn.Module, groups=GROUPS) -> list[Target]:
    """The weights of the chosen parts of a Retriever; a ConfigError naming modules it cannot quantize."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ConfigError(f"unknown quantization module group(s) {unknown}; use {', '.join(GROUPS)}")
    targets, unsupported = [], []
    for path, module in model.named_modules():
        if not path or _group(path) not in groups:
            continue
        for name, param in module.named_parameters(recurse=False):
            if param.ndim < 2 or name in KEPT_FLOAT:
                continue
            if _layer_weight(module, name):
                targets.append(Target(path, module, name, 0))
            elif name in MATRICES and param.ndim == 2:
                targets.append(Target(path, module, name, 1))
            else:
                unsupported.append(f"{path}.{name} ({type(module).__name__})")
    if unsupported:
        raise ConfigError(f"cannot quantize {len(unsupported)} weight(s) of unknown kinds: "
                          f"{', '.join(unsupported[:4])}; leave their part out of the quantized modules")
    if not targets:
        raise ConfigError(f"nothing to quantize: the model has no Linear/Conv/attention/embedding weights in "
                          f"{', '.join(groups)}")
    return targets


def _layer_weight(module: nn.Module, name: str) -> bool:
    """A weight with output channels first: Linear/Embedding/Conv `weight`, attention projections."""
    if isinstance(module, nn.MultiheadAttention):
        return name.endswith("proj_weight")
    return isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and name == "weight"


def _group(path: str) -> str:
    if path.startswith("heads"):
        return "heads"
    return "image" if path.startswith("clip.visual") else "text"


class Int8Linear(nn.Module):
    """A Linear with int8 per-channel weights: int8 kernels (dynamic activation quantization) on CPU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, axis: int | None = 0):
        super().__init__()
        q, scale = quantize_tensor(weight, 8, axis)
        scale = scale.expand(q.shape[0], 1).clone()  # per-tensor: the one scale on every row
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight_q", q)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._packed = None

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (for code that reads a Linear's weight, e.g. its dtype)."""
        return self.weight_q.float() * self.weight_scale

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._packed = None  # new weights: pack again

    def _apply(self, fn, *args, **kwargs):
        self._packed = None
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or torch.is_grad_enabled() and x.requires_grad:
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        if self._packed is None:
            self._packed = _prepack(self.weight_q, self.weight_scale, self.bias)
        rows = x.reshape(-1, self.in_features).float().contiguous()
        # reduce_range: 7-bit activations, as quantize_dynamic does on x86 (measured more accurate there)
        out = torch.ops.quantized.linear_dynamic(rows, self._packed, True)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def _prepack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's packed form of an int8 per-channel weight."""
    with warnings.catch_warnings():
        # torch 2.14 deprecates creating quantized tensors; the packed kernels themselves are not deprecated
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(
            q, scale.flatten().double(), torch.zeros(q.shape[0], dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(qweight, bias)


class Int8Attention(nn.Module):
    """Stand-in for a batch-first or sequence-first `nn.MultiheadAttention` with int8 projections."""

    def __init__(self, mha: nn.MultiheadAttention, axis: int | None = 0):
        super().__init__()
        self.num_heads, self.batch_first = mha.num_heads, mha.batch_first
        self.in_proj = Int8Linear(mha.in_proj_weight, mha.in_proj_bias, axis)
        self.out_proj = Int8Linear(mha.out_proj.weight, mha.out_proj.bias, axis)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None, **_):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        width = query.shape[-1]
        if query is key and key is value:
            q, k, v = self.in_proj(query).split(width, dim=-1)
        else:  # cross-attention: project each input, keep its third
            q, k, v = (self.in_proj(t)[..., n * width:(n + 1) * width] for n, t in enumerate((query, key, value)))
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        mask = _merge_masks(attn_mask, key_padding_mask, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _merge_masks(attn_mask, key_padding_mask, dtype):
    """One additive float mask from nn.MultiheadAttention's (bool: True = masked out)."""
    mask = None
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dtype != torch.bool else torch.zeros_like(attn_mask, dtype=dtype).masked_fill(
            attn_mask, float("-inf"))
    if key_padding_mask is not None:
        padding = torch.zeros_like(key_padding_mask, dtype=dtype).masked_fill(key_padding_mask.bool(), float("-inf"))
        padding = padding[:, None, None, :]
        mask = padding if mask is None else mask + padding
    return mask


class QuantEmbedding(nn.Module):
    """An embedding table quantized per row; rows are dequantized per lookup."""

    def __init__(self, embedding: nn.Embedding, bits: int, axis: int | None = 0):
        super().__init__()
        q, scale = quantize_tensor(embedding.weight, bits, axis)
        scale = scale.expand(q.shape[0], 1).clone()
        self.bits, self.shape = bits, tuple(embedding.weight.shape)
        self.register_buffer("weight_q4" if bits == 4 else "weight_q", pack_int4(q) if bits == 4 else q)
        self.register_buffer("weight_scale", scale)
        self.embedding_dim = embedding.embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        stored = self.weight_q4 if self.bits == 4 else self.weight_q
        rows = stored[ids.flatten()]
        values = unpack_int4(rows, self.shape[1]) if self.bits == 4 else rows
        return (values.float() * self.weight_scale[ids.flatten()]).reshape(*ids.shape, self.shape[1])


def _weight_only(target: Target, bits: int) -> None:
    """Replace the parameter by int8 (or packed int4) storage read back through a dequantizing property."""
    module, name = target.module, target.name
    weight = getattr(module, name)
    q, scale = quantize_tensor(weight, bits, target.axis)
    del module._parameters[name]
    module.register_buffer(f"{name}_q4" if bits == 4 else f"{name}_q", pack_int4(q) if bits == 4 else q)
    module.register_buffer(f"{name}_scale", scale)
    meta = dict(getattr(module, "_quant_meta", {}))
    meta[name] = (tuple(weight.shape), target.axis, bits)
    module._quant_meta = meta
    module.__class__ = _dequantizing_class(type(module), name)


_CLASSES: dict = {}


def _dequantizing_class(cls: type, name: str) -> type:
    """A subclass of `cls` whose attribute `name` is the dequantized weight (built once per class and name)."""
    key = (cls, name)
    if key not in _CLASSES:
        def get(self, name=name):
            shape, axis, bits = self._quant_meta[name]
            stored = getattr(self, f"{name}_q4" if bits == 4 else f"{name}_q")
            return dequantize(stored, getattr(self, f"{name}_scale"), shape, axis, bits)

        _CLASSES[key] = type(cls.__name__, (cls,), {name: property(get), "__module__": cls.__module__})
    return _CLASSES[key]


def quantize_model(model: nn.Module, scheme: str, groups=GROUPS, *, per_channel: bool = True) -> dict:
    """Quantize a Retriever in place (eval only); returns {'scheme', 'modules', 'weights', 'int8_kernels'}.

    per_channel=False: one scale per weight tensor (what a [quant] per_channel = false run trained for)."""
    scheme = check_scheme(scheme)
    if scheme == "fp32":
        return {"scheme": "fp32"}
    bits = bits_of(scheme)
    targets = find_targets(model, groups)
    if not per_channel:
        targets = [dataclasses.replace(t, axis=None) for t in targets]
    parents = dict(model.named_modules())
    kernels = 0
    for target in targets:
        parent_path, _, child = target.path.rpartition(".")
        parent = parents[parent_path] if parent_path else model
        direct = isinstance(parent, nn.MultiheadAttention) or type(parent).__name__ == "AttentionPool2d"
        if isinstance(target.module, nn.Embedding):
            setattr(parent, child, QuantEmbedding(target.module, bits, target.axis))
        elif bits == 8 and type(target.module) is nn.MultiheadAttention and _plain_self_attention(target.module):
            if target.name == "in_proj_weight":
                setattr(parent, child, Int8Attention(target.module, target.axis))
                kernels += 2
        elif bits == 8 and isinstance(target.module, nn.Linear) and not direct:
            setattr(parent, child, Int8Linear(target.module.weight, target.module.bias, target.axis))
            kernels += 1
        elif not (bits == 8 and direct and type(parent) is nn.MultiheadAttention and _plain_self_attention(parent)):
            _weight_only(target, bits)
    model.eval()
    return {"scheme": scheme, "modules": list(groups), "weights": len(targets), "int8_kernels": kernels}


def _plain_self_attention(mha: nn.MultiheadAttention) -> bool:
    return mha._qkv_same_embed_dim and mha.in_proj_weight is not None and mha.bias_k is None and not mha.add_zero_attn


def export_bytes(model: nn.Module) -> int:
    """Size on disk of the model's weights: the bytes of its state dict's tensors (a safetensors file of it
    is this plus a JSON header of a few kB)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
