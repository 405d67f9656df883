"""The per-step non-convergence counts of a run store, summarised for ``inspect`` and the report."""

from __future__ import annotations

from typing import Any

import numpy as np

from physlearn.store.run_store import RunStore


def nonconverged_summary(store: RunStore) -> dict[str, Any]:
    """Totals of ``nonconverged_retried`` / ``nonconverged_dropped`` over the committed steps
    and the number of steps that had any; ``{"note": ...}`` for a store made before they were
    logged. Steps logged before the arrays existed (a resumed older run) hold -1, not counted."""
    names = set(store.array_names())
    if "nonconverged_dropped" not in names or store.committed("step") == 0:
        return {"note": "not logged (run created before non-convergence counts)"}
    retried = store.read("nonconverged_retried").astype(np.int64)
    dropped = store.read("nonconverged_dropped").astype(np.int64)
    logged = dropped >= 0
    return {
        "retried": int(retried[logged].sum()),
        "dropped": int(dropped[logged].sum()),
        "steps_affected": int(((retried > 0) | (dropped > 0))[logged].sum()),
        "steps_logged": int(logged.sum()),
    }


def nonconverged_text(summary: dict[str, Any]) -> str:
    """One line: ``3 samples retried, 1 dropped, in 2 of 40 steps``."""
    if "note" in summary:
        return str(summary["note"])
    return (
        f"{summary['retried']} samples retried, {summary['dropped']} dropped, in "
        f"{summary['steps_affected']} of {summary['steps_logged']} steps"
    )
