"""The weights of a station system: one device per edge, digital potentiometers or memristors.

:class:`PotBank` (``weights.kind: pots``): the trainable group ``"conductance"``
``(n_edges,)`` (S) is held as taps. A requested conductance becomes the tap nearest to it
(:class:`~physlearn.drivers.station.tapmap.TapMap`: the nominal law or a calibration); the taps
are checked against ``tap_limits`` before anything is written, written through the bank's
``taps`` parameter, read back and compared (``verify``), and the conductances the bank then
holds are returned (``resolution = 0``: the grid is the bank's, per device).
:meth:`PotBank.calibrate` measures every device isolated (``physlearn lab calibrate``).

:class:`MemristorBank` (``weights.kind: memristor``): a board of pulse-programmed devices; an
update becomes pulse counts on the devices' nominal model, open loop or write-verify
(:mod:`~physlearn.drivers.station.programming`), and the conductances read back last are what
the bank holds (no grid: ``resolution = 0``); devices write-verify leaves outside its tolerance
are reported in the system's events. See ``lab_protocols.md`` (weights).

Both offer ``plan(g)`` (checks a request against the envelope before anything is written),
``program(plan)`` (writes it, returns the conductances held, S), ``read()`` and ``describe()``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.station.binding import Instruments, parameter
from physlearn.drivers.station.programming import ProgrammingResult
from physlearn.drivers.station.roles import expand_names
from physlearn.drivers.station.safety import apply_tap_limits, check_taps
from physlearn.drivers.station.tapmap import CALIBRATION_FORMAT, TapMap
from physlearn.drivers.station.transactions import Timers, call
from physlearn.drivers.station.weight_roles import MemristorWeights, WeightBounds, WeightRole
from physlearn.system import ParameterGroup

GROUP = "conductance"


def conductance_group(bounds: WeightBounds, n_edges: int, held: str) -> ParameterGroup:
    """The trainable group ``"conductance"`` ``(n_edges,)`` (S) within ``bounds``; ``held``
    says what holds the values. No grid (``resolution = 0``): the devices' own."""
    return ParameterGroup(
        name=GROUP,
        shape=(n_edges,),
        dims=("edge",),
        lower=bounds.min,
        upper=bounds.max,
        unit="S",
        resolution=0.0,
        long_name=f"edge conductance ({held})",
        energy_unit="W",
    )


class PotBank:
    """The potentiometer bank of ``weights`` for ``n_edges`` edges (edge order = device order)."""

    def __init__(self, cfg: WeightRole, n_edges: int, timers: Timers) -> None:
        self.cfg, self.n, self.timers = cfg, n_edges, timers
        self.tapmap = TapMap(cfg.law, n_edges, cfg.tap_limits, cfg.calibration)
        lo_r, hi_r = self.tapmap.reachable()
        b = cfg.conductance
        if b.min < lo_r * (1 - 1e-12) or b.max > hi_r * (1 + 1e-12):
            raise ValueError(
                f"weights.conductance [{b.min:g}, {b.max:g}] S is not reachable by every device "
                f"within taps {cfg.tap_limits[0]}..{cfg.tap_limits[1]} ({self.tapmap.source}: "
                f"[{lo_r:g}, {hi_r:g}] S)"
            )
        self.group = conductance_group(b, n_edges, "potentiometer bank; held values are the bank's")
        self.names = expand_names(cfg.channels or [])
        self.taps: Any = None
        self.name = ""

    def bind(self, insts: Instruments) -> None:
        self.taps = insts.resolve(self.cfg.taps)
        self.name = self.taps.root_instrument.name
        apply_tap_limits(self.taps, self.cfg.tap_limits, self.n)

    def plan(self, g: np.ndarray) -> np.ndarray:
        """The taps for conductances ``g`` (S), checked against ``tap_limits``."""
        return self.nearest(g)

    def program(self, taps: np.ndarray) -> np.ndarray:
        """Write the taps (verified); the conductances they hold (S)."""
        self.write(taps)
        return self.conductance(taps)

    def describe(self) -> dict[str, Any]:
        return {"tap_limits": list(self.cfg.tap_limits), "tap_law": self.tapmap.source}

    def nearest(self, g: np.ndarray) -> np.ndarray:
        """Taps for conductances ``g`` (S), checked against ``tap_limits`` (nothing written)."""
        taps = self.tapmap.nearest(g)
        check_taps(taps, self.cfg.tap_limits, self.names)
        return np.asarray(taps)

    def conductance(self, taps: np.ndarray) -> np.ndarray:
        return np.asarray(self.tapmap.conductance(taps))

    def write(self, taps: np.ndarray) -> None:
        """Write the taps; with ``verify``, read them back and compare."""
        call(self.timers, self.name, False, self.taps.set, taps)
        if not self.cfg.verify:
            return
        back = np.asarray(call(self.timers, self.name, True, self.taps.get))
        if back.shape != taps.shape or not np.array_equal(back, taps):
            self.taps.cache.invalidate()
            if back.shape != taps.shape:
                got = f"{back.size} taps for {taps.size} devices"
            else:
                k = int(np.flatnonzero(back != taps)[0])
                got = f"tap {int(back[k])} on device {k + 1}, written {int(taps[k])}"
            raise InstrumentReplyError(f"{self.name}: reads back {got}", self.name)

    def read_taps(self) -> np.ndarray:
        """The taps the bank holds."""
        return np.asarray(call(self.timers, self.name, True, self.taps.get), dtype=np.int64)

    def read(self) -> np.ndarray:
        """The conductances (S) the bank holds (its taps, read back)."""
        return self.conductance(self.read_taps())

    def calibrate(self, insts: Instruments, points: int) -> dict[str, Any]:
        """Measure every device's conductance (S) at ``points`` taps spread over
        ``tap_limits`` (``weights.channels`` x ``weights.measure``), then restore the taps.
        The caller has every source in its safe state (no voltage on the network)."""
        w = self.cfg
        if w.channels is None:
            raise ValueError("weights.channels: name the devices to calibrate them")
        if points < 2:
            raise ValueError("calibration needs at least 2 taps per device")
        lo, hi = w.tap_limits
        taps = np.unique(np.round(np.linspace(lo, hi, points)).astype(np.int64))
        meas = [parameter(insts.resolve(n), w.measure, "weights") for n in self.names]
        table = np.empty((len(meas), taps.size))
        before = self.read_taps()
        for j, k in enumerate(taps):
            self.write(np.full(len(meas), k, dtype=np.int64))
            for d, p in enumerate(meas):
                table[d, j] = float(call(self.timers, self.name, True, p.get))
        self.write(before)
        return {
            "format": CALIBRATION_FORMAT,
            "instrument": insts.identity.get(self.name, ""),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "taps": taps.tolist(),
            "conductance": table.tolist(),
        }


