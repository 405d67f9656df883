"""Quantum sensors: train the sensitivity d<O>/d(lambda) of a machine to a Hamiltonian parameter.

An unsupervised "quantum sensor" objective in the spirit of Wanjura & Marquardt
(arXiv:2406.06482): a machine ``H(x, theta)`` (any :class:`QuantumSystem`: generic Pauli model,
ion chain, Rydberg array) also carries a *sensed* term ``lambda * B`` whose parameter lambda is not
trainable (a field to be measured). The machine is trained to make an observable react strongly
to lambda at an operating point lambda0:

    S_k = d<O_k>/d(lambda) at lambda0.

EP needs every output to be an expectation value in a state that minimises an energy. Two
*replicas* of the machine do it: the same trainable Hamiltonian at ``lambda+ = lambda0 + delta``
and ``lambda- = lambda0 - delta``, each in its own ground (or Gibbs) state, solved independently.
The system's output is the central finite difference

    y_k = (<O_k>+ - <O_k>-) / (2 delta)     (-> S_k + O(delta^2)),

in ``[O unit] / [lambda unit]``. The replicas do not interact, so the machine's energy is
``E(theta) = E+(theta) + E-(theta)`` and

* conjugates: ``dE/dtheta_j = <A_j>+ + <A_j>-`` (Hellmann--Feynman on each replica, summed);
* nudge: an ``error`` nudge ``beta sum_k eps_k y_k`` (``eps = dL/dy``) is
  ``beta * eps/(2 delta) . O`` on replica + and ``-beta * eps/(2 delta) . O`` on replica -: the
  nudged energy is ``E+ + E- + beta eps . y``, so the usual EP estimate
  ``(1/beta)[dE/dtheta(beta) - dE/dtheta(0)]`` (or its centred form) tends to ``dL/dtheta`` with
  ``L(y)`` any loss on the sensitivities (``neg_abs``: maximise ``|y|``; ``neg_sq``);
* warm starts: each replica's nudged phase starts from that replica's free state;
* shots: each replica measures with the machine's ``shots``; one output needs both, so
  ``Equilibrium.shots`` (and the ``total_shots`` / ``measurement_settings`` observables) are the
  sums over the two replicas. ``replica_outputs`` logs ``(<O>+, <O>-)`` of every machine output;
* exact gradient (diagnostic): ``dL/dtheta = sum_k eps_k (d<O_k>+/dtheta - d<O_k>-/dtheta)/(2
  delta)``, each replica's derivative by its own linear response (``QuantumSystem.
  exact_gradient``), with exact expectation values.

The sensed operator ``B`` may contain Pauli strings the machine does not: each replica's
operators are re-expressed on the machine's basis extended by those strings
(:class:`ShiftedModel`; non-linear models such as the power-law ion chain keep their own
``coefficients``/``jacobian``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from physlearn.losses import Loss
from physlearn.simulators.quantum.pauli import PauliBasis, parse_pauli
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
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


def extended_basis(basis: PauliBasis, labels: Sequence[str]) -> PauliBasis:
    """``basis`` followed by the strings of ``labels`` it lacks (its own strings keep their
    positions, so a coefficient vector of ``basis`` extends by zero padding)."""
    keys = [(int(x), int(z)) for x, z in zip(basis.x, basis.z, strict=True)]
    have = set(keys)
    for lab in labels:
        key = parse_pauli(lab, basis.n_qubits)
        if key not in have:
            have.add(key)
            keys.append(key)
    return basis if len(keys) == basis.size else PauliBasis(basis.n_qubits, keys)


class ShiftedModel(HamiltonianModel):
    """A machine's operators on an extended basis, plus a fixed term: ``H0 -> H0 + shift``.

    ``coefficients`` and ``jacobian`` delegate to the wrapped model (so non-linear models keep
    their physics) and pad with zeros for the strings the extension added.
    """

    def __init__(self, inner: HamiltonianModel, basis: PauliBasis, shift: FloatArray) -> None:
        self.inner = inner
        self._extra = basis.size - inner.basis.size
        super().__init__(
            basis,
            self._pad(inner.h0) + shift,
            self._pad(inner.input_ops),
            self._pad(inner.output_ops),
            inner.groups,
            {k: self._pad(v) for k, v in inner.param_ops.items()},
            input_labels=inner.input_labels,
            output_labels=inner.output_labels,
            input_unit=inner.input_unit,
            energy_unit=inner.energy_unit,
        )
        self.shift = np.asarray(shift, dtype=np.float64).reshape(basis.size)

    def _pad(self, v: FloatArray) -> FloatArray:
        v = np.asarray(v, dtype=np.float64)
        if not self._extra:
            return v.copy()
        pad = [(0, 0)] * (v.ndim - 1) + [(0, self._extra)]
        return np.pad(v, pad)

    def coefficients(self, params: Params) -> FloatArray:
        return self._pad(self.inner.coefficients(params)) + self.shift

    def jacobian(self, params: Params) -> dict[str, FloatArray]:
        return {k: self._pad(v) for k, v in self.inner.jacobian(params).items()}


@dataclass(frozen=True)
class _Weights:
    """The linear loss ``L = sum_k t_k y_k`` (its error signal is the 'target' ``t``): lets a
    replica's ``exact_gradient`` return ``d(w . <O>)/dtheta`` for per-sample weights ``w``."""

    name: str = "linear_weights"
    supervised: bool = True

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(np.sum(t * y, axis=-1))

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(np.broadcast_to(t, np.shape(y)), dtype=np.float64)


