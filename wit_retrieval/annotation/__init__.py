"""Human quality audits of EI and MMIR: task export, the rater web app, imports, agreement, reports."""

from __future__ import annotations

from .audit_report import agreement, analyze
from .importers import import_ratings, load_ratings
from .ratings import RATINGS
from .sampling import SampleConfig, sample_items
from .simulate import SimulationConfig, simulate_ratings
from .tasks import TASK_KINDS, Item, TaskKind, get_kind, read_items, write_items

__all__ = [
    "RATINGS", "TASK_KINDS", "Item", "SampleConfig", "SimulationConfig", "TaskKind", "agreement", "analyze",
    "get_kind", "import_ratings", "load_ratings", "read_items", "sample_items", "simulate_ratings", "write_items",
]
