"""Pulser's view of physlearn's Rydberg array: devices, registers, drives and sequences.

Every ``pulser`` / ``pulser_simulation`` import of physlearn lives in this module, inside the
functions (``pip install physlearn[pulser]``; the core install does not need Pulser).

Conventions, physlearn (:mod:`physlearn.simulators.quantum.rydberg`) -> Pulser
-------------------------------------------------------------------------------
* Units are the same: hbar = 1, ``Omega`` and ``Delta`` in rad/us, positions in um, ``C6/hbar``
  in rad us^-1 um^6 (``device.interaction_coeff``). Pulser's times are ns: a sweep of
  ``duration_us`` is ``1000 * duration_us`` ns, rounded to the channel's clock period.
* Hamiltonian: physlearn's ``sum Omega/2 X_i - sum Delta_i n_i + sum C6/r^6 n_i n_j`` is Pulser's
  ground-rydberg Hamiltonian ``sum Omega/2 sigma^x_i - sum delta_i n_i + sum C6/r^6 n_i n_j``
  with phase 0: the same ``Omega/2`` on ``sigma^x`` (symmetric, so the sign convention of the
  phase does not enter), the same sign of the detuning (``Delta > 0`` favours ``|r>``).
* ``n_i = |r><r|_i`` in both. physlearn writes ``|r> = |1>`` (bit 1, ``n = (1 - Z)/2``); Pulser's
  ground-rydberg basis is ``("r", "g")``, ``|r>`` first. Both order qubits as the register, atom
  0 most significant, so physlearn's basis index ``b`` is Pulser's ``2**n - 1 - b``.
* Atom ``i`` of the config is qubit ``"q{i}"``; the register is centred on its bounding box
  (distances, hence the Hamiltonian, do not change).
* Local detunings: a Pulser device drives one global detuning on ``rydberg_global`` and local
  ones through its detuning map modulator (DMM, ``dmm_0``), which adds ``w_i * delta_dmm(t)``
  with weights ``w_i`` in [0, 1] and ``delta_dmm <= 0``. physlearn's ``Delta_i`` become
  ``Delta_global = max_i Delta_i``, ``delta_dmm = min_i Delta_i - max_i Delta_i`` and
  ``w_i = (Delta_i - max) / (min - max)`` (:func:`local_drive`), so the DMM's
  ``bottom_detuning`` bounds the spread ``max - min`` and its ``total_bottom_detuning`` bounds
  ``sum_i (max - Delta_i)``. A device without a DMM (``AnalogDevice``) cannot drive the
  machine's trainable and input detunings, and is refused.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.simulators.quantum.rydberg import RydbergLimits
from physlearn.system import FloatArray

if TYPE_CHECKING:
    from typing import TypeAlias

    from pulser import Register, Sequence
    from pulser.devices import Device, VirtualDevice

    BaseDevice: TypeAlias = Device | VirtualDevice

#: The devices a config may name (``pulser.devices``).
DEVICE_NAMES = ("AnalogDevice", "DigitalAnalogDevice", "WeightedAnalogDevice", "MockDevice")
#: Largest register physlearn emulates exactly (2**n amplitudes), whatever the device allows.
EMULATION_MAX_ATOMS = 20
GLOBAL = "rydberg_global"
DMM = "dmm_0"
TWO_PI = 2.0 * math.pi


def load_device(name: str) -> BaseDevice:
    """The Pulser device ``name`` (one of :data:`DEVICE_NAMES`); ``ValueError`` when Pulser is
    not installed or the name is unknown."""
    if name not in DEVICE_NAMES:
        raise ValueError(f"device {name!r} is not a Pulser device; use one of {DEVICE_NAMES}")
    try:
        import pulser.devices
    except ImportError:
        raise ValueError(
            f"device {name}: Pulser is not installed; pip install 'physlearn[pulser]'"
        ) from None
    device: BaseDevice = getattr(pulser.devices, name)
    return device


def device_limits(device: BaseDevice) -> RydbergLimits:
    """The device's limits as physlearn's emulator checks them. A quantity the device leaves
    unbounded (``MockDevice``) keeps physlearn's default, so the trainable ranges stay finite."""
    base = RydbergLimits()
    ch = device.channels[GLOBAL]
    dmm = device.dmm_objects[0] if device.dmm_objects else None
    spread = None if dmm is None or dmm.bottom_detuning is None else -dmm.bottom_detuning
    total = None if dmm is None or dmm.total_bottom_detuning is None else -dmm.total_bottom_detuning
    return RydbergLimits(
        min_distance=float(device.min_atom_distance),
        rabi_max=base.rabi_max if ch.max_amp is None else float(ch.max_amp),
        detuning_max=base.detuning_max
        if ch.max_abs_detuning is None
        else float(ch.max_abs_detuning),
        max_atoms=min(device.max_atom_num or EMULATION_MAX_ATOMS, EMULATION_MAX_ATOMS),
        detuning_spread_max=spread,
        detuning_spread_total_max=total,
        device=device.name,
    )


