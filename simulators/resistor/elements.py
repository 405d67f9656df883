"""Element laws of the non-linear resistor networks: diodes and gate-controlled transistor edges.

Every element is a two-terminal *resistive* element, described by its current-voltage law and its
co-content (the integral of current over voltage, in watts), the element's share of the network
energy E minimised at equilibrium (see ``docs/physics.md``, §Non-linear resistor networks).
Sign convention: a
diode from *anode* a to *cathode* c sees the branch voltage v = V_a - V_c (V); its current i (A)
flows from anode to cathode through the diode (out of the anode node, into the cathode node).

Diodes (:class:`DiodeModel`)
----------------------------
* ``ideal``: i >= 0, v <= 0, i * v = 0 (a short when forward biased, open when reverse biased).
  Co-content: 0 for v <= 0, +inf for v > 0, i.e. the constraint V_a <= V_c (Scellier, ICML 2024).
  A threshold voltage is modelled by a bias source in series (the rails of a deep network).
* ``shockley``: i = I_s (exp(v / (n V_T)) - 1) with saturation current I_s (A), emission
  coefficient n and thermal voltage V_T = k T / q (V). Co-content
  Phi(v) = I_s [n V_T (exp(v / (n V_T)) - 1) - v] (W): smooth, strictly convex, Phi(0) = 0,
  Phi'(v) = i(v), Phi''(v) = (I_s / (n V_T)) exp(v / (n V_T)) (S, the small-signal conductance).
  An optional series resistance R_s (ohm; SPICE ``RS``) is realised by the network as an internal
  node between a resistor R_s (anode side) and the junction, exactly as SPICE does.
  Defaults and constants follow SPICE (ngspice ``D`` model at TNOM = 27 degC, its Boltzmann
  constant and elementary charge), so that an exported netlist simulates the same circuit.
  (SPICE also adds GMIN = 1e-12 S across each junction and replaces the reverse current below
  -3 n V_T by a cubic tail; both change currents by ~1e-12 A, far below what node voltages of a
  kilo-ohm network resolve at 1e-6 relative.)

Transistor edges (:class:`TransistorModel`)
-------------------------------------------
A MOSFET used as a gate-controlled resistor (Dillavou et al., PNAS 2024): in the deep triode
(ohmic) region, |V_DS| << V_GS - V_th, the channel is a linear conductance set by the gate. We use
a smooth model covering sub-threshold and strong inversion (an EKV-style interpolation):

    g(V_G) = K * s * ln(1 + exp((V_G - V_th) / s))       (S)

with K = mu C_ox W / L (S/V), threshold V_th (V) and sub-threshold smoothing s = n V_T (V). Far
above threshold g = K (V_G - V_th) (the textbook triode conductance); far below it decays as
exp((V_G - V_th) / s). The edge's co-content is 1/2 g(V_G) (V_i - V_j)^2 and its conjugate
observable dE/dV_G = 1/2 (V_i - V_j)^2 g'(V_G), g'(V_G) = K / (1 + exp(-(V_G - V_th) / s)) (S/V).
Assumptions (stated, not hidden): the gate voltage is the trainable parameter and is referred to
the channel (the gate drive follows the channel potential, as with a floating gate capacitor);
V_DS is small enough for the ohmic law; body effect and channel-length modulation are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Boltzmann constant used by ngspice (J/K), ``CONSTboltz`` in its const.h.
SPICE_BOLTZMANN = 1.38064852e-23
#: Elementary charge used by ngspice (C), ``CHARGE`` in its const.h.
SPICE_CHARGE = 1.6021766208e-19
#: SPICE's nominal temperature TNOM = 27 degC, in kelvin.
SPICE_TNOM = 300.15

DiodeKind = Literal["ideal", "shockley"]


def thermal_voltage(temperature: float = SPICE_TNOM) -> float:
    """k T / q in volts at ``temperature`` (K), with SPICE's constants (25.852 mV at 27 degC)."""
    return SPICE_BOLTZMANN * temperature / SPICE_CHARGE


