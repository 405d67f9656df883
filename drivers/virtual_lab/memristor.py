"""Pulse-programmed memristive conductances: the device model of the virtual lab's memristor
board (numpy only, vectorised over devices, deterministic given its seed).

Model
-----
Each device holds a conductance ``G`` (S) in its window ``[g_lo, g_hi]``. A SET pulse raises it,
a RESET pulse lowers it, by a step that depends on the state -- the exponential
potentiation/depression model of NeuroSim (P.-Y. Chen, X. Peng, S. Yu, "NeuroSim: a
circuit-level macro model for benchmarking neuro-inspired architectures in online learning",
IEEE TCAD 37, 3067 (2018); the ``RealDevice`` of MLP_NeuroSim V3.0, ``Cell.cpp``)::

    SET curve:   G(x) = g_lo + B (1 - exp(-x / A)),   B = W / (1 - exp(-P / A)),  W = g_hi - g_lo

with ``x`` the pulse position (0 at ``g_lo``, ``P`` at ``g_hi``) and ``A`` the nonlinearity
constant in pulses; one pulse advances ``x`` by one, so the mean step of a SET pulse at ``G`` is::

    dG_set(G)   = (1 - exp(-nu / P)) * (g_lo + W / (1 - exp(-nu)) - G)      nu = P / A
    dG_reset(G) = -(1 - exp(-nu / P)) * (G - g_hi + W / (1 - exp(-nu)))

(the RESET curve is the SET curve mirrored: large steps near ``g_hi``, small near ``g_lo``,
NeuroSim's negative ``A`` for LTD). ``nu`` is the *nonlinearity exponent* (``nu -> 0``: linear,
``dG = +-W/P``); SET and RESET have their own ``P`` and ``nu`` (asymmetry). NeuroSim's
nonlinearity *label* maps to ``nu`` through its ``getParamA`` table (``A/P``): label 1.00 ->
``A/P = 1.2517`` (``nu = 0.80``), 2.00 -> 0.6090 (``nu = 1.64``), 4.22 (its default device) ->
0.2497 (``nu = 4.0``), 9.00 -> 0.0228 (``nu = 43.8``). A pulse of another width or amplitude
than the nominal one counts as ``s`` pulse-equivalents, ``s = (w / w0) exp((|V| - V0) / v_slope)``
-- an assumption of this simulation (the exponential voltage-time relation of filamentary
switching, qualitatively as D. Ielmini, R. Waser, *Resistive Switching*, Wiley 2016, ch. 1);
the nominal pulse (``s = 1``) is what the model's figures are for.

Variation and non-idealities:

* **cycle-to-cycle**: every pulse's step is ``dG (1 + c2c xi1) + c2c_window W xi2`` (``xi``
  standard normal): the multiplicative per-pulse noise of T. Gokmen, Y. Vlasov, Front. Neurosci.
  10, 333 (2016) (30 % in their device specification) plus NeuroSim's additive one
  (``sigmaCtoC = 0.005 * (Gmax - Gmin)`` per pulse, growing as ``sqrt(n)`` over ``n`` pulses);
* **device-to-device**: each device draws its own ``g_lo``, ``g_hi``, ``nu_set``, ``nu_reset``,
  step scale and drift exponent, each the nominal value times ``exp(sigma z - sigma**2 / 2)``
  (lognormal: positive, mean the nominal value, std of its log exactly ``sigma``; Gokmen & Vlasov
  2016: 30 % device-to-device spread of the step; NeuroSim: a spread of the nonlinearity label);
  ``g_lo`` is kept at most ``g_hi / 2``; a fraction ``stuck`` of devices is stuck at its
  ``g_lo`` or ``g_hi`` (either with probability 1/2) and ignores pulses -- stuck-at faults as
  reported for 1T1R arrays (C. Li et al., Nat. Commun. 9, 2385 (2018), Ta/HfO2 1T1R, 128 x 64);
* **read noise**: a reading is ``G (1 + read_noise xi)`` (NeuroSim ``sigmaReadNoise``, 0.0289
  for its measured device);
* **retention drift** of the conductance programmed last (``G_p`` at ``t_p``), per device,
  ``power``: ``G(t) = G_p (1 + (t - t_p) / t0) ** -nu_d`` (phase-change devices, whose drift
  S. Ambrogio et al., Nature 558, 60 (2018) compensate in their PCM + 3T1C cells; exponents
  of a few hundredths to ~0.1) or ``log``: ``G(t) = G_p (1 - nu_d ln(1 + (t - t_p) / t0))``
  (log-time relaxation of filamentary oxide devices), never below the device's ``g_lo``;
* the **window**: the conductance never leaves ``[g_lo, g_hi]`` (a step past an edge stops at it,
  as NeuroSim clips).

Defaults are NeuroSim V3.0's ``RealDevice``: ``g_min = 4.76e-7`` S, ``g_max = 1e-5`` S,
``P = 31`` pulses each way, nonlinearity label +-4.22 (``nu = 4.0``), cycle-to-cycle 0.5 % of the
window, 2 V, 80 ns pulses; no device-to-device variation, no drift; read noise off. For context
on scale: M. Prezioso et al., Nature 521, 61 (2015) trained a 12 x 12 Al2O3/TiO2-x crossbar;
Li et al. (2018) programmed 1T1R Ta/HfO2 cells by write-verify; both tune conductances of
tens to hundreds of microsiemens.

Units: siemens, pulses, seconds, volts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from physlearn.configbase import StrictModel
from physlearn.system import FloatArray

#: Kinds of pulse, as the sign of a pulse count: SET (+) raises G, RESET (-) lowers it.
SET, RESET = 1, -1
#: Below this nonlinearity exponent a curve is treated as linear (``1 - exp(-nu)`` ~ ``nu``).
LINEAR_NU = 1e-9


class MemristorModel(StrictModel):
    """Nominal figures of a pulse-programmed memristive device and their spreads."""

    g_min: float = Field(4.76e-7, gt=0, le=1.0, description="low edge of the window (S)")
    g_max: float = Field(1e-5, gt=0, le=1.0, description="high edge of the window (S)")
    pulses_set: int = Field(31, ge=1, le=100_000, description="SET pulses from g_min to g_max")
    pulses_reset: int = Field(31, ge=1, le=100_000, description="RESET pulses g_max to g_min")
    nu_set: float = Field(4.0, ge=0, le=50, description="SET nonlinearity exponent P/A (0: linear)")
    nu_reset: float = Field(4.0, ge=0, le=50, description="RESET nonlinearity exponent P/A")
    c2c: float = Field(0.0, ge=0, le=1, description="relative std of each pulse's step")
    c2c_window: float = Field(
        0.005, ge=0, le=0.1, description="additive std of each pulse's step (fraction of window)"
    )
    d2d_window: float = Field(0.0, ge=0, le=0.5, description="std of log g_min, log g_max")
    d2d_nu: float = Field(0.0, ge=0, le=1, description="std of log nu_set, log nu_reset")
    d2d_step: float = Field(0.0, ge=0, le=1, description="std of log of each device's step scale")
    stuck: float = Field(0.0, ge=0, le=0.5, description="fraction of devices stuck at an edge")
    read_noise: float = Field(0.0, ge=0, le=0.2, description="relative std of a reading")
    drift: Literal["none", "power", "log"] = Field("none", description="retention drift law")
    drift_nu: float = Field(0.0, ge=0, le=0.5, description="drift exponent / log coefficient")
    drift_t0: float = Field(1.0, gt=0, le=1e6, description="drift time scale (s)")
    d2d_drift: float = Field(0.0, ge=0, le=1, description="std of log of each device's drift_nu")
    width: float = Field(8e-8, gt=0, le=1.0, description="nominal pulse width (s)")
    v_set: float = Field(2.0, gt=0, le=20, description="nominal SET amplitude (V)")
    v_reset: float = Field(2.0, gt=0, le=20, description="nominal RESET amplitude (V)")
    v_slope: float = Field(
        0.25, gt=0, le=10, description="volts per e-fold of a pulse's effect (assumed)"
    )

    @model_validator(mode="after")
    def _window(self) -> MemristorModel:
        if not self.g_max >= 2 * self.g_min:
            raise ValueError(f"g_max ({self.g_max:g} S) must be at least 2 x g_min")
        return self

    def pulse_scale(self, width: float, volts: float, kind: int) -> float:
        """Pulse-equivalents of one pulse of ``width`` (s) and amplitude ``volts`` (V)."""
        v0 = self.v_set if kind == SET else self.v_reset
        return float(width / self.width * np.exp((abs(volts) - v0) / self.v_slope))


def _rate(nu: FloatArray, pulses: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(``1 - exp(-s nu / P)``, ``1 / (1 - exp(-nu))``) with the linear limit handled: where
    ``nu`` is ~0 the first is ``s / P`` and the second ``1 / nu`` is replaced so their product
    times the window gives ``s W / P`` (see :func:`mean_step`)."""
    lin = nu < LINEAR_NU
    safe = np.where(lin, 1.0, nu)
    alpha = np.where(lin, s / pulses, -np.expm1(-s * safe / pulses))
    sat = np.where(lin, 0.0, 1.0 / -np.expm1(-safe))
    return alpha, sat


