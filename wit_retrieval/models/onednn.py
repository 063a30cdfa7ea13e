"""An fp32 fast path for open_clip ViT image towers on CPU: prepacked oneDNN linears.

On CPU, ~90% of a ViT forward is its linear layers. torch's eager `nn.Linear` and its fused multi-head
attention call MKL's sgemm, which on AMD CPUs (Zen 4 here) reaches ~85-90 GFLOP/s per core; oneDNN with
weights prepacked once (`mkldnn::_reorder_linear_weight`) reaches ~100-106, and fuses GELU into the
first MLP linear. `fast_encoding` swaps each standard `ResidualAttentionBlock` of the image tower for
one that runs these kernels (plus `scaled_dot_product_attention`) for the duration of an embedding run,
and restores the model afterwards. Same fp32 arithmetic, other summation order: embeddings differ from
eager by float rounding (measured max abs ~1e-7 on unit vectors; tests allow 1e-5). Measured on a
ViT-B-32 batch of 32: 3.4 s eager, 2.7-2.8 s with this path, on one thread (benchmarks/results/embed.md).

Weights are packed per run (packing ViT-B-32 takes ~0.1 s), so a model trained between runs is never
served stale weights; the packed copy costs as much memory as the tower's linear weights.
Anything this path cannot run (another block type, an attention mask, gradients, a GPU, a torch build
without oneDNN, a failure in the first batch) runs eager instead, with a warning when it was asked for
explicitly or failed.
"""

from __future__ import annotations

import contextlib
import warnings

from torch import nn

from .embed import FAST_PATHS

# 'auto' leaves narrower towers eager: their matrices are too small to gain, and packing plus oneDNN's
# first call per shape cost more than they save (measured: 64 wide, no gain; ViT-S-32, 384 wide, 1.2x)
AUTO_MIN_WIDTH = 256


class _PackedLinear:
    """A linear layer's weight prepacked for oneDNN, optionally with a fused GELU."""

    def __init__(self, weight, bias, rows_hint: int, gelu: str | None = None):
        import torch

        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)
        self.bias = bias.detach() if bias is not None else None
        self.attr, self.algorithm = ("gelu", gelu) if gelu else ("none", "")

    def __call__(self, x):
        import torch

        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, self.attr, [], self.algorithm)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def _mlp_steps(mlp, rows_hint: int) -> list:
    """The MLP as callables: packed linears (an exact/tanh GELU after one fused into it), other modules as is."""
    steps: list = []
    children = list(mlp.children())
    skip = False
    for n, child in enumerate(children):
        if skip:
            skip = False
            continue
        if isinstance(child, nn.Linear):
            after = children[n + 1] if n + 1 < len(children) else None
            gelu = after.approximate if type(after) is nn.GELU else None
            steps.append(_PackedLinear(child.weight, child.bias, rows_hint, gelu))
            skip = gelu is not None
        else:
            steps.append(child)
    return steps


def supported(block) -> bool:
    """True for open_clip's standard self-attention block (batch first, one in-projection, Sequential MLP)."""
    attn = getattr(block, "attn", None)
    return (type(block).__name__ == "ResidualAttentionBlock" and isinstance(attn, nn.MultiheadAttention)
            and attn.batch_first and attn._qkv_same_embed_dim and attn.in_proj_weight is not None
            and not hasattr(block, "ln_1_kv") and isinstance(getattr(block, "mlp", None), nn.Sequential)
            and all(hasattr(block, name) for name in ("ln_1", "ln_2", "ls_1", "ls_2")))


