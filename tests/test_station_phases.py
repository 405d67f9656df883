"""The station system's phases, through its public system against a recording virtual lab, on
physlearn's VLAB bench and on the stock-driver bench (N6705B / 2450 / 34980A + 34465A): levels
ramp within their role's step (read off the commands the instruments received), every value of
every phase is checked before the first write, what a fault may have lost is written again,
an overload is never retried, and a reading comes no earlier than ``settle_time`` after the
instruments confirmed the levels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from qcodes.instrument import Instrument

from physlearn.config import parse_config
from physlearn.drivers.errors import EnvelopeViolation, InstrumentFault
from physlearn.drivers.station.measurement import wait
from physlearn.drivers.station.transactions import Timers
from physlearn.drivers.virtual_lab.testing import running_lab, write_station
from physlearn.run.start import build_system
from physlearn.system import Nudge

from .lab_benches import (
    BENCH_PARAMS,
    STOCK,
    VLAB,
    BenchCase,
    assert_caches_are_the_truth,
    assert_safe,
    check_ramps,
    fail_at,
    opened,
)

# the envelope of the ramp tests: tighter steps than the shipped configs, so ramps happen
VOLT = {"min": -1.5, "max": 1.5, "step": 0.3}  # V
CURR = {"min": -1e-3, "max": 1e-3, "step": 4e-4}  # A
STEPS = {"VOLT": VOLT["step"], "CURR": CURR["step"]}
LIMITS = {"VOLT": (VOLT["min"], VOLT["max"]), "CURR": (CURR["min"], CURR["max"])}


def ramp_raw(case: BenchCase, station: Path) -> dict[str, Any]:
    """The bench's experiment with the ramp tests' envelope on the inputs and error currents."""
    raw = case.raw(station)
    sys_ = raw["system"]
    sys_["inputs"]["limits"] = dict(VOLT)
    sys_["nudge"]["error"]["sources"]["limits"] = dict(CURR)
    return raw


# -- one open system per bench: properties over random phases ------------------------------------


@pytest.fixture(scope="class", params=BENCH_PARAMS)
def bench(request, tmp_path_factory) -> Iterator[tuple[BenchCase, Any, Any]]:
    case: BenchCase = request.param
    tmp = tmp_path_factory.mktemp(case.name)
    with running_lab(case.lab, record=True, **case.quiet) as lab:
        system = build_system(parse_config(ramp_raw(case, write_station(lab, tmp / "s.yaml"))))
        try:
            with system:
                yield case, lab, system
        finally:
            Instrument.close_all()


patterns = st.integers(1, 2).flatmap(
    lambda b: arrays(np.float64, (b, 10), elements=st.floats(-1.5, 1.5))
)
nudge_draw = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([1e-4, -1e-4]), st.floats(-10.0, 10.0)),  # I = -beta eps
)


def _nudges(x: np.ndarray, drawn: list[Any], rng: np.random.Generator) -> list[Nudge | None]:
    out: list[Nudge | None] = []
    for d in drawn:
        if d is None:
            out.append(None)
        else:
            beta, top = d
            out.append(Nudge(beta=beta, error=rng.uniform(-1, 1, (x.shape[0], 3)) * top))
    return out


#: a failing example on a bench is reported as found: shrinking it costs minutes of lab time
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


class TestOneSystem:
    """Each bench's system stays open across the examples (levels carry over between them)."""

    @settings(
        max_examples=20,
        deadline=None,
        phases=NO_SHRINK,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(x=patterns, drawn=st.lists(nudge_draw, min_size=1, max_size=3), seed=st.integers(0, 9))
    def test_no_level_command_moves_a_channel_by_more_than_its_step(self, bench, x, drawn, seed):
        """Whatever patterns and nudges follow each other, every level set-point the sources
        receive is inside the envelope and within the role's step of the one before (qcodes
        ramps), the levels end where they were asked, and the system's caches are the truth."""
        case, lab, system = bench
        nudges = _nudges(x, drawn, np.random.default_rng(seed))
        start = lab.bench.summary()
        lab.clear_received()
        eqs = system.equilibrate_many(x, nudges)
        check_ramps(lab, lab.received(), start, STEPS, LIMITS, rtol=case.level_rtol)
        for eq in eqs:  # every pattern was measured at its own input levels
            volts = eq.observables["node_voltages"][:, system.graph.input_nodes]
            np.testing.assert_allclose(volts, x, rtol=0, atol=1e-6)
        assert_caches_are_the_truth(system, lab, case.level_rtol)

    def test_a_ramp_across_a_decade_moves_no_level_by_more_than_its_step(self, bench):
        """The exact bound, on set-points as the instrument reads them: from 0.35188009 V to
        1.45 V by steps of 0.3 V. The stock N6705B driver sends 8 significant digits, so a
        step from 0.95188009 V crossing into the next decade arrives rounded (1.2518801 V: 10 nV
        more than 0.3 V) unless the ramp step leaves room for the driver's rounding (the
        envelope's FORMAT_MARGIN)."""
        case, lab, system = bench
        system.equilibrate(np.full((1, 10), 0.35188009))
        start = lab.bench.summary()
        lab.clear_received()
        system.equilibrate(np.full((1, 10), 1.45))
        assert check_ramps(lab, lab.received(), start, STEPS, LIMITS) >= 40  # 4 steps x 10

    @settings(
        max_examples=30,
        deadline=None,
        phases=NO_SHRINK,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        n_phases=st.integers(1, 4),
        where=st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 2)),
        bad=st.one_of(
            st.floats(min_value=1e-3 + 1e-9, max_value=1e3),
            st.floats(min_value=-1e3, max_value=-1e-3 - 1e-9),
            st.sampled_from([np.nan, np.inf, -np.inf]),
        ),
        in_inputs=st.booleans(),
    )
    def test_one_bad_value_in_any_phase_and_nothing_is_sent(
        self, bench, n_phases, where, bad, in_inputs
    ):
        """``equilibrate_many`` checks every value of every phase against the envelope before
        its first write: one current (or one input) outside it, in any phase, pattern and
        channel, refuses the whole call and no instrument receives anything."""
        _, lab, system = bench
        phase, pattern, channel = where[0] % n_phases, where[1], where[2]
        x = np.full((3, 10), 0.25)
        currents = np.full((n_phases, 3, 3), 1e-4)  # A, inside the envelope
        if in_inputs:
            x[pattern, 3 * channel] = bad * 1.5e3  # V: outside [-1.5, 1.5] too
        else:
            currents[phase, pattern, channel] = bad
        nudges = [Nudge(beta=-1.0, error=c) for c in currents]  # I = -beta eps = eps
        lab.clear_received()
        with pytest.raises(ValueError) as info:  # a non-finite nudge is refused as such
            system.equilibrate_many(x, [None, *nudges])
        if in_inputs or np.isfinite(bad):
            assert isinstance(info.value, EnvelopeViolation)
            assert ("inputs" if in_inputs else "nudge.error") in str(info.value)
        assert lab.received() == []


