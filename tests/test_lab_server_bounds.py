"""The virtual lab server's resources are bounded (issue 19, item 8).

Every test talks to a real :class:`LabServer` on 127.0.0.1 (ephemeral ports) over real sockets:
channel lists are checked before they are expanded, bad input queues exactly one SCPI error and
never drops the connection, the error queue follows SCPI-99 21.8 (-350 "Queue overflow"), and
connections are bounded in number (per instrument) and in idle time, each enforcement logged.
"""

from __future__ import annotations

import logging
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.drivers import cli as lab_cli
from physlearn.drivers.virtual_lab import server as scpi_server
from physlearn.drivers.virtual_lab.server import LabServer
from physlearn.drivers.virtual_lab.testing import lab_config

from .conftest import CONFIGS, ROOT

BENCH = CONFIGS / "virtual_lab_bench.yaml"
#: a hang guard, not a performance bound: every reply here takes milliseconds
PATIENCE = 2.0
LOGGER = "physlearn.drivers.virtual_lab.server"


class Client:
    """A bare SCPI client over a real socket: a line out, a line back (within PATIENCE)."""

    def __init__(self, server: LabServer, name: str) -> None:
        self.sock = socket.create_connection((server.host, server.ports[name]), timeout=PATIENCE)
        self.buf = b""

    def write(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\n")

    def query(self, line: str) -> str:
        self.write(line)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server closed the connection after {line!r}")
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"\n")
        return out.decode("ascii")

    def errors(self) -> list[str]:
        """Read the error queue until it is empty (0,"No error" not included)."""
        out = []
        for _ in range(64):
            e = self.query("SYST:ERR?")
            if e == '0,"No error"':
                return out
            out.append(e)
        raise AssertionError(f"the error queue never empties: {out[-3:]}")

    def closed_by_server(self) -> bool:
        """True if the server closes the connection within PATIENCE (EOF or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@contextmanager
def serving(**bounds: Any) -> Iterator[LabServer]:
    """A lab on ephemeral ports; ``bounds`` are LabServer's, other keywords lab-config sections."""
    kw = {k: bounds.pop(k) for k in ("max_connections", "idle_timeout", "max_line") if k in bounds}
    server = LabServer(lab_config(BENCH, **bounds), **kw).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def client(server: LabServer, name: str) -> Iterator[Client]:
    c = Client(server, name)
    try:
        yield c
    finally:
        c.close()


def codes(errors: list[str]) -> list[int]:
    return [int(e.split(",", 1)[0]) for e in errors]


def wait_until(predicate: Any, what: str) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < PATIENCE, what
        time.sleep(0.01)


# -- channel lists: checked before expanded -------------------------------------------------------


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@pytest.mark.parametrize(
    ("name", "command", "code"),
    [
        ("dmm", "ROUT:SCAN (@101:30000000)", -222),  # the 30 bytes: +1.1 GB before
        ("dmm", "MEAS:VOLT? (@30000000:101)", -222),
        ("swm", "ROUT:CLOS (@1:30000000)", -222),
        ("dmm", "ROUT:SCAN (@101:140,101:140)", -223),  # valid channels, more than the card has
    ],
)
def test_a_channel_range_is_checked_before_it_is_expanded(name, command, code):
    with serving() as server, client(server, name) as inst, client(server, "src") as src:
        before_scan = inst.query("ROUT:SCAN?") if name == "dmm" else None
        rss0 = max_rss_mib()
        inst.write(command)
        assert codes(inst.errors()) == [code]
        # the server process (this one) did not allocate the list: peak RSS grew by < 64 MiB
        assert max_rss_mib() - rss0 < 64
        assert src.query("*IDN?").startswith("physlearn,VLAB-SRC")  # other instruments answer
        if before_scan is not None:
            assert inst.query("ROUT:SCAN?") == before_scan  # refused: not executed
        assert server.bench.summary()["closed"].tolist() == [False] * 3