def mean_step(
    g: FloatArray,
    kind: int,
    g_lo: FloatArray | float,
    g_hi: FloatArray | float,
    nu: FloatArray | float,
    pulses: FloatArray | float,
    s: FloatArray | float = 1.0,
) -> FloatArray:
    """Mean conductance change (S) of one pulse of ``s`` pulse-equivalents at state ``g``,
    before the window clips it (the model's ``dG_set`` / ``dG_reset``)."""
    g = np.asarray(g, dtype=np.float64)
    lo, hi = np.asarray(g_lo, dtype=np.float64), np.asarray(g_hi, dtype=np.float64)
    nu_a, p = np.asarray(nu, dtype=np.float64), np.asarray(pulses, dtype=np.float64)
    s_a = np.asarray(s, dtype=np.float64)
    w = hi - lo
    alpha, sat = _rate(nu_a, p, s_a)
    lin = nu_a < LINEAR_NU
    if kind == SET:
        nonlin = alpha * (lo + w * sat - g)
    else:
        nonlin = -alpha * (g - hi + w * sat)
    return np.asarray(np.where(lin, kind * alpha * w, nonlin))


def pulse_position(
    g: FloatArray, kind: int, g_lo: float, g_hi: float, nu: float, pulses: float
) -> FloatArray:
    """Position of ``g`` (clipped to the window) on the SET curve (pulses from ``g_lo``) or the
    RESET curve (pulses from ``g_hi``): the inverse of the curves, continuous. The mean number
    of pulses between two states is the difference of their positions."""
    w = g_hi - g_lo
    u = (np.clip(np.asarray(g, dtype=np.float64), g_lo, g_hi) - g_lo) / w  # 0..1
    if kind == RESET:
        u = 1.0 - u
    if nu < LINEAR_NU:
        return np.asarray(u * pulses)
    # u = (1 - exp(-nu x / P)) / (1 - exp(-nu))  =>  x = -P/nu ln(1 - u (1 - exp(-nu)))
    return np.asarray(-pulses / nu * np.log1p(u * np.expm1(-nu)))