class MemristorBank:
    """The memristor board of ``weights`` for ``n_edges`` edges (device k = edge k)."""

    def __init__(
        self, cfg: MemristorWeights, n_edges: int, timers: Timers, events: list[str]
    ) -> None:
        self.cfg, self.n, self.timers, self.events = cfg, n_edges, timers, events
        b = cfg.conductance
        self.group = conductance_group(b, n_edges, "memristive devices; held values are read back")
        self.conductances: Any = None
        self.pulses: Any = None
        self.name = ""
        self.last: ProgrammingResult | None = None

    def bind(self, insts: Instruments) -> None:
        from qcodes import validators as vals

        self.conductances = insts.resolve(self.cfg.conductances)
        self.pulses = insts.resolve(self.cfg.pulses)
        self.name = self.pulses.root_instrument.name
        top = self.cfg.programming.max_pulses_per_step
        self.pulses.vals = vals.Arrays(  # the envelope: at most this many pulses per write
            min_value=-top, max_value=top, shape=(self.n,), valid_types=(np.integer,)
        )

    def plan(self, g: np.ndarray) -> np.ndarray:
        return np.asarray(g, dtype=np.float64)

    def read_conductances(self) -> np.ndarray:
        g = np.asarray(call(self.timers, self.name, True, self.conductances.get), dtype=float)
        if g.shape != (self.n,) or not np.isfinite(g).all():
            raise InstrumentReplyError(
                f"{self.name}: read {g.shape} conductances, expected {self.n} finite", self.name
            )
        return g

    def apply_pulses(self, counts: np.ndarray) -> None:
        call(self.timers, self.name, False, self.pulses.set, np.asarray(counts, dtype=np.int64))

    def program(self, g: np.ndarray) -> np.ndarray:
        """Program the devices towards ``g`` (S); the conductances read back last (S)."""
        from physlearn.drivers.station.programming import program

        self.last = program(self, g, self.cfg.device, self.cfg.programming)
        bad = self.last.unconverged
        if bad.size:
            self.events.append(
                f"write-verify: {bad.size} device(s) outside tolerance after "
                f"{self.last.iterations} writes (edges {bad[:10].tolist()}"
                f"{'...' if bad.size > 10 else ''})"
            )
        return self.last.conductance

    def read(self) -> np.ndarray:
        return self.read_conductances()

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.cfg.device.model_dump(),
            "programming": self.cfg.programming.model_dump(),
        }


def weight_bank(
    cfg: WeightRole | MemristorWeights, n_edges: int, timers: Timers, events: list[str]
) -> PotBank | MemristorBank:
    """The bank of a ``weights`` section."""
    if isinstance(cfg, MemristorWeights):
        return MemristorBank(cfg, n_edges, timers, events)
    return PotBank(cfg, n_edges, timers)
