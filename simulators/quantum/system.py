"""Quantum learning machines: a spin-1/2 Hamiltonian in its ground (or thermal) state.

The machine (Wanjura & Marquardt arXiv:2406.06482; see ``docs/physics.md``, §Quantum EP) has

    H(x, theta, nu) = H0 + sum_i x_i B_i + H_theta(theta) + sum_k nu_k O_k,

every operator a real combination of Pauli strings of one :class:`PauliBasis`. Inputs ``x``
enter linearly through ``B_i`` (physical values: fields, detunings), the trainable part
``H_theta`` is linear in theta for most machines (``sum_j theta_j A_j``) and the outputs are the
expectation values ``<O_k>`` in the ground state (T = 0) or the Gibbs state (T > 0).

* Conjugates (Hellmann--Feynman): ``dE/dtheta_j = <dH/dtheta_j>`` (``<A_j>`` for linear terms;
  at T > 0 ``dF/dtheta_j`` with ``F = -T ln Z``).
* Nudge: only ``error`` nudges: ``nu = beta * eps`` adds ``beta sum_k eps_k O_k`` to H, with
  ``eps = dL/d<O>`` at the free state. That is quantum EP; real beta only.
* Every nudged phase is a warm Lanczos solve from the free ground state of the same sample, on
  ``H_free + D`` applied lazily; its first product ``(H_free + D) psi0`` comes from the product
  that certified the free state (``QuantumState.products``). A later nudge along the direction
  of an earlier one from the same free state (the centred estimator's ``-beta`` after ``+beta``)
  starts from the linear extrapolation ``psi0 + c (psi_1 - psi0)`` instead (``delta = c
  delta_1``; off by O(beta^2) instead of O(beta), a few products fewer). A quantum ground state
  is unique (the gap check), so the start changes only the cost, never the state: every solve
  meets the same certified tolerance.
* Across training steps (T = 0, Lanczos-sized registers): the free state is carried to the next
  step (:meth:`QuantumSystem.export_state` / :meth:`~QuantumSystem.import_state`, the ground and
  first excited state of every sample plus the inputs). When the next step clamps the same inputs
  (input-free tasks: phase exploration, sensitivity), its free phase is a *tracked* solve from
  that pair (two eigenvalues, the same gap check as a cold solve,
  :func:`~physlearn.simulators.quantum.states.ground_state`); other inputs or batch shapes give
  a cold solve.
* Measurement: exact expectations (``shots = 0``) or ``shots`` projective measurements per
  measurement setting (qubit-wise commuting groups, :mod:`physlearn.simulators.quantum.shots`),
  drawn from the ``rng`` passed to :meth:`QuantumSystem.equilibrate`.
* :meth:`QuantumSystem.exact_gradient` is the linear-response gradient
  ``dL/dtheta_j = 2 Re <psi|A_j|dpsi>``, ``dpsi = (E0 - H)^-1 Q (O_eps - <O_eps>) psi`` (T = 0),
  or the Kubo--Mori response at T > 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from physlearn.losses import Loss
from physlearn.simulators.quantum.lanczos import SolverOptions
from physlearn.simulators.quantum.manifold import ground_manifold, manifold_response_operator
from physlearn.simulators.quantum.operators import SumOperator
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.shots import MeasurementPlan
from physlearn.simulators.quantum.states import (
    ground_response,
    ground_state,
    thermal_response_operator,
    thermal_state,
)
from physlearn.simulators.quantum.warm import QuantumCarry, QuantumState, warm_hamiltonian
from physlearn.system import (
    Equilibrium,
    FloatArray,
    Nudge,
    NudgeKind,
    ParameterGroup,
    Params,
    PhysicalSystem,
    Port,
)


class HamiltonianModel:
    """The operators of a quantum machine, as coefficient vectors over ``basis``.

    Args:
        basis: the Pauli strings every operator is built from.
        h0: ``(T,)`` fixed Hamiltonian.
        input_ops: ``(n_in, T)``: input ``x_i`` adds ``x_i * input_ops[i]``.
        output_ops: ``(n_out, T)``: output ``k`` is ``<output_ops[k] . P>`` (constant parts, e.g.
            the ``1/2`` of ``n = (1 - Z)/2``, sit on the identity string).
        groups: trainable parameter groups.
        param_ops: ``{group: (size, T)}``: ``H_theta = sum_j theta_j param_ops[g][j]``. Models
            with a non-linear ``H_theta`` override :meth:`coefficients` and :meth:`jacobian`.
        input_labels, output_labels: port labels.
        energy_unit: unit of H (``"rad/us"``, ``"1"``).
    """

    def __init__(
        self,
        basis: PauliBasis,
        h0: FloatArray,
        input_ops: FloatArray,
        output_ops: FloatArray,
        groups: tuple[ParameterGroup, ...],
        param_ops: Mapping[str, FloatArray],
        *,
        input_labels: tuple[str, ...] = (),
        output_labels: tuple[str, ...] = (),
        input_unit: str = "1",
        energy_unit: str = "1",
    ) -> None:
        t = basis.size
        self.basis = basis
        self.h0 = np.asarray(h0, dtype=np.float64).reshape(t)
        self.input_ops = np.asarray(input_ops, dtype=np.float64).reshape(-1, t)
        self.output_ops = np.asarray(output_ops, dtype=np.float64).reshape(-1, t)
        self.groups = groups
        self.param_ops = {
            k: np.asarray(v, dtype=np.float64).reshape(-1, t) for k, v in param_ops.items()
        }
        for g in groups:
            if g.name in self.param_ops and self.param_ops[g.name].shape[0] != g.size:
                raise ValueError(f"param_ops[{g.name!r}] has the wrong number of rows")
        self.input_labels = input_labels
        self.output_labels = output_labels
        self.input_unit = input_unit
        self.energy_unit = energy_unit

    @property
    def n_inputs(self) -> int:
        return int(self.input_ops.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.output_ops.shape[0])

    def coefficients(self, params: Params) -> FloatArray:
        """``(T,)`` coefficients of ``H0 + H_theta(theta)``."""
        c = self.h0.copy()
        for g in self.groups:
            c += params[g.name].reshape(-1) @ self.param_ops[g.name]
        return c

    def jacobian(self, params: Params) -> dict[str, FloatArray]:
        """``{group: (size, T)}``: coefficients of ``dH/dtheta_j`` (the conjugate operators)."""
        return {g.name: self.param_ops[g.name] for g in self.groups}


class QuantumSystem(PhysicalSystem):
    """A :class:`HamiltonianModel` held in its ground state (``temperature = 0``) or Gibbs state.

    Args:
        model: the operators.
        params: initial parameters (inside the groups' bounds).
        temperature: ``T >= 0`` in the energy unit (k_B = 1). ``T > 0`` uses dense
            diagonalisation: keep the register small (<= ~11 qubits).
        shots: projective measurements per setting and estimate; 0 = exact expectation values.
        solver: ground-state solver settings (tolerances, gap check).
        name: for snapshots.
    """

    supported_nudges: frozenset[NudgeKind] = frozenset({"error"})
    supports_complex_nudge = False
    native_cost = None

    def observable_meta(self, name: str) -> tuple[str, tuple[str, ...], str] | None:
        return {
            "measurement_settings": ("1", (), "measurement settings per estimate"),
            "total_shots": ("1", (), "shots spent per sample"),
        }.get(name)

    thermal = False  # no thermal samples: quantum fluctuations make -Cov/T the wrong gradient

    def __init__(
        self,
        model: HamiltonianModel,
        params: Params,
        *,
        temperature: float = 0.0,
        shots: int = 0,
        solver: SolverOptions | None = None,
        name: str = "quantum",
    ) -> None:
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if shots < 0:
            raise ValueError("shots must be >= 0")
        self.model = model
        self.temperature = float(temperature)
        self.shots = int(shots)
        self.solver = solver or SolverOptions()
        self.name = name
        self.energy_unit = model.energy_unit
        self._params: Params = {}
        self.set_parameters(params)

    # -- description -------------------------------------------------------------------------
    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return self.model.groups

    @property
    def inputs(self) -> Port:
        return Port(self.model.n_inputs, self.model.input_unit, self.model.input_labels)

    @property
    def outputs(self) -> Port:
        return Port(self.model.n_outputs, "1", self.model.output_labels, "expectation values")

    @property
    def n_qubits(self) -> int:
        return self.model.basis.n_qubits

    def snapshot(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "name": self.name,
            "n_qubits": self.n_qubits,
            "pauli_strings": self.model.basis.size,
            "temperature": self.temperature,
            "shots": self.shots,
            "energy_unit": self.energy_unit,
        }

    # -- parameters --------------------------------------------------------------------------
    def check_parameters(self, params: Params) -> None:
        """Refuse missing groups, wrong shapes and values outside the bounds (``ValueError``)."""
        for g in self.parameter_groups:
            if g.name not in params:
                raise ValueError(f"missing parameter group {g.name!r}")
            v = np.asarray(params[g.name], dtype=np.float64)
            if v.shape != g.shape:
                raise ValueError(f"parameter group {g.name!r}: shape {v.shape} != {g.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"parameter group {g.name!r}: non-finite values")
            lo, hi = float(v.min(initial=np.inf)), float(v.max(initial=-np.inf))
            if lo < g.lower or hi > g.upper:
                raise ValueError(
                    f"parameter group {g.name!r}: values in [{lo:.6g}, {hi:.6g}] {g.unit} "
                    f"outside the bounds [{g.lower:.6g}, {g.upper:.6g}] {g.unit}"
                    + (f" ({g.long_name})" if g.long_name else "")
                )

    def set_parameters(self, params: Params) -> Params:
        self.check_parameters(params)
        self._params = {
            g.name: np.array(params[g.name], dtype=np.float64) for g in self.parameter_groups
        }
        return self.get_parameters()

    def get_parameters(self) -> Params:
        return {k: v.copy() for k, v in self._params.items()}

    def check_inputs(self, inputs: FloatArray) -> None:
        """Hook for device limits on the clamped inputs (raise ``ValueError``)."""

    # -- physics -----------------------------------------------------------------------------
    def _measured_strings(self, jac: Mapping[str, FloatArray]) -> NDArray[np.int64]:
        used = np.any(self.model.output_ops != 0, axis=0)
        for j in jac.values():
            used |= np.any(j != 0, axis=0)
        return np.flatnonzero(used)

    def _coefficients(self, inputs: FloatArray, nudge: Nudge | None) -> FloatArray:
        """``(batch, T)`` Hamiltonian coefficients of every sample."""
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.ndim != 2 or inputs.shape[1] != self.model.n_inputs:
            raise ValueError(
                f"inputs must have shape (batch, {self.model.n_inputs}), got {inputs.shape}"
            )
        self.check_inputs(inputs)
        coeffs = self.model.coefficients(self._params)[None, :] + inputs @ self.model.input_ops
        if nudge is not None and nudge.beta != 0:
            if nudge.kind != "error":
                raise ValueError(f"{type(self).__name__} realises only 'error' nudges")
            beta = complex(nudge.beta)
            if beta.imag != 0:
                raise ValueError(f"{type(self).__name__} needs a real beta")
            err = np.asarray(nudge.values, dtype=np.float64)
            if err.shape != (inputs.shape[0], self.model.n_outputs):
                raise ValueError(
                    f"nudge error must have shape {(inputs.shape[0], self.model.n_outputs)}"
                )
            coeffs = coeffs + beta.real * (err @ self.model.output_ops)
        return np.asarray(coeffs)

    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Ground (or Gibbs) state of every sample; see the module docstring for conventions."""
        if self.temperature == 0 and self.solver.degenerate == "manifold":
            return self._equilibrate_manifold(inputs, nudge, warm_start, rng)
        coeffs = self._coefficients(inputs, nudge)
        batch = coeffs.shape[0]
        jac = self.model.jacobian(self._params)
        strings = self._measured_strings(jac)
        plan = MeasurementPlan(self.model.basis, strings) if self.shots else None
        if plan is not None and rng is None:
            raise ValueError("a finite-shot measurement needs the rng passed to equilibrate")
        track = self._tracked(warm_start, inputs, nudge)
        ws = warm_start if isinstance(warm_start, QuantumState) else None
        starts = ws.vectors if ws is not None else None
        if starts is not None and len(starts) != batch:
            raise ValueError("warm start is from a batch of a different size")
        reuse = ws is not None and len(ws.hamiltonians) == batch and ws.coefficients is not None
        warm = ws if reuse else None  # free Hamiltonians to reuse
        bases: list[sp.csr_matrix] = []
        base_coeffs = np.empty_like(coeffs)
        values = np.empty((batch, strings.size))
        energy = np.empty(batch)
        residual = np.zeros(batch)
        iters = np.zeros(batch, dtype=np.int64)
        vectors = []
        excited: list[Any] = []
        products: list[Any] = []
        for b in range(batch):
            h: sp.csr_matrix | SumOperator
            v0 = None if starts is None else starts[b]
            h, v0, hv0, delta = self._hamiltonian(b, coeffs, warm, v0, bases, base_coeffs)
            if self.temperature > 0:
                th = thermal_state(h, self.temperature)
                vecs, weights = th.vectors, th.weights
                energy[b] = th.free_energy
            else:
                gs = (
                    ground_state(h, track[b, 0], self.solver, excited=track[b, 1])
                    if track is not None
                    else ground_state(h, v0, self.solver, hv0=hv0)
                )
                if delta is not None:
                    assert ws is not None
                    ws.nudged.setdefault(b, []).append((delta, gs.vector, gs.hvector))
                vectors.append(gs.vector)
                excited.append(gs.excited)
                # H_base @ psi is known only when the solve ran on the base Hamiltonian itself
                products.append(gs.hvector if h is bases[-1] else None)
                vecs, weights = gs.vector[:, None], np.ones(1)
                energy[b], residual[b], iters[b] = gs.energy, gs.residual, gs.matvecs
            values[b] = self._measure(plan, vecs, weights, strings, rng)
        state = (
            QuantumState(
                tuple(vectors),
                tuple(bases),
                base_coeffs,
                tuple(excited) if all(e is not None for e in excited) else None,
                np.array(inputs, dtype=np.float64),
                tuple(products) if all(p is not None for p in products) else None,
            )
            if self.temperature == 0
            else QuantumState(None)
        )
        return self._equilibrium(values, jac, strings, plan, energy, residual, iters, state)

    def _hamiltonian(
        self,
        b: int,
        coeffs: FloatArray,
        ws: QuantumState | None,
        v0: Any,
        bases: list[sp.csr_matrix],
        base_coeffs: FloatArray,
    ) -> tuple[sp.csr_matrix | SumOperator, Any, Any, FloatArray | None]:
        """Sample ``b``'s Hamiltonian, the start vector from ``v0`` and its product with the
        Hamiltonian when known, and the nudge's coefficient change to record with a nudged
        Lanczos solve (else None). ``ws``: a warm state whose free Hamiltonians are reused
        (:func:`~physlearn.simulators.quantum.warm.warm_hamiltonian`), else None. At T = 0 the
        free (base) Hamiltonian and its coefficients go to ``bases`` and ``base_coeffs``."""
        if ws is not None and self.temperature == 0:
            assert ws.coefficients is not None
            base_coeffs[b] = ws.coefficients[b]
            bases.append(ws.hamiltonians[b])
            dense_below = self.solver.dense_below
            return warm_hamiltonian(self.model.basis, ws, b, coeffs[b], v0, dense_below)
        h = self.model.basis.operator(coeffs[b])
        if self.temperature == 0:
            bases.append(h)
            base_coeffs[b] = coeffs[b]
        return h, v0, None, None

    def _measure(
        self,
        plan: MeasurementPlan | None,
        vecs: NDArray[Any],
        weights: FloatArray,
        strings: NDArray[np.int64],
        rng: np.random.Generator | None,
    ) -> FloatArray:
        """The values of the Pauli ``strings`` in ``sum_m weights_m |vecs_m><vecs_m|``: sampled
        with ``plan`` (finite shots), else exact (mixed at T > 0)."""
        basis = self.model.basis
        if plan is not None:
            assert rng is not None
            return plan.sample(vecs, weights, self.shots, rng)
        if self.temperature > 0 or vecs.shape[1] > 1:
            return basis.expectations_mixed(vecs, weights, strings)
        return basis.expectations(vecs[:, 0], strings)

    def _equilibrate_manifold(
        self,
        inputs: FloatArray,
        nudge: Nudge | None,
        warm_start: Any,
        rng: np.random.Generator | None,
    ) -> Equilibrium:
        """:meth:`equilibrate` with ``solver.degenerate = "manifold"`` (T = 0): every sample in
        the equal mixture over its quasi-degenerate ground manifold
        (:func:`~physlearn.simulators.quantum.manifold.ground_manifold`). A nudged phase from a
        free state keeps each sample's manifold size and must overlap its free manifold."""
        coeffs = self._coefficients(inputs, nudge)
        batch = coeffs.shape[0]
        jac = self.model.jacobian(self._params)
        strings = self._measured_strings(jac)
        plan = MeasurementPlan(self.model.basis, strings) if self.shots else None
        if plan is not None and rng is None:
            raise ValueError("a finite-shot measurement needs the rng passed to equilibrate")
        free = warm_start.manifolds if isinstance(warm_start, QuantumState) else None
        if free is not None and len(free) != batch:
            raise ValueError("warm start is from a batch of a different size")
        nudged = nudge is not None and nudge.beta != 0 and free is not None
        values = np.empty((batch, strings.size))
        energy, residual = np.empty(batch), np.empty(batch)
        manifolds = []
        for b in range(batch):
            h = self.model.basis.operator(coeffs[b])
            ref = free[b] if nudged and free is not None else None
            gm = ground_manifold(h, self.solver, None if ref is None else ref.shape[1], ref)
            manifolds.append(gm.vectors)
            values[b] = self._measure(plan, gm.vectors, gm.weights, strings, rng)
            energy[b], residual[b] = gm.energy, gm.residual
        state = QuantumState(None, manifolds=tuple(manifolds))
        iters = np.zeros(batch, dtype=np.int64)
        return self._equilibrium(values, jac, strings, plan, energy, residual, iters, state)

    def _equilibrium(
        self,
        values: FloatArray,
        jac: dict[str, FloatArray],
        strings: NDArray[np.int64],
        plan: MeasurementPlan | None,
        energy: FloatArray,
        residual: FloatArray,
        iters: NDArray[np.int64],
        state: QuantumState,
    ) -> Equilibrium:
        """The :class:`~physlearn.system.Equilibrium` of a batch from the measured ``values``
        ``(batch, len(strings))`` of the Pauli strings the outputs and conjugates need."""
        batch = values.shape[0]
        outputs = values @ self.model.output_ops[:, strings].T
        conj = {
            g.name: (values @ jac[g.name][:, strings].T).reshape((batch, *g.shape))
            for g in self.parameter_groups
        }
        n_set = 0 if plan is None else plan.n_settings
        tol = self.solver.tol * np.maximum(1.0, np.abs(energy))
        return Equilibrium(
            outputs=outputs,
            conjugates=conj,
            state=state,
            residual=residual,
            iterations=iters,
            shots=self.shots,
            energy=energy,
            observables={
                "measurement_settings": np.full(batch, float(n_set)),
                "total_shots": np.full(batch, float(n_set * self.shots)),
            },
            converged=residual <= 10 * tol if self.temperature == 0 else np.ones(batch, bool),
        )

    # -- carrying the free state to the next step ----------------------------------------------
    def _carries(self) -> bool:
        """Whether free states are worth carrying: T = 0 and a register the Lanczos path
        solves (dense solves take no start vector)."""
        dim = self.model.basis.dim
        fail = self.solver.degenerate == "fail"  # a manifold solve is cold every step
        return self.temperature == 0 and fail and dim > self.solver.dense_below and dim >= 3

    def _complex_layout(self) -> bool:
        """Whether a Hamiltonian of this machine can be complex (strings with an odd number of
        Y's in its basis): then carried vectors are stored as real and imaginary parts."""
        return bool(np.any(self.model.basis.ny % 2 == 1))

    def carried_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        if not self._carries():
            return {}
        shapes = {
            "inputs": (batch, self.model.n_inputs),
            "vectors": (batch, 2, self.model.basis.dim),
        }
        if self._complex_layout():
            shapes["vectors_imag"] = (batch, 2, self.model.basis.dim)
        return shapes

    def export_state(self, state: Any) -> dict[str, FloatArray] | None:
        if (
            not self._carries()
            or not isinstance(state, QuantumState)
            or state.vectors is None
            or state.excited is None
            or state.inputs is None
        ):
            return None
        pairs = np.stack(
            [np.stack([v, e]) for v, e in zip(state.vectors, state.excited, strict=True)]
        )
        out = {"inputs": np.array(state.inputs, dtype=np.float64), "vectors": pairs.real.copy()}
        if self._complex_layout():
            out["vectors_imag"] = pairs.imag.copy()
        elif np.iscomplexobj(pairs):
            return None  # cannot happen for a real basis; never carry a truncated state
        return out

    def import_state(self, arrays: Mapping[str, FloatArray]) -> Any:
        if not self._carries() or "vectors" not in arrays or "inputs" not in arrays:
            return None
        vec = np.asarray(arrays["vectors"], dtype=np.float64)
        if "vectors_imag" in arrays:
            vec = vec + 1j * np.asarray(arrays["vectors_imag"], dtype=np.float64)
        return QuantumCarry(np.asarray(arrays["inputs"], dtype=np.float64), vec)

    def _tracked(
        self, warm_start: Any, inputs: FloatArray, nudge: Nudge | None
    ) -> NDArray[Any] | None:
        """``(batch, 2, dim)`` start pairs for a tracked free phase, or None (cold): only a
        :class:`QuantumCarry` for the same inputs, batch shape and register, at T = 0."""
        if not isinstance(warm_start, QuantumCarry) or not self._carries():
            return None
        if nudge is not None and nudge.beta != 0:
            return None
        x = np.asarray(inputs, dtype=np.float64)
        v = warm_start.vectors
        if (
            warm_start.inputs.shape != x.shape
            or not np.array_equal(warm_start.inputs, x)
            or v.shape != (x.shape[0], 2, self.model.basis.dim)
        ):
            return None
        return v

    # -- diagnostics -------------------------------------------------------------------------
    def exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        """Batch-mean dL/dtheta by linear response (exact expectations, no shots, no nudge)."""
        coeffs = self._coefficients(inputs, None)
        batch = coeffs.shape[0]
        jac = self.model.jacobian(self._params)
        basis = self.model.basis
        strings = self._measured_strings(jac)
        grad_strings = np.zeros((batch, strings.size))
        for b in range(batch):
            h = basis.operator(coeffs[b])
            if self.temperature > 0:
                th = thermal_state(h, self.temperature)
                y = basis.expectations_mixed(th.vectors, th.weights, strings)
                eps = loss.grad((y @ self.model.output_ops[:, strings].T)[None], targets[b : b + 1])
                o_eps = basis.operator(eps[0] @ self.model.output_ops)
                r = thermal_response_operator(th, o_eps)
                grad_strings[b] = basis.traces(r, strings).real
            elif self.solver.degenerate == "manifold":
                gm = ground_manifold(h, self.solver)
                y = basis.expectations_mixed(gm.vectors, gm.weights, strings)
                eps = loss.grad((y @ self.model.output_ops[:, strings].T)[None], targets[b : b + 1])
                o_eps = basis.operator(eps[0] @ self.model.output_ops)
                r = manifold_response_operator(h, gm.size, o_eps)
                grad_strings[b] = basis.traces(r, strings).real
            else:
                gs = ground_state(h, None, self.solver)
                y = basis.expectations(gs.vector, strings)
                eps = loss.grad((y @ self.model.output_ops[:, strings].T)[None], targets[b : b + 1])
                o_eps = basis.operator(eps[0] @ self.model.output_ops)
                dpsi = ground_response(h, gs, o_eps @ gs.vector)
                grad_strings[b] = 2.0 * basis.transition(gs.vector, dpsi, strings).real
        mean = grad_strings.mean(axis=0)
        return {
            g.name: (jac[g.name][:, strings] @ mean).reshape(g.shape) for g in self.parameter_groups
        }
