"""Protocols: the qcodes drivers against pyvisa-sim (canned replies) and against the virtual
lab (levels are plain parameters that qcodes ramps), the SCPI server over a raw socket, and the
physics the virtual lab puts behind its instruments. Strict replies and I/O errors against a
scripted instrument: ``test_lab_replies.py``."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    src.set_address(src.address)  # a new session, on the same (simulated) backend
    assert src.visabackend == "sim" and src.timeout() == 2.0 and not src.ch1.volt.cache.valid
    assert src.ch1.volt.get() == 0.5


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


def test_levels_are_plain_parameters_that_qcodes_ramps():
    """A level is a qcodes parameter: its validator is the source's hardware range (public
    bounds), a value outside the installed envelope is refused before anything is sent, and a
    set with a ``step`` goes out as qcodes' ramp -- exact values, each within the envelope, no
    change larger than the step, ending at the target."""
    with running_lab(BENCH, record=True) as lab:
        bare = VirtualLabSource("src_bare", lab.address("src"), visalib="@py", device_clear=False)
        assert (bare.ch01.volt.vals.min_value, bare.ch01.volt.vals.max_value) == (-10.0, 10.0)
        assert (bare.ch01.curr.vals.min_value, bare.ch01.curr.vals.max_value) == (-0.1, 0.1)
        bare.close()
        src = _lab_source(lab, "src_ramp")
        p = src.channels[0].volt
        p.set(0.0)

        def sent_after(act: Callable[[], None]) -> list[str]:
            lab.clear_received()
            try:
                act()
            finally:
                assert src.ask("*OPC?") == "1"  # every line sent before it has been received
            return [line for _, line in lab.received("src")][:-1]

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(target=st.floats(-1.2, 1.2, allow_nan=False))
        def check(target: float) -> None:
            start = p.cache.get()
            if not -1.0 <= target <= 1.0:
                with pytest.raises(ValueError):
                    sent_after(lambda: p.set(target))
                assert lab.received("src") == [("src", "*OPC?")]
                return
            lines = sent_after(lambda: p.set(target))
            sent = [float(line.removeprefix("SOUR1:VOLT ")) for line in lines]
            assert sent[-1] == target and p.cache.get(get_if_invalid=False) == target
            steps = np.abs(np.diff([start, *sent]))
            assert np.all(steps <= p.step * (1 + 1e-12)) and np.all(np.abs(sent) <= 1.0)
            assert float(src.ask("SOUR1:VOLT?")) == target

        check()


def test_lab_server_refuses_remote_addresses_without_the_flag():
    from physlearn.drivers.virtual_lab.server import LabServer

    cfg = parse_lab_config({"graph": {"type": "layered", "sizes": [2, 2, 1]}, "pots": {}})
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
