"""What a step does with samples whose equilibrium did not converge.

A sample is unconverged when any measured phase reports ``converged`` false for it (or the
estimator's own extra measurements do: :attr:`Estimate.unconverged`). Its conjugates are not
those of an equilibrium, and a gradient built from them is wrong by an unknown amount (XY with the
``xy_log`` nudge at negative beta: residuals up to 1e6). :class:`NonConvergedPolicy` decides:

* ``fail``: :class:`~physlearn.system.PhysicsError` naming the step, the phases and the samples;
* ``drop``: the gradient and the loss are those of the estimator run on the other samples alone
  (measured again, from a cold start: an estimate is a batch mean over its samples, so this is
  exactly the estimate without them);
* ``retry``: the unconverged samples are first measured again ``retries`` times, from a cold
  start (a different start than the carried warm start; random restarts draw new initial
  conditions); those that converge join the estimate, weighted by their count, the rest are
  dropped.

The phases an :class:`Estimate` carries (and the run store logs) stay the step's first
measurement of the whole batch, whose ``converged`` marks the samples the policy acted on;
``retried`` and ``dropped`` count them. A step where every sample converged is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.arrays import FloatArray, IntArray
from physlearn.losses import Loss
from physlearn.system import Params, PhysicalSystem, PhysicsError

if TYPE_CHECKING:
    from physlearn.estimators.base import Estimate, Estimator


@dataclass(frozen=True)
class NonConvergedPolicy:
    """``policy``: ``drop``, ``retry`` or ``fail``; ``retries``: re-measurements (retry)."""

    policy: Literal["drop", "retry", "fail"] = "drop"
    retries: int = 1


def unconverged(est: Estimate) -> NDArray[np.bool_]:
    """``(batch,)`` samples that did not converge in some phase of ``est``."""
    bad = np.zeros(est.phases[0].eq.batch, dtype=bool)
    for p in est.phases:
        if p.eq.converged is not None:
            bad |= ~np.asarray(p.eq.converged, dtype=bool)
    if est.unconverged is not None:
        bad |= np.asarray(est.unconverged, dtype=bool)
    return bad


def _failure(est: Estimate, bad: NDArray[np.bool_], step: int | None) -> str:
    where = "" if step is None else f"step {step}: "
    parts = []
    for p in est.phases:
        if p.eq.converged is None:
            continue
        idx = np.flatnonzero(~np.asarray(p.eq.converged, dtype=bool))
        if idx.size:
            res = (
                ""
                if p.eq.residual is None
                else f", residual up to {np.max(p.eq.residual[idx]):.3g}"
            )
            parts.append(f"phase {p.label!r} samples {idx.tolist()}{res}")
    if not parts:
        parts.append(f"extra measurements, samples {np.flatnonzero(bad).tolist()}")
    return (
        f"{where}the equilibrium did not converge in {'; '.join(parts)} (batch positions); "
        "set estimator.nonconverged.policy to 'drop' or 'retry' to train on, or change the "
        "relaxation or the nudge"
    )


def _converged_subset(
    estimator: Estimator,
    args: tuple[PhysicalSystem, FloatArray, FloatArray, Loss, np.random.Generator],
    idx: IntArray,
) -> tuple[IntArray, Estimate | None]:
    """The estimator on the samples ``idx`` (cold), measured again without those that do not
    converge until every one left does: (the samples kept, their estimate or None)."""
    system, inputs, targets, loss, rng = args
    while idx.size:
        sub = estimator.estimate(system, inputs[idx], targets[idx], loss, rng, None)
        bad = unconverged(sub)
        if not bad.any():
            return idx, sub
        idx = idx[~bad]
    return idx, None


def apply_policy(
    estimator: Estimator,
    system: PhysicalSystem,
    inputs: FloatArray,
    targets: FloatArray,
    loss: Loss,
    rng: np.random.Generator,
    est: Estimate,
    step: int | None,
) -> Estimate:
    """``est`` when every sample converged, else the policy's estimate (module docstring)."""
    bad = unconverged(est)
    if not bad.any():
        return est
    policy = estimator.nonconverged
    if policy.policy == "fail":
        raise PhysicsError(_failure(est, bad, step))
    args = (system, inputs, targets, loss, rng)
    parts: list[tuple[IntArray, Estimate]] = []
    pending = np.flatnonzero(bad)
    retried = 0
    if policy.policy == "retry":
        retried = int(pending.size)
        for _ in range(policy.retries):
            kept, sub = _converged_subset(estimator, args, pending)
            if sub is not None:
                parts.append((kept, sub))
            pending = np.setdiff1d(pending, kept)
            if not pending.size:
                break
    kept, sub = _converged_subset(estimator, args, np.flatnonzero(~bad))
    if sub is not None:
        parts.append((kept, sub))
    return _combined(est, parts, retried, step)


def _combined(
    est: Estimate, parts: list[tuple[IntArray, Estimate]], retried: int, step: int | None
) -> Estimate:
    """The batch-mean estimate over the samples of ``parts`` (each weighted by its count)."""
    n = sum(int(idx.size) for idx, _ in parts)
    batch = est.phases[0].eq.batch
    if n == 0:
        where = "" if step is None else f"step {step}: "
        raise PhysicsError(
            f"{where}no sample of the batch converged in every phase, so there is nothing to "
            "estimate a gradient from; change the relaxation or the nudge"
        )
    grad: Params = {}
    for name, g in est.gradient.items():
        acc: Any = sum(sub.gradient[name] * (idx.size / n) for idx, sub in parts)
        grad[name] = np.asarray(acc, dtype=np.asarray(g).dtype).reshape(np.shape(g))
    per_sample = np.full(batch, np.nan)
    for idx, sub in parts:
        per_sample[idx] = sub.loss
    return replace(est, gradient=grad, loss=per_sample, retried=retried, dropped=batch - n)
