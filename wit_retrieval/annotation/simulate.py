"""Simulated ratings for demos and tests. Every row says source="simulated", every report says so."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from .ratings import now_iso, ratings_table
from .tasks import Item, TaskKind, get_kind


@dataclass(frozen=True)
class SimulationConfig:
    """Simulated raters: how many, how accurate (uniform range), and the simulated truth."""

    raters: int = 5
    accuracy: tuple[float, float] = (0.7, 0.95)
    positive_rate: float = 0.85      # share of (non-gold) items whose true label is positive
    abstain_rate: float = 0.03       # share of answers that are the kind's abstain label
    seed: int = 0

    def __post_init__(self):
        low, high = self.accuracy
        if self.raters < 1 or not 0 <= low <= high <= 1:
            raise ConfigError("--raters must be >= 1 and --accuracy LOW:HIGH within [0, 1]")
        if not (0 <= self.positive_rate <= 1 and 0 <= self.abstain_rate < 1):
            raise ConfigError("--positive-rate must be in [0, 1] and --abstain-rate in [0, 1)")


def _truth(item: Item, kind: TaskKind, config: SimulationConfig, rng) -> str:
    if item.is_gold and item.gold_label is not None:
        return item.gold_label
    decided = [label for label in kind.labels if kind.decided(label)]
    if rng.random() < config.positive_rate:
        return kind.positive[0]
    negatives = [label for label in decided if label not in kind.positive]
    return str(rng.choice(negatives))


def _answer(truth: str, accuracy: float, kind: TaskKind, config: SimulationConfig, rng) -> str:
    if kind.abstain is not None and rng.random() < config.abstain_rate:
        return kind.abstain
    if rng.random() < accuracy:
        return truth
    others = [label for label in kind.labels if kind.decided(label) and label != truth]
    if kind.ordinal:  # ordinal raters err towards the neighbouring grade
        position = kind.labels.index(truth)
        others = [label for label in others if abs(kind.labels.index(label) - position) == 1] or others
    return str(rng.choice(others))


def simulate_ratings(items: list[Item], config: SimulationConfig) -> pa.Table:
    """Seeded ratings: each item gets `item.overlap` raters, gold items get every rater."""
    rng = np.random.default_rng(config.seed)
    names = [f"simulated-rater-{n + 1:02d}" for n in range(config.raters)]
    accuracy = rng.uniform(*config.accuracy, size=config.raters)
    stamp = now_iso()
    rows = []
    for item in items:
        kind = get_kind(item.task_kind)
        truth = _truth(item, kind, config, rng)
        who = range(config.raters) if item.is_gold else rng.choice(
            config.raters, size=min(item.overlap, config.raters), replace=False)
        for r in sorted(int(x) for x in who):
            rows.append({
                "item_id": item.item_id, "task_kind": item.task_kind, "rater": names[r],
                "label": _answer(truth, float(accuracy[r]), kind, config, rng), "is_gold": item.is_gold,
                "gold_label": item.gold_label, "language": item.language, "query_type": item.query_type,
                "source": "simulated", "rated_at": stamp,
            })
    return ratings_table(rows)
