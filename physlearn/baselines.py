"""Reference metrics beside every result: what simple models get on the run's own split.

At run creation (:func:`physlearn.run.start.create_store`) the task's baselines are fitted on
exactly the run's training split, on the ENCODED inputs the machine sees
(:meth:`physlearn.task.Task.encode_inputs`), and scored on its test split; the numbers are stored
in the run attribute ``baselines`` and shown by ``physlearn inspect`` and the run report beside
the machine's metrics, so every result says what the physics adds.

* Classification (the dataset has classes): ``majority`` is scikit-learn's
  ``DummyClassifier(strategy="most_frequent")``; ``linear`` is logistic regression
  (``LogisticRegression``, its default L2 penalty ``C=1``) after a ``StandardScaler``, so the
  penalty does not depend on the encoding's units (an affine change of the inputs leaves the
  linear model class unchanged). Metric: accuracy (``train_accuracy``, ``test_accuracy``), the
  machine's accuracy; its ``test_loss`` is a cost on physical outputs (e.g. volts at a softmax
  temperature) that a classifier's probabilities have no counterpart of, so none is given.
* Regression: ``mean`` is ``DummyRegressor(strategy="mean")``; ``linear`` is ordinary least
  squares (``LinearRegression``). Both predict the ENCODED targets
  (:meth:`~physlearn.task.Task.encode_targets`) and are scored with the task's own loss as the
  machine is (``train_loss``, ``test_loss``; e.g. ``mse`` = 1/2 sum_k (y_k - t_k)^2, per pattern,
  mean over patterns), and with ``task.report_loss`` (``test_report_loss``) when one is set.
* Tasks without labels (e.g. quantum phase exploration, sensitivity) have no baselines.

Baselines only read the split: the run's random streams are pure functions of (seed, step)
(:mod:`physlearn.task`), so computing them changes nothing the run computes, and a resumed run
(which never recomputes them) stays bit-identical. scikit-learn is imported only here, lazily.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from physlearn.config import ExperimentConfig
from physlearn.losses import Loss, get_loss
from physlearn.reference_models import default_baselines
from physlearn.task import Task, evaluate_loss


def compute_baselines(config: ExperimentConfig, n_outputs: int, loss: Loss) -> dict[str, Any]:
    """The run attributes of the baselines: ``baselines`` (name -> {model, metrics}) and
    ``baselines_note`` (what was done, or why nothing was)."""
    tcfg = config.task
    names = tcfg.baselines if tcfg.baselines is not None else default_baselines(tcfg.dataset)
    if not names:
        why = "task.baselines: []" if tcfg.baselines is not None else "the task has no labels"
        return {"baselines": {}, "baselines_note": f"none ({why})"}
    task = Task(tcfg, tcfg.dataset.load(config.seed), n_outputs)
    if task.classification:
        out = {n: _classifier(n, task) for n in names}
        note = "accuracy on the run's split, encoded inputs"
    else:
        report = get_loss(tcfg.report_loss, tcfg.temperature) if tcfg.report_loss else None
        out = {n: _regressor(n, task, loss, report) for n in names}
        note = f"task loss {loss.name!r} on the encoded targets of the run's split, encoded inputs"
    return {"baselines": out, "baselines_note": note}


def _classifier(name: str, task: Task) -> dict[str, Any]:
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model: Any
    if name == "majority":
        model, text = DummyClassifier(strategy="most_frequent"), "DummyClassifier(most_frequent)"
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        text = "StandardScaler + LogisticRegression(C=1)"
    d = task.data
    x_train, x_test = task.encode_inputs(d.x_train), task.encode_inputs(d.x_test)
    y_train = d.y_train.astype(np.int64)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x_train, y_train)
        out: dict[str, Any] = {"model": text}
        for split, x, y in (("train", x_train, y_train), ("test", x_test, d.y_test)):
            out[f"{split}_accuracy"] = _number(np.mean(model.predict(x) == y))
    except ValueError as exc:  # e.g. one class only in the training split
        return {"model": text, "error": str(exc).splitlines()[0]}
    if caught:
        out["warning"] = str(caught[-1].message).splitlines()[0]
    return out


def _regressor(name: str, task: Task, loss: Loss, report: Loss | None) -> dict[str, Any]:
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import LinearRegression

    model: Any
    if name == "mean":
        model, text = DummyRegressor(strategy="mean"), "DummyRegressor(mean)"
    else:
        model, text = LinearRegression(), "LinearRegression"
    d = task.data
    x_train, x_test = task.encode_inputs(d.x_train), task.encode_inputs(d.x_test)
    t_train, t_test = task.encode_targets(d.y_train), task.encode_targets(d.y_test)
    try:
        model.fit(x_train, t_train)
    except ValueError as exc:
        return {"model": text, "error": str(exc).splitlines()[0]}
    out: dict[str, Any] = {"model": text}
    for split, x, t in (("train", x_train, t_train), ("test", x_test, t_test)):
        pred = np.asarray(model.predict(x), float).reshape(t.shape)
        out[f"{split}_loss"] = _number(evaluate_loss(loss, pred, t))
        if report is not None and split == "test":
            out["test_report_loss"] = _number(evaluate_loss(report, pred, t))
    return out


def _number(v: Any) -> float | None:
    """A JSON-safe metric: None for NaN or infinity (e.g. ``xy_log`` at an antipode)."""
    f = float(v)
    return f if math.isfinite(f) else None


def baseline_rows(attrs: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(baseline, metric, value) of every finite stored baseline metric, for display."""
    rows = []
    for name, entry in (attrs.get("baselines") or {}).items():
        for key, v in entry.items():
            if key not in ("model", "error", "warning") and isinstance(v, (int, float)):
                rows.append((str(name), str(key), float(v)))
    return rows
