"""Configs of the resistor-network simulators: ``system: kind: resistor`` (linear,
:class:`~physlearn.simulators.resistor.linear.LinearResistorNetwork`) and
``system: kind: diode_resistor`` (non-linear,
:class:`~physlearn.simulators.resistor.nonlinear.NonlinearResistorNetwork`). The graphs
(``system.graph``) are in :mod:`physlearn.simulators.graphs.config`.

Linear network: every input node is an ideal voltage source fed by one input channel;
differential copies and bias sources are made by the experiment's ``task.encoding``. Example
(iris: 4 features x 2 differential + 2 bias = 10 input nodes, 16 hidden nodes, 3 outputs)::

    system:
      kind: resistor
      graph: {type: layered, sizes: [10, 16, 3]}
      ground: false
      conductance: {min: 1.0e-5, max: 1.0e-2, init_low: 1.0e-4, init_high: 1.0e-3}
    task:
      encoding: {differential: true, bias: [1.0, -1.0]}

Non-linear network: trainable resistors (or transistor edges) with diodes and bias sources.
Example, a deep diode-resistor network on the 8 x 8 digits (64 features x 2 differential +
2 bias = 130 input sources, one hidden layer of 100 clipping units with rails at +-80 mV,
10 outputs)::

    system:
      kind: diode_resistor
      graph: {type: layered, sizes: [130, 100, 10]}
      diodes:
        model: {kind: ideal}               # or shockley: saturation_current (A), emission, ...
        placement: hidden                  # every hidden node gets its clipping diodes
        direction: both                    # up: clip above only; down: floor only
        rails: [{low: -0.08, high: 0.08}]  # V; one pair, or one per hidden layer
      weights:
        element: resistor                  # or transistor (trainable gate voltages)
        conductance: {min: 1.0e-5, max: 1.0e-3}
    task:
      encoding: {differential: true, bias: [1.0, -1.0]}

Explicit diodes on any graph: ``placement: [[anode, cathode], ...]`` where node indices
``>= n_nodes`` name the bias sources listed in ``sources`` (V) in order. Validation never imports
scipy or the simulators; the ``build`` methods do, lazily.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from physlearn.configbase import MAX_EDGES, StrictModel, SystemConfigBase
from physlearn.simulators.graphs.config import GraphConfig, LatticeGraph, LayeredGraph

if TYPE_CHECKING:
    from physlearn.simulators.resistor.linear import LinearResistorNetwork
    from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork


class ConductanceConfig(StrictModel):
    """Conductances the hardware holds and their random initialisation, all in siemens (S)."""

    min: float = Field(1e-5, gt=0, description="lowest conductance the hardware holds (S)")
    max: float = Field(1e-2, gt=0, description="highest conductance the hardware holds (S)")
    init_low: float | None = Field(
        None, gt=0, description="lower end of the uniform random initialisation (S; default min)"
    )
    init_high: float | None = Field(
        None, gt=0, description="upper end of the uniform random initialisation (S; default max)"
    )
    resolution: float = Field(
        0.0, ge=0, description="conductance step the hardware can set (S; 0 = continuous)"
    )

    @model_validator(mode="after")
    def _check(self) -> ConductanceConfig:
        if self.min >= self.max:
            raise ValueError(f"conductance min ({self.min:g} S) must be < max ({self.max:g} S)")
        lo, hi = self.init_range()
        if not self.min <= lo <= hi <= self.max:
            raise ValueError(
                f"conductance init range [{lo:g}, {hi:g}] S must satisfy "
                f"min <= init_low <= init_high <= max (min = {self.min:g}, max = {self.max:g})"
            )
        if self.resolution >= self.max - self.min:
            raise ValueError(
                f"conductance resolution ({self.resolution:g} S) must be smaller than "
                f"max - min ({self.max - self.min:g} S)"
            )
        return self

    def init_range(self) -> tuple[float, float]:
        lo = self.min if self.init_low is None else self.init_low
        hi = self.max if self.init_high is None else self.init_high
        return lo, hi


class ResistorConfig(SystemConfigBase):
    """A linear resistor network (voltage sources on the input nodes, trainable conductances)."""

    kind: Literal["resistor"] = Field(
        "resistor", description="system kind: linear resistor network"
    )
    graph: GraphConfig = Field(description="network topology: layered, lattice or edges")
    conductance: ConductanceConfig = Field(
        default_factory=ConductanceConfig, description="conductance bounds and init (S)"
    )
    ground: bool = Field(
        False,
        description="add a source node at 0 V wired to every non-input neighbour of the input "
        "nodes (its edges are trainable too)",
    )

    @model_validator(mode="after")
    def _check(self) -> ResistorConfig:
        if self.graph.n_inputs() + int(self.ground) < 2:
            raise ValueError(
                "a single source node holds every node at its voltage (no current, nothing to "
                "learn): use at least 2 input nodes or set ground: true"
            )
        return self

    def values_per_pattern(self) -> int:
        """Node voltages and per-edge conjugates of one pattern."""
        return sum(self.graph.counts())

    def input_size(self) -> int:
        return self.graph.n_inputs()

    def output_size(self) -> int:
        return self.graph.n_outputs()

    def build(self, seed: int) -> LinearResistorNetwork:
        from physlearn.simulators.resistor.linear import LinearResistorNetwork

        c = self.conductance
        return LinearResistorNetwork(
            self.graph.build(),
            bounds=(c.min, c.max),
            resolution=c.resolution,
            init=c.init_range(),
            seed=seed,
            ground=self.ground,
        )


class RailsConfig(StrictModel):
    """The two bias rails of a group of clipping units (V)."""

    low: float = Field(description="low rail (V): the lower diode holds V >= low")
    high: float = Field(description="high rail (V): the upper diode holds V <= high")

    @model_validator(mode="after")
    def _check(self) -> RailsConfig:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"rails need finite low < high, got low={self.low}, high={self.high} V"
            )
        return self


class DiodeModelConfig(StrictModel):
    """The law of every diode (see physlearn.simulators.resistor.elements)."""

    kind: Literal["ideal", "shockley"] = Field(
        "ideal",
        description="ideal: short forward, open reverse (exact active-set solver); shockley: "
        "I = I_s (exp(V / n V_T) - 1) (damped Newton), exportable to SPICE",
    )
    saturation_current: float = Field(1e-14, gt=0, description="I_s (A), SPICE IS")
    emission: float = Field(1.0, gt=0, description="emission coefficient n, SPICE N")
    temperature: float = Field(300.15, gt=0, description="temperature (K); V_T = k T / q")
    series_resistance: float = Field(0.0, ge=0, description="R_s (ohm), SPICE RS; 0 = none")

    @model_validator(mode="after")
    def _check(self) -> DiodeModelConfig:
        if self.kind == "ideal" and self.series_resistance > 0:
            raise ValueError(
                "an ideal diode takes no series_resistance (use kind 'shockley', or a resistor)"
            )
        for name in ("saturation_current", "emission", "temperature", "series_resistance"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        return self


class DiodesConfig(StrictModel):
    """Where the diodes sit and what they do."""

    model: DiodeModelConfig = Field(default_factory=DiodeModelConfig)
    placement: Literal["hidden"] | list[tuple[int, int]] = Field(
        "hidden",
        max_length=MAX_EDGES,
        description="'hidden': clipping diodes on every hidden node (to per-layer rails for "
        "layered graphs); or explicit [anode, cathode] node pairs, indices >= n_nodes naming "
        "the bias 'sources' in order",
    )
    direction: Literal["both", "up", "down"] = Field(
        "both",
        description="hidden placement: both (clip between the rails), up (clip above the high "
        "rail only), down (floor at the low rail only)",
    )
    rails: list[RailsConfig] = Field(
        default_factory=list,
        description="hidden placement: one rail pair for all hidden nodes, or (layered graphs) "
        "one per hidden layer (V)",
    )
    sources: list[float] = Field(
        default_factory=list, description="explicit placement: bias source voltages (V)"
    )

    @model_validator(mode="after")
    def _check(self) -> DiodesConfig:
        if self.placement == "hidden":
            if not self.rails:
                raise ValueError("placement 'hidden' needs 'rails' (at least one low/high pair)")
            if self.sources:
                raise ValueError(
                    "'sources' are for explicit placement; hidden placement uses rails"
                )
        else:
            if not self.placement:
                raise ValueError("explicit placement needs at least one [anode, cathode] pair")
            if self.rails:
                raise ValueError("'rails' are for placement 'hidden'; list explicit 'sources'")
            for k, v in enumerate(self.sources):
                if not math.isfinite(v):
                    raise ValueError(f"sources[{k}] must be a finite voltage")
        return self


class TransistorConfig(StrictModel):
    """g(V_G) = k * s * ln(1 + exp((V_G - v_th) / s)) (S): an ohmic MOSFET channel."""

    k: float = Field(1e-3, gt=0, description="mu C_ox W / L (S/V)")
    v_th: float = Field(0.7, description="threshold voltage (V)")
    smoothing: float = Field(0.04, gt=0, description="sub-threshold slope voltage s (V)")


class GateConfig(StrictModel):
    """Gate voltages the hardware holds and their initialisation (V)."""

    min: float = Field(0.5, description="lowest gate voltage (V)")
    max: float = Field(3.0, description="highest gate voltage (V)")
    init_low: float | None = Field(None, description="uniform init lower end (V; default min)")
    init_high: float | None = Field(None, description="uniform init upper end (V; default max)")
    resolution: float = Field(0.0, ge=0, description="gate voltage step (V; 0 = continuous)")

    @model_validator(mode="after")
    def _check(self) -> GateConfig:
        if not self.min < self.max:
            raise ValueError(f"gate min ({self.min:g} V) must be < max ({self.max:g} V)")
        lo, hi = self.init_range()
        if not self.min <= lo <= hi <= self.max:
            raise ValueError(f"gate init range [{lo:g}, {hi:g}] V must lie inside [min, max]")
        return self

    def init_range(self) -> tuple[float, float]:
        lo = self.min if self.init_low is None else self.init_low
        hi = self.max if self.init_high is None else self.init_high
        return lo, hi


class WeightsConfig(StrictModel):
    """The trainable edges: resistors (conductances, S) or transistors (gate voltages, V)."""

    element: Literal["resistor", "transistor"] = Field(
        "resistor", description="resistor: trainable conductance; transistor: trainable gate"
    )
    conductance: ConductanceConfig = Field(
        default_factory=ConductanceConfig, description="resistor edges: bounds and init (S)"
    )
    gate: GateConfig = Field(default_factory=GateConfig, description="transistor edges (V)")
    transistor: TransistorConfig = Field(default_factory=TransistorConfig)


class NonlinearSolverConfig(StrictModel):
    """Numerics of the equilibrium solve."""

    backend: Literal["auto", "dense", "sparse"] = Field(
        "auto",
        description="dense: Kron-reduce the linear part onto the diode/output ports; sparse: "
        "block-diagonal sparse LU of the whole batch; auto: dense when ports <= dense_limit",
    )
    dense_limit: int = Field(
        600,
        ge=1,
        le=10_000,
        description="largest port count for the dense backend (at most 10 000: the reduced "
        "matrix is ports^2 float64 values, 800 MB at the bound)",
    )
    tol: float = Field(
        1e-10, gt=0, lt=1e-3, description="relative KCL tolerance (x g_max x v_scale = amperes)"
    )
    max_iter: int = Field(200, ge=1, description="Newton / active-set iterations per phase")


class DiodeResistorConfig(SystemConfigBase):
    """A non-linear resistor network: trainable edges, diodes and bias sources."""

    kind: Literal["diode_resistor"] = Field(
        "diode_resistor", description="system kind: diode-resistor (non-linear) network"
    )
    graph: GraphConfig = Field(description="network topology: layered, lattice or edges")
    diodes: DiodesConfig | None = Field(None, description="diodes and bias sources (none: linear)")
    weights: WeightsConfig = Field(default_factory=WeightsConfig)
    ground: bool = Field(
        False, description="add a 0 V source wired to every non-input neighbour of the inputs"
    )
    solver: NonlinearSolverConfig = Field(default_factory=NonlinearSolverConfig)

    @model_validator(mode="after")
    def _check(self) -> DiodeResistorConfig:
        d = self.diodes
        n_bias = 0
        if d is not None:
            if d.placement == "hidden":
                n_groups = len(self.graph.sizes) - 2 if isinstance(self.graph, LayeredGraph) else 1
                if isinstance(self.graph, LayeredGraph) and n_groups < 1:
                    raise ValueError(
                        "placement 'hidden' needs a hidden layer (sizes of length >= 3)"
                    )
                if len(d.rails) not in (1, n_groups):
                    raise ValueError(
                        f"give one rail pair or one per hidden layer ({n_groups}), "
                        f"got {len(d.rails)}"
                    )
                n_bias = 2 * n_groups
            else:
                n_nodes = self._n_nodes()
                n_bias = len(d.sources)
                for k, (a, c) in enumerate(d.placement):
                    for node in (a, c):
                        if not 0 <= node < n_nodes + n_bias:
                            raise ValueError(
                                f"diode {k} = [{a}, {c}] refers to node {node}: graph nodes are "
                                f"0..{n_nodes - 1}, sources {n_nodes}..{n_nodes + n_bias - 1}"
                            )
                    if a == c:
                        raise ValueError(f"diode {k} joins node {a} to itself")
        if self.graph.n_inputs() + int(self.ground) + n_bias < 2:
            raise ValueError(
                "a single source node holds every node at its voltage: use at least 2 input "
                "nodes, a ground or bias sources"
            )
        return self

    def _n_nodes(self) -> int:
        g = self.graph
        if isinstance(g, LayeredGraph):
            return sum(g.sizes)
        if isinstance(g, LatticeGraph):
            return g.rows * g.cols
        return g.n_nodes

    def values_per_pattern(self) -> int:
        """Node voltages, per-edge conjugates and per-diode currents of one pattern."""
        n_nodes, n_edges = self.graph.counts()
        d = self.diodes
        n_diodes = 0 if d is None else n_nodes if d.placement == "hidden" else len(d.placement)
        return n_nodes + n_edges + n_diodes

    def input_size(self) -> int:
        return self.graph.n_inputs()

    def output_size(self) -> int:
        return self.graph.n_outputs()

    def build(self, seed: int) -> NonlinearResistorNetwork:
        import numpy as np

        from physlearn.simulators.resistor.circuit import clipping_diodes
        from physlearn.simulators.resistor.elements import DiodeModel, TransistorModel
        from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork

        graph = self.graph.build()
        an: list[int] | np.ndarray = []
        ca: list[int] | np.ndarray = []
        bias: list[float] | np.ndarray = []
        model = None
        d = self.diodes
        if d is not None:
            dm = d.model
            model = DiodeModel(
                kind=dm.kind,
                saturation_current=dm.saturation_current,
                emission=dm.emission,
                temperature=dm.temperature,
                series_resistance=dm.series_resistance,
            )
            if d.placement == "hidden":
                if isinstance(self.graph, LayeredGraph):
                    starts = np.concatenate([[0], np.cumsum(self.graph.sizes)]).astype(np.int64)
                    groups = [
                        np.arange(starts[k], starts[k + 1], dtype=np.int64)
                        for k in range(1, len(self.graph.sizes) - 1)
                    ]
                else:
                    groups = [graph.hidden_nodes]
                rails = [(r.low, r.high) for r in d.rails]
                an, ca, bias = clipping_diodes(graph, groups, rails, d.direction)
            else:
                an = [a for a, _ in d.placement]
                ca = [c for _, c in d.placement]
                bias = list(d.sources)
        w = self.weights
        if w.element == "resistor":
            c = w.conductance
            bounds, init, res = (c.min, c.max), c.init_range(), c.resolution
        else:
            gt = w.gate
            bounds, init, res = (gt.min, gt.max), gt.init_range(), gt.resolution
        t = w.transistor
        return NonlinearResistorNetwork(
            graph,
            an,
            ca,
            model,
            bias,
            element=w.element,
            transistor=TransistorModel(k=t.k, v_th=t.v_th, smoothing=t.smoothing),
            bounds=bounds,
            resolution=res,
            init=init,
            seed=seed,
            ground=self.ground,
            backend=self.solver.backend,
            dense_limit=self.solver.dense_limit,
            tol=self.solver.tol,
            max_iter=self.solver.max_iter,
        )
