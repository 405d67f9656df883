"""The station system's hot path (one phase of one pattern) through the drivers' fast methods:
the level writer, the trip-status and scan readers, deferred writes, held interrupts. Each must
do what the qcodes parameters' own set/get do -- the same commands, the same validation, the
same strict parsing and errors, the same caches -- only cheaper."""

from __future__ import annotations

import logging
import math
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcodes import validators as vals
from qcodes.instrument import Instrument

import physlearn.drivers.instruments.base as instruments
from physlearn.config import parse_config
from physlearn.drivers.errors import (
    EnvelopeViolation,
    InstrumentFault,
    InstrumentIOError,
    InstrumentReplyError,
)
from physlearn.drivers.instruments.dmm import VirtualLabDMM
from physlearn.drivers.instruments.pots import VirtualLabPots
from physlearn.drivers.instruments.source import LevelWriter, VirtualLabSource
from physlearn.drivers.virtual_lab.testing import bench_experiment, running_lab, write_station
from physlearn.run.start import build_system
from physlearn.system import Nudge

from .conftest import CONFIGS
from .test_lab_protocol import _lab_source

SIM = "physlearn.drivers.virtual_lab:virtual_lab_sim.yaml"
BENCH = CONFIGS / "virtual_lab_bench.yaml"
QUIET = {"dmm": {"noise": 0.0, "resolution": 0.0}, "settling_tau": 0.0}


@pytest.fixture(autouse=True)
def _close_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


class Scripted:
    """A VISA handle that records what it is sent and replies ``reply(query)``."""

    def __init__(self, real: Any, reply: Callable[[str], str]) -> None:
        self.real, self.reply, self.timeout = real, reply, real.timeout
        self.sent: list[str] = []

    def write(self, message: str) -> None:
        self.sent.append(message)

    def query(self, message: str) -> str:
        self.sent.append(message)
        return self.reply(message)


@contextmanager
def scripted(inst: Any, reply: Callable[[str], str]) -> Iterator[Scripted]:
    """Swap ``inst``'s VISA session for a :class:`Scripted` one for the block."""
    real = inst.visa_handle
    handle = Scripted(real, reply)
    inst._visa_handle = handle
    try:
        yield handle
    finally:
        inst._visa_handle = real


def _error(fn: Callable[[], Any]) -> str:
    with pytest.raises(InstrumentReplyError) as info:
        fn()
    assert info.value.instrument
    return str(info.value.args[0])  # the message, without qcodes' "getting ..." context


