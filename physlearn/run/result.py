"""What a run ends with: its :class:`RunResult`, and the last metrics a store holds.

Shared by the run driver (:mod:`physlearn.run.start`), ``physlearn inspect``, sweep planning
(:mod:`physlearn.sweep.plan`) and reports; light to import (no estimator, no system).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from physlearn.store.run_store import RunStore


@dataclass
class RunResult:
    """A run's store, its exit status, its committed steps and its last metrics."""

    path: Path
    status: str
    committed_steps: int
    metrics: dict[str, float] = field(default_factory=dict)


def last_metrics(store: RunStore) -> dict[str, float]:
    """The last committed training loss and evaluation metrics of a run (a NaN evaluation
    metric, e.g. accuracy of a regression, is left out)."""
    out: dict[str, float] = {}
    names = set(store.array_names())
    if store.committed("step") and "loss" in names:
        out["loss"] = float(store.read_last("loss"))
    if store.committed("eval"):
        for name in ("test_accuracy", "test_loss", "train_accuracy", "train_loss"):
            if name in names:
                v = float(store.read_last(name))
                if not math.isnan(v):
                    out[name] = v
    return out