@dataclass(frozen=True)
class SensitivityState:
    """Warm start of one batch: the states of replica + and replica -."""

    plus: Any
    minus: Any


class SensitivitySystem(PhysicalSystem):
    """Two replicas of a quantum machine at lambda0 +- delta; outputs d<O_k>/d(lambda).

    Args:
        machine: the machine (its current parameters are the initial ones). It becomes replica +.
        sensed: ``[(coeff, pauli label)]``: the sensed operator ``B`` (``H += lambda * B``),
            coefficients in the machine's energy unit per unit of lambda.
        point: the operating point lambda0 (unit ``unit``).
        delta: half-step of the central difference (> 0, unit ``unit``).
        outputs: which machine outputs to differentiate, by label or index (default: all).
        twin: a second, independent instance of the same machine for replica - (default: a
            shallow copy of ``machine``; pass one built separately when the machine caches
            state).
        name: symbol of lambda in the output labels (``d<O>/d<name>``).
        unit: unit of lambda.
    """

    supported_nudges: frozenset[NudgeKind] = frozenset({"error"})
    supports_complex_nudge = False
    native_cost = None
    thermal = False

    def __init__(
        self,
        machine: QuantumSystem,
        sensed: Sequence[tuple[float, str]],
        *,
        point: float = 0.0,
        delta: float,
        outputs: Sequence[str | int] | None = None,
        twin: QuantumSystem | None = None,
        name: str = "lambda",
        unit: str = "1",
    ) -> None:
        if not (np.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be a finite number > 0, got {delta}")
        if not np.isfinite(point):
            raise ValueError(f"point must be finite, got {point}")
        if not sensed:
            raise ValueError("the sensed term needs at least one Pauli string")
        twin = copy.copy(machine) if twin is None else twin
        if twin is machine:
            raise ValueError("twin must be a different instance from machine")
        inner = machine.model
        if [g.name for g in twin.parameter_groups] != [g.name for g in inner.groups]:
            raise ValueError("twin is not the same machine (parameter groups differ)")
        basis = extended_basis(inner.basis, [lab for _, lab in sensed])
        b_op = basis.vector(list(sensed))
        if not np.any(b_op):
            raise ValueError("the sensed operator B is zero")
        labels = inner.output_labels or tuple(f"O{k}" for k in range(inner.n_outputs))
        self.selected = _select(outputs, labels)
        self.machine_output_labels = labels
        self.point = float(point)
        self.delta = float(delta)
        self.sensed = tuple((float(c), str(lab)) for c, lab in sensed)
        self.name = name
        self.unit = unit
        self.sensed_operator = b_op
        params = machine.get_parameters()
        self.replicas: tuple[QuantumSystem, QuantumSystem] = (machine, twin)
        for sign, rep, src in ((1.0, machine, inner), (-1.0, twin, twin.model)):
            rep.model = ShiftedModel(src, basis, (self.point + sign * self.delta) * b_op)
            rep.energy_unit = rep.model.energy_unit
            rep.set_parameters(params)
        self.energy_unit = machine.energy_unit
        self.max_batch = machine.max_batch

    # -- description -------------------------------------------------------------------------
    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return self.replicas[0].parameter_groups

    @property
    def inputs(self) -> Port:
        return self.replicas[0].inputs

    @property
    def outputs(self) -> Port:
        out_unit = self.replicas[0].outputs.unit
        unit = out_unit if self.unit == "1" else f"{out_unit}/{self.unit}"
        return Port(
            len(self.selected),
            unit,
            tuple(f"d<{self.machine_output_labels[k]}>/d{self.name}" for k in self.selected),
            f"sensitivity d<O>/d{self.name} at {self.name} = {self.point:g} +- {self.delta:g}",
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "machine": self.replicas[0].snapshot(),
            "sensed": [[c, lab] for c, lab in self.sensed],
            "point": self.point,
            "delta": self.delta,
            "outputs": [self.machine_output_labels[k] for k in self.selected],
            "sensed_unit": self.unit,
        }

    # -- parameters --------------------------------------------------------------------------
    def set_parameters(self, params: Params) -> Params:
        held = self.replicas[0].set_parameters(params)
        self.replicas[1].set_parameters(params)
        return held

    def get_parameters(self) -> Params:
        return self.replicas[0].get_parameters()

    # -- physics -----------------------------------------------------------------------------
    def _replica_errors(self, nudge: Nudge | None, batch: int) -> tuple[Nudge | None, ...]:
        if nudge is None or nudge.beta == 0:
            return (None, None)
        if nudge.kind != "error":
            raise ValueError(f"{type(self).__name__} realises only 'error' nudges")
        eps = nudge.checked_values(batch, len(self.selected))
        if complex(nudge.beta).imag != 0:
            raise ValueError(f"{type(self).__name__} needs a real beta")
        full = np.zeros((batch, len(self.machine_output_labels)))
        full[:, self.selected] = eps / (2.0 * self.delta)
        return (Nudge(beta=nudge.beta, error=full), Nudge(beta=nudge.beta, error=-full))

    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Both replicas' equilibria (replica + first, then -, from the same ``rng``)."""
        inputs = np.asarray(inputs, dtype=np.float64)
        nudges = self._replica_errors(nudge, inputs.shape[0])
        ws = warm_start if isinstance(warm_start, SensitivityState) else None
        starts = (ws.plus, ws.minus) if ws is not None else (None, None)
        plus, minus = (
            rep.equilibrate(inputs, nd, st, rng)
            for rep, nd, st in zip(self.replicas, nudges, starts, strict=True)
        )
        outputs = (plus.outputs[:, self.selected] - minus.outputs[:, self.selected]) / (
            2.0 * self.delta
        )
        observables = {
            k: plus.observables[k] + minus.observables[k]
            for k in plus.observables
            if k in minus.observables
        }
        observables["replica_outputs"] = np.stack([plus.outputs, minus.outputs], axis=1)

        def both(a: Any, b: Any, op: Any) -> Any:
            return None if a is None or b is None else op(a, b)

        return Equilibrium(
            outputs=outputs,
            conjugates={k: plus.conjugates[k] + minus.conjugates[k] for k in plus.conjugates},
            state=SensitivityState(plus.state, minus.state),
            residual=both(plus.residual, minus.residual, np.maximum),
            iterations=both(plus.iterations, minus.iterations, np.add),
            shots=plus.shots + minus.shots,
            settle_time=plus.settle_time + minus.settle_time,
            energy=both(plus.energy, minus.energy, np.add),
            observables=observables,
            converged=both(plus.converged, minus.converged, np.logical_and),
        )

    # -- diagnostics -------------------------------------------------------------------------
    def exact_outputs(self, inputs: FloatArray) -> FloatArray:
        """``(batch, n_out)`` sensitivities from exact expectation values (no shots)."""
        plus, minus = (self._exact(rep).equilibrate(inputs) for rep in self.replicas)
        sel = self.selected
        return np.asarray((plus.outputs[:, sel] - minus.outputs[:, sel]) / (2.0 * self.delta))

    @staticmethod
    def _exact(rep: QuantumSystem) -> QuantumSystem:
        if rep.shots == 0:
            return rep
        exact = copy.copy(rep)
        exact.shots = 0
        return exact

    def exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        """Batch-mean dL/dtheta by the replicas' linear responses (see the module docstring)."""
        inputs = np.asarray(inputs, dtype=np.float64)
        y = self.exact_outputs(inputs)
        eps = loss.grad(y, targets)
        w = np.zeros((inputs.shape[0], len(self.machine_output_labels)))
        w[:, self.selected] = eps / (2.0 * self.delta)
        weights = _Weights()
        g_plus = self._exact(self.replicas[0]).exact_gradient(inputs, w, weights)
        g_minus = self._exact(self.replicas[1]).exact_gradient(inputs, -w, weights)
        return {k: g_plus[k] + g_minus[k] for k in g_plus}


def _select(outputs: Sequence[str | int] | None, labels: Sequence[str]) -> list[int]:
    if outputs is None or len(outputs) == 0:
        return list(range(len(labels)))
    out: list[int] = []
    for o in outputs:
        if isinstance(o, int | np.integer):
            if not 0 <= int(o) < len(labels):
                raise ValueError(f"output index {o} outside 0..{len(labels) - 1}")
            k = int(o)
        elif o in labels:
            k = list(labels).index(o)
        else:
            raise ValueError(f"unknown output {o!r}; the machine's outputs are {list(labels)}")
        if k in out:
            raise ValueError(f"output {o!r} selected twice")
        out.append(k)
    return out
