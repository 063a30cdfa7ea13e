"""Training configuration: TOML files (baselines/*.toml) parsed into frozen dataclasses.

Unknown sections or keys, and values of the wrong type, are ConfigErrors naming the file,
the key and the closest known key. Sections are plain dataclasses, so a new trainer option is
one new field (and one new section is one new entry of TrainConfig).
"""

from __future__ import annotations

import dataclasses
import difflib

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .distill import DistillConfig


@dataclass(frozen=True)
class ModelConfig:
    """What to train: the base model, the fusion and which towers learn."""

    base: str = "open_clip:wit-tiny-rn:random"
    fusion: str = "inject"
    heads: dict = field(default_factory=dict)   # head name -> options; the fusion's head is added
    freeze_image: bool = False
    freeze_text: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Where the training data is: a build's data root and its image store, and how it is read."""

    root: str = ""
    images: str = ""                 # default: the data root's images/ folder
    train_split: str = "train"
    val_split: str = "val"
    max_train_queries: int = 0       # 0: all
    max_val_queries: int = 0
    loader: str = "stream"           # stream (prepared shards, constant memory) | memory (small worlds)
    prepared: str = ""               # stream: the prepared folder (default: ROOT/train_shards/<key>)
    shuffle_buffer: int = 1000       # stream: samples in each worker's shuffle buffer
    workers: int = 0                 # stream: loader processes per rank; memory: decoding threads

    def __post_init__(self):
        if self.loader not in ("stream", "memory"):
            raise ConfigError(f"[data] loader must be stream or memory, got {self.loader!r}")
        if self.shuffle_buffer < 1 or self.workers < 0:
            raise ConfigError("[data] shuffle_buffer must be at least 1 and workers at least 0")


# keys that no longer apply: accepted with a warning, then ignored
DEPRECATED = {("data", "cache_images"): "images are streamed from prepared shards (or cached by the memory "
                                        "loader); the key is ignored"}


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    steps: int = 300
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"          # auto (bf16 autocast on GPU) | fp32 | bf16
    grad_checkpointing: bool = False  # recompute tower activations in the backward pass (less memory)
    compile: bool = False            # torch.compile the image and text towers (in place: same checkpoint keys)


@dataclass(frozen=True)
class LossConfig:
    """InfoNCE and its options (see models/losses.py)."""

    temperature: float = 0.07
    learn_temperature: bool = True
    duplicate_mask: bool = True
    symmetric: bool = True
    hard_negatives: str = ""         # a first-pass TREC run over the training queries
    hard_negatives_per_query: int = 1
    hard_negative_alpha: float = 5.0
    spread_out_weight: float = 0.0
    matryoshka_dims: tuple[int, ...] = ()
    same_tower_negatives: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Output folder, seed and how often to checkpoint, validate and log."""

    out: str = "runs/train"
    seed: int = 0
    checkpoint_every: int = 100
    eval_every: int = 100
    log_every: int = 10
    threads: int = 0                 # torch CPU threads; 0: torch's default


@dataclass(frozen=True)
class QuantConfig:
    """Quantization-aware training (models/qat.py): weights fake-quantized from start_step; bits 0 = off."""

    bits: int = 0                    # 4 | 8
    per_channel: bool = True         # one scale per output channel (else one per weight tensor)
    start_step: int = 0              # float training before it, fake-quantized from it on
    modules: tuple[str, ...] = ("image", "text", "heads")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what is written to the run folder as config.json)."""
        return dataclasses.asdict(self)


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Parse a TOML config; `overrides` maps 'section.key' to values (CLI --set, --data, ...)."""
    data = read_toml(path)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must be section.key=value")
        data.setdefault(section, {})[key] = value
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """TrainConfig from nested dicts, with clear errors for unknown or mistyped keys."""
    sections = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    hints = typing.get_type_hints(TrainConfig)
    built = {}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"{source}: unknown section [{name}]{_hint(name, sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table of keys")
        values = _drop_deprecated(name, values, source)
        built[name] = section_from_dict(hints[name], values, f"{source}: [{name}]")
    return TrainConfig(**built)


def _drop_deprecated(section: str, values: dict[str, Any], source: str) -> dict[str, Any]:
    import warnings

    kept = {}
    for key, value in values.items():
        why = DEPRECATED.get((section, key))
        if why:
            warnings.warn(f"{source}: [{section}] {key} is deprecated: {why}", FutureWarning, stacklevel=3)
        else:
            kept[key] = value
    return kept


def section_from_dict(cls, values: dict[str, Any], where: str):
    """A frozen dataclass `cls` from a dict; unknown keys and mistyped values are ConfigErrors."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{where} unknown key {key!r}{_hint(key, hints)}")
        kwargs[key] = _coerce(value, hints[key], f"{where} {key}")
    return cls(**kwargs)


def _coerce(value: Any, hint, where: str):
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):  # from the command line: "512,256"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list")
        return tuple(_coerce(v, typing.get_args(hint)[0], where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = dict if hint is dict else hint
    if isinstance(value, str) and expected in (int, float, bool):
        value = _parse_scalar(value, expected, where)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {expected.__name__}, got {value!r}")
    return value


def _parse_scalar(text: str, expected, where: str):
    """Values given on the command line (--set optim.steps=10) arrive as strings."""
    try:
        if expected is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return expected(text)
    except ValueError:
        raise ConfigError(f"{where} must be {expected.__name__}, got {text!r}") from None


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
