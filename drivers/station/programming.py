"""Programming pulse-programmed weights: requested conductances -> pulse counts.

Two modes (``weights.programming``, :class:`ProgrammingConfig`):

* ``open_loop``: one write. Each device's pulse count is the nominal curve inverted
  (:func:`nominal_pulses`: the difference of the pulse positions of the target and of the
  present state on the SET or RESET curve of the *nominal* device model, rounded, at most
  ``max_pulses_per_step``). Device-to-device and cycle-to-cycle variation go uncorrected.
* ``write_verify``: read, pulse, read again, until every device is within ``tolerance`` of its
  target or ``max_iterations`` writes have been made (the write-verify scheme of memristor
  crossbars, e.g. Li et al., Nat. Commun. 9, 2385 (2018); Prezioso et al., Nature 521, 61
  (2015)). Each device's count is the nominal one divided by the gain it showed on its last
  write (realised over predicted change, clipped to 1/5..5), so a device stronger or weaker
  than nominal does not oscillate or crawl; a device outside tolerance gets at least one pulse.
  The devices still outside tolerance at the end -- targets outside their window, stuck
  devices -- are reported.

The devices are anything with ``read_conductances()`` and ``apply_pulses(counts)``
(:class:`Programmable`): the qcodes driver
:class:`physlearn.drivers.instruments.memristor_board.MemristorBoard`, or
:class:`SimulatedDevices` (a :class:`~physlearn.drivers.virtual_lab.memristor.MemristorArray`
and a clock) for offline use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import Field

from physlearn.configbase import StrictModel
from physlearn.drivers.virtual_lab.memristor import (
    RESET,
    SET,
    MemristorArray,
    MemristorModel,
    pulse_position,
)
from physlearn.system import FloatArray

#: clip of a device's gain estimate in write-verify (realised / predicted change)
GAIN_RANGE = (0.2, 5.0)


class ProgrammingConfig(StrictModel):
    """``weights.programming``: how requested conductances become pulses."""

    mode: Literal["open_loop", "write_verify"] = Field(
        "write_verify", description="one open-loop write, or write-verify"
    )
    tolerance: float = Field(
        0.01, gt=0, le=0.5, description="write-verify: |G - target| allowed, fraction of the "
        "nominal window g_max - g_min"
    )  # fmt: skip
    max_iterations: int = Field(
        20, ge=1, le=1000, description="write-verify: most writes (each read, pulse, read)"
    )
    max_pulses_per_step: int = Field(
        64, ge=1, le=100_000, description="most pulses one write sends to one device"
    )


class Programmable(Protocol):
    """Devices that can be read and pulsed (signed counts: + SET, - RESET)."""

    def read_conductances(self) -> FloatArray: ...

    def apply_pulses(self, counts: np.ndarray) -> None: ...


class SimulatedDevices:
    """A :class:`MemristorArray` read and pulsed at the times ``clock()`` gives (s)."""

    def __init__(self, array: MemristorArray, clock: Callable[[], float]) -> None:
        self.array = array
        self.clock = clock

    def read_conductances(self) -> FloatArray:
        return self.array.read(self.clock())

    def apply_pulses(self, counts: np.ndarray) -> None:
        self.array.pulse(np.asarray(counts, dtype=np.int64), self.clock())


@dataclass
class ProgrammingResult:
    """What a programming call did: the conductances read last (S; for ``open_loop`` the read
    after the write), the pulses sent to each device in all, the writes made, and the devices
    (0-based) outside tolerance at the end (always empty for ``open_loop``, which has none)."""

    conductance: FloatArray
    pulses: np.ndarray
    iterations: int
    unconverged: np.ndarray


def nominal_pulses(
    g_now: FloatArray, g_target: FloatArray, model: MemristorModel, max_pulses: int
) -> np.ndarray:
    """Signed pulse count per device moving ``g_now`` to ``g_target`` on the nominal curves
    (targets outside the nominal window count as its edge), rounded to the nearest integer and
    clipped to ``+-max_pulses``."""
    m = model
    now, tgt = np.asarray(g_now, dtype=np.float64), np.asarray(g_target, dtype=np.float64)
    up = pulse_position(tgt, SET, m.g_min, m.g_max, m.nu_set, m.pulses_set) - pulse_position(
        now, SET, m.g_min, m.g_max, m.nu_set, m.pulses_set
    )
    down = pulse_position(tgt, RESET, m.g_min, m.g_max, m.nu_reset, m.pulses_reset) - (
        pulse_position(now, RESET, m.g_min, m.g_max, m.nu_reset, m.pulses_reset)
    )
    n = np.where(tgt >= now, np.rint(up), -np.rint(down))
    return np.clip(n, -max_pulses, max_pulses).astype(np.int64)


def program(
    devices: Programmable,
    targets: FloatArray,
    model: MemristorModel,
    config: ProgrammingConfig,
) -> ProgrammingResult:
    """Program ``devices`` towards ``targets`` (S) as ``config.mode`` says."""
    tgt = np.asarray(targets, dtype=np.float64)
    if not np.isfinite(tgt).all():
        raise ValueError("target conductances must be finite")
    if config.mode == "open_loop":
        g = devices.read_conductances()
        counts = nominal_pulses(g, tgt, model, config.max_pulses_per_step)
        devices.apply_pulses(counts)
        return ProgrammingResult(devices.read_conductances(), np.abs(counts), 1, np.array([], int))
    return write_verify(devices, tgt, model, config)


def write_verify(
    devices: Programmable,
    targets: FloatArray,
    model: MemristorModel,
    config: ProgrammingConfig,
) -> ProgrammingResult:
    """Read, pulse, read again until ``|G - target| <= tolerance`` everywhere or
    ``max_iterations`` writes; see the module docstring."""
    tgt = np.asarray(targets, dtype=np.float64)
    tol = config.tolerance * (model.g_max - model.g_min)
    gain = np.ones(tgt.size)
    sent = np.zeros(tgt.size, dtype=np.int64)
    g = devices.read_conductances()
    writes = 0
    for _ in range(config.max_iterations):
        off = np.abs(g - tgt) > tol
        if not off.any():
            break
        nominal = nominal_pulses(g, tgt, model, config.max_pulses_per_step)
        counts = np.rint(nominal / gain).astype(np.int64)
        counts = np.where(off & (counts == 0), np.sign(tgt - g).astype(np.int64), counts)
        counts = np.clip(np.where(off, counts, 0), -config.max_pulses_per_step,
                         config.max_pulses_per_step)  # fmt: skip
        predicted = _predicted_change(g, counts, model)
        devices.apply_pulses(counts)
        writes += 1
        sent += np.abs(counts)
        g_new = devices.read_conductances()
        moved = np.abs(predicted) > 0
        ratio = np.divide(g_new - g, predicted, out=np.ones_like(g), where=moved)
        gain = np.where(moved & (ratio > 0), np.clip(ratio, *GAIN_RANGE), gain)
        g = g_new
    unconverged = np.flatnonzero(np.abs(g - tgt) > tol)
    return ProgrammingResult(g, sent, writes, unconverged)


def _predicted_change(g: FloatArray, counts: np.ndarray, model: MemristorModel) -> FloatArray:
    """Change of ``g`` the nominal curves predict for ``counts`` pulses (S)."""
    m = model
    x = pulse_position(g, SET, m.g_min, m.g_max, m.nu_set, m.pulses_set)
    y = pulse_position(g, RESET, m.g_min, m.g_max, m.nu_reset, m.pulses_reset)
    up = _set_curve(np.minimum(x + counts, m.pulses_set), m) - _set_curve(x, m)
    down = _reset_curve(np.minimum(y - counts, m.pulses_reset), m) - _reset_curve(y, m)
    return np.asarray(np.where(counts >= 0, up, down))


def _set_curve(x: FloatArray, m: MemristorModel) -> FloatArray:
    """Nominal conductance at SET-curve position ``x`` (pulses from g_min)."""
    u = (
        x / m.pulses_set
        if m.nu_set < 1e-9
        else np.expm1(-m.nu_set * x / m.pulses_set) / (np.expm1(-m.nu_set))
    )
    return np.asarray(m.g_min + (m.g_max - m.g_min) * u)


def _reset_curve(y: FloatArray, m: MemristorModel) -> FloatArray:
    """Nominal conductance at RESET-curve position ``y`` (pulses from g_max)."""
    u = (
        y / m.pulses_reset
        if m.nu_reset < 1e-9
        else np.expm1(-m.nu_reset * y / m.pulses_reset) / (np.expm1(-m.nu_reset))
    )
    return np.asarray(m.g_max - (m.g_max - m.g_min) * u)
