"""The safety envelope, checked on what the instruments actually received over their sockets --
on physlearn's VLAB bench (with and without the target nudge's relays) and on the stock-driver
bench (N6705B inputs, Keithley 2450 error currents): whatever the optimiser or the estimator
proposes, no level outside the envelope reaches an instrument and no ramp moves a level by more
than its step."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from qcodes.instrument import Instrument

from physlearn.config import parse_config
from physlearn.drivers.errors import EnvelopeViolation
from physlearn.drivers.virtual_lab.testing import bench_experiment, running_lab, write_station
from physlearn.run.start import build_system
from physlearn.system import Nudge

from .conftest import CONFIGS
from .lab_benches import STOCK, commands, level_writes

BENCH = CONFIGS / "virtual_lab_bench.yaml"
QUIET = {"dmm": {"noise": 0.0, "resolution": 0.0}, "settling_tau": 0.0}

# The envelope under test (tighter than the shipped config): role -> (channels, min, max, step)
INPUT = (range(1, 11), -1.0, 1.0, 0.3)  # V
ERROR = (range(11, 14), -1e-3, 1e-3, 4e-4)  # A
TARGET = (range(14, 17), -0.8, 0.8, 0.25)  # V
TAPS = (100, 900)
HW_BETA = 1e-4  # S, the virtual lab's nudge resistors


def envelope_config(station: Path, root: Path, relays: bool = True) -> dict[str, Any]:
    """The envelope under test; ``relays``: with the target nudge through the switch matrix,
    else current injection only."""
    raw = yaml.safe_load((CONFIGS / "virtual_lab_resistor.yaml").read_text())
    src = raw["system"]["inputs"]
    err = raw["system"]["nudge"]["error"]["sources"]
    error = {"sources": {**err, "limits": {"min": -1e-3, "max": 1e-3, "step": 4e-4}}}
    raw = bench_experiment(
        raw,
        station,
        inputs={**src, "limits": {"min": -1.0, "max": 1.0, "step": 0.3}},
        nudge={"error": error}
        if not relays
        else {
            "error": error,
            "target": {
                "sources": {
                    "channels": "src.ch{14..16}",
                    "level": "volt",
                    "unit": "V",
                    "limits": {"min": -0.8, "max": 0.8, "step": 0.25},
                    "compliance": {"parameter": "curr_limit", "value": 0.05},
                    "settings": {"function": "VOLT"},
                    "trip_status": "src.trip_status",
                },
                "switches": {"channels": "swm.ch{1..3}", "state": "closed"},
                "conductance": HW_BETA,
            },
        },
        weights={
            **raw["system"]["weights"],
            "tap_limits": list(TAPS),
            "conductance": {"min": 1e-3, "max": 8e-3, "init_low": 2e-3, "init_high": 3e-3},
        },
        equilibrium={"settle_time": 0.0},
    )
    raw["store"] = {"root": str(root)}
    raw["schedule"] = {"steps": 1, "batch_size": 4}
    raw["task"]["encoding"]["scale"] = 0.25  # the dataset fits the +-1 V input envelope
    return raw


def stock_envelope_config(station: Path, root: Path) -> dict[str, Any]:
    """The envelope under test on the stock-driver bench (inputs on the N6705Bs, error currents
    from the 2450s; no relays to nudge through)."""
    raw = yaml.safe_load(STOCK.experiment.read_text())
    sys_ = raw["system"]
    sys_["inputs"]["limits"] = {"min": -1.0, "max": 1.0, "step": 0.3}
    sys_["nudge"]["error"]["sources"]["limits"] = {"min": -1e-3, "max": 1e-3, "step": 4e-4}
    raw = bench_experiment(
        raw,
        station,
        weights={
            **sys_["weights"],
            "tap_limits": list(TAPS),
            "conductance": {"min": 1e-3, "max": 8e-3, "init_low": 2e-3, "init_high": 3e-3},
        },
        equilibrium={"settle_time": 0.0},
    )
    raw["store"] = {"root": str(root)}
    raw["schedule"] = {"steps": 1, "batch_size": 4}
    raw["task"]["encoding"]["scale"] = 0.25  # the dataset fits the +-1 V input envelope
    return raw


BENCHES = ["relays", "one source", pytest.param("stock", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=BENCHES)
def bench(request, tmp_path_factory) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("envelope")
    relays = request.param == "relays"
    lab_file = STOCK.lab if request.param == "stock" else BENCH
    with running_lab(lab_file, record=True, **QUIET) as lab:
        station = write_station(lab, tmp / "station.yaml")
        if request.param == "stock":
            raw = stock_envelope_config(station, tmp)
        else:
            raw = envelope_config(station, tmp, relays)
        system = build_system(parse_config(raw))
        try:
            with system:
                assert bool(system.switches) == relays
                yield lab, system, raw
        finally:
            Instrument.close_all()


_TAPS = re.compile(r":?POT:TAP:ALL (\S+)$")
#: the relative resolution a driver sends levels with (the stock N6705B's {:.8G}); see
#: test_station_phases for the exact bound
_SENT_RTOL = 5e-8


def check_received(lab: Any, received: list[tuple[str, str]], start: dict[str, Any]) -> int:
    """Assert every level and tap written lies in the envelope and every ramp step is within
    the role's step, starting from the levels the bench held, in whatever dialect the sources
    speak (bench channels 1-10 inputs, 11-13 error currents, 14-16 the target's sources).
    Returns the writes checked."""
    last = {("VOLT", c): Decimal(repr(float(v))) for c, v in enumerate(start["volt"], start=1)}
    last |= {("CURR", c): Decimal(repr(float(v))) for c, v in enumerate(start["curr"], start=1)}
    n = 0
    for c, kind, v, cmd in level_writes(lab, received):
        roles = [INPUT, TARGET] if kind == "VOLT" else [ERROR]
        role = next((r for r in roles if c in r[0]), None)
        assert role is not None, f"{cmd}: channel {c} is not driven in {kind} mode"
        _, lo, hi, step = role
        assert math.isfinite(v) and lo <= v <= hi, f"{cmd}: outside [{lo}, {hi}]"
        sent, before = Decimal(cmd.split()[1].rstrip(",")), last[(kind, c)]
        rounded = lab.config.stock is not None  # the VLAB drivers send repr(): exact
        slack = Decimal(_SENT_RTOL if rounded else 0) * (abs(sent) + abs(before))
        assert abs(sent - before) <= Decimal(repr(step)) + slack, f"{cmd}: jump from {before}"
        last[(kind, c)] = sent
        n += 1
    for inst, cmd in commands(received):
        m = _TAPS.match(cmd)
        if inst == "pots" and m:
            taps = [int(k) for k in m.group(1).split(",")]
            assert TAPS[0] <= min(taps) and max(taps) <= TAPS[1], f"taps outside {TAPS}"
            n += 1
    return n


finite_or_not = st.one_of(
    st.floats(min_value=-4.0, max_value=4.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 1.0 + 1e-12, -1.0 - 1e-12, 0.8, -0.8]),
)


def batch(n_cols: int, elements: Any) -> Any:
    return st.integers(1, 3).flatmap(lambda b: arrays(np.float64, (b, n_cols), elements=elements))


inside = st.floats(min_value=-1.0, max_value=1.0)  # V: the input envelope

op = st.one_of(
    st.tuples(st.just("free"), batch(10, inside)),
    st.tuples(st.just("free"), batch(10, finite_or_not)),
    st.tuples(
        st.just("error"),
        batch(10, st.floats(-1.0, 1.0)),
        st.floats(-25.0, 25.0),
        st.sampled_from([1e-4, -1e-4, 5e-5, 2e-3]),
    ),
    st.tuples(
        st.just("target"),
        batch(10, st.floats(-1.0, 1.0)),
        st.floats(-1.2, 1.2),
        st.sampled_from([HW_BETA, -HW_BETA, 2 * HW_BETA]),
    ),
    st.tuples(st.just("weights"), arrays(np.float64, (208,), elements=st.floats(1e-3, 8e-3))),
    st.tuples(st.just("weights"), arrays(np.float64, (208,), elements=st.floats(0.0, 2e-2))),
)


def apply(system: Any, operation: tuple[Any, ...]) -> None:
    kind = operation[0]
    if kind == "free":
        system.equilibrate(operation[1])
    elif kind == "error":
        x, eps, beta = operation[1:]
        system.equilibrate(x, Nudge(beta=beta, error=np.full((x.shape[0], 3), eps)))
    elif kind == "target":
        x, y, beta = operation[1:]
        system.equilibrate(x, Nudge(beta=beta, target=np.full((x.shape[0], 3), y)))
    else:
        system.set_parameters({"conductance": operation[1]})


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=st.lists(op, min_size=1, max_size=4))
def test_nothing_outside_the_envelope_reaches_an_instrument(bench, ops):
    lab, system, _ = bench
    start = lab.bench.summary()
    lab.clear_received()
    for operation in ops:
        try:
            apply(system, operation)
            event(f"{operation[0]}: accepted")
        except ValueError:
            event(f"{operation[0]}: refused")  # before anything was sent
    check_received(lab, lab.received(), start)


@settings(max_examples=20, deadline=None)
@given(
    value=st.one_of(st.floats(max_value=-1.0 - 1e-9), st.floats(min_value=1.0 + 1e-9)),
    channel=st.integers(1, 10),
)
def test_qcodes_itself_refuses_a_level_outside_the_envelope(bench, value, channel):
    lab, system, _ = bench
    lab.clear_received()
    param = system.sources["inputs"].levels[channel - 1]  # src.chNN.volt, psuN.chN.source_voltage
    with pytest.raises(ValueError):
        param.set(value)
    assert lab.received() == []


def test_a_bad_pattern_anywhere_in_a_batch_stops_the_whole_batch(bench):
    lab, system, _ = bench
    x = np.zeros((3, 10))
    x[2, 4] = 1.5  # V, outside [-1, 1]
    lab.clear_received()
    ch5 = re.escape(system.sources["inputs"].cfg.names()[4])  # src.ch05, psu2.ch1
    with pytest.raises(EnvelopeViolation, match=ch5 + ".*outside the safety envelope"):
        system.equilibrate(x)
    eps = np.full((1, 3), 20.0)  # I = -beta eps = -2 mA, outside +-1 mA
    with pytest.raises(EnvelopeViolation, match="nudge.error"):
        system.equilibrate(np.zeros((1, 10)), Nudge(beta=1e-4, error=eps))
    assert lab.received() == []


def test_the_core_hands_the_bench_a_batch_whole(bench):
    """Through the core's measure (as the estimators call it), a bad pattern anywhere in a batch
    refuses the whole batch: nothing of the batch reaches an instrument."""
    from physlearn.estimators.base import measure

    lab, system, _ = bench
    x = np.full((5, 10), 0.2)
    x[4, 0] = -1.25  # V, outside [-1, 1], in the last pattern
    lab.clear_received()
    with pytest.raises(EnvelopeViolation, match=re.escape(system.sources["inputs"].cfg.names()[0])):
        measure(system, x)
    eps = np.zeros((5, 3))
    eps[3, 1] = 20.0  # I = -beta eps = -2 mA, outside +-1 mA, in the fourth pattern
    with pytest.raises(EnvelopeViolation, match="nudge.error"):
        measure(system, np.zeros((5, 10)), Nudge(beta=1e-4, error=eps))
    assert lab.received() == []
