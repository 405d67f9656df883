"""Black-box gradient baselines that need only free-phase outputs (no energy, no conjugates).

For machines whose energy is unknown or whose conjugates cannot be measured. Perturbed parameter
values are kept inside each group's bounds (a perturbation at a bound is shortened, and the actual
difference used), and the original parameters are restored before returning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.estimators.base import Estimate, Estimator, Phase, measure
from physlearn.losses import Loss
from physlearn.system import FloatArray, Params, PhysicalSystem


def _perturbed_loss(
    system: PhysicalSystem,
    params: Params,
    inputs: FloatArray,
    targets: FloatArray,
    loss: Loss,
    rng: np.random.Generator,
    bad: NDArray[np.bool_],
) -> float:
    """The batch-mean loss at ``params``; marks the samples that did not converge in ``bad``."""
    system.set_parameters(params)
    eq = measure(system, inputs, None, None, rng)
    if eq.converged is not None:
        bad |= ~np.asarray(eq.converged, dtype=bool)
    return float(loss.value(eq.outputs, targets).mean())


def _bounded(system: PhysicalSystem, params: Params) -> Params:
    return {g.name: np.clip(params[g.name], g.lower, g.upper) for g in system.parameter_groups}


class FiniteDifference(Estimator):
    """Central finite differences, one parameter element at a time: 2P extra measurements."""

    needs_conjugates = False

    def __init__(self, step: float) -> None:
        if step <= 0:
            raise ValueError("finite-difference step must be > 0")
        self.step = step

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
        base = system.get_parameters()
        free = measure(system, inputs, None, warm_start, rng)
        bad = np.zeros(inputs.shape[0], dtype=bool)
        grad: Params = {}
        try:
            for g in system.parameter_groups:
                flat = np.zeros(g.size)
                for i in range(g.size):
                    vals = []
                    for sign in (1.0, -1.0):
                        p = {k: v.copy() for k, v in base.items()}
                        pf = p[g.name].reshape(-1)
                        pf[i] = np.clip(pf[i] + sign * self.step, g.lower, g.upper)
                        vals.append(
                            (pf[i], _perturbed_loss(system, p, inputs, targets, loss, rng, bad))
                        )
                    dx = vals[0][0] - vals[1][0]
                    flat[i] = (vals[0][1] - vals[1][1]) / dx if dx != 0 else 0.0
                grad[g.name] = flat.reshape(g.shape)
        finally:
            system.set_parameters(base)
        return Estimate(
            grad,
            [Phase("free", 0.0, "free", free)],
            loss.value(free.outputs, targets),
            loss,
            unconverged=bad,
        )


class SPSA(Estimator):
    """Simultaneous-perturbation stochastic approximation (Spall 1992).

    Each of ``n_samples`` draws perturbs every parameter by ``+-c`` (Rademacher signs) and measures
    the loss at both points: ``g_i = (L+ - L-) / (theta+_i - theta-_i)``, averaged over draws.
    """

    needs_conjugates = False

    def __init__(self, c: float, n_samples: int = 1) -> None:
        if c <= 0 or n_samples < 1:
            raise ValueError("SPSA needs c > 0 and n_samples >= 1")
        self.c = c
        self.n_samples = n_samples

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
        base = system.get_parameters()
        free = measure(system, inputs, None, warm_start, rng)
        bad = np.zeros(inputs.shape[0], dtype=bool)
        grad = {k: np.zeros_like(v) for k, v in base.items()}
        diffs = np.zeros(self.n_samples)
        try:
            for s in range(self.n_samples):
                delta = {k: rng.choice([-1.0, 1.0], size=v.shape) for k, v in base.items()}
                plus = _bounded(system, {k: base[k] + self.c * delta[k] for k in base})
                minus = _bounded(system, {k: base[k] - self.c * delta[k] for k in base})
                lp = _perturbed_loss(system, plus, inputs, targets, loss, rng, bad)
                lm = _perturbed_loss(system, minus, inputs, targets, loss, rng, bad)
                diffs[s] = lp - lm
                for k in base:
                    dx = plus[k] - minus[k]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        grad[k] += np.where(dx != 0, (lp - lm) / np.where(dx != 0, dx, 1.0), 0.0)
        finally:
            system.set_parameters(base)
        grad = {k: v / self.n_samples for k, v in grad.items()}
        return Estimate(
            grad,
            [Phase("free", 0.0, "free", free)],
            loss.value(free.outputs, targets),
            loss,
            extras={"spsa_loss_difference": diffs},
            unconverged=bad,
        )
