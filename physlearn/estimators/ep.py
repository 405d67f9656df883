"""Equilibrium propagation with nudging given as (beta, weight) pairs.

For a nudge list ``[(beta_k, w_k)]`` the estimate is

    g = Re sum_k w_k <dE/dtheta>(s^{beta_k}),

with ``<.>`` the batch mean and ``s^0`` the free equilibrium. The weights form a finite-difference
stencil for d/dbeta at beta = 0 (Scellier & Bengio 2017: that derivative is dL/dtheta):

* one-sided: ``[(beta, 1/beta), (0, -1/beta)]``, error O(beta);
* centred: ``[(beta, 1/2beta), (-beta, -1/2beta)]``, error O(beta^2) (Laborieux et al. 2021);
* ``n_point`` (real): central stencil over +-beta, +-2beta, ...; error O(beta^N);
* ``holomorphic``: ``beta e^{2 pi i k/N}`` with weights ``e^{-2 pi i k/N}/(N beta)``
  (Laborieux & Zenke 2022); needs a system with ``supports_complex_nudge``.

Every nudged phase is warm-started from the free equilibrium; the free phase starts from the
``warm_start`` passed to :meth:`EquilibriumPropagation.estimate` (the orchestrator's carried
previous free state) or cold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from physlearn.estimators.base import Estimate, Estimator, Phase, measure, measure_many
from physlearn.losses import Loss, value_and_grad
from physlearn.system import FloatArray, Nudge, Params, PhysicalSystem


def one_sided(beta: float) -> list[tuple[complex, complex]]:
    return [(beta, 1.0 / beta), (0.0, -1.0 / beta)]


def centred(beta: float) -> list[tuple[complex, complex]]:
    return [(beta, 0.5 / beta), (-beta, -0.5 / beta)]


def central_stencil(beta: float, n_points: int) -> list[tuple[complex, complex]]:
    """Real central-difference stencil for f'(0) on ``n_points`` (even) nudges +-j*beta."""
    if n_points < 2 or n_points % 2:
        raise ValueError("n_point nudging needs an even number of points >= 2")
    m = n_points // 2
    nodes = np.array([j for j in range(-m, m + 1) if j != 0], dtype=float)
    # Solve sum_j w_j j^p = delta_{p,1} for p = 0..n-1 (Vandermonde system).
    vander = np.vander(nodes, n_points, increasing=True).T
    rhs = np.zeros(n_points)
    rhs[1] = 1.0
    w = np.linalg.solve(vander, rhs)
    return [(float(j * beta), float(wj / beta)) for j, wj in zip(nodes, w, strict=True)]


def holomorphic(beta: float, n_points: int) -> list[tuple[complex, complex]]:
    if n_points < 2:
        raise ValueError("holomorphic nudging needs at least 2 points")
    out = []
    for k in range(n_points):
        z = complex(math.cos(2 * math.pi * k / n_points), math.sin(2 * math.pi * k / n_points))
        out.append((beta * z, z.conjugate() / (n_points * beta)))
    return out


def _fmt(b: complex) -> str:
    if abs(b.imag) < 1e-15:
        return f"{b.real:+.6g}"
    return f"{b.real:+.4g}{b.imag:+.4g}j"


class EquilibriumPropagation(Estimator):
    """EP estimator over an arbitrary (beta, weight) stencil.

    ``nudge``: ``"target"`` adds beta * (the system's native cost); ``"error"`` adds
    beta * sum_k eps_k O_k with eps = dL/dy at the free state; ``"auto"`` picks ``target`` when the
    loss is the system's native cost and the system can realise it, else ``error``.
    """

    def __init__(self, pairs: list[tuple[complex, complex]], nudge: str = "auto") -> None:
        if not pairs:
            raise ValueError("EP needs at least one (beta, weight) pair")
        self.pairs = [(complex(b), complex(w)) for b, w in pairs]
        self.nudge = nudge
        self._nonzero = [b for b, _ in self.pairs if b != 0]
        self._labels = ["free"] + [f"beta{_fmt(b)}" for b in self._nonzero]
        self._complex = any(b.imag != 0 for b in self._nonzero)
        # each pair as (phase measured at its beta: 0 the free one, else the last nudged phase
        # with that beta; the weight as it multiplies the batch-mean conjugate)
        phase_of = {complex(0.0): 0} | {b: i for i, b in enumerate(self._nonzero, start=1)}
        self._terms = [(phase_of[b], w.real if w.imag == 0 else w) for b, w in self.pairs]

    def phase_labels(self) -> list[str]:
        return list(self._labels)

    def nudge_kind(self, system: PhysicalSystem, loss: Loss) -> str:
        if self.nudge != "auto":
            kind = self.nudge
        elif system.native_cost == loss.name and "target" in system.supported_nudges:
            kind = "target"
        else:
            kind = "error"
        if kind not in system.supported_nudges:
            raise ValueError(
                f"{type(system).__name__} cannot realise a {kind!r} nudge "
                f"(supports {sorted(system.supported_nudges)})"
            )
        if kind == "target" and system.native_cost != loss.name:
            raise ValueError(
                f"a target nudge realises {system.native_cost!r}, not the loss {loss.name!r}"
            )
        return kind

    def estimate(
        self,
        system: PhysicalSystem,
        inputs: FloatArray,
        targets: FloatArray,
        loss: Loss,
        rng: np.random.Generator,
        warm_start: Any = None,
    ) -> Estimate:
        kind = self.nudge_kind(system, loss)
        if self._complex and not system.supports_complex_nudge:
            raise ValueError(
                f"{type(system).__name__} does not support complex (holomorphic) nudges"
            )
        per_sample = self.per_sample
        free = measure(system, inputs, None, warm_start, rng, per_sample)
        phases = [Phase("free", 0.0, "free", free)]
        if kind == "error":
            value, error = value_and_grad(loss, free.outputs, targets)
        nudges: list[Nudge | None] = [
            Nudge(beta=b, target=targets) if kind == "target" else Nudge(beta=b, error=error)
            for b in self._nonzero
        ]
        # every nudged phase in one request (a bench measures them in one sweep)
        nudged = measure_many(system, inputs, nudges, free.state, rng, per_sample)
        for label, b, eq in zip(self._labels[1:], self._nonzero, nudged, strict=True):
            phases.append(Phase(label, b, kind, eq, warm_start="free"))
        grad: Params = {}
        for g in system.parameter_groups:
            acc: np.ndarray | None = None
            for i, w in self._terms:
                term = w * phases[i].eq.conjugate_mean(g.name)
                acc = term if acc is None else acc + term
            assert acc is not None  # pairs is never empty
            grad[g.name] = np.ascontiguousarray(acc.real).reshape(g.shape)  # keeps 0-d groups 0-d
        if kind != "error":
            value = loss.value(free.outputs, targets)
        return Estimate(grad, phases, value, loss)