# -- faults: what may have been lost is written again -------------------------------------------


@pytest.mark.parametrize("lost", ["the taps", "their read-back"])
def test_a_weight_update_lost_with_its_read_back_is_written_again(tmp_path, lost):
    """The bank closes the connection on receiving a weight update's taps (never executed: it
    keeps the old taps) or their read-back query. What was sent is no evidence of what the bank
    holds: the retry after the reconnect writes the taps again -- no attempt reads back old
    taps -- and the bank ends holding the update."""
    with opened(VLAB, tmp_path) as (lab, system):
        lo, hi = system.bank.tapmap.reachable()
        n = system.bank.n
        system.set_parameters({"conductance": np.full(n, lo)})
        if lost == "the taps":
            done = fail_at(lab, "drop", lambda i, line: line.lstrip(":").startswith("POT:TAP:ALL "))
        else:
            done = fail_at(lab, "drop", lambda i, line: line.endswith("POT:TAP:ALL?"))
        g = np.full(n, hi)
        held = system.set_parameters({"conductance": g})["conductance"]
        assert done and system.timers.reconnects >= 1  # the fault did happen
        assert not [e for e in system.events if "reads back" in e]
        taps = system.bank.tapmap.nearest(g)
        assert lab.bench.summary()["taps"].tolist() == taps.tolist()
        np.testing.assert_array_equal(held, system.bank.tapmap.conductance(taps))