def _finite_positive(name: str, value: float, unit: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite positive number of {unit}, got {value!r}")
    return v


@dataclass(frozen=True)
class DiodeModel:
    """A diode's law. Units: A, V, K, ohm. See the module docstring for the equations.

    Attributes:
        kind: ``"ideal"`` (hard constraint V_a <= V_c) or ``"shockley"``.
        saturation_current: I_s (A), > 0 (SPICE ``IS``; 1e-14 A by default, as SPICE).
        emission: n, > 0 (SPICE ``N``).
        temperature: T (K), > 0; V_T = k T / q. Default SPICE's 27 degC.
        series_resistance: R_s (ohm), >= 0 (SPICE ``RS``); 0 = none.

    Non-physical values (non-positive I_s, n or T, negative R_s, non-finite values) are refused
    with ``ValueError`` naming the field and its unit. The Shockley fields are validated for an
    ideal diode too (they are simply unused), so a config can switch ``kind`` safely.
    """

    kind: DiodeKind = "shockley"
    saturation_current: float = 1e-14
    emission: float = 1.0
    temperature: float = SPICE_TNOM
    series_resistance: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("ideal", "shockley"):
            raise ValueError(f"diode kind must be 'ideal' or 'shockley', got {self.kind!r}")
        _finite_positive("diode saturation_current", self.saturation_current, "amperes")
        _finite_positive("diode emission coefficient", self.emission, "(dimensionless)")
        _finite_positive("diode temperature", self.temperature, "kelvin")
        rs = float(self.series_resistance)
        if not (math.isfinite(rs) and rs >= 0):
            raise ValueError(f"diode series_resistance must be finite and >= 0 ohm, got {rs!r}")
        if self.kind == "ideal" and rs > 0:
            raise ValueError(
                "an ideal diode takes no series_resistance (put a resistor edge in series "
                "instead, or use kind 'shockley')"
            )

    @property
    def vte(self) -> float:
        """n V_T (V), the voltage scale of the exponential."""
        return self.emission * thermal_voltage(self.temperature)

    def current(self, v: FloatArray) -> FloatArray:
        """i(v) = I_s (exp(v / n V_T) - 1) (A); +inf beyond float range. Shockley only."""
        with np.errstate(over="ignore"):
            return np.asarray(self.saturation_current * np.expm1(v / self.vte))

    def conductance(self, v: FloatArray) -> FloatArray:
        """di/dv = (I_s / n V_T) exp(v / n V_T) (S). Shockley only."""
        with np.errstate(over="ignore"):
            return np.asarray((self.saturation_current / self.vte) * np.exp(v / self.vte))

    def cocontent(self, v: FloatArray) -> FloatArray:
        """Phi(v) = I_s [n V_T (exp(v / n V_T) - 1) - v] (W), Phi(0) = 0. Shockley only."""
        vte = self.vte
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(self.saturation_current * (vte * np.expm1(v / vte) - v))

    def spice_model(self, name: str = "dmod") -> str:
        """The SPICE ``.model`` card of this Shockley diode (ideal diodes do not exist in SPICE)."""
        if self.kind != "shockley":
            raise ValueError(
                "ideal diodes have no SPICE model: export the network with a Shockley model "
                "(same rails and resistors) to cross-check it"
            )
        # repr: the shortest decimal that reads back as the same double
        rs = f" RS={float(self.series_resistance)!r}" if self.series_resistance > 0 else ""
        return (
            f".model {name} D(IS={float(self.saturation_current)!r} N={float(self.emission)!r}{rs})"
        )


@dataclass(frozen=True)
class TransistorModel:
    """Gate-controlled channel conductance g(V_G) = K s ln(1 + exp((V_G - V_th) / s)) (S).

    Attributes:
        k: K = mu C_ox W / L (S/V), > 0.
        v_th: threshold voltage V_th (V).
        smoothing: s (V), > 0, the sub-threshold slope voltage n V_T (about 40 mV).
    """

    k: float = 1e-3
    v_th: float = 0.7
    smoothing: float = 0.04

    def __post_init__(self) -> None:
        _finite_positive("transistor k (mu C_ox W/L)", self.k, "S/V")
        _finite_positive("transistor smoothing", self.smoothing, "volts")
        if not math.isfinite(float(self.v_th)):
            raise ValueError(f"transistor v_th must be finite (V), got {self.v_th!r}")

    def conductance(self, v_gate: FloatArray) -> FloatArray:
        """g(V_G) (S), always > 0."""
        z = (np.asarray(v_gate, dtype=np.float64) - self.v_th) / self.smoothing
        return np.asarray(self.k * self.smoothing * np.logaddexp(0.0, z))

    def dconductance(self, v_gate: FloatArray) -> FloatArray:
        """g'(V_G) = K / (1 + exp(-(V_G - V_th) / s)) (S/V)."""
        z = (np.asarray(v_gate, dtype=np.float64) - self.v_th) / self.smoothing
        return np.asarray(self.k * 0.5 * (1.0 + np.tanh(0.5 * z)))
