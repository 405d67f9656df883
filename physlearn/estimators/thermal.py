"""Thermal EP (Massar & Mognetti, arXiv:2405.08467).

At temperature T with p(s) ~ exp(-E/T) and a cost C independent of theta,

    d<C>/dtheta = -(1/T) Cov(C, dE/dtheta),

estimated from the thermal samples the system returns (``Equilibrium.samples``), averaged over
the batch. No output clamping or nudge is needed: the fluctuations carry the signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from physlearn.estimators.base import Estimate, Estimator, Phase, measure
from physlearn.losses import Loss
from physlearn.system import FloatArray, PhysicalSystem


class ThermalCovariance(Estimator):
    def phase_labels(self) -> list[str]:
        return ["free"]

    def estimate(
        self,
        system: PhysicalSystem,
        inputs: FloatArray,
        targets: FloatArray,
        loss: Loss,
        rng: np.random.Generator,
        warm_start: Any = None,
    ) -> Estimate:
        temperature = float(getattr(system, "temperature", 0.0))
        if not system.thermal or temperature <= 0:
            raise ValueError(
                f"the thermal estimator needs a system at temperature T > 0 "
                f"({type(system).__name__} has T = {temperature})"
            )
        free = measure(system, inputs, None, warm_start, rng)
        if free.samples is None:
            raise ValueError(f"{type(system).__name__} returned no thermal samples")
        y = free.samples["outputs"]  # (batch, S, n_out)
        c = loss.value(y, targets[:, None, :])  # (batch, S)
        dc = c - c.mean(axis=1, keepdims=True)
        s = y.shape[1]
        grad = {}
        for g in system.parameter_groups:
            a = free.samples[g.name]  # (batch, S, *shape)
            da = a - a.mean(axis=1, keepdims=True)
            cov = np.einsum("bs,bs...->b...", dc, da) / (s - 1)
            grad[g.name] = -cov.mean(axis=0) / temperature
        per_sample = c.mean(axis=1)
        return Estimate(grad, [Phase("free", 0.0, "free", free)], per_sample, loss)
