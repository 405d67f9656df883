"""Coupled phase oscillators (the XY model) behind the :class:`~physlearn.system.PhysicalSystem`
contract (Wang, Wanjura & Marquardt, arXiv:2402.08579 and arXiv:2601.21945).

Physics (see ``docs/physics.md``, §XY oscillators; energy dimensionless, unit ``"1"``; angles
in rad)::

    E(phi) = - sum_{(i,j) in edges} W_ij cos(phi_i - phi_j) - sum_i h_i cos(phi_i - psi_i)

* Trainable groups: ``coupling`` W ``(E,)`` on the edges of the graph (dims ``("edge",)``),
  ``bias_amplitude`` h ``(n,)`` and ``bias_direction`` psi ``(n,)`` (rad, periodic on
  ``[-pi, pi]``), dims ``("node",)``; a config chooses which of them are trainable.
* Conjugates (per sample, at equilibrium): ``dE/dW_ij = -cos(phi_i - phi_j)``,
  ``dE/dh_i = -cos(phi_i - psi_i)``, ``dE/dpsi_i = -h_i sin(phi_i - psi_i)``.
* Inputs: phases (rad) clamped on the graph's input nodes (the task layer encodes data, e.g.
  XOR +-pi/2, digits ``pi (X - 8)/16``); clamped nodes feel no force.
* Outputs: the phases of the output nodes, wrapped to ``[-pi, pi)``.
* Nudges: ``target`` adds ``beta * C`` with the native cost ``xy_log``,
  ``C = -sum_o ln[1 + cos(phi_o - tau_o)]``; ``error`` adds ``beta * sum_o eps_o phi_o`` (the
  output observable is the phase); ``clamp`` holds the output phases (coupled learning).
* Relaxation: :func:`physlearn.simulators.xy.relax.relax` (FIRE, then damped Newton with a
  proved-positive-definite Hessian and an Armijo line search), batched over samples x restarts.
  ``Equilibrium.residual`` is ``max_k |dF/dphi_k|`` over free nodes (energy/rad) and
  ``converged`` requires residual <= tol *and* a positive definite Hessian (stable fixed point).
* Multistability: ``restarts`` random initial conditions per sample; policy ``lowest`` keeps
  the lowest-energy fixed point, ``average`` averages outputs (circular mean) and conjugates
  over the restarts (the estimators then follow the restart-averaged cost).
* Finite temperature ``T > 0`` (energy units, k_B = 1): after relaxing, Langevin dynamics
  (Metropolis-adjusted by default, exact ``exp(-F/T)``) returns thermal samples
  ``Equilibrium.samples = {"outputs": (B, S, n_out), group: (B, S, *shape)}`` for
  :class:`~physlearn.estimators.ThermalCovariance`; conjugates and energy are thermal means and
  outputs the circular mean of the sampled output phases. ``T = 0`` is deterministic EP.
* Diagnostics: node phases ``Equilibrium.observables["phase"]`` ``(B, n_nodes)`` for spatial
  maps; :meth:`XYNetwork.graph_layout`; :meth:`XYNetwork.exact_gradient` (implicit
  differentiation at the free equilibrium).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from physlearn.losses import Loss
from physlearn.simulators.graphs.generators import Graph
from physlearn.simulators.xy.field import Nudging, XYField, XYTopology, circular_mean, wrap
from physlearn.simulators.xy.langevin import LangevinSettings, langevin
from physlearn.simulators.xy.physics import (
    GROUPS,
    checked_parameters,
    xy_conjugates,
    xy_parameter_groups,
)
from physlearn.simulators.xy.relax import RelaxResult, RelaxSettings, relax
from physlearn.system import (
    Equilibrium,
    FloatArray,
    Nudge,
    ParameterGroup,
    Params,
    PhysicalSystem,
    Port,
)

RestartPolicy = Literal["lowest", "average"]


@dataclass(frozen=True)
class XYState:
    """Warm start of an XY equilibrium: relaxed phases ``phi`` ``(restarts * B, n)`` (rad,
    restart-major: row ``r * B + b``) and the number of restarts they hold."""

    phi: FloatArray
    restarts: int

    @property
    def batch(self) -> int:
        return int(self.phi.shape[0] // self.restarts)


def _checked_options(
    trainable: Iterable[str], restarts: int, restart_policy: str, temperature: float
) -> tuple[str, ...]:
    """The trainable groups in :data:`GROUPS` order, after checking the options of
    :class:`XYNetwork` (``ValueError`` naming the bad one)."""
    trainable = tuple(trainable)
    unknown = sorted(set(trainable) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown XY parameter groups {unknown}; known: {list(GROUPS)}")
    if not trainable:
        raise ValueError("at least one XY parameter group must be trainable")
    if restarts < 1:
        raise ValueError("restarts must be >= 1")
    if restart_policy not in ("lowest", "average"):
        raise ValueError(f"unknown restart policy {restart_policy!r}")
    if temperature < 0 or not np.isfinite(temperature):
        raise ValueError("temperature must be finite and >= 0")
    return tuple(g for g in GROUPS if g in trainable)


class XYNetwork(PhysicalSystem):
    """A network of XY oscillators on a :class:`~physlearn.simulators.graphs.generators.Graph`.

    Args:
        graph: nodes, edges (couplings), input nodes (clamped phases) and output nodes.
        coupling: ``(E,)`` initial W (1).
        bias_amplitude: ``(n,)`` initial h (1).
        bias_direction: ``(n,)`` initial psi (rad, in ``[-pi, pi]``).
        trainable: the groups exposed as :attr:`parameter_groups`; the others stay fixed.
        coupling_bounds, bias_amplitude_bounds: ``(lower, upper)`` the hardware holds (1).
        temperature: T (energy units, k_B = 1); ``0`` is deterministic relaxation.
        restarts: random initial conditions per sample for a cold start (>= 1).
        restart_policy: ``"lowest"`` energy, or ``"average"`` over restarts.
        init: initial phases of free nodes for a cold start: ``"zeros"`` (restart 0 only;
            later restarts are random), or ``"random"`` uniform on ``[-pi, pi)``. Zeros make
            the free state a continuous function of the parameters between bifurcations,
            which training needs; random restarts sample the multistable landscape.
        relax_settings: tolerances of the relaxation (:class:`RelaxSettings`).
        langevin_settings: Langevin sampling at ``T > 0`` (:class:`LangevinSettings`).
        backend: ``"auto"``, ``"dense"`` or ``"sparse"`` linear algebra (see
            :mod:`~physlearn.simulators.xy.factor`).
        seed: seeds the RNG used when a caller passes none.
        max_batch: largest batch per :meth:`equilibrate` call.
    """

    supported_nudges = frozenset({"target", "error", "clamp"})
    supports_complex_nudge = False
    native_cost = "xy_log"
    energy_unit = "1"

    def observable_meta(self, name: str) -> tuple[str, tuple[str, ...], str] | None:
        return {
            "phase": ("rad", ("node",), "node phase"),
            "langevin_acceptance": ("1", (), "Langevin acceptance rate"),
        }.get(name)

    def __init__(
        self,
        graph: Graph,
        coupling: FloatArray,
        bias_amplitude: FloatArray,
        bias_direction: FloatArray,
        *,
        trainable: Iterable[str] = GROUPS,
        coupling_bounds: tuple[float, float] = (-10.0, 10.0),
        bias_amplitude_bounds: tuple[float, float] = (-10.0, 10.0),
        temperature: float = 0.0,
        restarts: int = 1,
        restart_policy: RestartPolicy = "lowest",
        init: Literal["random", "zeros"] = "zeros",
        relax_settings: RelaxSettings | None = None,
        langevin_settings: LangevinSettings | None = None,
        backend: Literal["auto", "dense", "sparse"] = "auto",
        seed: int = 0,
        max_batch: int = 1 << 30,
    ) -> None:
        self.graph = graph
        self.topo = XYTopology.build(graph.n_nodes, np.asarray(graph.edges), backend)
        self.trainable = _checked_options(trainable, restarts, restart_policy, temperature)
        self.temperature = float(temperature)
        self.thermal = self.temperature > 0
        self.restarts = int(restarts)
        self.restart_policy: RestartPolicy = restart_policy
        self.init = init
        self.relax_settings = relax_settings or RelaxSettings()
        self.langevin_settings = langevin_settings or LangevinSettings()
        self.seed = int(seed)
        self.max_batch = int(max_batch)
        self._all_groups = xy_parameter_groups(
            graph.n_nodes, graph.n_edges, coupling_bounds, bias_amplitude_bounds
        )
        self._params: Params = {}
        self._check_and_store(
            {
                "coupling": coupling,
                "bias_amplitude": bias_amplitude,
                "bias_direction": bias_direction,
            }
        )
        self._is_input = np.zeros(graph.n_nodes, dtype=bool)
        self._is_input[graph.input_nodes] = True
        self._version = 0
        self._last_free: tuple[int, bytes, XYState] | None = None

    # -- description ---------------------------------------------------------------------------
    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return tuple(self._all_groups[g] for g in self.trainable)

    @property
    def inputs(self) -> Port:
        return Port(
            int(self.graph.input_nodes.size), "rad", long_name="clamped phases of the input nodes"
        )

    @property
    def outputs(self) -> Port:
        return Port(
            int(self.graph.output_nodes.size), "rad", long_name="phases of the output nodes"
        )

    @property
    def n_nodes(self) -> int:
        return int(self.graph.n_nodes)

    def snapshot(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "n_nodes": self.n_nodes,
            "n_edges": int(self.graph.n_edges),
            "n_inputs": int(self.graph.input_nodes.size),
            "n_outputs": int(self.graph.output_nodes.size),
            "backend": self.topo.backend,
            "trainable": list(self.trainable),
            "temperature": self.temperature,
            "restarts": self.restarts,
            "restart_policy": self.restart_policy,
            "relax_tol": self.relax_settings.tol,
        }

    def graph_layout(self) -> dict[str, Any]:
        """Positions ``(n, 2)``, edges ``(E, 2)`` (indexing ``coupling``), node roles."""
        return {
            "positions": np.array(self.graph.positions),
            "edges": np.array(self.graph.edges),
            "edge_group": "coupling",
            "node_roles": list(self.graph.roles),
        }

    # -- parameters ----------------------------------------------------------------------------
    def _check_and_store(self, params: Params) -> None:
        self._params.update(checked_parameters(self._all_groups, params))
        self._version = getattr(self, "_version", 0) + 1

    def set_parameters(self, params: Params) -> Params:
        """Write the trainable groups (all required; fixed groups may be given too) and return
        what is held. Out-of-bounds values raise ``ValueError`` (never clipped)."""
        missing = [g for g in self.trainable if g not in params]
        if missing:
            raise ValueError(f"set_parameters needs every trainable group; missing {missing}")
        self._check_and_store(params)
        return self.get_parameters()

    def get_parameters(self) -> Params:
        return {g: self._params[g].copy() for g in self.trainable}

    def all_parameters(self) -> Params:
        """Every group, trainable or fixed (copies)."""
        return {g: self._params[g].copy() for g in GROUPS}

    # -- physics helpers -----------------------------------------------------------------------
    def field(self, clamp_outputs: bool = False, nudging: Nudging | None = None) -> XYField:
        """The relaxed function ``F`` with the current parameters (inputs clamped, and the
        outputs too when ``clamp_outputs``)."""
        free = ~self._is_input
        if clamp_outputs:
            free = free.copy()
            free[self.graph.output_nodes] = False
        p = self._params
        return XYField(
            self.topo,
            p["coupling"],
            p["bias_amplitude"],
            p["bias_direction"],
            free,
            np.asarray(self.graph.output_nodes),
            nudging,
        )

    def energy(self, phi: FloatArray) -> FloatArray:
        """``E(phi)`` per row of ``phi`` ``(B, n)`` (dimensionless)."""
        return self.field().physical_energy(np.asarray(phi, dtype=np.float64))

    def force(self, phi: FloatArray) -> FloatArray:
        """``-dE/dphi`` ``(B, n)`` (energy/rad); zero on the clamped input nodes."""
        f = self.field()
        phi = np.asarray(phi, dtype=np.float64)
        return f.force(phi, np.arange(phi.shape[0], dtype=np.int64))

    def conjugates(self, phi: FloatArray, groups: Iterable[str] | None = None) -> Params:
        """``dE/dtheta`` at phases ``phi`` ``(B, n)`` for ``groups`` (default: trainable)."""
        p = self._params
        allc = xy_conjugates(self.graph.edges, p["bias_amplitude"], p["bias_direction"], phi)
        return {g: allc[g] for g in (self.trainable if groups is None else groups)}

    def hessian(self, phi: FloatArray) -> FloatArray:
        """Dense Hessian ``d2E/dphi_f dphi_f`` over the free (non-input) nodes,
        ``(B, n_f, n_f)`` (energy/rad^2), for tests and diagnostics."""
        phi = np.asarray(phi, dtype=np.float64)
        fld = self.field()
        fi = fld.free_idx
        w = self._params["coupling"] * np.cos(
            phi[:, self.graph.edges[:, 0]] - phi[:, self.graph.edges[:, 1]]
        )
        n = self.n_nodes
        h = np.zeros((phi.shape[0], n, n))
        e = self.graph.edges
        h[:, e[:, 0], e[:, 1]] = -w
        h[:, e[:, 1], e[:, 0]] = -w
        ar = np.arange(n)
        d = phi - self._params["bias_direction"]
        h[:, ar, ar] = -h.sum(axis=2) + self._params["bias_amplitude"] * np.cos(d)
        return np.asarray(h[:, fi][:, :, fi])

    # -- equilibrate ---------------------------------------------------------------------------
    def _check_inputs(self, inputs: FloatArray) -> FloatArray:
        x = np.asarray(inputs, dtype=np.float64)
        n_in = self.graph.input_nodes.size
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"inputs must have shape (batch, {n_in}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("inputs must be finite phases (rad)")
        return x

    def _initial(
        self, x: FloatArray, warm_start: Any, rng: np.random.Generator
    ) -> tuple[FloatArray, int]:
        b = x.shape[0]
        n = self.n_nodes
        if warm_start is not None:
            if not isinstance(warm_start, XYState):
                raise TypeError(f"warm_start must be an XYState, got {type(warm_start).__name__}")
            if warm_start.phi.shape != (warm_start.restarts * b, n):
                raise ValueError(
                    f"warm_start holds {warm_start.phi.shape[0]} copies of "
                    f"{warm_start.phi.shape[1]} nodes; expected {warm_start.restarts} x {b} of {n}"
                )
            phi0 = np.array(warm_start.phi, dtype=np.float64)
            r = warm_start.restarts
        else:
            r = self.restarts
            draw = rng.uniform(-np.pi, np.pi, size=(r, b, n))
            if self.init == "zeros":
                draw[0] = 0.0
            phi0 = draw.reshape(r * b, n)
        phi0[:, self.graph.input_nodes] = np.tile(x, (r, 1))
        return phi0, r

    def _nudging(self, nudge: Nudge | None, b: int, r: int) -> tuple[Nudging | None, bool]:
        if nudge is None:
            return None, False
        beta = complex(nudge.beta)
        if beta.imag != 0:
            raise ValueError("XYNetwork does not support complex (holomorphic) nudges")
        vals = nudge.checked_values(b, self.graph.output_nodes.size)
        if nudge.kind == "clamp":
            return None, True
        return Nudging(nudge.kind, float(beta.real), np.tile(vals, (r, 1))), False

    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Clamp the input phases, apply ``nudge``, relax (and sample at ``T > 0``).

        ``warm_start`` is the ``state`` (an :class:`XYState`) of an earlier phase of the same
        batch; without it, ``restarts`` random initial conditions are relaxed per sample and
        combined by ``restart_policy``.
        """
        rng = rng if rng is not None else np.random.default_rng(self.seed)
        x = self._check_inputs(inputs)
        b = x.shape[0]
        phi0, r = self._initial(x, warm_start, rng)
        nudging, clamp = self._nudging(nudge, b, r)
        if clamp:
            assert nudge is not None
            phi0[:, self.graph.output_nodes] = np.tile(np.asarray(nudge.values, float), (r, 1))
        fld = self.field(clamp_outputs=clamp, nudging=nudging)
        res = relax(fld, phi0, self.relax_settings, rng, fire=warm_start is None)
        phi, keep_r, res = self._select(res, b, r)
        state = XYState(phi, keep_r)
        if nudge is None and warm_start is None:
            self._last_free = (self._version, x.tobytes(), state)
        iterations = res.iterations.reshape(keep_r, b).sum(axis=0)
        residual = res.residual.reshape(keep_r, b).max(axis=0)
        converged = res.converged.reshape(keep_r, b).all(axis=0)
        if self.thermal:
            return self._thermal(fld, phi, keep_r, b, state, iterations, converged, rng)
        energy = fld.physical_energy(phi).reshape(keep_r, b).mean(axis=0)
        outs = phi[:, self.graph.output_nodes]
        conj = self.conjugates(phi)
        return Equilibrium(
            outputs=self._combine_phase(outs, keep_r, b),
            conjugates={
                k: v.reshape(keep_r, b, *v.shape[1:]).mean(axis=0) for k, v in conj.items()
            },
            state=state,
            residual=residual,
            iterations=iterations,
            shots=0,
            energy=energy,
            observables={"phase": self._combine_phase(phi, keep_r, b)},
            converged=converged,
        )

    def _select(self, res: RelaxResult, b: int, r: int) -> tuple[FloatArray, int, RelaxResult]:
        """Apply the restart policy: keep the lowest-F copy per sample, or all of them."""
        if r == 1 or self.restart_policy == "average":
            return res.phi, r, res
        n = res.phi.shape[1]
        f = np.where(np.isfinite(res.energy), res.energy, np.inf).reshape(r, b)
        best = np.argmin(f, axis=0)
        rows = best * b + np.arange(b)
        picked = RelaxResult(
            phi=res.phi[rows],
            energy=res.energy[rows],
            residual=res.residual[rows],
            iterations=res.iterations.reshape(r, b).sum(axis=0),
            stable=res.stable[rows],
            converged=res.converged[rows],
            kicks=res.kicks.reshape(r, b).sum(axis=0),
        )
        return picked.phi.reshape(b, n), 1, picked

    @staticmethod
    def _combine_phase(phi: FloatArray, r: int, b: int) -> FloatArray:
        if r == 1:
            return wrap(phi)
        return circular_mean(phi.reshape(r, b, *phi.shape[1:]), axis=0)

    def _thermal(
        self,
        fld: XYField,
        phi: FloatArray,
        r: int,
        b: int,
        state: XYState,
        iterations: np.ndarray,
        converged: np.ndarray,
        rng: np.random.Generator,
    ) -> Equilibrium:
        ls = self.langevin_settings
        lr = langevin(fld, phi, self.temperature, ls, rng)
        s = ls.n_samples
        n = self.n_nodes
        # (r*b, S, n) -> (b, r*S, n): pool the chains of every restart of a sample
        samp = lr.samples.reshape(r, b, s, n).transpose(1, 0, 2, 3).reshape(b, r * s, n)
        flat = samp.reshape(b * r * s, n)
        conj = {k: v.reshape(b, r * s, *v.shape[1:]) for k, v in self.conjugates(flat).items()}
        energy = fld.physical_energy(flat).reshape(b, r * s).mean(axis=1)
        outs = samp[:, :, self.graph.output_nodes]
        steps = ls.burn_in + ls.n_samples * ls.thin
        samples: dict[str, FloatArray] = {"outputs": wrap(outs)}
        samples.update(conj)
        return Equilibrium(
            outputs=circular_mean(outs, axis=1),
            conjugates={k: v.mean(axis=1) for k, v in conj.items()},
            state=state,
            residual=np.full(b, np.nan),
            iterations=iterations + r * steps,
            shots=r * s,
            energy=energy,
            samples=samples,
            observables={
                "phase": circular_mean(samp, axis=1),
                "langevin_acceptance": lr.acceptance.reshape(r, b).mean(axis=0),
            },
            converged=converged,
        )

    # -- exact gradient ------------------------------------------------------------------------
    def exact_gradient(
        self,
        inputs: FloatArray,
        targets: FloatArray,
        loss: Loss,
        rng: np.random.Generator | None = None,
        warm_start: Any = None,
    ) -> Params:
        """Batch-mean ``dL/dtheta`` by implicit differentiation at the free equilibrium (T = 0):
        ``dL/dtheta = -(dC/dphi)^T H^{-1} d2E/dphi dtheta``, with ``H`` the Hessian over free
        nodes and ``dC/dphi`` = ``loss.grad`` on the output phases.

        The free equilibrium is the last one :meth:`equilibrate` found for the same inputs and
        parameters (so the diagnostic follows the estimator into the same basin), else
        ``warm_start``, else a fresh relaxation with the configured restarts. Under the
        ``average`` policy the result is the mean over restarts of each restart's gradient.
        At ``T > 0`` this is the T -> 0 (deterministic) gradient.
        """
        x = self._check_inputs(inputs)
        b = x.shape[0]
        t = np.asarray(targets, dtype=np.float64)
        if warm_start is None and self._last_free is not None:
            ver, key, st = self._last_free
            if ver == self._version and key == x.tobytes():
                warm_start = st
        rng = rng if rng is not None else np.random.default_rng(self.seed)
        phi0, r = self._initial(x, warm_start, rng)
        fld = self.field()
        res = relax(fld, phi0, self.relax_settings, rng, fire=warm_start is None)
        phi, keep_r, _ = self._select(res, b, r)
        rows = np.arange(phi.shape[0], dtype=np.int64)
        y = wrap(phi[:, self.graph.output_nodes])
        dcdy = loss.grad(y, np.tile(t, (keep_r, 1)))
        rhs_full = np.zeros_like(phi)
        rhs_full[:, self.graph.output_nodes] = dcdy
        lam_f, _ = fld.solve(phi, rows, rhs_full[:, fld.free_idx])
        lam = np.zeros_like(phi)
        lam[:, fld.free_idx] = lam_f
        e = self.graph.edges
        p = self._params
        d = phi - p["bias_direction"]
        grads = {
            "coupling": -np.sin(phi[:, e[:, 0]] - phi[:, e[:, 1]])
            * (lam[:, e[:, 0]] - lam[:, e[:, 1]]),
            "bias_amplitude": -lam * np.sin(d),
            "bias_direction": lam * p["bias_amplitude"] * np.cos(d),
        }
        return {g: np.asarray(grads[g].mean(axis=0)) for g in self.trainable}
