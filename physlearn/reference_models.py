"""Which reference models ("baselines") a task's dataset admits, and the check of a config's
choice: a constant predictor (``majority`` for classification, ``mean`` for regression) and a
``linear`` model, nothing for a dataset without labels. :mod:`physlearn.baselines` fits them; this
module knows only dataset configs, so the config can check ``task.baselines`` when it loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from physlearn.datasets import DatasetConfigBase

BaselineName = Literal["majority", "mean", "linear"]


def default_baselines(dataset: DatasetConfigBase) -> list[str]:
    """The baselines of a task that names none: constant predictor and linear model for a
    labelled dataset, nothing for an unlabelled one."""
    if dataset.n_classes() is not None:
        return ["majority", "linear"]
    if dataset.n_targets() is not None:
        return ["mean", "linear"]
    return []


def check_baselines(names: Sequence[str], dataset: DatasetConfigBase) -> None:
    """Raise ValueError naming ``task.baselines`` when a baseline does not fit the dataset."""
    if len(set(names)) != len(names):
        raise ValueError(f"task.baselines: {list(names)} names a baseline twice")
    if not names:
        return
    if dataset.n_classes() is None and dataset.n_targets() is None:
        raise ValueError(
            f"task.baselines: the {dataset.kind!r} dataset has no labels; set baselines: []"
        )
    wrong = "mean" if dataset.n_classes() is not None else "majority"
    if wrong in names:
        kind = "a classification" if wrong == "mean" else "a regression"
        right = "majority" if wrong == "mean" else "mean"
        raise ValueError(
            f"task.baselines: {wrong!r} does not apply to {kind} dataset ({dataset.kind!r}); "
            f"use {right!r}"
        )
