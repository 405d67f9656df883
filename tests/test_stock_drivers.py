"""The stock qcodes drivers (Keithley2450, KeysightN6705B, Keysight34980A, Keysight34465A),
unmodified, against the virtual lab's dialects over TCP (pyvisa-py SOCKET): identification,
every parameter physlearn uses set and read back, out-of-range values refused with the SCPI
error the instrument queues, and the bench physics seen through the matrix and the DMM."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from physlearn.config import ConfigError
from physlearn.drivers.virtual_lab.server import LabServer
from physlearn.drivers.virtual_lab.testing import lab_config

CONFIG = "configs/virtual_lab_stock_bench.yaml"
KW: dict[str, Any] = {"visalib": "@py", "timeout": 3}


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, Any]]:
    """The example stock bench served on ephemeral ports, one driver per kind."""
    from qcodes.instrument_drivers.Keithley import Keithley2450
    from qcodes.instrument_drivers.Keysight import (
        Keysight34465A,
        Keysight34980A,
        KeysightN6705B,  # fmt: skip
    )

    server = LabServer(lab_config(CONFIG)).start()
    insts: dict[str, Any] = {}
    try:
        for name in ("psu1", "psu2", "psu3"):
            insts[name] = KeysightN6705B(f"t_{name}", server.address(name), **KW)
        insts["smu"] = Keithley2450("t_smu1", server.address("smu1"), **KW)
        insts["mux"] = Keysight34980A("t_mux", server.address("mux"), **KW)
        insts["dmm"] = Keysight34465A("t_dmm", server.address("dmm34465a"), **KW)
        insts["server"] = server
        yield insts
    finally:
        for inst in insts.values():
            if inst is not server:
                inst.close()
        server.stop()


def _inputs(b: dict[str, Any], volts: list[float]) -> None:
    """Input k (node k) at volts[k] through the three N6705Bs."""
    chans = [b["psu1"].ch1, b["psu1"].ch2, b["psu1"].ch3, b["psu1"].ch4, b["psu2"].ch1,
             b["psu2"].ch2, b["psu2"].ch3, b["psu2"].ch4, b["psu3"].ch1, b["psu3"].ch2]  # fmt: skip
    for ch, v in zip(chans, volts, strict=True):
        ch.source_voltage(v)
        ch.enable("on")
    # writes are not acknowledged: one query per supply returns after its writes were executed
    for name in ("psu1", "psu2", "psu3"):
        b[name].ask("*OPC?")


def _read_node(b: dict[str, Any], node: int) -> float:
    card = b["mux"].module[1]
    card.connect(1, node + 1)
    try:
        return float(b["dmm"].volt())
    finally:
        card.disconnect(1, node + 1)


@pytest.mark.slow
def test_idn_of_every_driver(bench: dict[str, Any]) -> None:
    assert bench["psu1"].IDN()["model"] == "N6705B"
    assert bench["psu1"].IDN()["vendor"] == "Agilent Technologies"
    assert bench["smu"].IDN()["model"] == "2450"
    assert bench["mux"].IDN()["model"] == "34980A"
    assert bench["dmm"].IDN()["model"] == "34465A"
    assert bench["dmm"].has_DIG and 0.001 in bench["dmm"].NPLC_list
    assert list(bench["mux"].module) == [1]  # slots 2..8 empty


def test_n6705b_parameters_and_errors(bench: dict[str, Any]) -> None:
    ch = bench["psu3"].ch4  # an empty module slot of psu3 refuses levels
    psu = bench["psu2"]
    psu.ch3.source_voltage(1.2345678)
    psu.ch3.source_current(0.25)
    psu.ch3.enable("on")
    assert psu.ch3.source_voltage() == pytest.approx(1.2345678)
    assert psu.ch3.source_current() == pytest.approx(0.25)
    assert psu.ch3.enable() == "on"
    assert psu.ch3.voltage() == pytest.approx(1.2345678, abs=1e-12)  # node 6 is held
    psu.ch3.source_voltage(25.0)  # beyond the 20 V module range
    assert psu.ask("SYST:ERR?").startswith("-222,")
    assert psu.ch3.source_voltage() == pytest.approx(1.2345678)
    psu.ch3.source_voltage(-1.5)  # four-quadrant N6784A modules (min_voltage -20 V)
    assert psu.ch3.source_voltage() == pytest.approx(-1.5)
    psu.ch3.source_voltage(-25.0)
    assert psu.ask("SYST:ERR?").startswith("-222,")
    assert psu.ch3.source_voltage() == pytest.approx(-1.5)
    psu.ch3.source_voltage(1.2345678)
    psu.ch3.voltage_limit(5.0)  # the driver's malformed channel list @(3)
    assert psu.ask("SYST:ERR?").startswith("-104,")
    ch.source_voltage(1.0)
    assert bench["psu3"].ask("SYST:ERR?").startswith("-221,")
    assert psu.ask("SYST:ERR?") == '0,"No error"'
    psu.ch3.enable("off")
    assert psu.ch3.enable() == "off" and psu.ch3.voltage() == 0.0


def test_2450_parameters_and_errors(bench: dict[str, Any]) -> None:
    k = bench["smu"]
    k.source_function("current")
    k.source.auto_range(False)
    k.source.range(1e-4)
    assert k.source.range() == pytest.approx(1e-4)
    assert k.source.auto_range() is False
    k.source.limit(5.0)
    assert k.source.limit() == pytest.approx(5.0)
    k.source.current(0.0)
    assert k.source.current() == 0.0
    k.output_enabled(True)
    assert k.output_enabled() is True
    k.sense_function("voltage")
    assert k.sense_function() == "voltage"
    k.sense.nplc(0.5)
    assert float(k.sense.nplc()) == pytest.approx(0.5)
    k.sense.auto_zero_enabled(False)
    assert k.sense.auto_zero_enabled() is False
    k.sense.range(20)
    assert k.sense.range() == pytest.approx(20)
    assert k.source.limit_tripped() is False
    assert int(k.line_frequency()) == 50
    k.source.current(2e-4)  # beyond 105 % of the fixed 100 uA range
    k.source.limit(500.0)  # beyond the 210 V VLIM
    k.sense.nplc(0.005)  # the driver allows 0.001, the instrument 0.01..10
    errs = [k.ask(":SYST:ERR?") for _ in range(4)]
    assert [e.split(",")[0] for e in errs] == ["-222", "-222", "-222", "0"]
    assert k.source.current() == 0.0 and k.source.limit() == pytest.approx(5.0)
    assert k.ask("*ESR?") == "16"  # EXE bit after execution errors, then cleared
    assert k.ask("*ESR?") == "0"
    k.output_enabled(False)


def test_34980a_relays_and_errors(bench: dict[str, Any]) -> None:
    mux = bench["mux"]
    card = mux.module[1]
    mux.disconnect_all()
    card.connect(1, 3)
    card.connect_paths([(1, 5), (8, 64)])
    assert card.are_closed([(1, 3), (1, 5), (8, 64), (2, 3)]) == [True, True, True, False]
    assert card.is_closed(1, 3) and card.is_open(2, 3)
    card.disconnect(1, 3)
    assert card.are_open([(1, 3), (1, 5)]) == [True, False]
    mux.disconnect_all(1)
    assert card.are_closed([(1, 5), (8, 64)]) == [False, False]
    card.protection_mode("FIX")
    assert card.protection_mode() == "FIX"
    with pytest.warns(UserWarning, match="STB"):
        mux.write("ROUT:CLOSe (@1165)")  # column 65 does not exist
    assert mux.get_error().startswith("-222,")
    assert mux.ask("SYST:CTYP? 2") == "Agilent Technologies,0,0,0"


def test_34465a_parameters_and_errors(bench: dict[str, Any]) -> None:
    d = bench["dmm"]
    d.sense_function("DC Voltage")
    d.NPLC(1)
    assert d.NPLC() == 1.0
    d.range(10)
    assert d.range() == 10.0 and d.autorange() == "OFF"
    d.autorange("ON")
    assert d.autorange() == "ON"
    d.range(10)
    d.autozero("OFF")
    assert d.autozero() == "OFF"
    d.resolution(3e-5)  # factor 3e-6 x range 10 -> NPLC 0.02
    assert d.NPLC() == 0.02 and d.resolution() == pytest.approx(3e-5)
    d.aperture_time(0.001)
    assert d.aperture_mode() == "ON" and d.aperture_time() == pytest.approx(0.001)
    d.NPLC(1)
    assert d.aperture_mode() == "OFF"
    d.trigger.count(3)
    d.trigger.source("BUS")
    d.trigger.delay(0.001)
    d.sample.count(2)
    d.sample.source("TIM")
    d.sample.timer(0.01)
    assert (d.trigger.count(), d.trigger.source(), d.trigger.delay()) == (3, "BUS", 0.001)
    assert (d.sample.count(), d.sample.source(), d.sample.timer()) == (2, "TIM", 0.01)
    d.display.enabled(False)
    d.display.text("physlearn")
    assert d.display.enabled() is False and d.display.text() == "physlearn"
    d.write("SENSe:VOLT:NPLC 1000")
    d.write("SENSe:VOLTage:DC:RANGe 2000")
    assert [d.error()[0] for _ in range(3)] == [-222, -222, 0]
    d.write("READ?")  # READ? with a BUS trigger: trigger deadlock, no reply
    assert d.error()[0] == -214
    d.trigger.count(1)
    d.trigger.source("IMM")
    d.sample.count(1)
    d.sample.source("IMM")
    d.display.enabled(True)


def test_dmm_through_matrix_reads_bench_nodes(bench: dict[str, Any]) -> None:
    """Known inputs: every node read through row 1 equals the bench's node voltage."""
    rng = np.random.default_rng(3)
    _inputs(bench, list(rng.uniform(-0, 2, 10)))
    bench["dmm"].NPLC(1)
    bench["dmm"].autozero("OFF")
    bench["dmm"].range(10)
    server = bench["server"]
    for node in (0, 9, 10, 17, 25, 27):
        with server.bench.lock:
            want = float(server.bench.voltages()[node])
        assert _read_node(bench, node) == pytest.approx(want, abs=3e-5)  # rms 3 uV
    # nothing on row 1: an open input near 0 V
    assert abs(float(bench["dmm"].volt())) < 3e-5