def centred(positions: FloatArray) -> FloatArray:
    """Positions (um) shifted so that their bounding box is centred on the origin."""
    pos = np.asarray(positions, dtype=np.float64)
    return np.asarray(pos - (pos.max(axis=0) + pos.min(axis=0)) / 2)


def _spare_traps(device: BaseDevice, atoms: FloatArray) -> FloatArray:
    """Empty traps added to the atoms' own so that the layout meets the device's trap count and
    largest filling: grid points at least ``min_atom_distance`` from every trap, nearest the
    centre first, within ``max_radial_distance``."""
    n = atoms.shape[0]
    need = max(device.min_layout_traps, math.ceil(n / device.max_layout_filling)) - n
    if need <= 0:
        return np.zeros((0, atoms.shape[1]))
    pitch = max(float(device.min_atom_distance), 1.0)
    reach = device.max_radial_distance or float(np.abs(atoms).max()) + pitch * math.sqrt(need) * 2
    k = int(reach // pitch)
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) * pitch] * 2), axis=-1).reshape(-1, 2)
    if atoms.shape[1] == 3:
        grid = np.hstack([grid, np.zeros((grid.shape[0], 1))])
    grid = grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")]
    grid = grid[np.linalg.norm(grid, axis=1) <= reach]
    # grid points are a whole pitch apart; from the atoms keep a margin over Pulser's rounding
    # of coordinates to 1e-6 um. Too few of them: Pulser's filling check names the limit.
    clear = grid[np.linalg.norm(grid[:, None] - atoms[None], axis=-1).min(axis=1) >= pitch + 1e-4]
    return np.asarray(clear[:need])


def device_register(device: BaseDevice, positions: FloatArray) -> Register:
    """The atoms as a Pulser register (qubit ``"q{i}"`` = atom ``i``, centred), defined from a
    register layout (the atoms' traps plus spare ones) when the device requires a layout."""
    from pulser import Register
    from pulser.register import RegisterLayout

    pos = centred(positions)
    ids = [f"q{i}" for i in range(pos.shape[0])]
    if not device.requires_layout:
        return Register(dict(zip(ids, pos, strict=True)))
    layout = RegisterLayout(np.vstack([pos, _spare_traps(device, pos)]), slug="physlearn")
    traps = layout.get_traps_from_coordinates(*pos)  # the layout orders its traps itself
    register = layout.define_register(*traps, qubit_ids=ids)
    assert isinstance(register, Register)
    return register


def local_drive(detunings: FloatArray) -> tuple[float, float, FloatArray]:
    """``(Delta_global, delta_dmm, weights)`` realising the local ``detunings`` (rad/us) as
    ``Delta_global + w_i * delta_dmm`` (see the module docstring); uniform detunings need no DMM
    (``delta_dmm = 0``, weights 0)."""
    d = np.asarray(detunings, dtype=np.float64)
    top, low = float(d.max()), float(d.min())
    if top - low <= 1e-12 * max(1.0, abs(top)):
        return top, 0.0, np.zeros_like(d)
    return top, low - top, (top - d) / (top - low)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_drive(
    device: BaseDevice, register: Register, rabi: float, detunings: FloatArray, what: str
) -> None:
    """Pulser's own channel checks of a constant drive (``rabi``, local ``detunings``)."""
    from pulser import Pulse

    ch = device.channels[GLOBAL]
    top, dmm_det, weights = local_drive(detunings)
    dur = max(ch.min_duration, 100)
    try:
        ch.validate_pulse(Pulse.ConstantPulse(dur, rabi, top, 0.0))
    except ValueError as exc:
        raise ValueError(
            f"{what}: {device.name}'s {GLOBAL} refuses Omega = {rabi:.6g} rad/us, "
            f"Delta = {top:.6g} rad/us: {_one_line(exc)} (max_amp = {ch.max_amp} rad/us, "
            f"max_abs_detuning = {ch.max_abs_detuning} rad/us)"
        ) from None
    if dmm_det == 0.0:
        return
    dmm = device.dmm_objects[0]
    dmap = register.define_detuning_map(
        {q: float(w) for q, w in zip(register.qubit_ids, weights, strict=True)}
    )
    try:
        dmm.validate_pulse(Pulse.ConstantDetuning(_zero(dur), dmm_det, 0.0), dmap)
    except ValueError as exc:
        raise ValueError(
            f"{what}: {device.name}'s {DMM} cannot spread the local detunings over "
            f"{-dmm_det:.6g} rad/us: {_one_line(exc)} (bottom_detuning = {dmm.bottom_detuning}"
            f" rad/us, total_bottom_detuning = {dmm.total_bottom_detuning} rad/us)"
        ) from None