def _alternating(rng: np.random.Generator) -> np.ndarray:
    """Four patterns, each more than a ramp step (1 V) from the one before."""
    return rng.uniform(0.8, 1.5, (4, 10)) * np.array([[1.0], [-1.0], [1.0], [-1.0]])


# the first input level of a pattern, in each dialect, and the query that reads it back
_FIRST_LEVEL = {"vlab": ("src", "SOUR1:VOLT "), "stock": ("psu1", "SOURCE:VOLT ")}


def _lose_levels(case: BenchCase, tmp: Path, garbled: set[int]) -> None:
    """Measure four patterns a ramp step apart twice: on a quiet lab, and with the second
    pattern's first input level dropped by the source (the connection closed on receiving it,
    unexecuted) and the ``garbled`` replies (counted from the drop) of that source corrupted.
    Assert the faults happened, the two measurements are equal, no level the sources executed
    jumped, and the caches end at the truth."""
    x = _alternating(np.random.default_rng(8))
    inst, head = _FIRST_LEVEL[case.name]
    volts = {}
    for faulty in (False, True):
        with opened(case, tmp / str(faulty)) as (lab, system):
            system.equilibrate(x[::-1])  # levels to ramp from
            lab.clear_received()
            start = lab.bench.summary()
            if faulty:
                dropped = fail_at(  # the second pattern's first level
                    lab, "drop", lambda i, line: i == inst and line.strip(":").startswith(head), 2
                )
                garbled_ = fail_at(
                    lab, "garble", lambda i, line, d=dropped: i == inst and bool(d), garbled
                )
            volts[faulty] = system.equilibrate(x).observables["node_voltages"]
            received = lab.received()
            if faulty:  # the faults did happen: a drop, a reconnect, a resync that failed
                assert dropped and len(garbled_) == len(garbled) and system.timers.reconnects >= 1
                assert any("reconnect failed" in e for e in system.events), system.events
                received.remove(dropped[0])  # the source never executed it
            steps = {"VOLT": 1.0, "CURR": 5e-3}
            assert check_ramps(lab, received, start, steps, rtol=case.level_rtol) > 0
            assert_caches_are_the_truth(system, lab, case.level_rtol)
    np.testing.assert_array_equal(volts[True], volts[False])


@pytest.mark.parametrize("case", BENCH_PARAMS)
def test_levels_lost_with_their_query_are_written_again_even_if_the_resync_fails(tmp_path, case):
    """The source closes the connection on receiving the second pattern's first input level
    (never executed: it keeps the first pattern's levels, and what followed on that connection
    is lost too); after the reconnect, the resync's second reply from that source comes back
    garbled. The retry must write the phase's levels again, ramping from levels read back
    (consecutive patterns are over a ramp step apart): the batch measures what a fault-free
    one does, no level the sources execute jumps, and the caches end at the truth."""
    _lose_levels(case, tmp_path, {2})