def _independent(server: LabServer, node: int, current: float) -> np.ndarray:
    """Node voltages from a dense Laplacian solve (inputs held, ``current`` into ``node``)."""
    b = server.bench
    with b.lock:
        g, e, n = b.edge_conductance(), b.edges, b.n_nodes
        held = {int(b.src_node[c]): float(b.volt[c]) for c in range(10) if b.output[c]}
    lap = np.zeros((n, n))
    for (i, j), gij in zip(e, g, strict=True):
        lap[[i, j], [i, j]] += gij
        lap[i, j] -= gij
        lap[j, i] -= gij
    lap += server.config.leakage * np.eye(n)
    free = [k for k in range(n) if k not in held]
    rhs = -lap[np.ix_(free, list(held))] @ np.array(list(held.values()))
    rhs[free.index(node)] += current
    v = np.zeros(n)
    v[list(held)] = list(held.values())
    v[free] = np.linalg.solve(lap[np.ix_(free, free)], rhs)
    return v


def test_2450_current_injection_moves_nodes(bench: dict[str, Any]) -> None:
    """A 2450 injecting 20 uA into output node 26 moves the nodes as the network says."""
    _inputs(bench, [0.5] * 5 + [1.5] * 5)
    k, server = bench["smu"], bench["server"]
    k.source_function("current")
    k.source.limit(10.0)
    k.source.current(0.0)
    k.output_enabled(True)
    k.ask("*OPC?")  # the writes above executed before other instruments read the nodes
    try:
        before = [_read_node(bench, n) for n in (12, 26)]
        k.source.current(2e-5)
        k.ask("*OPC?")
        after = [_read_node(bench, n) for n in (12, 26)]
        want0, want1 = _independent(server, 26, 0.0), _independent(server, 26, 2e-5)
        assert before == pytest.approx([want0[12], want0[26]], abs=3e-5)
        assert after == pytest.approx([want1[12], want1[26]], abs=3e-5)
        assert after[1] - before[1] > 1e-3  # the injection is visible
        k.sense_function("voltage")
        assert k.sense.voltage() == pytest.approx(want1[26], abs=1e-3)
    finally:
        k.source.current(0.0)
        k.output_enabled(False)