@pytest.mark.parametrize(
    ("name", "command", "code"),
    [
        ("swm", "ROUT:OPEN (@1:2:3)", -104),  # the issue's: dropped the connection before
        ("swm", "ROUT:CLOS (@1,,2)", -104),
        ("swm", "ROUT:CLOS (@1:)", -104),
        ("swm", "ROUT:CLOS (@a)", -104),
        ("swm", "ROUT:CLOS 1,2", -104),
        ("swm", "ROUT:CLOS (@1)(@2)", -104),
        ("swm", "ROUT:CLOS", -109),
        ("swm", "ROUT:CLOS (@4)", -222),
        ("swm", "ROUT:CLOS (@0:2)", -222),
        ("swm", "ROUT:CLOS (@" + "9" * 5000 + ")", -222),  # beyond int()'s 4300 digits
        ("src", "SOUR" + "9" * 5000 + ":VOLT 1", -114),
        ("dmm", "ROUT:SCAN (@1:2:3)", -104),
        ("dmm", "ROUT:SCAN", -109),
        ("dmm", "MEAS:VOLT? (@101:2:3)", -104),
    ],
)
def test_a_malformed_command_queues_one_error_and_keeps_the_connection(name, command, code):
    with serving() as server, client(server, name) as inst:
        idn = inst.query("*IDN?")
        inst.write(command)
        assert codes(inst.errors()) == [code]
        assert inst.query("*IDN?") == idn
        assert server.bench.summary()["closed"].tolist() == [False] * 3


def test_an_overlong_line_is_discarded_with_one_error_and_the_connection_kept():
    with serving(max_line=4096) as server, client(server, "pots") as pots:
        idn = pots.query("*IDN?")
        pots.write("POT1:TAP 5;" * 1000)  # 11 000 bytes, not executed
        assert codes(pots.errors()) == [-363]
        assert pots.query("POT1:TAP?") == "0"
        assert pots.query("*IDN?") == idn


# a channel-list element that is well formed, and the pieces a malformed one is made of
_NUM = st.integers(0, 10**12).map(str)
_ITEM = st.one_of(_NUM, st.tuples(_NUM, _NUM).map(":".join))
_JUNK = st.sampled_from(["", ",", ":", "::", "@", "(", ")", "a", "-1", "1.5", " ", "1:2:3", "#"])


@st.composite
def malformed_channel_lists(draw: st.DrawFn) -> str:
    """A channel list that no instrument accepts: broken syntax, or channels it does not have
    (the switch has relays 1..3)."""
    items = draw(st.lists(_ITEM, min_size=1, max_size=6))
    kind = draw(st.sampled_from(["junk", "range", "unbracketed", "unclosed"]))
    if kind == "junk":
        items.insert(draw(st.integers(0, len(items))), draw(_JUNK.filter(lambda j: j != " ")))
        items = [i for i in items if i != ""] or ["a"]
        if all(re.fullmatch(r"[0-9]+(:[0-9]+)?", i) for i in items):
            items.append("1:2:3")
    elif kind == "range":
        items.append(str(draw(st.integers(4, 10**12))))
    body = ",".join(items)
    if kind == "unbracketed":
        return body
    if kind == "unclosed":
        return "(@" + body
    return "(@" + body + ")"


@pytest.mark.slow
def test_fuzzed_bad_channel_lists_queue_exactly_one_error_each():
    with serving() as server, client(server, "swm") as swm:
        idn = swm.query("*IDN?")

        @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(header=st.sampled_from(["ROUT:CLOS", "ROUT:OPEN", "ROUTE:CLOSE"]),
               channels=malformed_channel_lists())  # fmt: skip
        def check(header: str, channels: str) -> None:
            swm.write(f"{header} {channels}")
            assert codes(swm.errors()) in ([-104], [-222], [-223])
            assert swm.query("*IDN?") == idn
            assert swm.query("ROUT:CLOS? (@1:3)") == "0,0,0"

        check()


_LINE = st.text(
    alphabet=st.characters(
        min_codepoint=1, max_codepoint=127, blacklist_characters="\n;?"
    ),  # no query: no reply to wait for; no ';': one command per line
    max_size=120,
)


@pytest.mark.slow
def test_fuzzed_command_lines_never_drop_the_connection():
    with serving() as server:
        clients = {name: Client(server, name) for name in server.ports}
        try:
            idns = {name: c.query("*IDN?") for name, c in clients.items()}

            @settings(max_examples=50, deadline=None)
            @given(name=st.sampled_from(sorted(clients)), line=_LINE)
            def check(name: str, line: str) -> None:
                c = clients[name]
                c.write(line)
                errors = c.errors()
                assert len(errors) <= 1, errors
                assert all(-300 < code < 0 for code in codes(errors)), errors  # no internal error
                assert c.query("*IDN?") == idns[name]

            check()
        finally:
            for c in clients.values():
                c.close()


# -- the error queue (SCPI-99 21.8) --------------------------------------------------------------