class FastBlock(nn.Module):
    """Stand-in for a ResidualAttentionBlock (inference only; anything else goes to the original block)."""

    def __init__(self, block, rows_hint: int):
        super().__init__()
        attn = block.attn
        self.block, self.heads = block, attn.num_heads
        self.qkv = _PackedLinear(attn.in_proj_weight, attn.in_proj_bias, rows_hint)
        self.out = _PackedLinear(attn.out_proj.weight, attn.out_proj.bias, rows_hint)
        self.mlp = _mlp_steps(block.mlp, rows_hint)

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        import torch
        import torch.nn.functional as F

        block = self.block
        if attn_mask is not None or k_x is not None or v_x is not None or torch.is_grad_enabled():
            return block(q_x, k_x, v_x, attn_mask=attn_mask)
        n, length, width = q_x.shape
        qkv = self.qkv(block.ln_1(q_x)).reshape(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(n, length, width)
        x = q_x + block.ls_1(self.out(attended))
        h = block.ln_2(x)
        for step in self.mlp:
            h = step(h)
        return x + block.ls_2(h)


def _blocks(encoder):
    """The image tower's ModuleList of transformer blocks, or None when there is none to speed up."""
    model = getattr(getattr(encoder, "model", None), "clip", None)
    transformer = getattr(getattr(model, "visual", None), "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    return blocks if blocks is not None and len(blocks) and all(supported(b) for b in blocks) else None


def _why_not(encoder, blocks) -> str | None:
    """Why the fast path cannot serve `encoder`, or None when it can."""
    import torch

    if blocks is None:
        return "the image tower is not a ViT of standard open_clip blocks"
    if not str(getattr(encoder, "device", "cpu")).startswith("cpu"):
        return "the model is not on the CPU"
    if any(p.dtype != torch.float32 for p in blocks.parameters()):
        return "the model is not float32"
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return "this torch build has no oneDNN linear kernels"
    return None


@contextlib.contextmanager
def fast_encoding(encoder, fast_path: str = "auto", batch_size: int = 64):
    """Yield an `encode_pixels`-like function, the oneDNN fast path when `fast_path` allows and it applies.

    'auto': the fast path where it applies and the tower is at least AUTO_MIN_WIDTH wide, quietly eager
    elsewhere; 'onednn': the fast path whatever the width, with a warning when it cannot be used; 'eager': the
    model as it is. The model is restored on exit."""
    if fast_path not in FAST_PATHS:
        from ..errors import ConfigError

        raise ConfigError(f"fast_path must be one of {', '.join(FAST_PATHS)}, not {fast_path!r}")
    blocks = _blocks(encoder) if fast_path != "eager" else None
    reason = _why_not(encoder, blocks) if fast_path != "eager" else None
    if fast_path == "auto" and not reason and blocks[0].attn.embed_dim < AUTO_MIN_WIDTH:
        reason = f"the tower is narrower than {AUTO_MIN_WIDTH}"
    if fast_path == "eager" or reason:
        if fast_path == "onednn":
            warnings.warn(f"fast_path='onednn' not used, running eager: {reason}", RuntimeWarning, stacklevel=3)
        yield encoder.encode_pixels
        return
    originals = list(blocks)
    tokens = encoder.model.clip.visual.positional_embedding.shape[0]
    try:
        fast = [FastBlock(b, batch_size * tokens) for b in originals]
    except Exception as exc:  # a torch whose oneDNN ops differ: eager, never a crash
        warnings.warn(f"oneDNN fast path unavailable ({type(exc).__name__}: {exc}); running eager",
                      RuntimeWarning, stacklevel=3)
        yield encoder.encode_pixels
        return
    state = {"fast": True}

    def install(which) -> None:
        for n, block in enumerate(which):
            blocks[n] = block

    def encode(pixels):
        if not state["fast"]:
            return encoder.encode_pixels(pixels)
        try:
            return encoder.encode_pixels(pixels)
        except Exception as exc:
            state["fast"] = False
            install(originals)
            warnings.warn(f"oneDNN fast path failed ({type(exc).__name__}: {exc}); running eager",
                          RuntimeWarning, stacklevel=2)
            return encoder.encode_pixels(pixels)

    install(fast)
    try:
        yield encode
    finally:
        install(originals)