# -- readers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", ["%", "1.5", "", "0x1", "1 2", "²"])
def test_trip_status_reader_refuses_what_the_parameter_refuses(reply):
    src = VirtualLabSource("src", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    assert src.read_trip_status() == 0
    assert src.trip_status.cache.get(get_if_invalid=False) == 0
    with scripted(src, lambda q: reply):
        via_parameter = _error(src.trip_status.get)
        via_reader = _error(src.read_trip_status)
    assert (
        via_reader == via_parameter == f"src replied {reply!r} to 'STAT:TRIP?'; expected an integer"
    )
    assert src.trip_status.cache.get(get_if_invalid=False) == 0  # not overwritten
    with scripted(src, lambda q: "5"):
        assert src.read_trip_status() == 5
    assert src.trip_status.cache.get(get_if_invalid=False) == 5


@pytest.mark.parametrize(
    "reply",
    [
        "43,0.125,#?~,1.0",  # garbled value
        "x,0.125,-0.5,1.0",  # no reading number
        "43,0.125,-0.5",  # a reading short
        "43,0.125,-0.5,1.0,2.0",  # one too many
        "43",  # no readings
        "43,0.125,,1.0",  # an empty field
    ],
)
def test_scan_readers_refuse_what_the_readings_parameter_refuses(reply):
    dmm = VirtualLabDMM("dmm", "GPIB::2::INSTR", pyvisa_sim_file=SIM)
    dmm.scan_list.set([101, 102, 103])
    good, n = dmm.read_scan_floats()
    assert (good, n) == ([0.125, -0.5, 1.0], 42)
    assert all(type(v) is float for v in good)
    with scripted(dmm, lambda q: reply):
        errors = {_error(f) for f in (dmm.readings.get, dmm.read_scan, dmm.read_scan_floats)}
    assert len(errors) == 1, errors  # the same refusal, the same message
    (msg,) = errors
    assert msg.startswith(f"dmm replied {reply!r} to 'READ?'; expected ")
    # a refused scan leaves the caches alone
    np.testing.assert_array_equal(dmm.readings.cache.get(get_if_invalid=False), good)
    assert dmm.reading_number.cache.get(get_if_invalid=False) == 42


def test_scan_reader_keeps_the_caches_as_a_get():
    dmm = VirtualLabDMM("dmm", "GPIB::2::INSTR", pyvisa_sim_file=SIM)
    dmm.scan_list.set([101, 102, 103])
    with scripted(dmm, lambda q: "7,1e-07,-2.5,9.9E37"):
        values, number = dmm.read_scan_floats()
    assert values == [1e-07, -2.5, 9.9e37] and number == 7
    cached = dmm.readings.cache.get(get_if_invalid=False)
    assert isinstance(cached, np.ndarray) and cached.dtype == np.float64
    np.testing.assert_array_equal(cached, values)
    assert dmm.reading_number.get() == 7  # no I/O: the counter of the last scan
    with scripted(dmm, lambda q: "8,0.5,0.25,-1.0"):
        arr, number = dmm.read_scan()
        assert number == 8 and arr.tolist() == [0.5, 0.25, -1.0]
        np.testing.assert_array_equal(dmm.readings.get(), [0.5, 0.25, -1.0])


@pytest.mark.parametrize(
    ("reply", "taps"),
    [("1,2,3,1023", [1, 2, 3, 1023]), (" 1 , 2,3 ,+4", [1, 2, 3, 4]), ("0,0,0,0", [0, 0, 0, 0])],
)
def test_tap_reader_parses(reply, taps):
    pots = VirtualLabPots("pots", "GPIB::3::INSTR", pyvisa_sim_file=SIM)
    with scripted(pots, lambda q: reply):
        got = pots.taps.get()
    assert got.dtype == np.int64 and got.tolist() == taps


@pytest.mark.parametrize(
    "reply", ["1,2,3", "1,2,3,4,5", "1,2,3,4.0", "1,2,,4", "1_0,2,3,4", "a,b,c,d"]
)
def test_tap_reader_refuses(reply):
    pots = VirtualLabPots("pots", "GPIB::3::INSTR", pyvisa_sim_file=SIM)
    with scripted(pots, lambda q: reply):
        msg = _error(pots.taps.get)
    assert msg == f"pots replied {reply!r} to 'POT:TAP:ALL?'; expected 4 comma-separated integers"


@given(
    taps=st.lists(st.integers(-3, 1030), min_size=3, max_size=5).map(np.array),
    cached=st.booleans(),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_tap_exchange_is_a_set_and_a_get_of_the_taps(taps, cached):
    """``write_taps_read_back`` sends what ``taps.set`` then ``taps.get`` send (the write joining
    the query inside deferred writes), refuses what the validator refuses before sending
    anything, and leaves the cache as they do; with None it only reads back."""
    pots = VirtualLabPots("pots", "GPIB::3::INSTR", pyvisa_sim_file=SIM)
    try:
        bank = [0, 0, 0, 0]

        def reply(q: str) -> str:
            for cmd in q.split(";"):
                if cmd.lstrip(":").startswith("POT:TAP:ALL "):
                    bank[:] = map(int, cmd.split(" ", 1)[1].split(","))
            return ",".join(map(str, bank))

        ok = taps.shape == (4,) and bool(np.all((taps >= 0) & (taps <= 1023)))
        sent: dict[str, list[str]] = {}
        outcome: dict[str, Any] = {}
        for how in ("parameters", "exchange"):
            bank[:] = [0, 0, 0, 0]
            pots.taps.cache.invalidate()  # the run must leave a valid cache itself
            with scripted(pots, reply) as h, pots.deferred_writes():
                try:
                    if how == "parameters":
                        pots.taps.set(taps)
                        back = pots.taps.get()
                    else:
                        back = pots.write_taps_read_back(taps)
                except ValueError as exc:
                    outcome[how] = type(exc)
                else:
                    outcome[how] = back.tolist()
            sent[how] = h.sent
        assert sent["parameters"] == sent["exchange"]
        if not ok:
            assert outcome["exchange"] is outcome["parameters"] is ValueError
            assert sent["exchange"] == []  # refused before anything was sent
            return
        assert outcome["exchange"] == outcome["parameters"] == taps.tolist()
        assert sent["exchange"] == [":POT:TAP:ALL " + ",".join(map(str, taps)) + ";:POT:TAP:ALL?"]
        cache = pots.taps.cache.get(get_if_invalid=False)
        assert pots.taps.cache.valid and cache.dtype == np.int64 and cache.tolist() == taps.tolist()
        if cached:
            with scripted(pots, reply) as h:
                assert pots.write_taps_read_back(None).tolist() == taps.tolist()
            assert h.sent == ["POT:TAP:ALL?"]
    finally:
        pots.close()


@pytest.mark.parametrize("reply", ["1,2,3", "1,2,3,4.0", "a,b,c,d"])
def test_the_tap_exchange_refuses_what_the_tap_reader_refuses(reply):
    pots = VirtualLabPots("pots", "GPIB::3::INSTR", pyvisa_sim_file=SIM)
    pots.taps.set(np.array([1, 2, 3, 4]))
    with scripted(pots, lambda q: reply):
        msg = _error(lambda: pots.write_taps_read_back(None))
    assert msg == f"pots replied {reply!r} to 'POT:TAP:ALL?'; expected 4 comma-separated integers"
    assert pots.taps.cache.get(get_if_invalid=False).tolist() == [1, 2, 3, 4]  # kept


# -- writes ------------------------------------------------------------------------------------


def test_deferred_writes_join_the_next_query_nest_and_drop_on_error():
    src = VirtualLabSource("src", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    with scripted(src, lambda q: "0") as h:
        with src.deferred_writes():
            src.write("SOUR1:VOLT 0.5")
            with src.deferred_writes():  # nested: joins the outer block
                src.write(":SOUR2:VOLT 0.25")
            assert h.sent == []
            assert src.read_trip_status() == 0
            src.write("*CLS")
        assert h.sent == [":SOUR1:VOLT 0.5;:SOUR2:VOLT 0.25;:STAT:TRIP?", "*CLS"]
        h.sent.clear()
        with pytest.raises(RuntimeError), src.deferred_writes():
            src.write("SOUR1:VOLT 0.75")
            raise RuntimeError("refused")
        assert h.sent == []  # dropped, never sent
        src.write("SOUR1:VOLT 0.125")  # outside a block: at once
        assert h.sent == ["SOUR1:VOLT 0.125"]


def test_level_writer_sends_what_setting_each_parameter_sends():
    """LevelWriter.write (every level, or a subset by index): the same commands (values, ramps,
    order) as qcodes' set of each parameter in turn, and the same caches afterwards."""
    rng = np.random.default_rng(5)
    steps: list[tuple[list[float], list[int] | None]] = [
        ([0.9, -0.9, 0.3, 0.0, 1e-3], None),  # ramps of 3 steps
        ([0.9, -0.9, 0.3, 0.0, 1e-3], None),  # unchanged: rewritten, as a set would
        ([1e-3, -1.0], [4, 0]),  # a subset, in the caller's order
        ([-1.0, 1.0, 0.29, 1e-12, -1e-3], None),
        *[(list(v), None) for v in rng.uniform(-1, 1, (5, 5)) * [1, 1, 1, 1, 1e-3]],
        ([0.0, 0.5], [3, 1]),
    ]
    with running_lab(BENCH, record=True) as lab:
        one, bulk = _lab_source(lab, "src_one"), _lab_source(lab, "src_writer")
        levels = {s: [*(ch.volt for ch in s.channels[:4]), s.channels[4].curr] for s in (one, bulk)}
        writer = bulk.level_writer(levels[bulk])
        sent = {}
        for src in (one, bulk):
            src.write("*RST")
            for p in levels[src]:
                p.get()
            lab.clear_received()
            for values, index in steps:
                with src.deferred_writes():
                    if src is one:
                        chosen = range(5) if index is None else index
                        for k, v in zip(chosen, values, strict=True):
                            levels[src][k].set(float(v))
                    else:
                        writer.refresh()
                        writer.write([float(v) for v in values], index)
                assert src.ask("*OPC?") == "1"
                cached = [p.cache.get(get_if_invalid=False) for p in levels[src]]
                assert all(type(v) is float for v in cached)
            sent[src.name] = lab.received("src")
        assert sent["src_one"] == sent["src_writer"]
        for p, q in zip(levels[one], levels[bulk], strict=True):
            assert p.cache.get(get_if_invalid=False) == q.cache.get(get_if_invalid=False)
        truth = lab.bench.summary()
        assert [p.cache.get() for p in levels[bulk][:4]] == truth["volt"][:4].tolist()
        assert levels[bulk][4].cache.get() == truth["curr"][4]


def test_level_writer_refuses_before_sending_and_follows_a_refresh():
    with running_lab(BENCH, record=True) as lab:
        src = _lab_source(lab, "src_w")
        params = [ch.volt for ch in src.channels[:3]]
        for p in params:
            p.get()
        writer = src.level_writer(params)
        lab.clear_received()
        before = [p.cache.get(get_if_invalid=False) for p in params]
        for values, index in (
            ([0.5, 0.5, 1.5], None),  # outside the validator (the envelope)
            ([0.5, math.nan, 0.5], None),
            ([0.5, 0.5], None),  # a value short
            ([0.5, 0.5], [1, 1]),  # an index twice
        ):
            with pytest.raises(ValueError), src.deferred_writes():
                writer.write(values, index)
        assert lab.received() == []
        assert [p.cache.get(get_if_invalid=False) for p in params] == before
        params[0].vals = vals.Numbers(-0.4, 0.4)  # a tighter envelope ...
        writer.refresh()  # ... read at the next refresh (the station system: every batch)
        with pytest.raises(ValueError, match="0.5"):
            writer.write([0.5], [0])
        params[2].step = 0.25  # a ramp step, read at the next refresh: 0 -> 0.5 V in two steps
        writer.refresh()
        with src.deferred_writes():
            writer.write([0.5], [2])
        assert src.ask("*OPC?") == "1"
        sent = [c for _, line in lab.received() for c in line.split(";") if c != "*OPC?"]
        assert [c.split()[-1] for c in sent] == ["0.25", "0.5"], sent
        lab.clear_received()
        params[2].scale = 2.0  # converts its values: cannot be written in bulk any more
        with pytest.raises(ValueError, match="scale"):
            writer.refresh()
        params[2].scale = None
        params[1].post_delay = 0.01  # cannot be written in bulk any more
        with pytest.raises(ValueError, match="post_delay"):
            writer.refresh()
        assert lab.received() == []
        with pytest.raises(ValueError, match="twice"):
            src.level_writer([params[0], params[0]])


@pytest.fixture
def entered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reasons ("ask", "write") of every exchange that entered qcodes'
    DelayedKeyboardInterrupt (replaced by a recorder that holds nothing)."""
    reasons: list[str] = []

    class Recording:
        def __init__(self, context: dict[str, str]) -> None:
            self.reason = context["reason"]

        def __enter__(self) -> None:
            reasons.append(self.reason)

        def __exit__(self, *exc: Any) -> None:
            pass

    monkeypatch.setattr(instruments, "DelayedKeyboardInterrupt", Recording)
    return reasons


def test_a_ctrl_c_is_held_during_an_exchange_under_the_default_handler(entered):
    """qcodes' DelayedKeyboardInterrupt wraps every exchange when Python's default SIGINT handler
    is installed (it would hold a Ctrl-C), and is skipped under another handler (a run's own,
    which it would leave alone anyway)."""
    src = VirtualLabSource("src", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    entered.clear()
    try:
        with scripted(src, lambda q: "0"):
            src.read_trip_status()
            src.write("*CLS")
            assert entered == ["ask", "write"]
            signal.signal(signal.SIGINT, lambda *a: None)
            src.read_trip_status()
            src.write("*CLS")
            assert entered == ["ask", "write"]
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_batch_holds_the_caches_back_and_ramps_from_what_it_queued():
    """Inside ``batch()`` the hot-path writers and readers leave the caches alone and a ramp
    starts from the level last queued: the same commands as without a batch; on exit (also on
    an error) every cache holds its last value."""
    values = [[0.9, -0.9, 0.3, 0.0, 1e-3], [-0.6, 0.9, 0.3, 0.1, -1e-3], [0.0, 0.0, 0.0, 0.0, 0.0]]
    with running_lab(BENCH, record=True) as lab:
        sent = []
        for name, in_batch in (("src_plain", False), ("src_batch", True)):
            src = _lab_source(lab, name)
            src.write("*RST")
            params = [*(ch.volt for ch in src.channels[:4]), src.channels[4].curr]
            for p in params:
                p.get()
            before = [p.cache.get(get_if_invalid=False) for p in params]
            writer = src.level_writer(params)
            lab.clear_received()
            with src.batch() if in_batch else src.deferred_writes():
                for row in values[:2]:
                    with src.deferred_writes():
                        writer.write(row)
                        assert src.read_trip_status() == 0
                    cached = [p.cache.get(get_if_invalid=False) for p in params]
                    assert cached == (before if in_batch else row)
                    assert src.trip_status.cache.get(get_if_invalid=False) == (
                        None if in_batch else 0
                    )
            assert [p.cache.get(get_if_invalid=False) for p in params] == values[1]
            assert src.trip_status.cache.get(get_if_invalid=False) == 0
            with pytest.raises(RuntimeError), src.batch():  # an error: the caches still follow
                writer.write(values[2])
                assert src.ask("*OPC?") == "1"
                raise RuntimeError("stop")
            assert [p.cache.get(get_if_invalid=False) for p in params] == values[2]
            sent.append(lab.received("src"))
        assert sent[0] == sent[1]  # ramps (step 0.3 V) between rows: from the queued levels


def test_a_cache_updated_inside_a_batch_wins_over_what_the_batch_holds():
    """A get (or a set) inside a batch is newer than what the batch holds for that parameter:
    the next ramp starts from it, and the batch does not overwrite it on exit."""
    with running_lab(BENCH, record=True) as lab:
        src = _lab_source(lab, "src_b")
        src.write("*RST")
        p, q = src.channels[0].volt, src.channels[1].volt
        p.get(), q.get()
        writer = src.level_writer([p, q])
        with src.batch():
            with pytest.raises(RuntimeError), src.deferred_writes():
                writer.write([0.9, 0.9])  # queued, held, then dropped: never sent
                raise RuntimeError("dropped")
            assert p.get() == 0.0  # a resync reads the truth: the batch's 0.9 is stale
            lab.clear_received()
            writer.write([0.6], [0])
            assert src.ask("*OPC?") == "1"
            (line,) = [cmd for _, cmd in lab.received("src") if "VOLT" in cmd]
            step = p.step
            ramp = [f":SOUR1:VOLT {v!r}" for v in (step, 2 * step, 0.6)]  # from 0.0, not 0.9
            assert line == ";".join(ramp)
            q.cache.set(0.25)  # someone else's (newer) value for q
        assert p.cache.get(get_if_invalid=False) == 0.6
        assert q.cache.get(get_if_invalid=False) == 0.25


@pytest.fixture
def lab_and_source() -> Iterator[tuple[Any, VirtualLabSource]]:
    """A recording virtual lab and a source with the station system's kind of envelope:
    channels 1-4 in volts (|V| <= 1, step 0.3 V), channel 5 in amperes (|I| <= 1 mA, step
    0.4 mA)."""
    with running_lab(BENCH, record=True) as lab:
        src = _lab_source(lab, "src_seq")
        yield lab, src


def _levels(src: VirtualLabSource) -> list[Any]:
    return [*(ch.volt for ch in src.channels[:4]), src.channels[4].curr]


def _reset(lab: Any, src: VirtualLabSource) -> None:
    src.write("*RST")
    for p in _levels(src):
        p.get()
    lab.clear_received()


@st.composite
def _level_phases(draw: st.DrawFn) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Phases of level writes: values within the envelope (jumps of up to 2 V: ramps), which
    levels each phase changes, the levels in any order."""
    n = draw(st.integers(1, 5))
    indices = draw(st.permutations(range(5)).map(lambda p: p[: draw(st.integers(1, 5))]))
    scale = np.array([1.0, 1.0, 1.0, 1.0, 1e-3])[indices]
    unit = st.floats(-1.0, 1.0, allow_subnormal=False)
    values = np.array(
        [[draw(unit) * s for s in scale] for _ in range(n)], dtype=np.float64
    ).reshape(n, len(indices))
    changed = np.array(
        [[draw(st.booleans()) for _ in indices] for _ in range(n)], dtype=bool
    ).reshape(n, len(indices))
    return values, list(indices), changed


@settings(
    max_examples=30,
    deadline=None,
    # one lab for every example: each starts from its reset (*RST, levels read back)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(phases=_level_phases())
def test_a_write_prepared_ahead_sends_what_the_writer_sends(lab_and_source, phases):
    """Phase after phase inside a batch, each phase's write prepared once the phase before it
    was queued (as the station system prepares the next phase while this one settles) and
    then sent: the same commands (values, ramps from the levels queued before, order) as
    LevelWriter.write of each phase's changed levels, and the same caches when the batch ends
    (the instrument's truth)."""
    lab, src = lab_and_source
    values, indices, changed = phases
    writer = src.level_writer(_levels(src))
    sent, caches = [], []
    for ahead in (False, True):
        _reset(lab, src)
        with src.batch():
            for b in range(values.shape[0]):
                cols = np.flatnonzero(changed[b])
                if not cols.size:
                    continue
                row, at = values[b, cols].tolist(), [indices[j] for j in cols]
                prepared = writer.prepare(row, at) if ahead else None
                with src.deferred_writes():
                    if prepared is not None:
                        assert writer.send(prepared)
                    else:
                        writer.write(row, at)
                    assert src.ask("*OPC?") == "1"
        sent.append(lab.received("src"))
        caches.append([p.cache.get(get_if_invalid=False) for p in _levels(src)])
    assert sent[0] == sent[1]
    assert caches[0] == caches[1]
    truth = lab.bench.summary()
    assert caches[1] == [*truth["volt"][:4].tolist(), truth["curr"][4]]


def test_a_prepared_write_refuses_before_sending_and_stands_only_while_its_premise_holds(
    lab_and_source,
):
    """prepare checks every value and ramp value and refuses what write refuses, sending
    nothing; it never asks the instrument (a level to ramp from that is not known without a
    query is refused). send queues a prepared write once, and refuses it -- queueing nothing --
    after another level write on the source or a change of a written level's cache."""
    lab, src = lab_and_source
    writer = src.level_writer(_levels(src))
    _reset(lab, src)
    for values, index in (
        ([0.5, 0.5, 1.5, 0.5, 0.0], None),  # outside the validator (the envelope)
        ([0.5, math.nan, 0.5, 0.5, 0.0], None),
        ([0.5, 0.5], None),  # a value short
        ([0.5, 0.5], [1, 1]),  # an index twice
    ):
        with pytest.raises(ValueError):
            writer.prepare(values, index)
    p, q = _levels(src)[:2]
    p.cache.invalidate()
    with pytest.raises(InstrumentReplyError, match="unknown"):
        writer.prepare([0.9], [0])  # a ramp from an unknown level: no query to learn it
    assert lab.received() == []
    p.get()
    writer.write([0.9], [0])
    assert src.ask("*OPC?") == "1"
    p.vals = vals.Numbers(-0.5, 0.5)  # a tighter envelope, read at the next refresh
    writer.refresh()
    lab.clear_received()
    with pytest.raises(ValueError, match="0.6"):  # the ramp's values are checked too
        writer.prepare([0.0], [0])
    assert lab.received() == []
    p.vals = vals.Numbers(-1.0, 1.0)
    writer.refresh()

    with src.batch():
        first = writer.prepare([0.2, 0.2], [0, 1])
        with src.deferred_writes():
            assert writer.send(first)
            assert src.ask("*OPC?") == "1"
        assert not writer.send(first)  # once
        stale = writer.prepare([0.4, 0.4], [0, 1])
        writer.write([0.3], [0])  # another level write: the ramp would start elsewhere
        assert not writer.send(stale)
        stale = writer.prepare([0.5, 0.5], [0, 1])
        q.cache.set(0.25)  # someone else's (newer) value for q
        assert not writer.send(stale)
        with src.deferred_writes():
            assert src.ask("*OPC?") == "1"
    assert p.cache.get(get_if_invalid=False) == 0.3
    assert q.cache.get(get_if_invalid=False) == 0.25
    ramp = [f":SOUR1:VOLT {0.9 - k * p.step!r}" for k in (1, 2)]  # 0.9 V down to 0.2 V
    assert [cmd for _, cmd in lab.received("src")] == [
        ";".join([*ramp, ":SOUR1:VOLT 0.2;:SOUR2:VOLT 0.2;*OPC?"]),
        ":SOUR1:VOLT 0.3",  # the other write, sent at once
        "*OPC?",
    ]


def test_after_a_lost_exchange_no_level_is_known_until_read_back(lab_and_source):
    """Levels queued with a query the source never answers (it closed the connection on
    receiving them: never executed) are no evidence of what it holds: every cache is invalid,
    what the batch held is dropped, a write prepared before is refused, a new one cannot be
    prepared, and after the reconnect a write ramps from the level read back."""
    lab, src = lab_and_source
    src.timeout(0.25)
    writer = src.level_writer(_levels(src))
    _reset(lab, src)
    p = _levels(src)[0]
    armed = [True]

    def drop(name: str, kind: str) -> bool:
        hit = armed[0] and name == "src" and kind == "drop"
        armed[0] = armed[0] and not hit
        return hit

    lab.faults.draw = drop  # type: ignore[method-assign]
    with src.batch():
        with src.deferred_writes(), pytest.raises(InstrumentIOError):
            writer.write([0.9, 0.9], [0, 1])
            before = writer.prepare([0.1], [0])  # a ramp down from the 0.9 V queued
            src.ask("*OPC?")
        assert not any(q.cache.valid for q in _levels(src))
        assert src._held_value(p) is None
        assert not writer.send(before)
        with pytest.raises(InstrumentReplyError, match="unknown"):
            writer.prepare([0.1], [0])
    src.reconnect()
    lab.clear_received()
    writer.write([0.9], [0])
    assert src.ask("*OPC?") == "1"
    asked, sent, opc = (cmd for _, cmd in lab.received("src"))
    assert (asked, opc) == ("SOUR1:VOLT?", "*OPC?")
    ramp = [float(cmd.removeprefix(":SOUR1:VOLT ")) for cmd in sent.split(";")]
    assert ramp[0] == p.step and ramp[-1] == 0.9  # from 0 V, where the source still is


def test_a_batch_looks_the_interrupt_policy_up_once(entered):
    """Inside a batch, whether an exchange holds a Ctrl-C is what it was on entry; after it, the
    lookup is per exchange again."""
    src = VirtualLabSource("src", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    entered.clear()
    try:
        with scripted(src, lambda q: "0"):
            with src.batch():
                signal.signal(signal.SIGINT, lambda *a: None)
                src.read_trip_status()
                with src.batch():  # nested: joins the outer one
                    src.write("*CLS")
            assert entered == ["ask", "write"]
            src.read_trip_status()
            assert entered == ["ask", "write"]
    finally:
        signal.signal(signal.SIGINT, old)


def test_exchanges_are_logged_at_debug_level_as_looked_up_on_entering_a_batch(caplog):
    """Writes, queries and replies go to the VISA log at debug level, as qcodes logs them; a
    batch entered without debug logging logs none of its exchanges (the level is looked up on
    entry); after it, the lookup is per exchange again."""
    src = VirtualLabSource("src", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    log = src.visa_log.logger  # qcodes' VISA logger
    prefix = f"[{src.name}(VirtualLabSource)] "

    def logged() -> list[str]:
        return [r.getMessage().removeprefix(prefix) for r in caplog.records if r.name == log.name]

    caplog.set_level(logging.DEBUG, logger=log.name)  # restored after the test
    with scripted(src, lambda q: "0"):
        src.read_trip_status()
        with src.batch():
            src.write("*CLS")
        assert logged() == ["Querying: STAT:TRIP?", "Response: 0", "Writing: *CLS"]
        caplog.clear()
        log.setLevel(logging.INFO)
        with src.batch():
            log.setLevel(logging.DEBUG)
            src.read_trip_status()
        assert logged() == []
        src.read_trip_status()
        assert logged() == ["Querying: STAT:TRIP?", "Response: 0"]


# -- the station system ------------------------------------------------------------------------


def _experiment(station: Path, **system: Any) -> dict[str, Any]:
    raw = yaml.safe_load((CONFIGS / "virtual_lab_resistor.yaml").read_text())
    # a short settling: the next phase's levels are prepared meanwhile
    system.setdefault("equilibrium", {"settle_time": 1e-4})
    return bench_experiment(raw, station, **system)


def _phases(rng: np.random.Generator) -> Iterator[tuple[np.ndarray, Nudge | None]]:
    for _ in range(3):
        x = rng.uniform(-1.5, 1.5, (4, 10))  # ramps (step 1 V) between patterns
        eps = rng.uniform(-5, 5, (4, 3))
        yield x, None
        yield x, Nudge(beta=1e-4, error=eps)
        yield x, Nudge(beta=-1e-4, error=eps)
    yield np.zeros((2, 10)), None  # every current released, inputs to 0


def _run_phases(tmp: Path, per_parameter: bool) -> tuple[list[tuple[str, str]], list[np.ndarray]]:
    """The phases of :func:`_phases` through the station system: its bulk writers, or (
    ``per_parameter``) none, every level set by its qcodes parameter's own set."""
    tmp.mkdir()
    with running_lab(BENCH, record=True, **QUIET) as lab:
        system: Any = build_system(parse_config(_experiment(write_station(lab, tmp / "s.yaml"))))
        outputs = []
        with system:
            # the common bench: inputs and error currents on one source share its one writer
            (writer,) = system._writers
            assert all(src.bulk is writer for src in system._sources.values())
            if per_parameter:
                for src in system._sources.values():
                    src.bulk = None
                system._writers = []
            lab.clear_received()
            for x, nudge in _phases(np.random.default_rng(11)):
                eq = system.equilibrate(x, nudge)
                outputs.append(eq.observables["node_voltages"])
                _assert_caches_hold_what_was_written(system, lab)
            sent = lab.received("src")
        Instrument.close_all()
    return sent, outputs


def _assert_caches_hold_what_was_written(system: Any, lab: Any) -> None:
    truth = lab.bench.summary()
    src = system._instruments["src"]
    for role, unit in (("inputs", "volt"), ("nudge.error", "curr")):
        s = system._sources[role]
        cached = [p.cache.get(get_if_invalid=False) for p in s.levels]
        assert cached == s.last, role  # the skip memory and the caches agree
        chans = [int(p.instrument.short_name[2:]) - 1 for p in s.levels]
        assert cached == truth[unit][chans].tolist(), role  # and both are the truth
    assert src.trip_status.cache.get(get_if_invalid=False) == 0


def test_a_phase_writes_its_changed_levels_in_one_compound_message(tmp_path):
    """A phase's levels -- the error nudge released, the inputs, the error nudge applied --
    travel in that order, unchanged ones skipped, in one compound message with the trip query."""
    eps = [1.0, -2.0, 0.5]
    currents = [-1e-4 * e for e in eps]  # the error nudge's currents (A): -beta eps

    def cmds(volts: list[float] | None = None, amps: list[float] | None = None) -> str:
        out = [f":SOUR{11 + k}:CURR {a!r}" for k, a in enumerate(amps or [])]
        out += [f":SOUR{1 + k}:VOLT {v!r}" for k, v in enumerate(volts or [])]
        return ";".join([*out, ":STAT:TRIP?"])

    with running_lab(BENCH, record=True, **QUIET) as lab:
        system: Any = build_system(
            parse_config(_experiment(write_station(lab, tmp_path / "s.yaml")))
        )
        with system:
            lab.clear_received()
            x = np.full((1, 10), 0.25)
            x2 = x.copy()
            x2[0, 3] = -0.5
            system.equilibrate(x, None)
            system.equilibrate(x, Nudge(beta=1e-4, error=np.array([eps])))
            system.equilibrate(x2, None)
            system.equilibrate(x2, None)  # nothing changes: nothing written, no sync
            sent = [line for _, line in lab.received("src")]
            _assert_caches_hold_what_was_written(system, lab)
        Instrument.close_all()
    released = cmds(amps=[0.0] * 3)[: -len(";:STAT:TRIP?")]
    assert sent == [
        cmds(volts=[0.25] * 10),
        ";".join(f":SOUR{11 + k}:CURR {a!r}" for k, a in enumerate(currents)) + ";:STAT:TRIP?",
        released + ";:SOUR4:VOLT -0.5;:STAT:TRIP?",
    ]


def test_the_bulk_writer_sends_what_the_parameters_send(tmp_path, monkeypatch):
    """Phases with ramps (step 1 V) between patterns and nudges on and off: the shared bulk
    writer -- through writes prepared while the phase before settled, or (a batch's first
    phase) before the batch starts, unless a nudge is to be released first -- sends the same
    commands in the same order as qcodes' set of each changed level in turn, measures the
    same, and leaves every level's cache at what the instrument holds after every batch."""
    accepted: list[bool] = []
    send = LevelWriter.send

    def counted(self: Any, prepared: Any) -> bool:
        accepted.append(send(self, prepared))
        return accepted[-1]

    monkeypatch.setattr(LevelWriter, "send", counted)
    bulk, bulk_out = _run_phases(tmp_path / "bulk", per_parameter=False)
    # batches of 3 x (4 + 4 + 4) + 2 phases: all prepared but the first of a free batch after
    # a nudged one (3 of them: the currents are released first), and the last batch's second
    # pattern (zeros again) changes no level: nothing to send
    assert accepted == [True] * (3 * 12 + 2 - 3 - 1)
    each, each_out = _run_phases(tmp_path / "each", per_parameter=True)
    assert [line for _, line in bulk] == [line for _, line in each]
    assert any(";" in line and "STAT:TRIP?" in line for _, line in bulk)  # compound writes
    for a, b in zip(bulk_out, each_out, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_weight_update_sends_what_the_parameters_send_and_checks_the_read_back(
    tmp_path, monkeypatch
):
    """``set_parameters`` through the bank's tap exchange sends what it sends through the taps
    parameter's set and get (the write joining the read-back's message; only the read-back when
    the bank holds the taps already), leaves the same cache, and a tap that does not take (the
    bank reads back another one) fails the update with a message naming the device."""
    rng = np.random.default_rng(3)
    sent: dict[bool, list[str]] = {}
    with running_lab(BENCH, record=True, **QUIET) as lab:
        system: Any = build_system(
            parse_config(_experiment(write_station(lab, tmp_path / "s.yaml")))
        )
        with system:
            n = system.get_parameters()["conductance"].size
            lo, hi = system.tapmap.reachable()
            updates = [rng.uniform(lo, hi, n) for _ in range(2)]
            fast = system._taps_exchange
            assert fast is not None  # the bench's bank offers it
            for use_fast in (True, False):
                system._taps_exchange = fast if use_fast else None
                system.set_parameters({"conductance": np.full(n, lo)})
                lab.clear_received()
                held = [system.set_parameters({"conductance": g}) for g in updates]
                held.append(system.set_parameters({"conductance": updates[-1]}))  # unchanged
                sent[use_fast] = [line for _, line in lab.received("pots")]
                cache = system._taps.cache.get(get_if_invalid=False)
                assert system._taps.cache.valid
                assert cache.tolist() == system.tapmap.nearest(updates[-1]).tolist()
                assert cache.tolist() == lab.bench.summary()["taps"].tolist()
                assert [h["conductance"].tolist() for h in held] == [
                    system.tapmap.conductance(system.tapmap.nearest(g)).tolist()
                    for g in (*updates, updates[-1])
                ]
            assert sent[True] == sent[False]
            assert len(sent[True]) == 3 and sent[True][-1] == "POT:TAP:ALL?"
            assert all(m.startswith(":POT:TAP:ALL ") for m in sent[True][:2])

            system._taps_exchange = fast
            pots = lab.lab.instruments["pots"]
            execute = pots.execute

            def slipping(line: str) -> str | None:  # device 2 stays one tap off
                reply = execute(line)
                if reply is None or not line.endswith("POT:TAP:ALL?"):
                    return reply
                parts = reply.split(",")
                parts[1] = str(int(parts[1]) + 1)
                return ",".join(parts)

            monkeypatch.setattr(pots, "execute", slipping)
            with pytest.raises(InstrumentFault, match=r"wrote tap \d+ on device 2, reads back"):
                system.set_parameters({"conductance": updates[0]})
        Instrument.close_all()


@pytest.mark.parametrize("fast", [True, False], ids=["tap exchange", "parameters"])
def test_a_weight_update_lost_with_its_read_back_is_written_again(tmp_path, fast):
    """The bank closes the connection on receiving a weight update's message (the taps and
    their read-back query: never executed, the bank keeps the old taps). What was queued is no
    evidence of what the bank holds: the retry after the reconnect writes the taps again (it
    does not skip them as already held, then read back the old taps and fail an attempt)."""
    with running_lab(BENCH, record=True, **QUIET) as lab:
        station = write_station(lab, tmp_path / "s.yaml", timeout=0.25)
        system: Any = build_system(parse_config(_experiment(station)))
        with system:
            if not fast:
                system._taps_exchange = None
            lo, hi = system.tapmap.reachable()
            n = system.get_parameters()["conductance"].size
            system.set_parameters({"conductance": np.full(n, lo)})
            lost: list[str] = []

            def draw(name: str, kind: str) -> bool:
                if name == "pots" and kind == "drop" and not lost:
                    line = lab.received("pots")[-1][1]
                    if line.startswith(":POT:TAP:ALL ") and line.endswith("POT:TAP:ALL?"):
                        lost.append(line)
                        return True
                return False

            lab.faults.draw = draw  # type: ignore[method-assign]
            g = np.full(n, hi)
            held = system.set_parameters({"conductance": g})["conductance"]
            assert lost and system.timers.reconnects >= 1  # the fault did happen
            # the retry after the reconnect wrote the taps again: no attempt read back old taps
            assert not [e for e in system.events if "reads back" in e]
            taps = system.tapmap.nearest(g)
            assert lab.bench.summary()["taps"].tolist() == taps.tolist()
            np.testing.assert_array_equal(held, system.tapmap.conductance(taps))
        Instrument.close_all()


@pytest.mark.parametrize("fault", [InstrumentReplyError, InstrumentIOError])
@pytest.mark.parametrize("where", ["scan", "sync"])
def test_a_fault_inside_a_prepared_batch_leaves_the_caches_at_the_truth(
    tmp_path, monkeypatch, fault, where
):
    """An exchange fails inside batches whose levels were prepared at once (ramps between
    patterns): the scan after the levels were applied, or the synchronisation (the trip query
    that carries the phase's levels: they are never sent), in the middle and at the end of a
    batch. The phase is redone after a resync (and, for a lost link, a reconnect) writing its
    levels itself (what was prepared for it no longer stands), the phases after it are prepared
    again, and after every batch the caches, the skip memory and the instrument agree -- the
    next ramp starts from the truth."""
    calls = [0]
    if where == "sync":
        cls, name = VirtualLabSource, "read_trip_status"
    else:  # a garbled scan is found when its reply is parsed (while the next phase settles)
        name = "parse_scan" if fault is InstrumentReplyError else "query_scan"
        cls = VirtualLabDMM
    read = getattr(cls, name)

    def flaky(self: Any, *args: Any) -> Any:
        calls[0] += 1
        # the 3rd phase of the first (free) batch, the last of the +beta batch (every failed
        # attempt is a call too), the 2nd phase of the second round's +beta batch
        if calls[0] in (3, 9, 19):
            raise fault("injected fault", self.name)
        return read(self, *args)

    monkeypatch.setattr(cls, name, flaky)
    with running_lab(BENCH, record=True, **QUIET) as lab:
        system: Any = build_system(
            parse_config(_experiment(write_station(lab, tmp_path / "s.yaml")))
        )
        with system:
            for x, nudge in _phases(np.random.default_rng(3)):
                system.equilibrate(x, nudge)
                _assert_caches_hold_what_was_written(system, lab)
            assert system.timers.retries == 3
        Instrument.close_all()


def test_a_retried_phase_reapplies_levels_that_changed_behind_its_back(tmp_path, monkeypatch):
    """Two equal patterns: the second phase's prepared write changes no level. Its scan fails
    once, after an input level changed on the instrument behind the system's back (the resync
    of the retry reads it): the retry must write that level again, not trust what was prepared
    against the old skip memory -- the batch measures what a fault-free batch measures."""
    read = VirtualLabDMM.query_scan
    x = np.full((2, 10), 0.5)

    def measure(tamper: bool) -> np.ndarray:
        calls = [0]

        def flaky(self: Any) -> Any:
            calls[0] += 1
            if tamper and calls[0] == 2:
                system._instruments["src"].write("SOUR1:VOLT 0.0")  # not through the caches
                raise InstrumentIOError("injected fault", self.name)
            return read(self)

        monkeypatch.setattr(VirtualLabDMM, "query_scan", flaky)
        with running_lab(BENCH, **QUIET) as lab:
            system: Any = build_system(
                parse_config(_experiment(write_station(lab, tmp_path / f"s{tamper}.yaml")))
            )
            with system:
                volts = system.equilibrate(x).observables["node_voltages"]
                assert system.timers.retries == int(tamper)
                _assert_caches_hold_what_was_written(system, lab)
            Instrument.close_all()
        return np.asarray(volts)

    clean, retried = measure(False), measure(True)
    np.testing.assert_allclose(retried, clean, rtol=0, atol=1e-12)


def _ramp_steps(received: list[tuple[str, str]], start: dict[str, Any], config: Any) -> int:
    """Assert that no level command of the source moves a channel by more than its role's
    ramp step, from the levels the bench held at ``start``; returns the commands checked."""
    steps = {"VOLT": config.inputs.limits.step, "CURR": config.nudge.error.sources.limits.step}
    last = {("VOLT", c): float(v) for c, v in enumerate(start["volt"], start=1)}
    last |= {("CURR", c): float(v) for c, v in enumerate(start["curr"], start=1)}
    n = 0
    for inst, line in received:
        for cmd in line.split(";") if inst == "src" else []:
            m = re.fullmatch(r":?SOUR(\d+):(VOLT|CURR) (\S+)", cmd.strip())
            if m:
                key, v = (m.group(2), int(m.group(1))), float(m.group(3))
                assert abs(v - last[key]) <= steps[key[0]] + 1e-12, f"{cmd}: jump from {last[key]}"
                last[key] = v
                n += 1
    return n


@pytest.mark.parametrize("settle", [0.0, 1e-4], ids=["no-settling", "prepared-ahead"])
def test_levels_lost_with_their_query_are_written_again_even_if_the_resync_fails(tmp_path, settle):
    """The source closes the connection on receiving the compound message of a phase's levels
    and trip query (never executed: the instrument keeps the previous pattern's levels); after
    the reconnect, the resync's second level query comes back garbled. What the system had
    queued is no evidence of what the instrument holds: the retry must write the phase's levels
    again, ramping from levels read back (consecutive patterns are over a ramp step apart) --
    the batch measures what a fault-free one does, and no level the source executes jumps."""
    rng = np.random.default_rng(8)
    x = rng.uniform(0.8, 1.5, (4, 10)) * np.array([[1.0], [-1.0], [1.0], [-1.0]])
    eq = {"settle_time": settle}

    def measure(faulty: bool) -> np.ndarray:
        with running_lab(BENCH, record=True, **QUIET) as lab:
            station = write_station(lab, tmp_path / f"s{faulty}.yaml", timeout=0.25)
            system: Any = build_system(parse_config(_experiment(station, equilibrium=eq)))
            with system:
                system.equilibrate(x[::-1])  # levels to ramp from
                lost: list[str] = []
                replies = [0]

                def draw(name: str, kind: str) -> bool:
                    if name != "src":
                        return False
                    if kind == "drop" and not lost:
                        line = lab.received("src")[-1][1]
                        if "VOLT " in line and line.endswith(":STAT:TRIP?"):
                            replies[0] += 1
                            if replies[0] == 2:  # the second pattern's
                                lost.append(line)
                                replies[0] = 0
                                return True
                    if kind == "garble" and lost:
                        replies[0] += 1
                        return replies[0] == 2
                    return False

                if faulty:
                    lab.faults.draw = draw  # type: ignore[method-assign]
                lab.clear_received()
                start = lab.bench.summary()
                volts = np.asarray(system.equilibrate(x).observables["node_voltages"])
                received = lab.received()
                if faulty:  # the faults did happen: a drop, a reconnect, 2+ replies after it
                    assert lost and replies[0] >= 2 and system.timers.reconnects >= 1
                    received.remove(("src", lost[0]))  # the source never executed it
                assert _ramp_steps(received, start, system.config) > 0
                _assert_caches_hold_what_was_written(system, lab)
            Instrument.close_all()
        return volts

    np.testing.assert_array_equal(measure(True), measure(False))


def _batch_volts(tmp: Path, x: np.ndarray, nudge: Nudge | None = None, **system: Any) -> Any:
    """The node voltages of one batch on a fresh quiet lab (and the system's retry count)."""
    with running_lab(BENCH, **QUIET) as lab:
        sys_: Any = build_system(parse_config(_experiment(write_station(lab, tmp), **system)))
        with sys_:
            sys_.equilibrate(x, None)  # the levels of a first batch to ramp from
            volts = sys_.equilibrate(x, nudge).observables["node_voltages"]
            retries = sys_.timers.retries
            _assert_caches_hold_what_was_written(sys_, lab)
        Instrument.close_all()
    return np.asarray(volts), retries


@pytest.mark.parametrize("bad", [0, 2, 3, 4], ids=["first", "middle", "penultimate", "last"])
def test_a_scan_found_garbled_while_the_next_phase_settles_is_measured_again(
    tmp_path, monkeypatch, bad
):
    """A scan's reply is parsed and checked while the next phase settles (the last one's at the
    end of the batch). One found garbled there -- the first, a middle one, the one before the
    last (found while the last phase settles, when the batch's result is assembled early),
    the last of an error-nudged batch of 5 -- is measured again (its levels written again, a
    resync first) and so is the phase that had started meanwhile: the batch measures exactly
    what a fault-free batch measures, with one retry."""
    rng = np.random.default_rng(4)
    x = rng.uniform(-1.5, 1.5, (5, 10))
    nudge = Nudge(beta=1e-4, error=rng.uniform(-5, 5, (5, 3)))
    clean, retries = _batch_volts(tmp_path / "clean.yaml", x, nudge)
    assert retries == 0
    parse = VirtualLabDMM.parse_scan
    calls = [0]

    def garbled(self: Any, reply: str) -> Any:
        calls[0] += 1
        if calls[0] == 5 + 1 + bad:  # the first batch's 5 scans, then the bad one
            reply = reply[: len(reply) // 2] + "#garbled"
        return parse(self, reply)

    monkeypatch.setattr(VirtualLabDMM, "parse_scan", garbled)
    volts, retries = _batch_volts(tmp_path / "bad.yaml", x, nudge)
    assert retries == 1
    np.testing.assert_array_equal(volts, clean)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_a_batch_result_is_what_its_scans_say_assembled_early_or_not(tmp_path, monkeypatch, batch):
    """While each phase of a batch settles, the scan before it goes into the result, and while
    the last one settles the rows before it are computed (and the held caches updated): with
    or without that (no settling), the batch reports the same scans, and its outputs,
    conjugates 0.5 (V_i - V_j)^2 and energy are those of its scans -- for a batch of one, two,
    five, free and nudged."""
    rng = np.random.default_rng(6)
    x = rng.uniform(-1.5, 1.5, (batch, 10))
    nudge = Nudge(beta=1e-4, error=rng.uniform(-5, 5, (batch, 3)))
    from physlearn.drivers.station.system import StationSystem

    derive = StationSystem._derive_rows
    filled: list[tuple[int, int]] = []  # (first row, end) of every computation of rows

    def counted(self: Any, out: Any, stop: int) -> None:
        filled.append((out.derived, stop))
        derive(self, out, stop)

    monkeypatch.setattr(StationSystem, "_derive_rows", counted)
    results = {}
    for settle in (0.0, 1e-4):
        with running_lab(BENCH, **QUIET) as lab:
            station = write_station(lab, tmp_path / f"s{settle}.yaml")
            system: Any = build_system(
                parse_config(_experiment(station, equilibrium={"settle_time": settle}))
            )
            with system:
                system.equilibrate(x[::-1])  # levels to ramp from
                filled.clear()
                results[settle] = [system.equilibrate(x), system.equilibrate(x, nudge)]
                # computed at the end only, or (settling, 2+ phases) early but the last row
                ends = (
                    [(0, batch)]
                    if settle == 0 or batch == 1
                    else [(0, batch - 1), (batch - 1, batch)]
                )
                assert filled == 2 * ends
                i, j = system.edges[:, 0], system.edges[:, 1]
                out = np.asarray(system._out_idx)
                held = system.get_parameters()["conductance"]
                _assert_caches_hold_what_was_written(system, lab)
            Instrument.close_all()
    for plain, early in zip(results[0.0], results[1e-4], strict=True):
        for eq in (plain, early):
            v = eq.observables["node_voltages"]
            assert v.shape == (batch, 29)
            np.testing.assert_array_equal(eq.outputs, v[:, out])
            np.testing.assert_array_equal(
                eq.conjugates["conductance"], 0.5 * (v[:, i] - v[:, j]) ** 2
            )
            np.testing.assert_allclose(eq.energy, eq.conjugates["conductance"] @ held, rtol=1e-12)
        np.testing.assert_array_equal(
            early.observables["node_voltages"], plain.observables["node_voltages"]
        )
        # row by row, the same numbers whichever rows were computed together
        np.testing.assert_array_equal(early.energy, plain.energy)


@pytest.mark.slow
@pytest.mark.parametrize("settle", [0.0, 1e-4])
def test_the_nudged_phases_in_one_sweep_measure_what_one_call_each_measures(
    tmp_path, monkeypatch, settle
):
    """``equilibrate_many`` of EP's nudged phases (+beta, -beta: one kind) measures them in one
    sweep: the lab receives exactly the messages of one ``equilibrate`` call per phase, and
    each phase's result is what its own call returns (a quiet lab measures deterministically),
    its settling time its own patterns' waits. Phases of different kinds go one call each."""
    rng = np.random.default_rng(8)
    x = rng.uniform(-1.5, 1.5, (5, 10))
    eps = rng.uniform(-5, 5, (5, 3))
    phases = [Nudge(beta=1e-4, error=eps), Nudge(beta=-1e-4, error=eps)]
    from physlearn.drivers.station.system import StationSystem

    wait = StationSystem._wait
    waits: list[float] = []  # every settling wait of a pattern, in order

    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = wait(self, *args, **kwargs)
        waits.append(out[0])
        return out

    monkeypatch.setattr(StationSystem, "_wait", recorded)
    runs: dict[str, Any] = {}
    for how in ("calls", "sweep", "mixed calls", "mixed"):
        with running_lab(BENCH, record=True, **QUIET) as lab:
            station = write_station(lab, tmp_path / f"{how}.yaml")
            raw = _experiment(station, equilibrium={"settle_time": settle})
            system: Any = build_system(parse_config(raw))
            with system:
                system.equilibrate(x[::-1])  # levels to ramp from
                nudges = [None, *phases] if how.startswith("mixed") else phases
                lab.clear_received()
                waits.clear()
                if how.endswith("calls"):
                    eqs = [system.equilibrate(x, n) for n in nudges]
                else:
                    eqs = system.equilibrate_many(x, nudges)
                runs[how] = (lab.received(), eqs, list(waits))
                _assert_caches_hold_what_was_written(system, lab)
            Instrument.close_all()
    for one, many in (("calls", "sweep"), ("mixed calls", "mixed")):
        (sent_one, eqs_one, _), (sent_many, eqs_many, waited) = runs[one], runs[many]
        assert sent_many == sent_one
        assert len(eqs_many) == len(eqs_one)
        for k, (a, b) in enumerate(zip(eqs_many, eqs_one, strict=True)):
            np.testing.assert_array_equal(a.outputs, b.outputs)
            np.testing.assert_array_equal(a.conjugates["conductance"], b.conjugates["conductance"])
            np.testing.assert_array_equal(a.energy, b.energy)
            np.testing.assert_array_equal(
                a.observables["node_voltages"], b.observables["node_voltages"]
            )
            np.testing.assert_array_equal(a.iterations, b.iterations)
            np.testing.assert_array_equal(a.converged, b.converged)
            assert a.outputs.shape == (5, 3) and a.settle_time >= 5 * settle
            # its own five patterns' waits, not the sweep's
            assert a.settle_time == sum(waited[5 * k : 5 * k + 5]) if settle else not waited
    # the two phases are told apart: the error nudge's currents flip sign
    plus, minus = runs["sweep"][1]
    assert not np.array_equal(plus.outputs, minus.outputs)


def test_a_sweep_checks_every_phase_against_the_envelope_before_the_first_write(tmp_path):
    """One value of the second nudged phase outside the envelope refuses the whole sweep:
    nothing is written, not even the first phase's levels."""
    rng = np.random.default_rng(9)
    x = rng.uniform(-1.5, 1.5, (3, 10))
    eps = rng.uniform(-5, 5, (3, 3))
    bad = eps.copy()
    bad[2, 1] = 1e6  # a current far outside nudge.error's envelope
    with running_lab(BENCH, record=True, **QUIET) as lab:
        system: Any = build_system(parse_config(_experiment(write_station(lab, tmp_path / "s"))))
        with system:
            system.equilibrate(x)
            lab.clear_received()
            with pytest.raises(EnvelopeViolation, match="nudge.error"):
                system.equilibrate_many(
                    x, [Nudge(beta=1e-4, error=eps), Nudge(beta=1e-4, error=bad)]
                )
            assert lab.received() == []
        Instrument.close_all()


@pytest.mark.parametrize("n", [1, 3])
def test_an_overload_found_while_the_next_phase_settles_stops_the_batch(tmp_path, n):
    """A node beyond the meter's range (``probes.range``) is a fault, never retried: found when
    the scan is checked -- while the next phase settles, or at the end of the batch -- it stops
    the batch with an error naming the node."""
    x = np.full((n, 10), 0.05)
    x[-1, 2] = 0.9  # the last pattern drives input node 2 beyond 0.5 V
    with running_lab(BENCH, **QUIET) as lab:
        system: Any = build_system(
            parse_config(
                _experiment(write_station(lab, tmp_path / "s.yaml"), probes={"range": 0.5})
            )
        )
        with system:
            with pytest.raises(InstrumentFault, match="overload on node 2 "):
                system.equilibrate(x, None)
            assert system.timers.retries == 0
        Instrument.close_all()


def test_a_driver_with_set_levels_only_gets_an_adapter():
    """A driver offering ``set_levels`` but no ``level_writer`` is written through it (every
    call reads the validators afresh: nothing to refresh)."""
    from physlearn.drivers.station.system import _bulk_writer

    calls: list[tuple[list[str], list[float]]] = []

    class Legacy:
        def set_levels(self, params: list[str], values: list[float]) -> None:
            calls.append((list(params), list(values)))

    writer = _bulk_writer(Legacy(), ["a", "b", "c"])
    assert writer is not None
    writer.refresh()
    writer.write([1.0, 2.0, 3.0])
    writer.write([5.0, 4.0], [2, 0])
    assert calls == [(["a", "b", "c"], [1.0, 2.0, 3.0]), (["c", "a"], [5.0, 4.0])]
    assert _bulk_writer(object(), ["a"]) is None


@pytest.mark.parametrize("seconds", [0.0, 1e-5, 1.5e-4, 3e-4, 2e-3])
def test_the_settling_wait_is_never_shorter_than_asked(seconds):
    """The bench's settle wait (a sleep, then polling the clock for its last stretch) returns
    only once ``seconds`` have passed, and reports the time it waited."""
    from physlearn.drivers.station.system import wait_at_least

    for _ in range(20):
        t0 = time.perf_counter()
        waited = wait_at_least(seconds)
        elapsed = time.perf_counter() - t0
        assert seconds <= waited <= elapsed
    # counted from an earlier moment (the instrument's confirmation): the time since then
    for ago in (0.0, seconds / 2, 2 * seconds + 1e-4):
        since = time.perf_counter() - ago
        waited = wait_at_least(seconds, since)
        assert seconds <= waited <= time.perf_counter() - since


def test_work_inside_the_settling_wait_is_settling_until_the_deadline_only():
    """StationSystem._wait runs its idle work (the next phase's preparation) inside the wait:
    the wait still lasts ``seconds`` from ``since`` -- not longer when the work fits -- and the
    settling timer counts the wait, but not the part of the work that overran the deadline (the
    system's own time, as the benchmark counts it)."""
    from types import SimpleNamespace

    from physlearn.drivers.station.system import StationSystem, Timers

    fake: Any = SimpleNamespace(timers=Timers())
    ended: list[float] = []

    def work(seconds: float) -> Callable[[], str]:
        def run() -> str:
            t = time.perf_counter()
            while time.perf_counter() - t < seconds:
                pass
            ended.append(time.perf_counter())
            return "prepared"

        return run

    since = time.perf_counter()
    waited, out = StationSystem._wait(fake, 3e-3, since, work(1e-3))
    end = time.perf_counter()
    assert out == "prepared"
    assert 3e-3 <= waited <= end - since
    if ended[-1] - since < 2.9e-3:  # the work fitted (1 ms; unless the machine stalled it)
        assert fake.timers.settle == waited  # all of it is settling
    else:  # a stall pushed the work past the deadline: that part is not settling
        overrun = ended[-1] - since - 3e-3
        assert fake.timers.settle == pytest.approx(waited - max(overrun, 0.0), abs=5e-5)

    fake.timers.settle = 0.0
    since = time.perf_counter()
    waited, out = StationSystem._wait(fake, 1e-3, since, work(4e-3))
    assert out == "prepared" and waited >= 4e-3
    assert (
        1e-3 <= fake.timers.settle < 3e-3
    )  # the 3 ms overrun is not settling (>= 4 ms if it were)

    # work done before the wait, since ``since`` (reading the confirmation), counts the same
    fake.timers.settle = 0.0
    since = time.perf_counter()
    work(4e-3)()
    waited, out = StationSystem._wait(fake, 1e-3, since)
    assert out is None and waited >= 4e-3
    assert 1e-3 <= fake.timers.settle < 3e-3


def test_a_scan_comes_settle_time_after_its_levels_were_applied(tmp_path, monkeypatch):
    """The settling of a phase counts from the arrival of the instruments' confirmation (the
    reply to the query sent with the levels), never from earlier: on the lab's own clock, every
    scan of a batch is taken at least ``settle_time`` after the source executed that phase's
    levels -- prepared ahead or not, nudged or not."""
    settle = 2e-3
    done: list[tuple[str, float]] = []  # (what, when executed), on perf_counter's clock
    with running_lab(BENCH, **QUIET) as lab:
        for name in ("src", "dmm"):
            inst = lab.lab.instruments[name]
            run = inst.execute

            def execute(line: str, _run: Any = run, _name: str = name) -> Any:
                # conservative: a scan from when its command starts, levels from when theirs
                # has ended
                if _name == "dmm" and "READ?" in line:
                    done.append(("scan", time.perf_counter()))
                reply = _run(line)
                if _name == "src" and ("VOLT " in line or "CURR " in line):
                    done.append(("levels", time.perf_counter()))
                return reply

            monkeypatch.setattr(inst, "execute", execute)
        station = write_station(lab, tmp_path / "s.yaml")
        system: Any = build_system(
            parse_config(_experiment(station, equilibrium={"settle_time": settle}))
        )
        rng = np.random.default_rng(5)
        x = rng.uniform(-1.5, 1.5, (4, 10))
        with system:
            done.clear()
            system.equilibrate(x)
            system.equilibrate(x, Nudge(beta=1e-4, error=rng.uniform(-5, 5, (4, 3))))
        Instrument.close_all()
    gaps = []
    applied = None
    for what, when in done:
        if what == "levels":
            applied = when
        elif applied is not None:
            gaps.append(when - applied)
            applied = None
    assert len(gaps) == 8  # every phase wrote levels, then scanned
    assert min(gaps) >= settle, gaps
