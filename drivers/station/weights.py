"""The weights of a station system: a bank of digital potentiometers, one per edge.

The trainable group ``"conductance"`` ``(n_edges,)`` (S) is held as taps: a requested
conductance becomes the tap nearest to it (:class:`~physlearn.drivers.station.tapmap.TapMap`:
the nominal law or a calibration), the taps are checked against ``tap_limits`` before anything
is written, written through the bank's ``taps`` parameter, read back and compared (``verify``),
and the conductances the bank then holds are returned (the group declares ``resolution = 0``:
the grid is the bank's, per device). :meth:`PotBank.calibrate` measures every device isolated
(``physlearn lab calibrate``). See ``lab_protocols.md`` (weights, calibration).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.station.binding import Instruments, parameter
from physlearn.drivers.station.roles import WeightRole, expand_names
from physlearn.drivers.station.safety import apply_tap_limits, check_taps
from physlearn.drivers.station.tapmap import CALIBRATION_FORMAT, TapMap
from physlearn.drivers.station.transactions import Timers, call
from physlearn.system import ParameterGroup

GROUP = "conductance"


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
        self.group = ParameterGroup(
            name=GROUP,
            shape=(n_edges,),
            dims=("edge",),
            lower=b.min,
            upper=b.max,
            unit="S",
            resolution=0.0,
            long_name="edge conductance (potentiometer bank; held values are the bank's)",
            energy_unit="W",
        )
        self.names = expand_names(cfg.channels or [])
        self.taps: Any = None
        self.name = ""

    def bind(self, insts: Instruments) -> None:
        self.taps = insts.resolve(self.cfg.taps)
        self.name = self.taps.root_instrument.name
        apply_tap_limits(self.taps, self.cfg.tap_limits, self.n)

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

    def read(self) -> np.ndarray:
        """The taps the bank holds."""
        return np.asarray(call(self.timers, self.name, True, self.taps.get), dtype=np.int64)

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
        before = self.read()
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
