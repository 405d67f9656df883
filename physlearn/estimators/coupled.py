"""Coupled learning (Stern et al., PRX 11, 021045, 2021).

Clamp the outputs to ``y_c = y_free + eta (y - y_free)`` and estimate
``g = (1/eta) [<dE/dtheta>(clamped) - <dE/dtheta>(free)]``; the update ``theta -= lr * g`` has the
sign of ``-dC/dtheta`` as eta -> 0. The clamped phase is warm-started from the free one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from physlearn.estimators.base import Estimate, Estimator, Phase, measure
from physlearn.losses import Loss
from physlearn.system import FloatArray, Nudge, PhysicalSystem


class CoupledLearning(Estimator):
    def __init__(self, eta: float) -> None:
        if not 0 < eta <= 1:
            raise ValueError("coupled learning needs 0 < eta <= 1")
        self.eta = eta

    def phase_labels(self) -> list[str]:
        return ["free", "clamped"]

    def estimate(
        self,
        system: PhysicalSystem,
        inputs: FloatArray,
        targets: FloatArray,
        loss: Loss,
        rng: np.random.Generator,
        warm_start: Any = None,
    ) -> Estimate:
        if "clamp" not in system.supported_nudges:
            raise ValueError(f"{type(system).__name__} cannot clamp its outputs")
        free = measure(system, inputs, None, warm_start, rng, self.per_sample)
        clamp = free.outputs + self.eta * (targets - free.outputs)
        clamped = measure(system, inputs, Nudge(clamp=clamp), free.state, rng, self.per_sample)
        grad = {
            g.name: (clamped.conjugate_mean(g.name) - free.conjugate_mean(g.name)) / self.eta
            for g in system.parameter_groups
        }
        phases = [
            Phase("free", 0.0, "free", free),
            Phase("clamped", self.eta, "clamp", clamped, warm_start="free"),
        ]
        return Estimate(grad, phases, loss.value(free.outputs, targets), loss)