def _zero(duration: int) -> Any:
    from pulser.waveforms import ConstantWaveform

    return ConstantWaveform(duration, 0.0)


def check_config(
    name: str,
    positions: FloatArray,
    rydberg_level: int | None,
    init_rabi: float,
    init_detuning: FloatArray,
    detuning_bound: float | None,
) -> tuple[RydbergLimits, float, float]:
    """Validate a ``rydberg`` config that names device ``name`` with Pulser's own checks: the
    register (atom count, distances, radial distance, layout), the Rydberg level, the initial
    drive, and every corner of the trainable box ``|Delta_i| <= detuning_bound`` (the worst
    detuning spread included). Returns ``(limits, C6, detuning bound)``; ``detuning_bound``
    ``None`` takes the largest bound whose every corner the device can drive. Raises
    ``ValueError`` with one line naming the violated limit."""
    device = load_device(name)
    pos = np.asarray(positions, dtype=np.float64)
    n = pos.shape[0]
    if rydberg_level is not None and rydberg_level != device.rydberg_level:
        raise ValueError(
            f"rydberg_level = {rydberg_level} differs from {name}'s Rydberg level "
            f"{device.rydberg_level}; drop rydberg_level (the device sets C6)"
        )
    if n > EMULATION_MAX_ATOMS:
        raise ValueError(
            f"{n} atoms exceed max_atoms = {EMULATION_MAX_ATOMS} of exact emulation "
            "(2**n amplitudes)"
        )
    from pulser import Register

    plain = Register({f"q{i}": p for i, p in enumerate(centred(pos))})
    register = device_register(device, pos)
    for reg in (plain, register):  # the atoms first: the layout's errors name traps
        try:
            device.validate_register(reg)
        except (ValueError, TypeError) as exc:
            cause = exc.__cause__
            extra = f" ({_one_line(cause)})" if cause is not None else ""
            raise ValueError(
                f"positions: {name} refuses the register (qubit q<i> is atom i): "
                f"{_one_line(exc)}{extra}"
            ) from None
    if not device.dmm_objects:
        raise ValueError(
            f"device {name} drives one global detuning (no detuning map modulator), but the "
            "machine's trainable and input detunings are local: name a device with a DMM "
            "(DigitalAnalogDevice, WeightedAnalogDevice, MockDevice)"
        )
    limits = device_limits(device)
    bound = limits.default_detuning_bound() if detuning_bound is None else detuning_bound
    _check_drive(device, register, init_rabi, init_detuning, "init_rabi/init_detuning")
    corner = np.full(n, -bound)
    corner[0] = bound
    for det in (np.full(n, bound), np.full(n, -bound), corner):
        _check_drive(device, register, limits.rabi_max, det, f"detuning_bound = {bound:.6g}")
    return limits, float(device.interaction_coeff), float(bound)


def _clocked(device: BaseDevice, duration_us: float) -> int:
    """``duration_us`` in ns, a multiple of the global channel's clock period, >= its minimum."""
    ch = device.channels[GLOBAL]
    clock = int(ch.clock_period)
    return max(int(ch.min_duration), clock * max(1, round(1000.0 * duration_us / clock)))


