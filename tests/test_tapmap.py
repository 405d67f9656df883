"""The tap map: conductance of a potentiometer's taps (nominal law or calibration) and the tap
nearest to a conductance, against their definitions evaluated tap by tap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.drivers.station import tapmap as tapmap_module
from physlearn.drivers.station.config import TapLaw
from physlearn.drivers.station.tapmap import CALIBRATION_FORMAT, TapMap


@st.composite
def banks(draw: st.DrawFn) -> tuple[TapLaw, int, tuple[int, int], np.ndarray | None]:
    """A tap law, a device count, tap limits and (or not) a calibration table: taps ascending,
    per device a conductance increasing or decreasing in the tap."""
    n_taps = draw(st.integers(2, 300))
    lo = draw(st.integers(0, n_taps - 2))
    hi = draw(st.integers(lo + 1, n_taps - 1))
    law = TapLaw(kind=draw(st.sampled_from(["linear", "rheostat"])), n_taps=n_taps)
    n = draw(st.integers(1, 5))
    if not draw(st.booleans()):
        return law, n, (lo, hi), None
    points = draw(st.integers(2, 12))
    taps = np.unique(
        np.r_[
            0,
            np.sort(draw(st.lists(st.integers(1, max(1, n_taps - 2)), max_size=points))),
            n_taps - 1,
        ]
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = np.cumsum(rng.uniform(1e-6, 1e-3, (n, taps.size)), axis=1)
    down = rng.random(n) < 0.5
    g[down] = g[down, ::-1]
    return law, n, (lo, hi), np.vstack([taps, g])


def _tapmap(bank: tuple[TapLaw, int, tuple[int, int], np.ndarray | None], tmp: Path) -> TapMap:
    law, n, limits, table = bank
    if table is None:
        return TapMap(law, n, limits)
    path = tmp / "cal.json"
    raw = {
        "format": CALIBRATION_FORMAT,
        "taps": table[0].tolist(),
        "conductance": table[1:].tolist(),
    }
    path.write_text(json.dumps(raw))
    return TapMap(law, n, limits, path)


def _by_definition(tm: TapMap, k: np.ndarray) -> np.ndarray:
    """Conductance of device d at tap k[d, ...]: the law, or the calibration interpolated."""
    kf = np.asarray(k, dtype=np.float64)
    if tm.g_table is None or tm.taps_table is None:
        return np.asarray(tm.law.conductance(kf))
    return np.array([np.interp(kf[d], tm.taps_table, tm.g_table[d]) for d in range(tm.n)])


@pytest.mark.parametrize("grid", [True, False], ids=["tabulated", "interpolated"])
@settings(max_examples=60, deadline=None)
@given(bank=banks(), data=st.data())
def test_nearest_tap_and_conductance_are_those_of_the_definition(
    tmp_path_factory, grid, bank, data
):
    """Whatever the law or calibration and the limits, ``nearest`` is the tap within the limits
    whose conductance is nearest (the lower of two equally near), and ``conductance`` of taps
    is the law's or the interpolated calibration's, bit for bit -- with the taps' conductance
    tabulated or (a bank too large to tabulate) interpolated every time."""
    with pytest.MonkeyPatch.context() as mp:
        if not grid:
            mp.setattr(tapmap_module, "GRID_ENTRIES", 0)
        tm = _tapmap(bank, tmp_path_factory.mktemp("cal"))
    assert (tm._grid is not None) == (grid or tm.g_table is None)
    lo, hi = tm.tap_limits
    every = np.arange(lo, hi + 1)
    table = _by_definition(tm, np.tile(every, (tm.n, 1)))  # (n, taps) conductance
    table = np.broadcast_to(table, (tm.n, every.size))
    # conductances on taps, between two taps (ties), in between and beyond the limits
    k = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=tm.n, max_size=tm.n)))
    on = table[np.arange(tm.n), k - lo]
    nxt = table[np.arange(tm.n), np.minimum(k + 1, hi) - lo]
    span = table.max() - table.min()
    u = np.array(data.draw(st.lists(st.floats(-0.2, 1.2), min_size=tm.n, max_size=tm.n)))
    for g in (on, 0.5 * (on + nxt), table.min() + u * span):
        g = np.maximum(g, 1e-9)  # a conductance (> 0)
        expected = np.abs(table - g[:, None]).argmin(axis=1) + lo
        got = tm.nearest(g)
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(tm.conductance(got), _by_definition(tm, got))
        np.testing.assert_array_equal(tm.conductance(got + 0.25), _by_definition(tm, got + 0.25))


def test_nearest_refuses_a_conductance_that_is_not_finite():
    tm = TapMap(TapLaw(), 3, (0, 1023))
    with pytest.raises(ValueError, match="finite"):
        tm.nearest([1e-3, float("nan"), 1e-3])