def _lognormal(rng: np.random.Generator, nominal: float, sigma: float, n: int) -> FloatArray:
    """``nominal * exp(sigma z - sigma**2/2)``: mean ``nominal``, std of the log ``sigma``."""
    if sigma == 0:
        return np.full(n, float(nominal))
    return np.asarray(nominal * np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2))


class MemristorArray:
    """``n`` devices of ``model``, each with its own parameters drawn from ``seed``.

    Times ``t`` are seconds on any clock (drift depends on differences only). Three generators
    derived from ``seed`` draw the device parameters, the pulse noise and the read noise, so a
    sequence of calls is reproducible whatever else happens.
    """

    def __init__(
        self, model: MemristorModel, n: int, seed: int | Sequence[int], t: float = 0.0
    ) -> None:
        if n < 1:
            raise ValueError(f"a memristor array needs at least one device, got {n}")
        self.model = m = model
        self.n = int(n)
        key = [int(seed)] if isinstance(seed, int) else [int(x) for x in seed]
        dev = np.random.default_rng([*key, 0])
        self.pulse_rng = np.random.default_rng([*key, 1])
        self.read_rng = np.random.default_rng([*key, 2])
        #: per-device window (S), nonlinearity exponents, step scale, drift exponent
        self.g_hi = _lognormal(dev, m.g_max, m.d2d_window, n)
        self.g_lo = np.minimum(_lognormal(dev, m.g_min, m.d2d_window, n), self.g_hi / 2)
        self.nu_set = _lognormal(dev, m.nu_set, m.d2d_nu, n)
        self.nu_reset = _lognormal(dev, m.nu_reset, m.d2d_nu, n)
        self.step_scale = _lognormal(dev, 1.0, m.d2d_step, n)
        self.drift_nu = _lognormal(dev, m.drift_nu, m.d2d_drift, n)
        #: devices that ignore pulses, and where they are stuck
        self.stuck = dev.random(n) < m.stuck
        stuck_high = dev.random(n) < 0.5
        #: conductance when last programmed (S) and when (s)
        self.g_prog = np.where(self.stuck & stuck_high, self.g_hi, self.g_lo)
        self.t_prog = np.full(n, float(t))

    # -- state -------------------------------------------------------------------------------
    def conductance(self, t: float) -> FloatArray:
        """True conductance of every device at time ``t`` (S): the programmed one, drifted."""
        m, g = self.model, self.g_prog
        if m.drift == "none" or m.drift_nu == 0:
            return g.copy()
        age = np.maximum(t - self.t_prog, 0.0) / m.drift_t0
        if m.drift == "power":
            out = g * (1.0 + age) ** (-self.drift_nu)
        else:
            out = g * (1.0 - self.drift_nu * np.log1p(age))
        return np.asarray(np.clip(out, self.g_lo, self.g_hi))

    def read(self, t: float) -> FloatArray:
        """A reading of every device at ``t`` (S): the true conductance with read noise."""
        g = self.conductance(t)
        sigma = self.model.read_noise
        if sigma == 0:
            return g
        return np.asarray(g * (1.0 + sigma * self.read_rng.standard_normal(self.n)))

    def initialise(self, g: FloatArray | float, t: float) -> None:
        """Put every device that is not stuck at ``g`` (S, clipped to its window) at time ``t``
        (a forming/initialisation step of the simulation, not a board command)."""
        target = np.clip(np.broadcast_to(np.asarray(g, dtype=np.float64), (self.n,)),
                         self.g_lo, self.g_hi)  # fmt: skip
        self.g_prog = np.where(self.stuck, self.g_prog, target)
        self.t_prog = np.where(self.stuck, self.t_prog, float(t))

    # -- programming -------------------------------------------------------------------------
    def pulse(self, counts: Sequence[int] | np.ndarray, t: float,
              s_set: float = 1.0, s_reset: float = 1.0) -> None:  # fmt: skip
        """Apply ``counts[d]`` pulses to device ``d`` at time ``t``: SET pulses if positive,
        RESET if negative, of ``s_set`` / ``s_reset`` pulse-equivalents each. Devices that
        receive pulses restart their drift from the new state."""
        c = np.asarray(counts)
        if c.shape != (self.n,) or c.dtype.kind not in "iu":
            raise ValueError(f"pulse counts must be {self.n} integers, got {c.dtype} {c.shape}")
        active = (c != 0) & ~self.stuck
        g = self.conductance(t)
        remaining = np.abs(c.astype(np.int64))
        remaining[~active] = 0
        kind = np.sign(c)
        while True:
            idx = np.flatnonzero(remaining)
            if idx.size == 0:
                break
            g[idx] = self._one_pulse(g[idx], kind[idx], idx, s_set, s_reset)
            remaining[idx] -= 1
        self.g_prog = np.where(active, g, self.g_prog)
        self.t_prog = np.where(active, float(t), self.t_prog)

    def _one_pulse(self, g: FloatArray, kind: np.ndarray, idx: np.ndarray,
                   s_set: float, s_reset: float) -> FloatArray:  # fmt: skip
        """One pulse on devices ``idx`` (states ``g``, signs ``kind``): mean step, noise, clip."""
        m = self.model
        lo, hi = self.g_lo[idx], self.g_hi[idx]
        s = self.step_scale[idx]
        up = kind > 0
        mu = np.where(
            up,
            mean_step(g, SET, lo, hi, self.nu_set[idx], m.pulses_set, s * s_set),
            mean_step(g, RESET, lo, hi, self.nu_reset[idx], m.pulses_reset, s * s_reset),
        )
        k = idx.size
        if m.c2c > 0:
            mu = mu * (1.0 + m.c2c * self.pulse_rng.standard_normal(k))
        if m.c2c_window > 0:
            mu = mu + m.c2c_window * (hi - lo) * self.pulse_rng.standard_normal(k)
        return np.asarray(np.clip(g + mu, lo, hi))


