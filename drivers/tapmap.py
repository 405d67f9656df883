"""Conductance of each potentiometer as a function of its tap, and the inverse.

Either the nominal :class:`~physlearn.drivers.config.TapLaw` (every device alike) or a
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

from physlearn.drivers.config import TapLaw
from physlearn.system import FloatArray

CALIBRATION_FORMAT = "physlearn-tap-calibration/1"


class TapMap:
    """Per-device conductance (S) vs tap within ``tap_limits`` (inclusive)."""

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
        k = np.asarray(taps, dtype=np.float64)
        if self.g_table is None or self.taps_table is None:
            return np.asarray(self.law.conductance(k), dtype=np.float64)
        return np.array([np.interp(k[d], self.taps_table, self.g_table[d]) for d in range(self.n)])

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
        """The tap of each device whose conductance is nearest to ``g`` (S), within the limits."""
        gg = np.asarray(g, dtype=np.float64)
        lo, hi = self.tap_limits
        k = np.clip(self._continuous_tap(gg), lo, hi)
        k0 = np.floor(k)
        k1 = np.minimum(k0 + 1, hi)
        g0, g1 = self.conductance(k0), self.conductance(k1)
        pick = np.where(np.abs(g1 - gg) < np.abs(g0 - gg), k1, k0)
        return pick.astype(np.int64)

    def reachable(self) -> tuple[float, float]:
        """(lowest, highest) conductance every device reaches within the tap limits (S)."""
        lo, hi = self.tap_limits
        a = self.conductance(np.full(self.n, lo))
        b = self.conductance(np.full(self.n, hi))
        return float(np.max(np.minimum(a, b))), float(np.min(np.maximum(a, b)))
