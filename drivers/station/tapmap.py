"""Conductance of each potentiometer as a function of its tap, and the inverse.

Either the nominal :class:`~physlearn.drivers.station.config.TapLaw` (every device alike) or a
calibration table measured by ``physlearn lab calibrate`` (per device, the conductance at a set
of taps, interpolated linearly in between). Calibration JSON::

    {"format": "physlearn-tap-calibration/1", "instrument": "<IDN>", "created": "<time>",
     "taps": [k0, k1, ...],                      # ascending
     "conductance": [[g(k0), g(k1), ...], ...]}  # S, one row per device, monotonic in k
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.drivers.station.weight_roles import TapLaw
from physlearn.system import FloatArray

CALIBRATION_FORMAT = "physlearn-tap-calibration/1"
#: Largest calibrated table of conductance per device and tap (entries, 8 bytes each) kept for
#: lookups; a larger bank interpolates every time.
GRID_ENTRIES = 1 << 22


class TapMap:
    """Per-device conductance (S) vs tap within ``tap_limits`` (inclusive).

    The conductance of every tap within the limits is tabulated once (the nominal law: one row
    for every device; a calibration: a row per device): :meth:`nearest` looks the taps next to
    a conductance up instead of evaluating the law or interpolating, and so does
    :meth:`conductance` of integer taps within the limits of a calibrated bank (a weight
    update's, once per training step) -- the same numbers."""

    def __init__(
        self,
        law: TapLaw,
        n_devices: int,
        tap_limits: tuple[int, int],
        calibration: str | Path | None = None,
    ) -> None:
        self.law = law
        self.n = int(n_devices)
        self.tap_limits = (int(tap_limits[0]), int(tap_limits[1]))
        self.taps_table: np.ndarray | None = None
        self.g_table: np.ndarray | None = None
        self.source = "nominal law"
        if calibration is not None:
            self._load(Path(calibration))
        lo, hi = self.tap_limits
        #: conductance (S) of taps lo..hi: ``(hi - lo + 1,)`` (nominal law) or, calibrated,
        #: ``(n_devices, hi - lo + 1)`` (None: more than ``GRID_ENTRIES``)
        self._grid: FloatArray | None = None
        if self.g_table is None or self.n * (hi - lo + 1) <= GRID_ENTRIES:
            ks = np.arange(lo, hi + 1, dtype=np.float64)
            self._grid = self._conductance(ks, per_device=False)

    def _load(self, path: Path) -> None:
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"calibration {path}: cannot read ({exc})") from None
        if raw.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"calibration {path}: not a {CALIBRATION_FORMAT} file")
        taps = np.asarray(raw["taps"], dtype=np.float64)
        g = np.asarray(raw["conductance"], dtype=np.float64)
        if g.shape != (self.n, taps.size) or taps.size < 2:
            raise ValueError(
                f"calibration {path}: expected {self.n} devices x >= 2 taps, got {g.shape}"
            )
        if np.any(np.diff(taps) <= 0):
            raise ValueError(f"calibration {path}: taps must be ascending")
        d = np.diff(g, axis=1)
        mono = np.all(d > 0, axis=1) | np.all(d < 0, axis=1)
        if not mono.all() or not np.all(g > 0):
            k = int(np.flatnonzero(~mono)[0]) if not mono.all() else 0
            raise ValueError(f"calibration {path}: device {k + 1} is not monotonic / positive")
        lo, hi = self.tap_limits
        if taps[0] > lo or taps[-1] < hi:
            raise ValueError(
                f"calibration {path}: covers taps {taps[0]:g}..{taps[-1]:g}, the envelope "
                f"uses {lo}..{hi}"
            )
        self.taps_table, self.g_table = taps, g
        self.source = f"calibration {path.name}"

    # -- forward -----------------------------------------------------------------------------
    def conductance(self, taps: Any) -> FloatArray:
        """Conductance (S) of each device at ``taps`` ``(n_devices,)``."""
        k = np.asarray(taps)
        if self.g_table is not None and self._grid is not None:  # a lookup, not n interpolations
            lo, hi = self.tap_limits
            if k.dtype.kind in "iu" and k.shape == (self.n,) and lo <= k.min() and k.max() <= hi:
                return self._lookup(k)
        return self._conductance(k.astype(np.float64), per_device=True)

    def _lookup(self, k: np.ndarray) -> FloatArray:
        """Conductance of integer taps ``k`` ``(n_devices,)`` within the limits (the grid if
        there is one)."""
        grid = self._grid
        if grid is None:
            return self._conductance(k.astype(np.float64), per_device=True)
        j = k - self.tap_limits[0]
        if grid.ndim == 1:
            return grid.take(j)
        return grid[np.arange(self.n), j]

    def _conductance(self, k: FloatArray, per_device: bool) -> FloatArray:
        """Conductance (S) at taps ``k``: ``k[d]`` of device d (``per_device``), else every
        device's at every ``k`` (calibrated: ``(n_devices, k.size)``; nominal: ``k``'s shape)."""
        if self.g_table is None or self.taps_table is None:
            return np.asarray(self.law.conductance(k), dtype=np.float64)
        if per_device:
            rows = [np.interp(k[d], self.taps_table, self.g_table[d]) for d in range(self.n)]
            return np.array(rows)
        return np.array([np.interp(k, self.taps_table, self.g_table[d]) for d in range(self.n)])

    def _continuous_tap(self, g: FloatArray) -> FloatArray:
        law = self.law
        if self.g_table is None or self.taps_table is None:
            if law.kind == "linear":
                return (g - law.g_min) / (law.g_max - law.g_min) * (law.n_taps - 1)
            return (1.0 / g - law.r_wiper) / law.r_total * (law.n_taps - 1)
        out = np.empty(self.n)
        for d in range(self.n):
            row = self.g_table[d]
            if row[-1] > row[0]:
                out[d] = np.interp(g[d], row, self.taps_table)
            else:
                out[d] = np.interp(g[d], row[::-1], self.taps_table[::-1])
        return out

    def nearest(self, g: Any) -> np.ndarray:
        """The tap of each device whose conductance is nearest to ``g`` (S, finite), within the
        limits."""
        gg = np.asarray(g, dtype=np.float64)
        if not np.isfinite(gg).all():
            raise ValueError("conductances must be finite to find their taps")
        lo, hi = self.tap_limits
        k = np.clip(self._continuous_tap(gg), lo, hi)
        k0 = k.astype(np.int64)  # floor: k >= lo >= 0
        k1 = np.minimum(k0 + 1, hi)
        g0, g1 = self._lookup(k0), self._lookup(k1)
        return np.where(np.abs(g1 - gg) < np.abs(g0 - gg), k1, k0)

    def reachable(self) -> tuple[float, float]:
        """(lowest, highest) conductance every device reaches within the tap limits (S)."""
        lo, hi = self.tap_limits
        a = self.conductance(np.full(self.n, lo))
        b = self.conductance(np.full(self.n, hi))
        return float(np.max(np.minimum(a, b))), float(np.min(np.maximum(a, b)))
