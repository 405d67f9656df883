"""The ``weights`` section of a station config: the device on every edge and how it is set.

* :class:`WeightRole` (``kind: pots``, the default): digital potentiometers, one per edge, whose
  tap sets the conductance by :class:`TapLaw` or a calibration;
* :class:`MemristorWeights` (``kind: memristor``): pulse-programmed memristive devices, one per
  edge, programmed open loop or with write-verify
  (:mod:`physlearn.drivers.station.programming`);
* :class:`WeightBounds`: the trainable conductance range (S) and its initialisation.

The bank built from it is :mod:`physlearn.drivers.station.weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, Tag, field_validator, model_validator

from physlearn.configbase import StrictModel
from physlearn.drivers.station.programming import ProgrammingConfig
from physlearn.drivers.station.roles import check_channels, expand_names, kind_or, resolve_path
from physlearn.drivers.virtual_lab.memristor import MemristorModel

# --------------------------------------------------------------------------------------------
# Conductance as a function of the potentiometer tap


class TapLaw(StrictModel):
    """Nominal conductance of a digital potentiometer as a function of its tap k = 0..n_taps-1.

    * ``linear``: g(k) = g_min + (g_max - g_min) k / (n_taps - 1) (S), a conductance DAC;
    * ``rheostat``: R(k) = r_wiper + r_total k / (n_taps - 1) (ohm), g = 1/R: a potentiometer used
      as a variable resistor (conductance falls with the tap, steps are uneven).
    """

    kind: Literal["linear", "rheostat"] = Field("linear", description="tap law")
    n_taps: int = Field(1024, ge=2, description="number of taps (count)")
    g_min: float = Field(1e-5, gt=0, description="linear: conductance at tap 0 (S)")
    g_max: float = Field(1e-2, gt=0, description="linear: conductance at the top tap (S)")
    r_wiper: float = Field(100.0, gt=0, description="rheostat: resistance at tap 0 (ohm)")
    r_total: float = Field(1e5, gt=0, description="rheostat: end-to-end resistance (ohm)")

    @model_validator(mode="after")
    def _check(self) -> TapLaw:
        if self.kind == "linear" and not self.g_min < self.g_max:
            raise ValueError(f"g_min ({self.g_min:g} S) must be < g_max ({self.g_max:g} S)")
        return self

    def conductance(self, taps: Any) -> Any:
        """Nominal conductance (S) of taps (array-like of ints)."""
        import numpy as np

        k = np.asarray(taps, dtype=np.float64)
        x = k / (self.n_taps - 1)
        if self.kind == "linear":
            return self.g_min + (self.g_max - self.g_min) * x
        return 1.0 / (self.r_wiper + self.r_total * x)


class WeightBounds(StrictModel):
    """Trainable conductances (S) and their initialisation."""

    min: float = Field(gt=0, description="lowest trainable conductance (S)")
    max: float = Field(gt=0, description="highest trainable conductance (S)")
    init: Literal["random", "keep"] = Field(
        "random",
        description="random: uniform in [init_low, init_high] drawn with the seed, written at "
        "open; keep: start from what the bank holds",
    )
    init_low: float | None = Field(None, gt=0, description="lower end of the init range (S)")
    init_high: float | None = Field(None, gt=0, description="upper end of the init range (S)")

    @model_validator(mode="after")
    def _check(self) -> WeightBounds:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min:g} S) must be < max ({self.max:g} S)")
        lo, hi = self.init_range()
        if not self.min <= lo <= hi <= self.max:
            raise ValueError(
                f"init range [{lo:g}, {hi:g}] S must lie inside [{self.min:g}, {self.max:g}] S"
            )
        return self

    def init_range(self) -> tuple[float, float]:
        lo = self.min if self.init_low is None else self.init_low
        hi = self.max if self.init_high is None else self.init_high
        return lo, hi


class WeightRole(StrictModel):
    """A bank of digital potentiometers, one per edge (edge order = graph edge order)."""

    kind: Literal["pots"] = Field("pots", description="digital potentiometers set by taps")
    taps: str = Field("pots.taps", description="array parameter of every device's tap")
    channels: str | list[str] | None = Field(
        None, description="per-device channels (for calibration): 'pots.ch{001..208}'"
    )
    measure: str = Field(
        "conductance", description="per-channel parameter measuring the isolated device (S)"
    )
    tap_limits: tuple[int, int] = Field(description="envelope: lowest and highest tap ever written")
    law: TapLaw = Field(default_factory=TapLaw, description="nominal conductance vs tap")
    calibration: str | None = Field(
        None, description="calibration JSON from `physlearn lab calibrate` (overrides law)"
    )
    conductance: WeightBounds = Field(description="trainable conductance range (S)")
    verify: bool = Field(True, description="read back every write and compare")

    @field_validator("channels")
    @classmethod
    def _channel_count(cls, v: str | list[str] | None) -> str | list[str] | None:
        return None if v is None else check_channels(v)

    @field_validator("calibration")
    @classmethod
    def _calibration_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not Path(v).expanduser().is_file():
            raise ValueError(f"calibration file {v!r} does not exist")
        return resolve_path(v)

    @model_validator(mode="after")
    def _check(self) -> WeightRole:
        lo, hi = self.tap_limits
        if not 0 <= lo < hi <= self.law.n_taps - 1:
            raise ValueError(
                f"tap_limits {list(self.tap_limits)} must satisfy 0 <= low < high <= "
                f"{self.law.n_taps - 1}"
            )
        return self

    def paths(self) -> list[tuple[str, str]]:
        out = [("weights.taps", self.taps)]
        return out + [("weights.channels", n) for n in expand_names(self.channels or [])]

    def check_edges(self, n_edges: int) -> None:
        """Refuse a bank naming another number of devices than the graph has edges, or a
        trainable range the taps cannot reach (nominal law)."""
        if self.channels is not None and len(expand_names(self.channels)) != n_edges:
            raise ValueError(
                f"weights.channels names {len(expand_names(self.channels))} devices but the "
                f"graph has {n_edges} edges"
            )
        if self.calibration is None:
            lo, hi = self.tap_limits
            g = sorted(float(x) for x in self.law.conductance([lo, hi]))
            b = self.conductance
            if b.min < g[0] * (1 - 1e-12) or b.max > g[1] * (1 + 1e-12):
                raise ValueError(
                    f"weights.conductance [{b.min:g}, {b.max:g}] S is not reachable: taps "
                    f"{lo}..{hi} give [{g[0]:g}, {g[1]:g}] S"
                )


class MemristorWeights(StrictModel):
    """A board of pulse-programmed memristive devices, one per edge (edge order = device
    order), programmed as ``programming`` says (:mod:`physlearn.drivers.station.programming`)."""

    kind: Literal["memristor"] = Field(description="pulse-programmed memristive devices")
    conductances: str = Field(
        "mem.conductances", description="array parameter reading every device's conductance (S)"
    )
    pulses: str = Field(
        "mem.pulse_counts",
        description="array parameter taking signed pulses per device (+ SET raises G)",
    )
    device: MemristorModel = Field(
        description="the devices' nominal model (window, pulses across it, nonlinearity), from "
        "their characterisation: the pulse counts are computed on it"
    )
    programming: ProgrammingConfig = Field(default_factory=ProgrammingConfig)
    conductance: WeightBounds = Field(description="trainable conductance range (S)")

    @model_validator(mode="after")
    def _check(self) -> MemristorWeights:
        b, d = self.conductance, self.device
        if b.min < d.g_min * (1 - 1e-12) or b.max > d.g_max * (1 + 1e-12):
            raise ValueError(
                f"weights.conductance [{b.min:g}, {b.max:g}] S lies outside the devices' window "
                f"[{d.g_min:g}, {d.g_max:g}] S (weights.device)"
            )
        return self

    def paths(self) -> list[tuple[str, str]]:
        return [("weights.conductances", self.conductances), ("weights.pulses", self.pulses)]

    def check_edges(self, n_edges: int) -> None:
        return None


WeightsRole = Annotated[
    Annotated[WeightRole, Tag("pots")] | Annotated[MemristorWeights, Tag("memristor")],
    kind_or("pots"),
]
