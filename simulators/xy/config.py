"""Config of the XY oscillator simulator (``system: kind: xy``).

Coupled phase oscillators, ``E = -sum W_ij cos(phi_i - phi_j) - sum h_i cos(phi_i - psi_i)``
(dimensionless energy, phases in rad), on a layered, lattice, all-to-all or explicit graph. The
input phases are clamped on the input nodes (the task's encoding maps data to rad), the outputs
are the phases of the output nodes. Example (XOR on a 3 x 3 lattice)::

    system:
      kind: xy
      graph: {type: lattice, rows: 3, cols: 3, inputs: 2, outputs: 2}
      coupling: {min: -5.0, max: 5.0, init: normal, init_scale: 0.5}
      restarts: 4
    task:
      encoding: {scale: 1.5707963267948966}       # +-1 -> +-pi/2 rad
      target: {kind: onehot, high: 1.5707963267948966, low: -1.5707963267948966}
      readout: sin

Validation never imports numpy-heavy modules; :meth:`XYConfig.build` does, lazily.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from physlearn.configbase import MAX_EDGES, StrictModel, SystemConfigBase
from physlearn.simulators.graphs.config import (
    AllToAllGraph,
    EdgeListGraph,
    LatticeGraph,
    LayeredGraph,
)

if TYPE_CHECKING:
    from physlearn.simulators.xy.system import XYNetwork

XYGroup = Literal["coupling", "bias_amplitude", "bias_direction"]


def _all_groups() -> list[XYGroup]:
    return ["coupling", "bias_amplitude", "bias_direction"]


XYGraphConfig = Annotated[
    LayeredGraph | LatticeGraph | AllToAllGraph | EdgeListGraph, Field(discriminator="type")
]


class XYCouplingConfig(StrictModel):
    """Couplings W_ij on the edges (dimensionless energy): bounds and random initialisation."""

    min: float = Field(-10.0, description="lowest coupling the hardware holds (1)")
    max: float = Field(10.0, description="highest coupling the hardware holds (1)")
    init: Literal["normal", "uniform"] = Field(
        "normal", description="initial distribution: normal(0, s) or uniform(-s, s)"
    )
    init_scale: float | None = Field(
        None,
        gt=0,
        description="s of the initial distribution (1); default 1/sqrt(mean degree), so the "
        "field on a node is O(1) whatever the graph",
    )

    @model_validator(mode="after")
    def _check(self) -> XYCouplingConfig:
        if self.min >= self.max:
            raise ValueError(f"coupling min ({self.min:g}) must be < max ({self.max:g})")
        return self


class XYBiasConfig(StrictModel):
    """Bias fields ``h_i cos(phi_i - psi_i)``: amplitude bounds (1) and initialisation."""

    amplitude_min: float = Field(-10.0, description="lowest bias amplitude h (1)")
    amplitude_max: float = Field(10.0, description="highest bias amplitude h (1)")
    amplitude_init_low: float = Field(0.0, description="uniform initial h, lower end (1)")
    amplitude_init_high: float = Field(0.1, description="uniform initial h, upper end (1)")
    direction_init: Literal["uniform", "zero"] = Field(
        "uniform", description="initial psi: uniform on [-pi, pi) (rad) or 0"
    )

    @model_validator(mode="after")
    def _check(self) -> XYBiasConfig:
        if self.amplitude_min >= self.amplitude_max:
            raise ValueError("bias amplitude_min must be < amplitude_max")
        if not (
            self.amplitude_min
            <= self.amplitude_init_low
            <= self.amplitude_init_high
            <= self.amplitude_max
        ):
            raise ValueError(
                "bias init range must satisfy amplitude_min <= amplitude_init_low <= "
                "amplitude_init_high <= amplitude_max"
            )
        return self


class XYRelaxConfig(StrictModel):
    """How the oscillators are relaxed to a stable fixed point (FIRE, then damped Newton)."""

    tol: float = Field(
        1e-9, gt=0, description="residual target: max |dF/dphi| over free nodes (energy/rad)"
    )
    max_iter: int = Field(100, ge=1, description="Newton iterations at most (count)")
    newton_switch: float = Field(
        1e-3,
        ge=0,
        description="residual (energy/rad) at which a cold start leaves FIRE for Newton; 0 = "
        "Newton only",
    )
    fire_max_steps: int = Field(20000, ge=0, description="FIRE steps at most (count)")
    fire_dt_max: float = Field(
        1.5,
        gt=0,
        lt=2,
        description="largest FIRE time step, in units of 1/sqrt(L) with L the Gershgorin bound "
        "on the Hessian (energy/rad^2); 2 is the integrator's stability limit",
    )
    backend: Literal["auto", "dense", "sparse"] = Field(
        "auto",
        description="linear algebra: dense stacks (small or dense graphs), block-diagonal "
        "sparse LU (large sparse graphs), or auto",
    )


class XYLangevinConfig(StrictModel):
    """Thermal sampling at T > 0: overdamped Langevin dynamics, Metropolis-adjusted."""

    dt: float = Field(0.05, gt=0, description="time step (units of the inverse mobility)")
    burn_in: int = Field(200, ge=0, description="steps discarded before sampling (count)")
    n_samples: int = Field(200, ge=2, description="thermal samples per pattern (count)")
    thin: int = Field(5, ge=1, description="steps between kept samples (count)")
    metropolis: bool = Field(
        True,
        description="accept/reject each step (MALA: exact exp(-F/T)); false = plain "
        "Euler-Maruyama, O(dt)-biased",
    )


class XYConfig(SystemConfigBase):
    """Coupled phase oscillators (XY model) with clamped input phases."""

    kind: Literal["xy"] = Field("xy", description="system kind: XY phase oscillators")
    native_cost: ClassVar[str | None] = "xy_log"
    graph: XYGraphConfig = Field(
        description="topology: layered, lattice (with skips), all_to_all or edges"
    )
    coupling: XYCouplingConfig = Field(
        default_factory=XYCouplingConfig, description="coupling bounds and init (1)"
    )
    bias: XYBiasConfig = Field(
        default_factory=XYBiasConfig, description="bias amplitude bounds (1), init (1, rad)"
    )
    trainable: list[XYGroup] = Field(
        default_factory=_all_groups,
        min_length=1,
        description="parameter groups the optimiser trains (W, h, psi); the others stay fixed",
    )
    temperature: float = Field(
        0.0, ge=0, description="T in energy units (k_B = 1); 0 = deterministic relaxation"
    )
    restarts: int = Field(
        1, ge=1, description="random initial conditions relaxed per pattern (count)"
    )
    restart_policy: Literal["lowest", "average"] = Field(
        "lowest",
        description="keep the lowest-energy fixed point, or average over restarts",
    )
    init_phases: Literal["random", "zeros"] = Field(
        "zeros",
        description="free phases of a cold start: 0 for the first restart (rad; later restarts "
        "are uniform on [-pi, pi)), or uniform for every restart. Zeros keep the free state "
        "continuous in the parameters between bifurcations, which training needs",
    )
    relaxation: XYRelaxConfig = Field(
        default_factory=XYRelaxConfig, description="relaxation tolerances"
    )
    langevin: XYLangevinConfig = Field(
        default_factory=XYLangevinConfig, description="thermal sampling (used when T > 0)"
    )
    max_batch: int = Field(
        1024, ge=1, le=MAX_EDGES, description="patterns relaxed together in one call (count)"
    )

    @model_validator(mode="after")
    def _check(self) -> XYConfig:
        if len(set(self.trainable)) != len(self.trainable):
            raise ValueError(f"trainable lists a group twice: {self.trainable}")
        if self.coupling.init_scale is not None and self.coupling.init_scale > max(
            abs(self.coupling.min), abs(self.coupling.max)
        ):
            raise ValueError("coupling init_scale exceeds the coupling bounds")
        return self

    def values_per_pattern(self) -> int:
        """Phases and per-edge conjugates of one pattern per restart (per thermal sample when
        T > 0), plus the dense Hessian where the dense backend is used (see
        :mod:`~physlearn.simulators.xy.factor`)."""
        n, e = self.graph.counts()
        dense = self.relaxation.backend == "dense" or (
            self.relaxation.backend == "auto" and (n <= 128 or 2.0 * e > 0.1 * n * (n - 1))
        )
        copies = self.restarts * (self.langevin.n_samples if self.temperature > 0 else 1)
        return copies * (n + e) + (n * n if dense else 0)

    def input_size(self) -> int:
        return self.graph.n_inputs()

    def output_size(self) -> int:
        return self.graph.n_outputs()

    def build(self, seed: int) -> XYNetwork:
        import numpy as np

        from physlearn.simulators.xy.langevin import LangevinSettings
        from physlearn.simulators.xy.relax import RelaxSettings
        from physlearn.simulators.xy.system import XYNetwork

        graph = self.graph.build()
        rng = np.random.default_rng([seed, 7])
        c = self.coupling
        scale = c.init_scale
        if scale is None:
            mean_degree = 2.0 * graph.n_edges / graph.n_nodes
            scale = 1.0 / math.sqrt(max(mean_degree, 1.0))
        if c.init == "normal":  # normal(0, s) truncated to the bounds by redrawing
            w = rng.normal(0.0, scale, graph.n_edges)
            out = (w < c.min) | (w > c.max)
            while np.any(out):
                w[out] = rng.normal(0.0, scale, int(out.sum()))
                out = (w < c.min) | (w > c.max)
        else:
            w = rng.uniform(max(-scale, c.min), min(scale, c.max), graph.n_edges)
        b = self.bias
        h = rng.uniform(b.amplitude_init_low, b.amplitude_init_high, graph.n_nodes)
        if b.direction_init == "uniform":
            psi = rng.uniform(-np.pi, np.pi, graph.n_nodes)
        else:
            psi = np.zeros(graph.n_nodes)
        r, lg = self.relaxation, self.langevin
        return XYNetwork(
            graph,
            w,
            h,
            psi,
            trainable=self.trainable,
            coupling_bounds=(c.min, c.max),
            bias_amplitude_bounds=(b.amplitude_min, b.amplitude_max),
            temperature=self.temperature,
            restarts=self.restarts,
            restart_policy=self.restart_policy,
            init=self.init_phases,
            relax_settings=RelaxSettings(
                tol=r.tol,
                max_iter=r.max_iter,
                newton_switch=r.newton_switch,
                fire_max_steps=r.fire_max_steps,
                fire_dt_max=r.fire_dt_max,
            ),
            langevin_settings=LangevinSettings(
                dt=lg.dt,
                burn_in=lg.burn_in,
                n_samples=lg.n_samples,
                thin=lg.thin,
                metropolis=lg.metropolis,
            ),
            backend=r.backend,
            seed=seed,
            max_batch=self.max_batch,
        )
