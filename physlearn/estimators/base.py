"""Shared pieces of the gradient estimators: phases, estimates and batched measurement."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.estimators.nonconverged import NonConvergedPolicy, apply_policy
from physlearn.losses import Loss
from physlearn.system import Equilibrium, FloatArray, Nudge, Params, PhysicalSystem


@dataclass
class Phase:
    """One measured phase of an estimator step.

    ``label`` is stable across steps (it names an entry of the store's ``phase`` dimension);
    ``warm_start`` names the phase whose state seeded this one ("" for a cold start).
    """

    label: str
    beta: complex
    kind: str  # "free", "target", "error", "clamp", "perturb"
    eq: Equilibrium
    warm_start: str = ""


@dataclass
class Estimate:
    """A batch-mean gradient estimate with everything measured to obtain it.

    ``gradient[g]`` has the shape of parameter group ``g`` and estimates dL/dtheta of
    ``objective`` (per-sample loss averaged over the batch); descent is ``theta -= lr * gradient``.
    """

    gradient: Params
    phases: list[Phase]
    loss: FloatArray  # (batch,) objective at the free equilibrium
    objective: Loss
    extras: dict[str, FloatArray] = field(default_factory=dict)
    #: ``(batch,)`` samples that did not converge in a measurement outside ``phases`` (the
    #: black-box estimators' perturbed measurements); None: none such.
    unconverged: NDArray[np.bool_] | None = None
    #: Samples the non-convergence policy re-measured, and those left out of ``gradient`` and
    #: ``loss`` (whose entries are then NaN); see :mod:`physlearn.estimators.nonconverged`.
    retried: int = 0
    dropped: int = 0

    @property
    def free(self) -> Equilibrium:
        return self.phases[0].eq


class Estimator(ABC):
    """Turns measured phases into a gradient."""

    #: Whether the estimator needs the system's energy (conjugate observables).
    needs_conjugates: bool = True
    #: Whether each phase keeps its per-sample conjugates; False keeps batch means only (see
    #: :meth:`Equilibrium.keep_means_only`), for runs that log batch means.
    per_sample: bool = True
    #: What :meth:`estimate_checked` does with samples that did not converge.
    nonconverged: NonConvergedPolicy = NonConvergedPolicy()

    @abstractmethod
    def phase_labels(self) -> list[str]:
        """Labels of the phases every step logs, in order; the first is the free phase."""

    @abstractmethod
    def estimate(
        self,
        system: PhysicalSystem,
        inputs: FloatArray,
        targets: FloatArray,
        loss: Loss,
        rng: np.random.Generator,
        warm_start: Any = None,
    ) -> Estimate:
        """Measure the phases for one batch and return the gradient estimate.

        ``warm_start``: a state for the free phase (the orchestrator passes the previous
        step's free state, carried by :meth:`PhysicalSystem.import_state`; None: cold).
        """

    def estimate_checked(
        self,
        system: PhysicalSystem,
        inputs: FloatArray,
        targets: FloatArray,
        loss: Loss,
        rng: np.random.Generator,
        warm_start: Any = None,
        step: int | None = None,
    ) -> Estimate:
        """:meth:`estimate`, then the :attr:`nonconverged` policy applied to the samples whose
        equilibrium did not converge in any phase (``step`` names the step in a failure).
        Returns :meth:`estimate`'s result unchanged when every sample converged."""
        est = self.estimate(system, inputs, targets, loss, rng, warm_start)
        return apply_policy(self, system, inputs, targets, loss, rng, est, step)


@dataclass
class _ChunkedState:
    states: list[Any]


def _concat(parts: list[Equilibrium]) -> Equilibrium:
    def cat(arrs: list[Any]) -> Any:
        if arrs[0] is None:
            return None
        return np.concatenate(arrs, axis=0)

    first = parts[0]
    return Equilibrium(
        outputs=cat([p.outputs for p in parts]),
        conjugates={k: cat([p.conjugates[k] for p in parts]) for k in first.conjugates},
        state=_ChunkedState([p.state for p in parts]),
        residual=cat([p.residual for p in parts]),
        iterations=cat([p.iterations for p in parts]),
        shots=first.shots,
        settle_time=float(sum(p.settle_time for p in parts)),
        energy=cat([p.energy for p in parts]),
        samples=None
        if first.samples is None
        else {k: cat([p.samples[k] for p in parts if p.samples]) for k in first.samples},
        observables={k: cat([p.observables[k] for p in parts]) for k in first.observables},
        converged=cat([p.converged for p in parts]),
    )


def measure(
    system: PhysicalSystem,
    inputs: FloatArray,
    nudge: Nudge | None = None,
    warm_start: Any = None,
    rng: np.random.Generator | None = None,
    per_sample: bool = True,
) -> Equilibrium:
    """``system.equilibrate`` over a batch of any size, split into chunks of ``max_batch``;
    ``per_sample=False`` keeps only the batch means of the conjugates."""
    eq = _measure(system, inputs, nudge, warm_start, rng)
    if not per_sample:
        eq.keep_means_only()
    return eq


def measure_many(
    system: PhysicalSystem,
    inputs: FloatArray,
    nudges: Sequence[Nudge | None],
    warm_start: Any = None,
    rng: np.random.Generator | None = None,
    per_sample: bool = True,
) -> list[Equilibrium]:
    """:func:`measure` of ``inputs`` under each of ``nudges``, in order: through
    ``system.equilibrate_many`` when the batch fits in one call (``max_batch``), else one
    :func:`measure` each."""
    if inputs.shape[0] > system.max_batch:
        return [measure(system, inputs, n, warm_start, rng, per_sample) for n in nudges]
    eqs = system.equilibrate_many(inputs, nudges, warm_start, rng)
    if len(eqs) != len(nudges):
        raise RuntimeError(
            f"{type(system).__name__}.equilibrate_many returned {len(eqs)} results for "
            f"{len(nudges)} nudges"
        )
    if not per_sample:
        for eq in eqs:
            eq.keep_means_only()
    return eqs


def _measure(
    system: PhysicalSystem,
    inputs: FloatArray,
    nudge: Nudge | None,
    warm_start: Any,
    rng: np.random.Generator | None,
) -> Equilibrium:
    n = inputs.shape[0]
    if n <= system.max_batch:
        return system.equilibrate(inputs, nudge, warm_start, rng)
    parts = []
    chunk_states = warm_start.states if isinstance(warm_start, _ChunkedState) else None
    for i, start in enumerate(range(0, n, system.max_batch)):
        sl = slice(start, start + system.max_batch)
        sub = None
        if nudge is not None:
            sub = Nudge(
                beta=nudge.beta,
                target=None if nudge.target is None else nudge.target[sl],
                error=None if nudge.error is None else nudge.error[sl],
                clamp=None if nudge.clamp is None else nudge.clamp[sl],
            )
        ws = chunk_states[i] if chunk_states is not None else None
        parts.append(system.equilibrate(inputs[sl], sub, ws, rng))
    return _concat(parts)


def batch_mean(conjugates: Params) -> Params:
    return {k: np.asarray(v.mean(axis=0)) for k, v in conjugates.items()}