class MemristorSpec(StrictModel):
    """The virtual lab's memristor board (VLAB-MEM): its devices and its pulse limits. Its
    devices are the bench's weights: device k is the conductance of network edge k."""

    name: str = Field("mem", pattern=r"^[a-z][a-z0-9_]*$", description="instrument name")
    channels: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="number of devices: the number of edges if given (device k is edge k)",
    )
    device: MemristorModel = Field(default_factory=MemristorModel, description="device model")
    initial: float | None = Field(
        None,
        gt=0,
        le=1.0,
        description="conductance of every device at power-on (S, clipped to its window; "
        "default device.g_min)",
    )
    max_pulses: int = Field(
        1000, ge=1, le=100_000, description="most pulses one command may ask of a device"
    )
    width_min: float = Field(1e-9, gt=0, le=1.0, description="shortest pulse (s)")
    width_max: float = Field(1e-3, gt=0, le=1.0, description="longest pulse (s)")
    max_voltage: float = Field(5.0, gt=0, le=20, description="highest pulse amplitude (V)")
    serial: str = Field("MEM0001", description="serial number in *IDN?")

    @model_validator(mode="after")
    def _limits(self) -> MemristorSpec:
        d = self.device
        if not self.width_min <= d.width <= self.width_max:
            raise ValueError(
                f"device.width {d.width:g} s outside width_min..width_max "
                f"({self.width_min:g}..{self.width_max:g} s)"
            )
        if max(d.v_set, d.v_reset) > self.max_voltage:
            raise ValueError(f"device.v_set / v_reset exceed max_voltage {self.max_voltage:g} V")
        return self