def test_bus_triggers_fetch_one_reading_per_node(bench: dict[str, Any]) -> None:
    d, card, server = bench["dmm"], bench["mux"].module[1], bench["server"]
    _inputs(bench, [0.1 * k for k in range(10)])
    d.trigger.source("BUS")
    d.trigger.count(3)
    d.sample.count(1)
    d.init_measurement()
    for node in (2, 5, 7):
        card.connect(1, node + 1)
        d.trigger.force()
        card.disconnect(1, node + 1)
    got = d.fetch()
    d.trigger.source("IMM")
    d.trigger.count(1)
    with server.bench.lock:
        want = server.bench.voltages()[[2, 5, 7]]
    assert got == pytest.approx(want, abs=3e-5)


def test_two_nodes_on_the_bus_are_shorted(bench: dict[str, Any]) -> None:
    """Two columns on row 1 short the nodes: the bus reads between them, not either."""
    _inputs(bench, [0.0] * 5 + [2.0] * 5)
    card, server = bench["mux"].module[1], bench["server"]
    with server.bench.lock:
        v = server.bench.voltages()
    a, b = 0, 17  # input 0 held at 0 V, hidden node 17 near 1 V
    card.connect_paths([(1, a + 1), (1, b + 1)])
    try:
        got = float(bench["dmm"].volt())
    finally:
        card.disconnect_paths([(1, a + 1), (1, b + 1)])
    lo, hi = sorted((v[a], v[b]))
    assert hi - lo > 0.01 and lo + 1e-4 < got < hi - 1e-4


