"""Index configuration and the choice of a faiss index (exact, a factory string, or `auto`).

`auto` works like autofaiss: candidates in order of quality, each with its estimated memory;
the first that fits the budget wins, and every rejection is written into the index metadata
so users see why they did not get exact search.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import ConfigError

QUANTIZE = (None, "fp16", "int8")
CODEC = {None: "Flat", "fp16": "SQfp16", "int8": "SQ8"}  # exhaustive codes per quantisation
BYTES_PER_DIM = {None: 4, "fp16": 2, "int8": 1}
NORMALIZE = ("warn", "l2", "none")
METRICS = ("ip", "l2")
EXHAUSTIVE = frozenset(CODEC.values())  # factory strings that compare every vector


def parse_memory(text: str | float | int | None) -> float | None:
    """`4GB`, `512MB`, `1.5GiB`, `2e9` (bytes) or a bare number of GB -> gigabytes (1e9 bytes)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]i?b?|b)?\s*", text.lower())
    if not match:
        raise ConfigError(f"memory budget {text!r}: expected e.g. 4GB, 512MB or 1.5GiB")
    value, unit = float(match.group(1)), (match.group(2) or "gb")
    if unit == "b":
        return value / 1e9
    power = "kmgt".index(unit[0]) + 1
    base = 1024 if "i" in unit else 1000
    return value * base**power / 1e9


@dataclass(frozen=True)
class IndexConfig:
    """How to build an index.

    kind: "exact" (default; official scores use it), "auto" (fit `memory_budget_gb`), or a faiss
    factory string ("HNSW32", "IVF1024,Flat", "IVF4096,PQ64", "OPQ64,IVF4096,PQ64", ...).
    dim: Matryoshka truncation to the first `dim` dimensions, then re-normalisation.
    quantize: None, "fp16" or "int8" scalar quantisation of the stored vectors.
    normalize: "warn" (keep vectors, warn when metric ip meets non-unit vectors), "l2" (always
    normalise) or "none" (keep silently).
    nprobe / ef_search: ANN search breadth (defaults: nlist/8 clamped to [8, nlist]; 128).
    """

    kind: str = "exact"
    dim: int | None = None
    quantize: str | None = None
    memory_budget_gb: float | None = None
    metric: str = "ip"
    normalize: str = "warn"
    nprobe: int | None = None
    ef_search: int | None = None

    def __post_init__(self):
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"quantize must be one of fp16, int8 (or none), got {self.quantize!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.normalize not in NORMALIZE:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}, got {self.normalize!r}")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"dim must be a positive number of dimensions, got {self.dim}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ConfigError("memory budget must be positive")
        if not self.kind or not self.kind.strip():
            raise ConfigError("index kind is empty; use exact, auto or a faiss factory string")


@dataclass(frozen=True)
class IndexChoice:
    """The faiss factory string chosen, whether it is exhaustive, and why."""

    factory: str
    exhaustive: bool
    memory_bytes: int
    reasons: tuple[str, ...] = field(default_factory=tuple)


def nlist_for(n: int) -> int:
    """Inverted lists for n vectors: about 4 sqrt(n), a power of two, at least 39 points each."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    return max(1, min(target, 2 ** int(math.log2(max(1, n // 39)))))


def estimate_bytes(factory: str, n: int, d: int) -> int:
    """Rough resident size of a faiss index of n vectors of dimension d."""
    nlist = int(m.group(1)) if (m := re.search(r"IVF(\d+)", factory)) else 0
    centroids = nlist * d * 4 + nlist * 64
    if (m := re.search(r"PQ(\d+)", factory)) and "IVF" in factory:
        rotation = d * d * 4 if factory.startswith("OPQ") else 0
        return n * (int(m.group(1)) + 8) + centroids + 256 * d * 4 + rotation
    per_dim = 1 if "SQ8" in factory else 2 if "SQfp16" in factory else 4
    if factory.startswith("HNSW"):
        links = int(re.match(r"HNSW(\d+)", factory).group(1))
        return int(n * (d * per_dim + links * 2 * 4 * 1.1 + 16))
    if "IVF" in factory:
        return n * (d * per_dim + 8) + centroids
    return n * d * per_dim


def _with_codec(factory: str, quantize: str | None) -> str:
    """Apply --quantize to a factory string that stores full vectors ("Flat" parts)."""
    if quantize is None:
        return factory
    codec = CODEC[quantize]
    if factory in ("Flat", "exact"):
        return codec
    if re.fullmatch(r"HNSW\d+(,Flat)?", factory):
        return factory.split(",")[0] + "," + codec
    if factory.endswith(",Flat"):
        return factory[: -len("Flat")] + codec
    raise ConfigError(f"--quantize {quantize} cannot be applied to {factory!r}: put the codec into the "
                      f"factory string (e.g. IVF1024,{codec}) and leave --quantize out")


def choose_index(n: int, d: int, config: IndexConfig) -> IndexChoice:
    """Resolve `config.kind` for n vectors of dimension d into a factory string."""
    if config.kind == "auto":
        return _auto(n, d, config)
    factory = _with_codec("Flat" if config.kind == "exact" else config.kind, config.quantize)
    size = estimate_bytes(factory, n, d)
    return IndexChoice(factory, factory in EXHAUSTIVE, size, (f"{factory}: requested ({size / 1e9:.2f} GB)",))


def _auto(n: int, d: int, config: IndexConfig) -> IndexChoice:
    budget = None if config.memory_budget_gb is None else config.memory_budget_gb * 1e9
    nlist = nlist_for(n)
    candidates = [
        (CODEC[config.quantize], "exact search; official scores use it"),
        (_with_codec("HNSW32", config.quantize), "graph ANN, fast, no training"),
        (f"IVF{nlist},{CODEC[config.quantize]}", "inverted lists over full vectors"),
        (f"IVF{nlist},SQ8", "inverted lists, 1 byte per dimension"),
    ]
    for m in (64, 32, 16, 8):
        if d % m == 0 and m < d:
            candidates.append((f"OPQ{m},IVF{nlist},PQ{m}", f"product quantisation, {m} bytes per vector"))
    reasons = []
    for factory, what in candidates:
        size = estimate_bytes(factory, n, d)
        if budget is None or size <= budget:
            reasons.append(f"{factory}: {what}; {size / 1e9:.2f} GB fits the budget: chosen")
            return IndexChoice(factory, factory in EXHAUSTIVE, size, tuple(reasons))
        reasons.append(f"{factory}: {what}; {size / 1e9:.2f} GB > budget {budget / 1e9:.2f} GB")
    raise ConfigError(f"no index of {n} x {d} vectors fits {budget / 1e9:.2f} GB (smallest needs "
                      f"{size / 1e9:.2f} GB): raise --memory-budget or truncate with --dim")
