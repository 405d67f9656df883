"""Protocols: the qcodes drivers against pyvisa-sim (canned replies), the SCPI server over a raw
socket, and the physics the virtual lab puts behind its instruments."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
from qcodes import validators as vals
from qcodes.instrument import Instrument

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.instruments.dmm import VirtualLabDMM
from physlearn.drivers.instruments.pots import VirtualLabPots
from physlearn.drivers.instruments.source import VirtualLabSource
from physlearn.drivers.instruments.switch import VirtualLabSwitch
from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.config import parse_lab_config
from physlearn.drivers.virtual_lab.lab import VirtualLab
from physlearn.drivers.virtual_lab.testing import running_lab
from physlearn.simulators.graphs.generators import layered
from physlearn.simulators.resistor.linear import LinearResistorNetwork

from .conftest import CONFIGS

SIM = "physlearn.drivers.virtual_lab:virtual_lab_sim.yaml"
BENCH = CONFIGS / "virtual_lab_bench.yaml"


@pytest.fixture(autouse=True)
def _close_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


# -- drivers against pyvisa-sim ----------------------------------------------------------------


def test_source_driver_speaks_the_documented_commands():
    src = VirtualLabSource("src", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    assert src.IDN.get()["model"] == "VLAB-SRC4"
    assert [ch.short_name for ch in src.channels] == ["ch1", "ch2", "ch3", "ch4"]
    src.ch1.volt.set(0.5)
    src.ch2.curr.set(-1.25e-3)
    src.ch2.function.set("CURR")
    src.ch3.output.set(True)
    src.ch4.curr_limit.set(0.05)
    assert src.errors() == []  # every command was understood
    src.ch1.volt.cache.invalidate()
    assert src.ch1.volt.get() == 0.5
    assert src.ch2.curr.get() == -1.25e-3
    assert src.ch2.function.get() == "CURR"
    assert src.ch3.output.get() is True and src.ch1.output.get() is False
    assert src.ch4.curr_limit.get() == 0.05
    assert src.trip_status.get() == 0
    with pytest.raises(ValueError):  # the driver's hardware range
        src.ch1.volt.set(11.0)


def test_meter_bank_and_switch_drivers():
    dmm = VirtualLabDMM("dmm", "GPIB::2::INSTR", pyvisa_sim_file=SIM)
    dmm.scan_list.set([101, 102, 103])
    assert dmm.scan_list.get() == [101, 102, 103]
    np.testing.assert_array_equal(dmm.readings.get(), [0.125, -0.5, 1.0])
    assert dmm.reading_number.get() == 42
    assert dmm.measure(101) == 0.125
    pots = VirtualLabPots("pots", "GPIB::3::INSTR", pyvisa_sim_file=SIM)
    assert (pots.count, pots.n_taps) == (4, 1024)
    pots.taps.set(np.array([1, 2, 3, 1023]))
    np.testing.assert_array_equal(pots.taps.get(), [1, 2, 3, 1023])
    pots.ch2.tap.set(7)
    assert pots.ch2.tap.get() == 7 and pots.ch1.conductance.get() == 1e-5
    with pytest.raises(ValueError):
        pots.taps.set(np.array([0, 0, 0, 1024]))
    swm = VirtualLabSwitch("swm", "GPIB::4::INSTR", pyvisa_sim_file=SIM)
    swm.ch1.closed.set(True)
    swm.ch2.closed.set(False)
    swm.open_all()
    assert swm.ch1.closed.get() is True and swm.ch2.closed.get() is False
    for inst in (dmm, pots, swm):
        assert inst.errors() == []


@pytest.mark.parametrize(
    ("getter", "said", "cmd"),
    [
        (lambda s: s.ch1.volt.get(), "1.2#~5", "SOUR1:VOLT?"),
        (lambda s: s.ch1.output.get(), "ON?", "OUTP1?"),
        (lambda s: s.ch1.function.get(), "VOLTAGE?", "SOUR1:FUNC?"),
        (lambda s: s.trip_status.get(), "%", "STAT:TRIP?"),
    ],
)
def test_a_bad_reply_names_the_instrument_and_what_it_said(getter, said, cmd):
    src = VirtualLabSource("badsrc", "GPIB::11::INSTR", pyvisa_sim_file=SIM)
    with pytest.raises(InstrumentReplyError) as info:
        getter(src)
    msg = str(info.value)
    assert msg.startswith("badsrc replied") and repr(said) in msg and repr(cmd) in msg
    assert info.value.instrument == "badsrc"


def test_a_garbled_scan_names_the_meter_and_the_whole_reply():
    dmm = VirtualLabDMM("baddmm", "GPIB::12::INSTR", pyvisa_sim_file=SIM)
    dmm.scan_list.get()
    with pytest.raises(
        InstrumentReplyError, match=r"baddmm replied '43,0.125,#\?~,1.0' to 'READ\?'"
    ):
        dmm.readings.get()


# -- the SCPI server over a raw socket ---------------------------------------------------------


class Raw:
    """A bare SCPI client: one line out, one line back."""

    def __init__(self, address: str) -> None:
        _, host, port, _ = address.split("::")
        self.sock = socket.create_connection((host, int(port)), timeout=2)
        self.buf = b""

    def write(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def query(self, line: str) -> str:
        self.write(line)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"\n")
        return out.decode()

    def close(self) -> None:
        self.sock.close()


def test_scpi_server_commands_errors_and_compound_messages():
    with running_lab(BENCH) as lab:
        src = Raw(lab.address("src"))
        try:
            assert src.query("*IDN?") == "physlearn,VLAB-SRC16,SRC0001,1.0"
            assert src.query("source1:voltage:level?") == "0.0"  # long form, any case
            src.write("SOUR1:VOLT 0.25;:SOUR2:VOLT -0.5;:OUTP1 ON")
            assert src.query(":SOUR1:VOLT?;:SOUR2:VOLT?;:OUTP1?") == "0.25;-0.5;1"
            src.write("SOUR3:VOLT 11")  # beyond the hardware range: refused, queued
            src.write("SOUR3:BOGUS 1")
            assert src.query("SOUR3:VOLT?") == "0.0"
            assert src.query("SYST:ERR?").startswith("-222,")
            assert src.query("SYST:ERR?").startswith("-113,")
            assert src.query("SYST:ERR?") == '0,"No error"'
        finally:
            src.close()


def _lab_source(lab, name: str) -> VirtualLabSource:
    src = VirtualLabSource(
        name,
        lab.address("src"),
        visalib="@py",
        terminator="\n",
        timeout=2.0,
        device_clear=False,
        max_voltage=10.0,
        max_current=0.5,
    )
    for ch in src.channels[:4]:  # an envelope as the station system installs it
        ch.volt.vals = vals.Numbers(-1.0, 1.0)
        ch.volt.step = 0.3 * (1 - 1e-9)
    src.channels[4].curr.vals = vals.Numbers(-1e-3, 1e-3)
    src.channels[4].curr.step = 4e-4
    return src


def test_bulk_levels_send_exactly_what_setting_each_parameter_would():
    """VirtualLabSource.set_levels: the same commands (values, ramps, order) as qcodes' set of
    each parameter in turn, the same caches afterwards; a refused value sends nothing. (With an
    invalid cache both read the level first, set_levels before its first write.)"""
    rng = np.random.default_rng(3)
    targets = [
        [0.9, -0.9, 0.3, 0.0, 1e-3],  # ramps of 3 steps, an exact multiple of the step
        [0.9, -0.9, 0.3, 0.0, 1e-3],  # unchanged
        [-1.0, 1.0, 0.29, 1e-12, -1e-3],
        *rng.uniform(-1, 1, (6, 5)) * [1, 1, 1, 1, 1e-3],
    ]
    with running_lab(BENCH, record=True) as lab:
        one, bulk = _lab_source(lab, "src_one"), _lab_source(lab, "src_bulk")
        levels = {s: [*(ch.volt for ch in s.channels[:4]), s.channels[4].curr] for s in (one, bulk)}
        sent = {}
        for src in (one, bulk):
            src.write("*RST")  # both start from the same levels (0)
            for p in levels[src]:
                p.get()  # the caches hold the truth, as after the station system's connect
            lab.clear_received()
            for t in targets:
                with src.deferred_writes():
                    if src is one:
                        for p, v in zip(levels[src], t, strict=True):
                            p.set(float(v))
                    else:
                        src.set_levels(levels[src], [float(v) for v in t])
                assert src.ask("*OPC?") == "1"
            sent[src.name] = lab.received("src")
        assert sent["src_one"] == sent["src_bulk"]
        assert sum(line.count("VOLT ") for _, line in sent["src_bulk"]) > 4 * len(targets)
        for p, q in zip(levels[one], levels[bulk], strict=True):
            assert p.cache.get(get_if_invalid=False) == q.cache.get(get_if_invalid=False)
        np.testing.assert_array_equal(lab.bench.volt[:4], targets[-1][:4])
        # refused before anything is sent: outside the validator, not a level, an inter-delay
        lab.clear_received()
        before = [p.cache.get(get_if_invalid=False) for p in levels[bulk]]
        with pytest.raises(ValueError):
            bulk.set_levels(levels[bulk][:2], [0.5, 1.0 + 1e-9])
        with pytest.raises(ValueError):
            bulk.set_levels([bulk.channels[0].volt, bulk.channels[0].output], [0.5, 1.0])
        with pytest.raises(ValueError):
            bulk.set_levels([bulk.channels[0].volt], [float("nan")])
        bulk.channels[1].volt.inter_delay = 0.01
        with pytest.raises(ValueError, match="inter_delay"):
            bulk.set_levels([bulk.channels[0].volt, bulk.channels[1].volt], [0.5, 0.5])
        assert lab.received() == []
        assert [p.cache.get(get_if_invalid=False) for p in levels[bulk]] == before


def test_read_scan_is_a_readings_get_and_keeps_the_caches():
    dmm = VirtualLabDMM("dmm", "GPIB::2::INSTR", pyvisa_sim_file=SIM)
    dmm.scan_list.set([101, 102, 103])
    v, n = dmm.read_scan()
    np.testing.assert_array_equal(v, [0.125, -0.5, 1.0])
    assert n == 42 and dmm.reading_number.cache.get(get_if_invalid=False) == 42
    np.testing.assert_array_equal(dmm.readings.cache.get(get_if_invalid=False), v)
    bad = VirtualLabDMM("baddmm", "GPIB::12::INSTR", pyvisa_sim_file=SIM)
    bad.scan_list.get()
    with pytest.raises(InstrumentReplyError, match=r"baddmm replied '43,0.125,#\?~,1.0'"):
        bad.read_scan()


def test_bulk_levels_follow_validator_changes_and_custom_validators():
    """set_levels' fast bounds check is the validators' own: it follows a new or an added
    validator, and any other kind of validator is asked itself."""
    with running_lab(BENCH) as lab:
        src = _lab_source(lab, "src_vals")
        p = src.channels[0].volt
        p.get()
        src.set_levels([p], [0.5])
        p.vals = vals.Numbers(-0.4, 0.4)
        with pytest.raises(ValueError, match="0.5"):
            src.set_levels([p], [0.5])
        p.add_validator(vals.Numbers(-0.2, 0.3))
        with pytest.raises(ValueError):
            src.set_levels([p], [0.35])
        src.set_levels([p], [0.25])
        p.remove_validator()
        p.vals = vals.Multiples(divisor=2)  # not a plain Numbers: validated by qcodes itself
        with pytest.raises((TypeError, ValueError)):
            src.set_levels([p], [0.5])
        p.vals = vals.Numbers(0.5, 1.0)  # the level (0.25) is now below the bounds
        p.step = 0.1
        lab.clear_received()
        with pytest.raises(ValueError, match="0.35"):  # the ramp's first value is refused
            src.set_levels([p], [0.9])
        assert lab.received() == []
        assert src.ask("SOUR1:VOLT?") == "0.25"


def test_lab_server_refuses_remote_addresses_without_the_flag():
    from physlearn.drivers.virtual_lab.server import LabServer

    cfg = parse_lab_config({"graph": {"type": "layered", "sizes": [2, 2, 1]}})
    with pytest.raises(ValueError, match="loopback"):
        LabServer(cfg, host="0.0.0.0")


# -- the physics behind the instruments ----------------------------------------------------------


def small_lab(**extra: object) -> VirtualLab:
    raw: dict[str, object] = {
        "graph": {"type": "layered", "sizes": [3, 4, 2]},
        "dmm": {"mux_channels": 9},
        "pots": {"law": {"kind": "linear", "n_taps": 256, "g_min": 1e-4, "g_max": 1e-3}},
    }
    raw.update(extra)
    return VirtualLab(parse_lab_config(raw))


def drive(lab: VirtualLab, lines: list[str]) -> list[str | None]:
    return [
        lab.instruments[inst].execute(line) for inst, line in (ln.split(" ", 1) for ln in lines)
    ]


def test_node_voltages_are_kirchhoff_and_match_the_simulator():
    lab = small_lab(leakage=1e-15)
    taps = np.arange(20) * 12 + 3
    drive(
        lab,
        [
            "pots POT:TAP:ALL " + ",".join(map(str, taps)),
            "src SOUR1:VOLT 1.0;:SOUR2:VOLT -0.5;:SOUR3:VOLT 0.25",
            "src SOUR4:FUNC CURR;:SOUR4:CURR 1e-4",  # channel 4 -> output node 7
            "src OUTP1 1;:OUTP2 1;:OUTP3 1;:OUTP4 1",
            "dmm ROUT:SCAN (@101:109)",
        ],
    )
    first, *vals = drive(lab, ["dmm READ?"])[0].split(",")  # type: ignore[union-attr]
    v = np.array(vals, dtype=float)
    g = 1e-4 + (1e-3 - 1e-4) * taps / 255
    net = LinearResistorNetwork(layered([3, 4, 2]), g, bounds=(1e-5, 1e-2))
    from physlearn.system import Nudge

    eq = net.equilibrate(
        np.array([[1.0, -0.5, 0.25]]), Nudge(beta=1.0, error=np.array([[-1e-4, 0]]))
    )
    np.testing.assert_allclose(v[7:], eq.outputs[0], rtol=1e-9)
    # KCL at every free node, with the injected current at node 7
    edges = layered([3, 4, 2]).edges
    flow = g * (v[edges[:, 0]] - v[edges[:, 1]])
    net_out = np.bincount(edges[:, 0], flow, 9) - np.bincount(edges[:, 1], flow, 9)
    net_out[7] -= 1e-4
    np.testing.assert_allclose(net_out[3:], 0, atol=1e-12)
    assert int(first) == 0


def test_settling_noise_resolution_spread_and_compliance():
    clock = [0.0]
    cfg = parse_lab_config(
        {
            "graph": {"type": "layered", "sizes": [2, 3, 1]},
            "settling_tau": 1e-3,
            "dmm": {"mux_channels": 6, "noise": 1e-3, "resolution": 1e-4},
            "pots": {"spread": 0.1},
            "seed": 5,
        }
    )
    bench = Bench(cfg, clock=lambda: clock[0])
    lab = VirtualLab.__new__(VirtualLab)
    lab.config, lab.bench = cfg, bench
    from physlearn.drivers.virtual_lab.lab import DMMInstrument, PotBank, SourceInstrument

    src = SourceInstrument("src", bench, "S")
    dmm = DMMInstrument("dmm", bench, "D")
    pots = PotBank("pots", bench, "P")
    pots.execute("POT:TAP:ALL " + ",".join(["500"] * 9))
    src.execute("SOUR1:VOLT 1;:SOUR2:VOLT 1;:OUTP1 1;:OUTP2 1")
    dmm.execute("ROUT:SCAN (@101:106)")

    def scan() -> np.ndarray:
        reply = dmm.execute("READ?")
        assert reply is not None
        return np.array(reply.split(",")[1:], dtype=float)

    early = scan()  # at the instant of the change: still near 0 V
    clock[0] = 0.02  # 20 time constants later: settled at 1 V (every source at 1 V)
    late = scan()
    assert np.all(np.abs(early[2:]) < 0.01) and np.allclose(late, 1.0, atol=5e-3)
    assert np.allclose(late / 1e-4, np.round(late / 1e-4))  # quantised to the resolution
    assert late.std() > 0  # noise
    # device spread: the isolated measurement differs from the nominal law, device by device
    g = np.array([float(str(pots.execute(f"POT{k}:MEAS:COND?"))) for k in range(1, 10)])
    nominal = float(cfg.pots.law.conductance(500))
    assert 0.02 < np.std(g / nominal) < 0.3
    # drift: the devices' conductances move with time, the meter's offset too
    g0 = bench.device_conductance(clock[0])
    clock[0] += 100.0
    assert np.all(bench.device_conductance(clock[0]) == g0)  # drift 0 in this lab
    drifting = Bench(
        parse_lab_config(
            {**cfg.model_dump(), "pots": {"drift": 1e-4}, "dmm": {"offset_drift": 1e-3}}
        ),
        clock=lambda: clock[0],
    )
    d0 = drifting.device_conductance(clock[0])
    d1 = drifting.device_conductance(clock[0] + 10.0)
    assert 1e-4 < np.std(d1 / d0 - 1) < 1e-2  # ~1e-4/s rms over 10 s
    _, r0 = drifting.scan([101])
    clock[0] += 2.0
    _, r1 = drifting.scan([101])
    assert r1[0] - r0[0] == pytest.approx(2e-3)  # unpowered node: the offset drift alone
    # compliance: a 1 uA limit trips channel 1 as soon as current flows
    src.execute("SOUR1:CURR:LIM 1e-6;:SOUR1:VOLT 0.5")
    assert src.execute("STAT:TRIP?") == "1" and src.execute("OUTP1?") == "0"


def test_lab_config_errors_name_the_field():
    from physlearn.config import ConfigError

    with pytest.raises(ConfigError, match="pots.wiring"):
        parse_lab_config(
            {"graph": {"type": "layered", "sizes": [2, 2]}, "pots": {"wiring": [0, 0, 1, 2]}}
        )
    with pytest.raises(ConfigError, match="faults.drop"):
        parse_lab_config({"graph": {"type": "layered", "sizes": [2, 2]}, "faults": {"drop": 1.5}})