def test_the_error_queue_overflows_as_scpi_says():
    with serving() as server, client(server, "src") as src:
        assert src.query("SYST:ERR?") == '0,"No error"'
        assert src.query("SYST:ERR?") == '0,"No error"'  # reading an empty queue changes nothing
        src.write(";".join(["BOGUS"] * 40))  # 40 errors into a 32-entry queue
        src.write("SOUR1:VOLT 99")  # and one more, after the overflow
        first = [src.query("SYST:ERR?") for _ in range(32)]
        assert codes(first[:31]) == [-113] * 31  # the oldest are kept
        assert first[31] == '-350,"Queue overflow"'  # the last entry is replaced
        assert src.query("SYST:ERR?") == '0,"No error"'  # the later errors were discarded

        src.write(";".join(["BOGUS"] * 40))  # full again, then one read frees one slot
        assert codes([src.query("SYST:ERR?")]) == [-113]
        src.write("SOUR1:VOLT 99")  # fits into the freed slot, after the -350
        src.write("SOUR1:VOLT 98")  # full again: replaces the last entry
        rest = [src.query("SYST:ERR?") for _ in range(32)]
        assert codes(rest) == [-113] * 30 + [-350, -350]
        assert src.query("SYST:ERR?") == '0,"No error"'

        src.write(";".join(["BOGUS"] * 40))
        src.write("*CLS")
        assert src.query("SYST:ERR?") == '0,"No error"'


# -- connections: bounded in number and idle time -------------------------------------------------