def sweep_sequence(
    device: BaseDevice,
    positions: FloatArray,
    rabi: float,
    detunings: FloatArray,
    duration_us: float,
    *,
    start_detuning: float | None,
    start_rabi: float = 0.0,
    measure: bool = True,
) -> Sequence:
    """A sequence on ``device`` that sweeps linearly, over ``duration_us``, from ``Omega =
    start_rabi`` and the uniform detuning ``start_detuning`` (rad/us) to the drive ``rabi`` with
    local ``detunings``, then measures in the ground-rydberg basis. At every time the local
    detunings are ``(1 - s) start_detuning + s Delta_i`` (``s`` from 0 to 1), realised as a
    global ramp plus a DMM ramp on fixed weights (:func:`local_drive`). With ``start_rabi =
    rabi`` and ``start_detuning=None`` the detunings are held (:func:`constant_sequence`).
    Pulser checks every pulse against the device as it is added."""
    from pulser import Pulse
    from pulser import Sequence as PulserSequence
    from pulser.waveforms import RampWaveform

    register = device_register(device, positions)
    seq = PulserSequence(register, device)
    seq.declare_channel("global", GLOBAL)
    top, dmm_det, weights = local_drive(detunings)
    t = _clocked(device, duration_us)
    if dmm_det != 0.0:
        dmap = register.define_detuning_map(
            {q: float(w) for q, w in zip(register.qubit_ids, weights, strict=True)}, "physlearn"
        )
        seq.config_detuning_map(dmap, DMM)
        dmm_start = dmm_det if start_detuning is None else 0.0
        seq.add_dmm_detuning(RampWaveform(t, dmm_start, dmm_det), DMM, protocol="no-delay")
    amp = RampWaveform(t, start_rabi, rabi)
    start = top if start_detuning is None else start_detuning
    seq.add(Pulse(amp, RampWaveform(t, start, top), 0.0), "global", protocol="no-delay")
    if measure:
        seq.measure("ground-rydberg")
    return seq


def constant_sequence(
    device: BaseDevice,
    positions: FloatArray,
    rabi: float,
    detunings: FloatArray,
    duration_us: float,
) -> Sequence:
    """A constant drive (``rabi``, local ``detunings``) for ``duration_us``, not measured."""
    return sweep_sequence(
        device,
        positions,
        rabi,
        detunings,
        duration_us,
        start_detuning=None,
        start_rabi=rabi,
        measure=False,
    )


def check_sequence(seq: Sequence) -> None:
    """Pulser's validation of a sequence before submission (``mimic_qpu`` on a real device:
    layout, calibrated layouts, non-empty); ``ValueError`` in one line."""
    from pulser import QPUBackend
    from pulser.devices import Device

    try:
        QPUBackend.validate_sequence(seq, mimic_qpu=isinstance(seq.device, Device))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{seq.device.name} refuses the sequence: {_one_line(exc)}") from None


def to_json(seq: Sequence, name: str) -> str:
    """The sequence's abstract representation (JSON, validated against Pulser's schema)."""
    text: str = seq.to_abstract_repr(seq_name=name, json_dumps_options={"indent": 1})
    return text


def from_json(text: str) -> Sequence:
    """The sequence an abstract representation describes (Pulser rebuilds and re-checks it)."""
    from pulser import Sequence as PulserSequence

    return PulserSequence.from_abstract_repr(text)


def hamiltonian(seq: Sequence, t_ns: float) -> np.ndarray:
    """``pulser_simulation``'s Hamiltonian (rad/us) at time ``t_ns`` of ``seq``, dense, in
    physlearn's basis order (index ``b`` here is Pulser's ``2**n - 1 - b``)."""
    h = _emulator(seq).get_hamiltonian(t_ns).full()
    return np.asarray(h[::-1, ::-1])


def evolve(seq: Sequence, initial: np.ndarray, t_ns: int) -> np.ndarray:
    """The state ``pulser_simulation`` reaches at time ``t_ns`` of ``seq`` from ``initial``
    (both in physlearn's basis order). The emulator holds each ns sample constant but, within
    the last ns of the sequence, interpolates towards zero drive: compare away from the end."""
    import qutip

    n = len(seq.register.qubit_ids)
    psi0 = qutip.Qobj(np.asarray(initial, complex)[::-1].reshape(-1, 1), dims=[[2] * n, [1] * n])
    sim = _emulator(seq)
    sim.set_initial_state(psi0)
    if not math.isclose(float(sim.evaluation_times[t_ns]) * 1000.0, t_ns):
        raise ValueError(f"t_ns = {t_ns} is not an evaluation time of the emulator")
    with _quiet_emulator():
        state = sim.run().states[t_ns].full().reshape(-1)
    return np.asarray(state[::-1])


@contextlib.contextmanager
def _quiet_emulator() -> Iterator[None]:
    """Pulser 1.9 deprecates ``QutipEmulator`` for ``QutipBackendV2``, but it is still the
    public way to read the Hamiltonian and the state at every ns: only that warning is
    silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "QutipEmulator is deprecated", DeprecationWarning)
        yield


def _emulator(seq: Sequence) -> Any:
    """``pulser_simulation.QutipEmulator`` of ``seq``."""
    from pulser_simulation import QutipEmulator

    with _quiet_emulator():
        return QutipEmulator.from_sequence(seq)
