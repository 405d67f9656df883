"""The PhysicalSystem contract: what a learning machine can do, nothing about learning.

Every machine physlearn trains -- a simulated resistor network, an XY oscillator lattice, a
Rydberg-array emulator, a bench of instruments behind qcodes -- implements :class:`PhysicalSystem`.
The estimators (:mod:`physlearn.estimators`) and the campaign (:mod:`physlearn.run.campaign`)
only ever talk to this interface.

Writing a new system
--------------------
1. Describe yourself: :attr:`PhysicalSystem.parameter_groups` (name, shape, bounds, resolution,
   unit), :attr:`~PhysicalSystem.inputs` and :attr:`~PhysicalSystem.outputs` (ports), and
   :attr:`~PhysicalSystem.max_batch` (the largest batch one call takes; an instrument that
   measures one pattern at a time may still take a whole batch per call, check every pattern
   against its envelope before the first write, then measure them in turn).
2. Hold parameters: :meth:`~PhysicalSystem.set_parameters` writes and returns what the machine
   actually holds (an instrument reads back and verifies); :meth:`~PhysicalSystem.get_parameters`.
3. Equilibrate: :meth:`~PhysicalSystem.equilibrate` clamps the inputs, applies an optional
   :class:`Nudge` the way the physics allows (a conductance to a target source, a field on output
   oscillators, a term beta * sum_k eps_k O_k in a Hamiltonian, a hard clamp), relaxes, measures and
   returns an :class:`Equilibrium`: outputs, the conjugate observable dE/dtheta of every parameter
   per sample, an opaque warm-start state and diagnostics. Estimators ask for several phases of
   one batch at once (EP's nudged phases) with :meth:`~PhysicalSystem.equilibrate_many`, by
   default one ``equilibrate`` each; a machine whose every call costs a set-up (an instrument
   bench) may measure them in one sweep, with the same results.
4. Lifecycle: :meth:`~PhysicalSystem.open` / :meth:`~PhysicalSystem.close` (the class is a
   context manager) and :meth:`~PhysicalSystem.safe_state`, which must leave every source in its
   safe state and is called on *every* exit path.
5. Simulators may additionally implement :class:`ExactGradient` (the implicit gradient, used only
   as a diagnostic of the estimate's fidelity).
6. Optionally, carry a state from one training step to the next: the orchestrator keeps the free
   phase's state of every step and hands it to the next step's free phase as ``warm_start``
   (parameters moved by one update in between, so a good start vector, and a second solve the
   machine can skip). Declare it with :meth:`~PhysicalSystem.carried_shapes` (named float64
   arrays whose shapes depend only on the batch size: the run store reserves them in both
   checkpoint slots at creation), turn a free state into those arrays with
   :meth:`~PhysicalSystem.export_state` and back into a warm start with
   :meth:`~PhysicalSystem.import_state`. The next step *always* receives
   ``import_state(export_state(state))``, in an uninterrupted run as after a resume from the
   checkpoint, so a resumed run stays bit-identical. ``equilibrate`` must check that a carried
   warm start still applies (same inputs, batch shape, ...) and otherwise start cold; it should
   keep every check of a cold start (e.g. the quantum machine's degeneracy check). The default
   carries nothing: the free phase of every step starts cold, as before.

Sign conventions
----------------
* The energy E(s; theta, x) is minimised by the free equilibrium; the nudged equilibrium minimises
  F = E + beta * C(s, y). Positive beta pulls the outputs towards the target.
* Conjugates are dE/dtheta evaluated at equilibrium, in units of [energy unit] / [parameter unit],
  *per sample* (not batch-averaged).
* A finite-temperature or shot-based system returns estimates; ``shots`` says how many projective
  measurements (or thermal samples) each estimate averaged, 0 meaning exact.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from physlearn.arrays import FloatArray, IntArray
from physlearn.losses import Loss, get_loss

Params = dict[str, FloatArray]

NudgeKind = Literal["target", "error", "clamp"]


class PhysicsError(RuntimeError):
    """The machine has no valid equilibrium at these parameters and inputs (e.g. a degenerate
    ground state). Not a bug: the message says what to change, and the command line reports it
    without a traceback."""


@dataclass(frozen=True)
class ParameterGroup:
    """A group of trainable parameters the machine can hold.

    Attributes:
        name: identifier, also the Zarr array suffix (``param_<name>``); ``[a-z_]+``.
        shape: shape of the group, e.g. ``(n_edges,)``.
        dims: dimension names of ``shape`` for the run store, e.g. ``("edge",)``.
        lower, upper: inclusive bounds in ``unit`` the hardware can hold.
        unit: physical unit, e.g. ``"S"`` (siemens), ``"rad"``, ``"rad/us"``.
        resolution: quantisation step in ``unit`` (0 = continuous). Values are held on the grid
            ``lower + k * resolution``.
        periodic: the parameter is an angle of period ``upper - lower``; projection wraps instead
            of clipping.
        long_name: human-readable description for the store and plots.
        energy_unit: unit of the energy the conjugate is a derivative of (conjugate unit is
            ``energy_unit/unit``).
    """

    name: str
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    lower: float
    upper: float
    unit: str
    resolution: float = 0.0
    periodic: bool = False
    long_name: str = ""
    energy_unit: str = "1"

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.shape):
            raise ValueError(f"parameter group {self.name!r}: dims {self.dims} do not match shape")
        if not self.lower < self.upper:
            raise ValueError(f"parameter group {self.name!r}: lower must be < upper")
        if self.resolution < 0:
            raise ValueError(f"parameter group {self.name!r}: resolution must be >= 0")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def uniform(self, init: tuple[float, float] | None, seed: int | None) -> FloatArray:
        """Initial values drawn uniformly from ``init`` (default: the bounds) by a generator
        seeded with ``seed``, put on the resolution grid. ValueError if ``init`` leaves the
        bounds."""
        lo, hi = init if init is not None else (self.lower, self.upper)
        if not self.lower <= lo <= hi <= self.upper:
            raise ValueError(
                f"{self.name} init range {(lo, hi)} must lie inside bounds "
                f"{(self.lower, self.upper)}"
            )
        return self.quantise(np.random.default_rng(seed).uniform(lo, hi, size=self.shape))

    def quantise(self, values: FloatArray) -> FloatArray:
        """The nearest points of the grid ``lower + k * resolution`` inside the bounds (values
        unchanged when ``resolution == 0``); a periodic group maps ``upper`` onto ``lower``."""
        v = np.asarray(values, dtype=np.float64)
        if self.resolution <= 0:
            return v
        k_max = math.floor((self.upper - self.lower) / self.resolution + 1e-9)
        # np.round and np.clip by their methods: the same computation, fewer dispatch layers
        k = ((v - self.lower) / self.resolution).round().clip(0, k_max)
        held = self.lower + k * self.resolution
        if self.periodic:
            held = np.where(held >= self.upper, self.lower, held)
        return np.asarray(held)


@dataclass(frozen=True)
class Port:
    """Inputs or outputs of a machine: ``size`` physical channels in ``unit``."""

    size: int
    unit: str
    labels: tuple[str, ...] = ()
    long_name: str = ""


@dataclass(frozen=True)
class Nudge:
    """How the outputs are pushed in a nudged phase. Exactly one of the three kinds is set.

    * ``target``: add ``beta * C_native(y, target)`` to the energy, C_native being the cost the
      system realises physically (``PhysicalSystem.native_cost``), e.g. a conductance ``beta``
      from each output node to a source at the target voltage.
    * ``error``: add ``beta * sum_k error_k O_k`` (a linear force / field / Hamiltonian term);
      ``error = dL/dO`` evaluated at the free state gives the EP nudge for any loss.
    * ``clamp``: hold the outputs at the given values (coupled learning); ``beta`` is unused.

    ``beta`` may be complex (holomorphic N-point EP) only for systems with
    ``supports_complex_nudge``. Arrays have shape ``(batch, n_out)``.
    """

    beta: complex = 0.0
    target: FloatArray | None = None
    error: FloatArray | None = None
    clamp: FloatArray | None = None

    def __post_init__(self) -> None:
        if (self.target is None) + (self.error is None) + (self.clamp is None) != 2:
            given = [k for k in ("target", "error", "clamp") if getattr(self, k) is not None]
            raise ValueError(f"a Nudge needs exactly one of target/error/clamp, got {given}")

    @property
    def kind(self) -> NudgeKind:
        if self.target is not None:
            return "target"
        if self.error is not None:
            return "error"
        return "clamp"

    @property
    def values(self) -> FloatArray:
        v = self.target if self.target is not None else self.error
        v = v if v is not None else self.clamp
        assert v is not None
        return v

    def checked_values(self, batch: int, n_out: int) -> FloatArray:
        """The nudge's values as float64 ``(batch, n_out)``; ``ValueError`` for a wrong shape,
        complex or non-finite values, or a non-finite beta."""
        v = np.asarray(self.values)
        if v.shape != (batch, n_out):
            raise ValueError(
                f"nudge {self.kind} values must have shape ({batch}, {n_out}), got {v.shape}"
            )
        if np.iscomplexobj(v) or not np.all(np.isfinite(v)):
            raise ValueError(f"nudge {self.kind} values must be real and finite")
        beta = complex(self.beta)
        if not (math.isfinite(beta.real) and math.isfinite(beta.imag)):
            raise ValueError(f"nudge beta must be finite, got {self.beta}")
        return v.astype(np.float64)


@dataclass
class Equilibrium:
    """What one equilibrate call measured, per sample of the batch.

    Attributes:
        outputs: ``(batch, n_out)`` measured outputs (mean over shots/samples where stochastic).
        conjugates: ``{group: (batch, *shape)}`` dE/dtheta at equilibrium.
        state: opaque warm start for a later phase of the same batch (e.g. the free state).
        residual: ``(batch,)`` largest remaining force / gradient norm (system units), NaN if
            the machine cannot tell.
        iterations: ``(batch,)`` relaxation iterations (0 for a direct solve or an instrument).
        shots: projective measurements (or thermal samples) per estimate; 0 = exact.
        settle_time: wall-clock seconds spent waiting for the physics to settle (instruments).
        energy: ``(batch,)`` energy at equilibrium where known.
        samples: for thermal / shot-resolved systems, ``{"outputs": (batch, S, n_out),
            group: (batch, S, *shape)}`` raw samples (thermal estimator uses covariances).
        observables: extra per-sample responses worth logging, ``{name: (batch, ...)}``, e.g.
            node phases for XY spatial maps; their units and dimensions are declared by
            :meth:`PhysicalSystem.observable_meta`.
        converged: ``(batch,)`` whether the relaxation met its tolerance.
    """

    outputs: FloatArray
    conjugates: Params
    state: Any = None
    residual: FloatArray | None = None
    iterations: IntArray | None = None
    shots: int = 0
    settle_time: float = 0.0
    energy: FloatArray | None = None
    samples: dict[str, FloatArray] | None = None
    observables: dict[str, FloatArray] = field(default_factory=dict)
    converged: NDArray[np.bool_] | None = None
    _means: dict[str, FloatArray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch(self) -> int:
        return int(self.outputs.shape[0])

    def conjugate_mean(self, name: str) -> FloatArray:
        """Batch mean of the conjugate of group ``name`` (computed once, then cached)."""
        if name not in self._means:
            c = np.asarray(self.conjugates[name])
            # einsum's own summation loop: faster than ndarray.mean on the (batch, edges) views
            # simulators hand out, and no BLAS call (whose idle threads would spin on a core)
            if c.shape[0] > 1:
                mean = np.einsum("b...->...", c) / c.shape[0]
            else:
                mean = c.mean(axis=0)
            self._means[name] = np.asarray(mean)
        return self._means[name]

    def keep_means_only(self) -> None:
        """Reduce every conjugate to its batch mean and release the per-sample arrays.

        For a caller that logs and uses batch means only: a 10 000-node network holds about
        10 MB of per-sample conjugates per phase, and releasing them before the next phase
        lets that phase reuse the memory while it is still in cache. Afterwards
        :meth:`conjugate_mean` still answers; ``conjugates`` is empty.
        """
        for name in self.conjugates:
            self.conjugate_mean(name)
        self.conjugates = {}


class PhysicalSystem(ABC):
    """A physical learning machine (real or simulated). See the module docstring."""

    #: Largest number of input patterns one equilibrate call may take (an instrument that
    #: measures one pattern at a time may still take a whole batch: see the module docstring).
    max_batch: int = 1 << 30
    #: Nudge kinds this machine can realise.
    supported_nudges: frozenset[NudgeKind] = frozenset({"target"})
    #: Whether complex beta (holomorphic EP) is meaningful (simulators with analytic physics).
    supports_complex_nudge: bool = False
    #: Name of the cost a ``target`` nudge realises physically (see :mod:`physlearn.losses`).
    native_cost: str | None = None
    #: Whether equilibrate returns thermal samples (``Equilibrium.samples``).
    thermal: bool = False
    #: Unit of the energy E.
    energy_unit: str = "1"
    #: Whether ``set_parameters`` returns what a device realised, which may differ from the
    #: request beyond any declared grid (pulse-programmed hardware, bench read-back): runs then
    #: log the requested and the realised values of every element per step.
    realises_parameters: bool = False
    #: Unit of ``Equilibrium.residual``; None: the energy unit per unit of the state.
    residual_unit: str | None = None

    # -- description -------------------------------------------------------------------------
    @property
    @abstractmethod
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        """The trainable parameter groups."""

    def observable_meta(self, name: str) -> tuple[str, tuple[str, ...], str] | None:
        """(unit, dimension names after the batch, long name) of the observable ``name`` of
        :attr:`Equilibrium.observables`; None: undeclared (logged with unit "1")."""
        return None

    def counters(self) -> dict[str, tuple[float, str, str]]:
        """The machine's own bookkeeping after each step, ``{name: (value, unit, long name)}``
        (an instrument's retries, time inside instrument calls...), logged per step as
        ``system_<name>``; none by default. The same names at every step."""
        return {}

    @property
    @abstractmethod
    def inputs(self) -> Port:
        """Input port: ``equilibrate`` takes ``(batch, inputs.size)`` in ``inputs.unit``."""

    @property
    @abstractmethod
    def outputs(self) -> Port:
        """Output port: ``Equilibrium.outputs`` is ``(batch, outputs.size)``."""

    def group(self, name: str) -> ParameterGroup:
        for g in self.parameter_groups:
            if g.name == name:
                return g
        raise KeyError(f"no parameter group {name!r}")

    # -- parameters --------------------------------------------------------------------------
    @abstractmethod
    def set_parameters(self, params: Params) -> Params:
        """Write parameters (every group) and return what the machine now holds.

        Values must already lie inside the groups' bounds (the orchestrator projects them);
        a system refuses out-of-bounds values with ``ValueError`` rather than clip them.
        """

    @abstractmethod
    def get_parameters(self) -> Params:
        """Read back the parameters the machine holds (copies)."""

    # -- physics -----------------------------------------------------------------------------
    @abstractmethod
    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Clamp ``inputs`` ``(batch, n_in)``, apply ``nudge``, relax and measure.

        ``warm_start`` is the ``state`` of an earlier phase of the same batch (nudged phases start
        from the free equilibrium). ``rng`` drives every random choice (restarts, thermal noise,
        shots) so that runs are reproducible.
        """

    def equilibrate_many(
        self,
        inputs: FloatArray,
        nudges: Sequence[Nudge | None],
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> list[Equilibrium]:
        """Several phases of one batch (EP's nudged phases): one result per nudge, in order,
        each what ``equilibrate(inputs, nudge, warm_start, rng)`` returns for it, called in
        turn -- which is what this does. A machine whose every call costs a set-up (an
        instrument bench) may measure them in one sweep."""
        return [self.equilibrate(inputs, nudge, warm_start, rng) for nudge in nudges]

    def cost(self, outputs: FloatArray, targets: FloatArray) -> FloatArray:
        """Per-sample native cost C(y, target) realised by a ``target`` nudge."""
        if self.native_cost is None:
            raise NotImplementedError(f"{type(self).__name__} has no native cost")
        return get_loss(self.native_cost).value(outputs, targets)

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (connections, factorisations)."""

    def close(self) -> None:
        """Release resources; always leaves the machine in its safe state."""
        self.safe_state()

    def safe_state(self) -> None:  # noqa: B027 - simulators have nothing to make safe
        """Ramp every source to its safe value. Must be idempotent and never raise for a
        machine that is already safe."""

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable description (instrument IDN and settings, graph sizes, ...)."""
        return {"class": type(self).__name__}

    # -- state carried from one training step to the next (optional; see the module guide) ---
    def carried_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Names (``[a-z_]+``, not ``valid``) and shapes of the float64 arrays
        :meth:`export_state` returns for a free state of ``batch`` samples; ``{}`` (the default)
        carries nothing."""
        return {}

    def export_state(self, state: Any) -> dict[str, FloatArray] | None:
        """The free phase's ``Equilibrium.state`` as arrays of :meth:`carried_shapes`, or None
        when there is nothing worth carrying (the next free phase then starts cold)."""
        return None

    def import_state(self, arrays: Mapping[str, FloatArray]) -> Any:
        """A ``warm_start`` for the next step's free phase from :meth:`export_state`'s
        arrays (None: start cold)."""
        return None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_parameters(groups: tuple[ParameterGroup, ...], params: Params) -> Params:
    """Validate a full set of parameter values before a machine holds them.

    Refuses (``ValueError`` naming the group) unknown or missing groups, a wrong shape, complex or
    non-finite values and values outside ``[lower, upper]``: the orchestrator projects first, a
    system never clips. Returns the values as float64 arrays.
    """
    names = [g.name for g in groups]
    unknown = set(params) - set(names)
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; this system has {names}")
    out: Params = {}
    for grp in groups:
        if grp.name not in params:
            raise ValueError(f"parameter group {grp.name!r} missing")
        v = np.asarray(params[grp.name])
        if v.shape != grp.shape:
            raise ValueError(
                f"parameter group {grp.name!r}: expected shape {grp.shape}, got {v.shape}"
            )
        if np.iscomplexobj(v) or not np.isfinite(v).all():
            raise ValueError(f"parameter group {grp.name!r}: values must be real and finite")
        v = v.astype(np.float64)
        # the values are finite: two reductions tell whether any lies outside the bounds
        if v.size and (v.min() < grp.lower or v.max() > grp.upper):
            bad = np.flatnonzero((v < grp.lower) | (v > grp.upper))
            e = int(bad[0])
            where = grp.dims[0] if len(grp.dims) == 1 else "element"
            raise ValueError(
                f"parameter group {grp.name!r}: {bad.size} value(s) outside the bounds "
                f"[{grp.lower:g}, {grp.upper:g}] {grp.unit}, e.g. {where} {e} = "
                f"{v.reshape(-1)[e]:g} {grp.unit} (project before writing; the system does not "
                "clip)"
            )
        out[grp.name] = v
    return out


@runtime_checkable
class ExactGradient(Protocol):
    """Simulators that can compute dL/dtheta exactly (implicit differentiation), for diagnostics."""

    def exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        """Batch-mean gradient of ``loss(outputs(inputs), targets)`` w.r.t. every group."""
        ...


@runtime_checkable
class Graph(Protocol):
    """Systems with a spatial structure expose it for plots of couplings on the graph."""

    def graph_layout(self) -> dict[str, Any]:
        """``{"positions": (n_nodes, 2), "edges": (n_edges, 2), "edge_group": name,
        "node_roles": list[str]}``."""
        ...
