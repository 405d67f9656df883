"""Rydberg tweezer-array emulator (exact state vector, ground state or Gibbs state).

    H = sum_i (Omega/2) X_i - sum_i Delta_i n_i + sum_{i<j} C6 / r_ij**6 n_i n_j,

``n_i = |r><r|_i = (1 - Z_i)/2`` (``|r> = |1>``), hbar = 1, energies and Omega, Delta in
rad/us, positions in um. C6/hbar (rad us^-1 um^6): n = 60 -> 865 723.02, n = 70 -> 5 420 158.53.
Blockade radius ``R_b = (C6/Omega)**(1/6)``.

Trainable: the local detunings ``detuning`` (atom,) and the global Rabi frequency ``rabi`` ().
Conjugates: ``dH/dDelta_i = -n_i``, ``dH/dOmega = sum_i X_i / 2``. Inputs are extra local
detunings (rad/us) on the input atoms; outputs are ``<n_i>`` on the output atoms followed by the
correlators ``<n_i n_j>`` of the listed pairs. Device limits (minimum distance, ``Omega_max``,
``|Delta|_max`` on the *total* detuning, atom count) are checked; violations are refused with a
``ValueError`` naming the limit, never clipped. A config naming a Pulser device takes that
device's C6 and limits, including the spread of the local detunings its detuning map modulator
can drive (:mod:`physlearn.simulators.quantum.pulser_bridge`, which also states how these
conventions map to Pulser's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from physlearn.simulators.quantum.lanczos import SolverOptions
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
from physlearn.system import FloatArray, ParameterGroup, Params, PhysicsError

#: C6/hbar in rad us^-1 um^6 for the nS Rydberg states of 87Rb (see docs/physics.md, §Rydberg
#: arrays).
C6_RAD_US_UM6: dict[int, float] = {60: 865_723.02, 70: 5_420_158.53}
TWO_PI = 2.0 * math.pi


class DeviceLimitError(PhysicsError, ValueError):
    """Detunings (trainable + input) the device cannot drive, met during a run: the command
    line reports it in one line and exits 1 (the run failed; the store keeps its steps). A
    ``ValueError`` too, as every refused limit of this module."""


@dataclass(frozen=True)
class RydbergLimits:
    """Device limits. Distances in um, frequencies in rad/us.

    ``detuning_spread_max`` bounds ``max_i Delta_i - min_i Delta_i`` and
    ``detuning_spread_total_max`` bounds ``sum_i (max_j Delta_j - Delta_i)``: a Pulser device
    drives local detunings through its detuning map modulator, which only lowers a global
    detuning (:mod:`physlearn.simulators.quantum.pulser_bridge`). ``None``: no such limit (the
    hand-written limits of a config that names no device). ``device``: the Pulser device the
    limits come from, if any.
    """

    min_distance: float = 4.0
    rabi_max: float = TWO_PI * 2.5
    detuning_max: float = TWO_PI * 20.0
    max_atoms: int = 20
    detuning_spread_max: float | None = None
    detuning_spread_total_max: float | None = None
    device: str | None = None

    def default_detuning_bound(self) -> float:
        """The largest bound ``B`` of the trainable ``|Delta_i|`` whose every corner the device
        drives: ``detuning_max``, and half the largest spread (``+B`` next to ``-B``)."""
        spread = math.inf if self.detuning_spread_max is None else self.detuning_spread_max / 2
        return min(self.detuning_max, spread)

    def check_detunings(self, total: FloatArray) -> None:
        """Refuse rows of total detunings ``(batch, atoms)`` (rad/us) the device cannot drive."""
        worst = float(np.abs(total).max())
        if worst > self.detuning_max:
            raise DeviceLimitError(
                f"total detuning {worst:.6g} rad/us (trainable + input) exceeds the device "
                f"limit detuning_max = {self.detuning_max:.6g} rad/us; lower detuning_bound or "
                "the input scale (task.encoding.scale)"
            )
        below_top = total.max(axis=1, keepdims=True) - total
        checks = (
            ("detuning_spread_max", self.detuning_spread_max, below_top.max(axis=1)),
            ("detuning_spread_total_max", self.detuning_spread_total_max, below_top.sum(axis=1)),
        )
        for name, limit, value in checks:
            if limit is not None and float(value.max()) > limit * (1 + 1e-9):
                raise DeviceLimitError(
                    f"local detunings (trainable + input) spread over {float(value.max()):.6g} "
                    f"rad/us, beyond the device limit {name} = {limit:.6g} rad/us "
                    f"({self.device}'s detuning map modulator); lower detuning_bound or the "
                    "input scale (task.encoding.scale)"
                )

    def check_register(self, positions: FloatArray) -> None:
        n = positions.shape[0]
        if n > self.max_atoms:
            raise ValueError(
                f"{n} atoms exceed the device limit max_atoms = {self.max_atoms} "
                "(exact emulation holds 2**n amplitudes)"
            )
        d = pair_distances(positions)
        iu = np.triu_indices(n, 1)
        if iu[0].size and d[iu].min() < self.min_distance:
            k = int(np.argmin(d[iu]))
            i, j = int(iu[0][k]), int(iu[1][k])
            raise ValueError(
                f"atoms {i} and {j} are {d[i, j]:.3g} um apart, closer than the device limit "
                f"min_distance = {self.min_distance:g} um"
            )


def pair_distances(positions: FloatArray) -> FloatArray:
    """``(n, n)`` Euclidean distances (um) of the atom positions ``(n, 2 or 3)``."""
    diff = positions[:, None, :] - positions[None, :, :]
    return np.asarray(np.sqrt(np.sum(diff**2, axis=-1)))


def interactions(positions: FloatArray, c6: float) -> FloatArray:
    """``V_ij = C6 / r_ij**6`` (rad/us), zero diagonal."""
    d = pair_distances(positions)
    n = d.shape[0]
    with np.errstate(divide="ignore"):
        v = c6 / d**6
    v[np.arange(n), np.arange(n)] = 0.0
    return np.asarray(v)


def blockade_radius(c6: float, rabi: float) -> float:
    """``R_b = (C6/Omega)**(1/6)`` in um (``rabi`` in rad/us)."""
    return float((c6 / rabi) ** (1.0 / 6.0))


def _rydberg_groups(
    n: int, lim: RydbergLimits, detuning_bound: float | None
) -> tuple[ParameterGroup, ...]:
    """The detunings ``Delta_i`` within ``detuning_bound`` (default and at most
    ``lim.detuning_max``) and the global Rabi frequency ``Omega`` within ``lim.rabi_max``."""
    bound = lim.default_detuning_bound() if detuning_bound is None else detuning_bound
    if not 0 < bound <= lim.detuning_max:
        raise ValueError(
            f"detuning bound {bound:.6g} rad/us exceeds the device limit "
            f"detuning_max = {lim.detuning_max:.6g} rad/us"
        )
    return (
        ParameterGroup(
            "detuning",
            (n,),
            ("atom",),
            -bound,
            bound,
            "rad/us",
            long_name="local detuning Delta_i (|Delta| <= detuning_max)",
            energy_unit="rad/us",
        ),
        ParameterGroup(
            "rabi",
            (),
            (),
            0.0,
            lim.rabi_max,
            "rad/us",
            long_name="global Rabi frequency Omega (<= rabi_max)",
            energy_unit="rad/us",
        ),
    )


def rydberg_model(
    positions: FloatArray,
    c6: float,
    input_atoms: Sequence[int],
    output_atoms: Sequence[int],
    correlators: Sequence[tuple[int, int]] = (),
    limits: RydbergLimits | None = None,
    detuning_bound: float | None = None,
) -> HamiltonianModel:
    """Operators of the array as a :class:`HamiltonianModel` (see the module docstring).

    ``detuning_bound`` (rad/us, default ``limits.detuning_max``) bounds the trainable detunings;
    a smaller value leaves room for the input detunings under the device limit.
    """
    lim = limits or RydbergLimits()
    pos = np.asarray(positions, dtype=np.float64)
    lim.check_register(pos)
    n = pos.shape[0]
    v = interactions(pos, c6)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    labels = ["I"] + [f"X{i}" for i in range(n)] + [f"Z{i}" for i in range(n)]
    labels += [f"Z{i} Z{j}" for i, j in pairs]
    basis = PauliBasis.from_labels(labels, n)

    def number(i: int) -> FloatArray:  # n_i = (1 - Z_i)/2
        return basis.vector([(0.5, "I"), (-0.5, f"Z{i}")])

    def pair_number(i: int, j: int) -> FloatArray:  # n_i n_j
        return basis.vector([(0.25, "I"), (-0.25, f"Z{i}"), (-0.25, f"Z{j}"), (0.25, f"Z{i} Z{j}")])

    h0 = np.zeros(basis.size)
    for i, j in pairs:
        h0 += v[i, j] * pair_number(i, j)
    groups = _rydberg_groups(n, lim, detuning_bound)
    param_ops = {
        "detuning": -np.stack([number(i) for i in range(n)]),
        "rabi": basis.vector([(0.5, f"X{i}") for i in range(n)])[None, :],
    }
    for a in (*input_atoms, *output_atoms, *(k for p in correlators for k in p)):
        if not 0 <= a < n:
            raise ValueError(f"atom index {a} outside 0..{n - 1}")
    inputs = (
        -np.stack([number(a) for a in input_atoms]) if input_atoms else np.zeros((0, basis.size))
    )
    outs = [number(a) for a in output_atoms] + [pair_number(i, j) for i, j in correlators]
    if not outs:
        raise ValueError("a Rydberg machine needs at least one output")
    return HamiltonianModel(
        basis,
        h0,
        inputs,
        np.stack(outs),
        groups,
        param_ops,
        input_labels=tuple(f"Delta_in[{a}]" for a in input_atoms),
        output_labels=tuple(f"n[{a}]" for a in output_atoms)
        + tuple(f"n[{i}]n[{j}]" for i, j in correlators),
        input_unit="rad/us",
        energy_unit="rad/us",
    )


class RydbergArray(QuantumSystem):
    """A Rydberg array held in its ground (or Gibbs) state; see the module docstring."""

    def __init__(
        self,
        positions: FloatArray,
        *,
        c6: float = C6_RAD_US_UM6[70],
        input_atoms: Sequence[int] = (),
        output_atoms: Sequence[int] = (),
        correlators: Sequence[tuple[int, int]] = (),
        limits: RydbergLimits | None = None,
        detuning_bound: float | None = None,
        params: Params | None = None,
        temperature: float = 0.0,
        shots: int = 0,
        solver: SolverOptions | None = None,
    ) -> None:
        self.limits = limits or RydbergLimits()
        self.positions = np.asarray(positions, dtype=np.float64)
        self.c6 = float(c6)
        self.input_atoms = tuple(int(a) for a in input_atoms)
        self.output_atoms = tuple(int(a) for a in output_atoms)
        model = rydberg_model(
            self.positions,
            self.c6,
            self.input_atoms,
            self.output_atoms,
            correlators,
            self.limits,
            detuning_bound,
        )
        n = self.positions.shape[0]
        init = params or {"detuning": np.zeros(n), "rabi": np.array(self.limits.rabi_max / 2)}
        super().__init__(
            model, init, temperature=temperature, shots=shots, solver=solver, name="rydberg"
        )

    def check_inputs(self, inputs: FloatArray) -> None:
        """Refuse input detunings that push a total |Delta_i| over ``detuning_max`` or spread
        the local detunings beyond what the device's detuning map modulator drives."""
        if not self.input_atoms or inputs.size == 0:
            return
        self.limits.check_detunings(self.total_detunings(inputs))

    def sweep_endpoints(
        self, inputs: FloatArray, start_detuning: float, start_rabi: float = 0.0
    ) -> tuple[FloatArray, FloatArray]:
        """Coefficients (over ``self.model.basis``) where an adiabatic sweep starts (the uniform
        ``start_detuning`` on every atom, ``Omega = start_rabi``, no input) and ends (the held
        parameters plus the input detunings ``inputs`` of one pattern, ``(n_in,)``): the
        endpoints of the sweep ``pulser_bridge.sweep_sequence`` writes."""
        n = self.positions.shape[0]
        start = self.model.coefficients(
            {"detuning": np.full(n, float(start_detuning)), "rabi": np.array(float(start_rabi))}
        )
        x = np.asarray(inputs, dtype=np.float64).reshape(-1)
        end = self.model.coefficients(self._params) + x @ self.model.input_ops
        return np.asarray(start), np.asarray(end)

    def total_detunings(self, inputs: FloatArray) -> FloatArray:
        """``(batch, atoms)`` detunings (rad/us): the trainable ``Delta_i`` plus the input
        detunings ``(batch, len(input_atoms))`` on the input atoms."""
        x = np.asarray(inputs, dtype=np.float64).reshape(-1, len(self.input_atoms))
        total = np.repeat(self._params["detuning"][None, :], x.shape[0], axis=0)
        total[:, list(self.input_atoms)] += x
        return total

    def snapshot(self) -> dict[str, object]:
        snap = dict(super().snapshot())
        snap.update(
            positions_um=self.positions.tolist(),
            c6_rad_us_um6=self.c6,
            limits={
                "min_distance_um": self.limits.min_distance,
                "rabi_max_rad_us": self.limits.rabi_max,
                "detuning_max_rad_us": self.limits.detuning_max,
                "max_atoms": self.limits.max_atoms,
                "detuning_spread_max_rad_us": self.limits.detuning_spread_max,
                "detuning_spread_total_max_rad_us": self.limits.detuning_spread_total_max,
                "device": self.limits.device,
            },
        )
        return snap