def test_connections_beyond_the_limit_are_refused_promptly_and_logged(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with serving(max_connections=4) as server:
        held = [Client(server, "dmm") for _ in range(4)]
        try:
            for c in held:
                assert c.query("*IDN?") == "physlearn,VLAB-DMM,DMM0001,1.0"
            extra = Client(server, "dmm")
            assert extra.closed_by_server()
            extra.close()
            refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert len(refused) == 1
            assert re.fullmatch(
                r"refused connection from 127\.0\.0\.1:\d+ to dmm: 4 connections open to it "
                r"\(max_connections 4\)",
                refused[0],
            )
            with client(server, "src") as src:  # the limit is per instrument
                assert src.query("*IDN?").startswith("physlearn,VLAB-SRC")
            held.pop().close()
            wait_until(lambda: server.open_connections("dmm") == 3, "the closed one is counted")
            with client(server, "dmm") as again:
                assert again.query("*IDN?") == "physlearn,VLAB-DMM,DMM0001,1.0"
        finally:
            for c in held:
                c.close()


@pytest.mark.slow
def test_an_idle_connection_is_closed_after_the_timeout_and_logged(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with serving(idle_timeout=0.3) as server:
        with client(server, "pots") as busy, client(server, "pots") as idle:
            with client(server, "pots") as partial:
                assert idle.query("*IDN?").startswith("physlearn,VLAB-POT")
                partial.sock.sendall(b"*IDN")  # a line never completed: idle too
                t0 = time.monotonic()
                while time.monotonic() - t0 < 0.9:  # a client that talks stays connected
                    assert busy.query("POT:COUN?") == "208"
                    time.sleep(0.05)
                assert idle.closed_by_server()
                assert partial.closed_by_server()
            assert busy.query("POT:COUN?") == "208"
        wait_until(lambda: server.open_connections("pots") == 0, "all connections closed")
    idle_lines = [r.getMessage() for r in caplog.records if "idle" in r.getMessage()]
    assert len(idle_lines) == 2, idle_lines
    for line in idle_lines:
        assert re.fullmatch(
            r"closed idle connection from 127\.0\.0\.1:\d+ to pots: no complete command for "
            r"0\.3 s \(idle_timeout\)",
            line,
        )


def test_a_driver_whose_connection_was_closed_reopens_it_with_set_address():
    """A driver whose connection the server closed (idle) gets InstrumentIOError naming it, and
    every cache is invalid; ``set_address(address)`` -- qcodes' public way to reopen a session
    -- gives a working one with the same terminators, timeout and backend, Nagle's algorithm off
    again, and the caches invalidated (what the instrument holds is read anew)."""
    from pyvisa.constants import VI_TRUE, ResourceAttribute
    from qcodes.instrument import Instrument

    from physlearn.drivers.errors import InstrumentIOError
    from physlearn.drivers.instruments.source import VirtualLabSource

    nodelay = ResourceAttribute.tcpip_nodelay
    with serving(idle_timeout=0.2) as server:
        src = VirtualLabSource("src_idle", server.address("src"), visalib="@py", timeout=0.5,
                               device_clear=False, max_voltage=10.0, max_current=0.5)  # fmt: skip
        try:
            ch = src.channels[0]
            ch.volt.set(0.25)
            ch.output.get()
            wait_until(lambda: server.open_connections("src") == 0, "the idle close")
            with pytest.raises(InstrumentIOError) as info:
                ch.volt.get()
            assert info.value.instrument == "src_idle" and "'SOUR1:VOLT?'" in str(info.value)
            assert not ch.volt.cache.valid and not ch.output.cache.valid
            src.set_address(src.address)
            assert ch.volt.get() == 0.25 and ch.output.get() is False
            h = src.visa_handle
            assert (h.read_termination, h.write_termination, h.timeout) == ("\n", "\n", 500)
            assert src.visabackend == "py" and h.get_visa_attribute(nodelay) == VI_TRUE
            assert server.connections == 2 and server.open_connections("src") == 1
            src.set_address(src.address)  # on a live session too: the caches are read anew
            assert not ch.volt.cache.valid and ch.volt.get() == 0.25
        finally:
            Instrument.close_all()


@pytest.mark.parametrize(
    "bounds",
    [{"max_connections": 0}, {"idle_timeout": 0.0}, {"idle_timeout": float("inf")},
     {"max_line": 10}],
)  # fmt: skip
def test_bounds_must_be_positive_and_finite(bounds):
    with pytest.raises(ValueError, match=next(iter(bounds))):
        LabServer(lab_config(BENCH), **bounds)


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.slow
def test_lab_serve_documents_and_enforces_its_bounds(tmp_path):
    help_text = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "lab", "serve", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    flat = " ".join(help_text.split())
    # the parser's defaults (kept light: no server import) are the server's
    assert (lab_cli.MAX_CONNECTIONS, lab_cli.IDLE_TIMEOUT, lab_cli.MAX_LINE) == (64, 300.0, 65536)
    assert (scpi_server.MAX_CONNECTIONS, scpi_server.IDLE_TIMEOUT, scpi_server.MAX_LINE) == (
        64,
        300.0,
        65536,
    )
    assert "--max-connections N" in flat and "(default 64)" in flat
    assert "--idle-timeout SECONDS" in flat and "(default 300)" in flat
    assert "--max-line BYTES" in flat and "(default 65536)" in flat

    station = tmp_path / "station.yaml"
    args = ["--port", "0", "--station-out", str(station), "--max-connections", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", "lab", "serve", str(BENCH), *args,
         "--idle-timeout", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while not station.exists() and proc.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        time.sleep(0.1)  # the file is complete once written; the servers are already bound
        address = yaml.safe_load(station.read_text())["instruments"]["src"]["address"]
        port = int(address.split("::")[2])
        first = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        second = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        try:
            assert second.recv(1) == b""  # refused: one connection at most
            assert first.recv(1) == b""  # then closed after 0.5 s without a command
        finally:
            first.close()
            second.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "refused connection from 127.0.0.1:" in err and "(max_connections 1)" in err
    assert "closed idle connection from 127.0.0.1:" in err and "(idle_timeout)" in err
    assert "Traceback" not in err


def test_lab_serve_refuses_a_bad_bound_in_one_line():
    res = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "lab", "serve", str(BENCH), "--port", "0",
         "--max-connections", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert "max_connections" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_run_whose_connections_are_closed_when_idle_loses_nothing(tmp_path):
    """An idle close is a lost connection to the station system: it reconnects (``retry``)
    and the run's data are exactly those of a run on a lab that never closes a connection."""
    from qcodes.instrument import Instrument

    from physlearn.config import parse_config
    from physlearn.drivers.virtual_lab.testing import write_station
    from physlearn.run.start import start_run

    from .lab_benches import VLAB
    from .test_lab_faults import _assert_same, experiment

    stores, connections = [], []
    for k, idle in enumerate([0.2, 300.0]):
        root = tmp_path / str(k)

        def pause(step: int, idle: float = idle) -> None:
            # the bench sits idle past the timeout twice, whatever the machine's speed
            if idle < 1.0 and step in (2, 5):
                time.sleep(2.5 * idle)

        with serving(idle_timeout=idle, **VLAB.quiet) as server:
            raw = experiment(VLAB, root, write_station(server, tmp_path / f"station{k}.yaml"))
            res = start_run(parse_config(raw), root / "run.zarr", on_step=pause)
            Instrument.close_all()
            assert res.status == "success"
            connections.append(server.connections)
        stores.append(root / "run.zarr")
    # every instrument the run uses (src, dmm, pots) reconnected after each of the two idle
    # closes: two more sessions each than the run on a lab that never closes one (which opens
    # each once, and once more when its safe state starts on fresh sessions)
    assert connections[0] - connections[1] >= 2 * 3, connections
    _assert_same(stores[0], stores[1])