def test_datasheet_timing_delays_the_observing_reply_only() -> None:
    """READ? at 10 PLC with autozero waits 0.4 s (50 Hz); another instrument answers meanwhile."""
    from qcodes.instrument_drivers.Keysight import Keysight34465A, KeysightN6705B

    cfg = lab_config(CONFIG, stock={**lab_config(CONFIG).model_dump()["stock"],
                                    "timing": {"mode": "datasheet"}})  # fmt: skip
    with LabServer(cfg) as server:
        d = Keysight34465A("t_dmm_timed", server.address("dmm34465a"), **KW)
        p = KeysightN6705B("t_psu_timed", server.address("psu1"), **KW)
        try:
            d.NPLC(10)
            d.autozero("ON")
            t0 = time.monotonic()
            reader = threading.Thread(target=d.volt)
            reader.start()
            time.sleep(0.05)
            t1 = time.monotonic()
            p.ch1.source_voltage()
            other = time.monotonic() - t1
            reader.join()
            slow = time.monotonic() - t0
        finally:
            d.close()
            p.close()
    assert slow >= 0.4 and other < 0.2


@pytest.mark.parametrize(
    ("stock", "match"),
    [
        ({"k2450": [{"name": "a", "channel": 1}, {"name": "b", "channel": 1}]}, "already used"),
        ({"k2450": [{"name": "a", "channel": 14}]}, "outside 1..13"),
        ({"k34465a": [{"name": "d", "matrix": "nope"}]}, "not a k34980a"),
        ({"k34980a": [{"name": "m", "columns": {3: 65}}]}, "column 65"),
    ],
)
def test_stock_config_refuses_bad_wiring(stock: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        lab_config(CONFIG, stock=stock)


def test_two_voltage_sources_on_one_node_are_refused() -> None:
    """A 2450 (bench channel 11) rewired to node 0 beside psu1's module 1: whichever output is
    switched on second is refused with -221 and stays off, through either dialect."""
    from qcodes.instrument_drivers.Keithley import Keithley2450
    from qcodes.instrument_drivers.Keysight import KeysightN6705B

    wiring = [*range(10), 0, 27, 28]  # channel 11 (smu1) on node 0, as channel 1 (psu1 ch1)
    raw = lab_config(CONFIG).model_dump(mode="json")
    raw["source"]["wiring"] = wiring
    with LabServer(lab_config(raw)) as server:
        p = KeysightN6705B("t_psu_clash", server.address("psu1"), **KW)
        k = Keithley2450("t_smu_clash", server.address("smu1"), **KW)
        try:
            k.source_function("voltage")
            p.ch1.enable("on")
            k.output_enabled(True)
            assert k.ask(":SYST:ERR?").split(",")[0] == "-221"
            assert k.output_enabled() is False
            p.ch1.enable("off")
            k.output_enabled(True)
            p.ch1.enable("on")
            assert p.ask("SYST:ERR?").split(",")[0] == "-221"
            assert p.ch1.enable() == "off" and k.output_enabled() is True
        finally:
            p.close()
            k.close()
