"""Config of the Rydberg tweezer array: ``kind: rydberg``.

Validation happens when the config is loaded (nothing is built): the device limits (minimum atom
distance, Rabi frequency, detuning, atom count) are refused with a message naming the violated
limit. A config that names a Pulser device (``device: DigitalAnalogDevice``, needs
``physlearn[pulser]``) is checked by Pulser's own validation of that device (register, layout,
Rydberg level, ``rydberg_global`` and detuning-map limits,
:func:`~physlearn.simulators.quantum.pulser_bridge.check_config`) and the machine uses the
device's C6 and limits; the hand-written ``limits`` apply only to configs that name no device.
Units and the Hamiltonian are those of ``docs/physics.md`` (§Rydberg arrays): hbar = 1,
energies, ``Omega`` and ``Delta`` in rad/us, positions in um. ``build`` imports
:mod:`physlearn.simulators.quantum.rydberg` lazily; what every Pauli machine shares
(temperature, shots, eigensolver, sensitivity) is
:class:`~physlearn.simulators.quantum.config.PauliMachineConfig`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from physlearn.configbase import StrictModel
from physlearn.simulators.quantum.config import PauliMachineConfig

if TYPE_CHECKING:
    from physlearn.simulators.quantum.rydberg import RydbergArray

TWO_PI = 2.0 * math.pi


class RydbergLimitsConfig(StrictModel):
    """Device limits of the Rydberg array (checked when the config is loaded)."""

    min_distance: float = Field(4.0, gt=0, description="minimum atom distance (um)")
    rabi_max: float = Field(TWO_PI * 2.5, gt=0, description="largest Rabi frequency (rad/us)")
    detuning_max: float = Field(TWO_PI * 20.0, gt=0, description="largest |detuning| (rad/us)")
    max_atoms: int = Field(20, ge=1, le=24, description="largest register (atoms)")


class RydbergConfig(PauliMachineConfig):
    """Rydberg tweezer array: H = sum Omega/2 X_i - sum Delta_i n_i + sum C6/r^6 n_i n_j."""

    kind: Literal["rydberg"] = Field("rydberg", description="system kind: Rydberg atom array")
    positions: list[tuple[float, float]] = Field(min_length=1, description="atom positions (um)")
    rydberg_level: Literal[60, 70] | None = Field(
        None,
        description="principal quantum number n (sets C6; default 70, or the device's level)",
    )
    device: str | None = Field(
        None,
        description="Pulser device whose limits and C6 apply (AnalogDevice, "
        "DigitalAnalogDevice, WeightedAnalogDevice, MockDevice; needs physlearn[pulser])",
    )
    input_atoms: list[int] = Field(
        default_factory=list, description="atoms whose detuning carries an input (rad/us)"
    )
    output_atoms: list[int] = Field(default_factory=list, description="atoms read out as <n_i>")
    correlators: list[tuple[int, int]] = Field(
        default_factory=list, description="atom pairs read out as <n_i n_j>"
    )
    limits: RydbergLimitsConfig = Field(
        default_factory=RydbergLimitsConfig, description="device limits"
    )
    detuning_bound: float | None = Field(
        None,
        gt=0,
        description="bound of the trainable |Delta_i| (rad/us; default detuning_max, with a "
        "device the largest bound its detuning map modulator drives at every corner)",
    )
    init_detuning: float | list[float] = Field(0.0, description="initial Delta_i (rad/us)")
    init_rabi: float = Field(TWO_PI * 1.0, ge=0, description="initial Omega (rad/us)")

    @model_validator(mode="after")
    def _device_limits(self) -> RydbergConfig:
        if self.device is not None:
            return self._pulser_device_limits()
        lim = self.limits
        n = len(self.positions)
        if n > lim.max_atoms:
            raise ValueError(f"{n} atoms exceed the device limit max_atoms = {lim.max_atoms}")
        pos = np.asarray(self.positions, dtype=float)
        d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1)) + np.diag(np.full(n, np.inf))
        if n > 1 and d.min() < lim.min_distance:
            i, j = np.unravel_index(int(np.argmin(d)), d.shape)
            raise ValueError(
                f"atoms {min(i, j)} and {max(i, j)} are {d[i, j]:.3g} um apart, below the device "
                f"limit min_distance = {lim.min_distance:g} um"
            )
        if self.init_rabi > lim.rabi_max:
            raise ValueError(
                f"init_rabi = {self.init_rabi:.6g} rad/us exceeds the device limit "
                f"rabi_max = {lim.rabi_max:.6g} rad/us"
            )
        bound = lim.detuning_max if self.detuning_bound is None else self.detuning_bound
        if bound > lim.detuning_max:
            raise ValueError(
                f"detuning_bound = {bound:.6g} rad/us exceeds the device limit "
                f"detuning_max = {lim.detuning_max:.6g} rad/us"
            )
        _check_init_detuning(self._init_detunings(), bound, lim.detuning_max)
        return self._atom_lists()

    def _init_detunings(self) -> np.ndarray:
        n = len(self.positions)
        init = (
            np.broadcast_to(np.asarray(self.init_detuning, float), (n,))
            if not isinstance(self.init_detuning, list)
            else np.asarray(self.init_detuning, float)
        )
        if init.shape != (n,):
            raise ValueError(f"init_detuning needs {n} values, got {init.size}")
        return np.array(init)

    def _pulser_device_limits(self) -> RydbergConfig:
        """Pulser's checks of the named device (the hand-written ``limits`` do not apply)."""
        from physlearn.simulators.quantum.pulser_bridge import check_config

        if self.limits != RydbergLimitsConfig():  # a stored config holds the defaults
            raise ValueError(
                f"limits: the hand-written limits apply only without a device; drop them "
                f"({self.device}'s own limits apply)"
            )
        init = self._init_detunings()
        limits, _, bound = check_config(
            self.device or "",
            np.asarray(self.positions, float),
            self.rydberg_level,
            self.init_rabi,
            init,
            self.detuning_bound,
        )
        _check_init_detuning(init, bound, limits.detuning_max)
        return self._atom_lists()

    def _atom_lists(self) -> RydbergConfig:
        n = len(self.positions)
        for name, atoms in (
            ("input_atoms", self.input_atoms),
            ("output_atoms", self.output_atoms),
            ("correlators", [a for p in self.correlators for a in p]),
        ):
            bad = [a for a in atoms if not 0 <= a < n]
            if bad:
                raise ValueError(f"{name} refers to atom {bad[0]}, outside 0..{n - 1}")
        if not self.output_atoms and not self.correlators:
            raise ValueError("give output_atoms and/or correlators (the machine needs outputs)")
        return self

    def n_qubits(self) -> int:
        return len(self.positions)

    def input_size(self) -> int:
        return len(self.input_atoms)

    def machine_output_labels(self) -> list[str]:
        return [f"n[{a}]" for a in self.output_atoms] + [
            f"n[{i}]n[{j}]" for i, j in self.correlators
        ]

    def build_machine(self, seed: int) -> RydbergArray:
        from physlearn.simulators.quantum.rydberg import C6_RAD_US_UM6, RydbergArray, RydbergLimits

        lim = RydbergLimits(**self.limits.model_dump())
        c6 = C6_RAD_US_UM6[self.rydberg_level or 70]
        if self.device is not None:
            from physlearn.simulators.quantum.pulser_bridge import device_limits, load_device

            device = load_device(self.device)
            lim, c6 = device_limits(device), float(device.interaction_coeff)
        n = len(self.positions)
        init = np.array(np.broadcast_to(np.asarray(self.init_detuning, float), (n,)))
        return RydbergArray(
            np.asarray(self.positions, float),
            c6=c6,
            input_atoms=self.input_atoms,
            output_atoms=self.output_atoms,
            correlators=[tuple(p) for p in self.correlators],
            limits=lim,
            detuning_bound=self.detuning_bound,
            params={"detuning": init, "rabi": np.array(self.init_rabi)},
            temperature=self.temperature,
            shots=self.shots,
            solver=self.solver.options(),
        )


def _check_init_detuning(init: np.ndarray, bound: float, detuning_max: float) -> None:
    """Refuse initial detunings beyond the trainable bound."""
    if np.abs(init).max() > bound:
        raise ValueError(
            f"init_detuning reaches {np.abs(init).max():.6g} rad/us, beyond the detuning "
            f"bound {bound:.6g} rad/us (device limit detuning_max = {detuning_max:.6g})"
        )
