"""Estimator configs: the ``estimator`` section of an experiment (``kind``: ep, coupled,
finite_difference, spsa, thermal) and what a step does with non-converged samples
(``estimator.nonconverged``). :func:`physlearn.run.campaign.build_estimator` turns them into the
estimators of :mod:`physlearn.estimators`; sign conventions are in ``docs/physics.md`` §EP.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from physlearn.configbase import StrictModel


class NonConvergedConfig(StrictModel):
    """What a step does with samples whose equilibrium did not converge (``converged`` false in
    any measured phase). ``drop`` (the default) estimates the gradient and the loss from the
    other samples of the batch, ``retry`` first re-measures the affected samples up to
    ``retries`` times from a cold start (those still unconverged are then dropped), ``fail``
    stops the run naming the step, phase and samples. Every step logs how many samples were
    retried and dropped; a step whose every sample is dropped fails. A run where everything
    converges is the same under every policy."""

    policy: Literal["drop", "retry", "fail"] = Field(
        "drop", description="drop the samples, retry them (then drop), or fail the run."
    )
    retries: int = Field(1, ge=1, le=100, description="retry: re-measurements of the samples.")


class _EstimatorBase(StrictModel):
    nonconverged: NonConvergedConfig = Field(
        default_factory=NonConvergedConfig,
        description="Samples whose equilibrium did not converge: drop, retry or fail.",
    )


class EPConfig(_EstimatorBase):
    """Equilibrium propagation. ``nudging``: one_sided (error O(beta)), centred (O(beta^2)),
    n_point (real central stencil on n_points nudges, O(beta^n)), holomorphic (complex nudges on a
    circle of radius beta; simulators only), custom (``pairs`` of [beta, weight])."""

    kind: Literal["ep"] = "ep"
    nudging: Literal["one_sided", "centred", "n_point", "holomorphic", "custom"] = "centred"
    beta: float = Field(
        0.1,
        gt=0,
        description="Nudge strength, energy per unit cost (S = W/V^2 for a resistor network "
        "with mse).",
    )
    n_points: int = Field(4, ge=2, description="Points of n_point / holomorphic nudging.")
    pairs: list[tuple[float, float]] = Field(
        default_factory=list, description="custom: [[beta, weight], ...]; beta=0 is the free phase."
    )
    nudge: Literal["auto", "target", "error"] = Field(
        "auto",
        description="target: the system's physical cost nudge; error: beta*sum eps_k O_k with "
        "eps = dL/dO at the free state; auto: target when the loss is the native cost.",
    )

    @model_validator(mode="after")
    def _pairs(self) -> EPConfig:
        if self.nudging == "custom" and not self.pairs:
            raise ValueError("nudging 'custom' needs 'pairs'")
        if self.nudging == "n_point" and self.n_points % 2:
            raise ValueError("n_point nudging needs an even n_points")
        return self

    def has_negative_beta(self) -> bool:
        """Whether the stencil nudges with a beta of negative real part (every stencil but
        one-sided and a custom one whose betas are all >= 0)."""
        if self.nudging == "custom":
            return any(b < 0 for b, _ in self.pairs)
        return self.nudging != "one_sided"


class CoupledConfig(_EstimatorBase):
    """Coupled learning: clamp outputs to y_free + eta (y - y_free)."""

    kind: Literal["coupled"] = "coupled"
    eta: float = Field(0.1, gt=0, le=1, description="Clamping fraction towards the target.")


class FiniteDifferenceConfig(_EstimatorBase):
    """Central finite differences on the loss, one parameter at a time (2P measurements)."""

    kind: Literal["finite_difference"] = "finite_difference"
    step: float = Field(1e-3, gt=0, description="Perturbation, in each parameter's unit.")


class SPSAConfig(_EstimatorBase):
    """Simultaneous perturbation: 2 measurements per draw, all parameters at once."""

    kind: Literal["spsa"] = "spsa"
    c: float = Field(1e-2, gt=0, description="Perturbation size, in each parameter's unit.")
    n_samples: int = Field(1, ge=1, description="Perturbation draws averaged per step.")


class ThermalConfig(_EstimatorBase):
    """Thermal EP: -Cov(C, dE/dtheta)/T from the system's thermal samples (needs T > 0)."""

    kind: Literal["thermal"] = "thermal"


EstimatorConfig = Annotated[
    EPConfig | CoupledConfig | FiniteDifferenceConfig | SPSAConfig | ThermalConfig,
    Field(discriminator="kind"),
]