@pytest.mark.parametrize(
    "case",
    [
        BENCH_PARAMS[0],
        pytest.param(
            STOCK,
            id="stock",
            marks=[pytest.mark.slow],
        ),
    ],
)
def test_a_garbled_reply_while_a_level_is_set_is_retried(tmp_path, case):
    """As above, and the next reply is garbled too: the retry's first level not re-read by the
    failed resync is read back by qcodes' ramp (its cache is unknown) and that reply is
    garbled. A garbled reply is retried wherever it is read: the batch still measures what a
    fault-free batch does."""
    _lose_levels(case, tmp_path, {2, 3})


# where the second pattern's reading starts, and a level written behind the system's back
_TAMPER = {
    "vlab": ("dmm", "READ?", 2, "src", "SOUR1:VOLT 0.0"),
    "stock": ("dmm34465a", "READ?", 30, "psu1", "SOURCE:VOLT 0.0, (@1)"),  # 29 nodes a pattern
}


@pytest.mark.parametrize("case", BENCH_PARAMS)
def test_a_retried_phase_reapplies_levels_that_changed_behind_its_back(tmp_path, case):
    """Two equal patterns: the second phase changes no level. Its reading is lost once (the
    meter drops the connection), after an input level changed on the source behind the
    system's back; the retry must set that level again, not trust what it wrote before: the
    batch measures what a fault-free batch measures."""
    meter, query, nth, src, tamper = _TAMPER[case.name]
    x = np.full((2, 10), 0.5)
    volts = {}
    for faulty in (False, True):
        with opened(case, tmp_path / str(faulty)) as (lab, system):
            if faulty:
                done = fail_at(
                    lab,
                    "drop",
                    lambda i, line: i == meter and line == query,
                    nth,
                    before=lambda: lab.lab.instruments[src].execute(tamper),  # not by the driver
                )
            volts[faulty] = system.equilibrate(x).observables["node_voltages"]
            assert system.timers.retries == int(faulty)
            assert not faulty or done
            assert_caches_are_the_truth(system, lab, case.level_rtol)
    np.testing.assert_allclose(volts[True], volts[False], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_a_garbled_reply_from_the_switch_matrix_is_retried(tmp_path):
    """The 34980A's status reply after one crosspoint closes during a reading comes back
    garbled: the phase is retried and the batch measures what a fault-free batch does."""
    x = _alternating(np.random.default_rng(2))[:2]
    volts = {}
    for faulty in (False, True):
        with opened(STOCK, tmp_path / str(faulty)) as (lab, system):
            if faulty:
                done = fail_at(lab, "garble", lambda i, line: i == "mux" and line == "*ESR?")
            volts[faulty] = system.equilibrate(x).observables["node_voltages"]
            assert not faulty or (done and system.timers.retries == 1)
    np.testing.assert_array_equal(volts[True], volts[False])


@pytest.mark.slow
@pytest.mark.parametrize(("lost", "nth"), [("ROUT:OPEN", 40), ("*ESR?", 39)])
def test_a_crosspoint_left_closed_by_a_fault_is_open_before_the_retry_reads(tmp_path, lost, nth):
    """The matrix drops the connection on receiving the command that opens a node's crosspoint
    after its reading (never executed), or on the status query after a node's closes:
    either way a crosspoint may stay closed. The retry must not read with two nodes on the
    meter's row (shorted through it): the batch measures what a fault-free batch does, and
    the matrix ends with no crosspoint closed."""
    x = _alternating(np.random.default_rng(3))[:2]
    volts = {}
    for faulty in (False, True):
        with opened(STOCK, tmp_path / str(faulty)) as (lab, system):
            system.equilibrate(x[::-1])
            if faulty:  # node 19's open, or (odd) node 19's close
                done = fail_at(
                    lab, "drop", lambda i, line: i == "mux" and line.startswith(lost), nth
                )
            volts[faulty] = system.equilibrate(x).observables["node_voltages"]
            assert not faulty or (done and system.timers.retries >= 1)
            assert not lab.lab.instruments["mux"].closed
    np.testing.assert_array_equal(volts[True], volts[False])


@pytest.mark.parametrize("case", BENCH_PARAMS)
@pytest.mark.parametrize("n", [1, 3])
def test_an_overload_is_a_fault_never_retried(tmp_path, case, n):
    """A node beyond the meter's range (``probes.range``) stops the batch with an error naming
    the node -- the network is not where the config says -- without a retry; the bench ends
    safe."""
    x = np.full((n, 10), 0.05)
    x[-1, 2] = 0.9  # the last pattern drives input node 2 beyond 0.5 V
    with running_lab(case.lab, **case.quiet) as lab:
        raw = case.raw(write_station(lab, tmp_path / "s.yaml"), probes={"range": 0.5})
        system = build_system(parse_config(raw))
        try:
            with system, pytest.raises(InstrumentFault, match="overload on node 2 "):
                system.equilibrate(x, None)
            assert system.timers.retries == 0
        finally:
            Instrument.close_all()
        assert_safe(lab)


# -- settling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1e-5, 1.5e-4, 3e-4, 2e-3])
def test_the_settle_wait_is_never_shorter_than_asked(seconds):
    """The bench's settle wait returns only once ``seconds`` have passed, reports the time it
    waited (no more than passed), and counts it as settling."""
    timers = Timers()
    total = 0.0
    for _ in range(20):
        t0 = time.perf_counter()
        waited = wait(seconds, timers)
        elapsed = time.perf_counter() - t0
        assert seconds <= waited <= elapsed
        total += waited
    assert timers.settle == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("case", BENCH_PARAMS)
def test_a_reading_comes_settle_time_after_the_sync_reply(tmp_path, monkeypatch, case):
    """The settling of a phase counts from the instruments' confirmation that they executed
    its levels (the reply to the trip-status query or ``*OPC?``, as the client reads it),
    never from earlier: every reading the meter takes comes at least ``settle_time`` after
    the last such reply -- free and nudged phases, both benches."""
    import pyvisa.resources

    settle = 2e-3
    cls = pyvisa.resources.MessageBasedResource
    read, write = cls.read, cls.write
    asked: dict[int, str] = {}
    events: list[tuple[float, str]] = []  # (perf_counter, "sync" | "reading")

    def remembered(self: Any, message: str, *args: Any, **kwargs: Any) -> Any:
        asked[id(self)] = message
        return write(self, message, *args, **kwargs)

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        reply = read(self, *args, **kwargs)
        q = asked.get(id(self), "").upper()
        if q.endswith("*OPC?") or q.endswith("TRIP?") or q.endswith("TRIPPED?"):
            events.append((time.perf_counter(), "sync"))
        return reply

    monkeypatch.setattr(cls, "write", remembered)
    monkeypatch.setattr(cls, "read", timed)
    meter = case.meter
    rng = np.random.default_rng(5)
    x = rng.uniform(-1.5, 1.5, (4, 10))
    with running_lab(case.lab, **case.quiet) as lab:
        inst = lab.lab.instruments[meter]
        execute = inst.execute

        def reading(line: str) -> Any:
            if line.strip().upper().startswith("READ?"):
                events.append((time.perf_counter(), "reading"))
            return execute(line)

        monkeypatch.setattr(inst, "execute", reading)
        raw = case.raw(write_station(lab, tmp_path / "s"), equilibrium={"settle_time": settle})
        system = build_system(parse_config(raw))
        try:
            with system:
                events.clear()
                system.equilibrate(x)
                system.equilibrate(x, Nudge(beta=1e-4, error=rng.uniform(-5, 5, (4, 3))))
        finally:
            Instrument.close_all()
    gaps, synced = [], None
    for when, what in events:
        if what == "sync":
            synced = when
        else:
            assert synced is not None, "a reading before any confirmation"
            gaps.append(when - synced)
    assert len(gaps) == 8 * case.reads_per_phase  # 2 x 4 phases, each confirmed, then read
    assert min(gaps) >= settle, min(gaps)
