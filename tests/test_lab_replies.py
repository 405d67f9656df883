"""The drivers' strict replies and clear I/O errors, against a scripted SCPI instrument over a
real socket on 127.0.0.1: a reply that is not what was asked raises InstrumentReplyError naming
the instrument, the query and the reply; no reply, or a broken connection, raises
InstrumentIOError and invalidates every cache; an exchange stopped midway never leaves its reply
to the next one."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcodes.instrument import Instrument

from physlearn.drivers.errors import InstrumentIOError, InstrumentReplyError
from physlearn.drivers.instruments.base import LabVisaInstrument
from physlearn.drivers.instruments.dmm import VirtualLabDMM
from physlearn.drivers.instruments.pots import VirtualLabPots
from physlearn.drivers.instruments.source import VirtualLabSource


@pytest.fixture(autouse=True)
def _close_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


Reply = str | bytes | Callable[[str], "str | bytes | None"] | None


class Canned:
    """A SCPI instrument on 127.0.0.1 (an ephemeral port) answering each query line from
    ``replies`` (a reply, a function of the query, or None: never answered; unknown queries get
    "0"); every line received and every reply sent is recorded. A thread per connection."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = dict(replies)
        self.received: list[str] = []
        self.sent: list[bytes] = []
        self.connections = 0
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.address = f"TCPIP::127.0.0.1::{self.srv.getsockname()[1]}::SOCKET"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            try:
                for raw in lines:
                    line = raw.decode().strip()
                    self.received.append(line)
                    reply = self.replies.get(line, "0") if line.endswith("?") else None
                    if callable(reply):
                        reply = reply(line)
                    if reply is not None:
                        data = reply if isinstance(reply, bytes) else reply.encode()
                        conn.sendall(data + b"\n")
                        self.sent.append(data)
            except OSError:  # the client went away
                return

    def close(self) -> None:
        self.srv.close()


@pytest.fixture
def canned() -> Iterator[Callable[..., Canned]]:
    """Make :class:`Canned` instruments; all closed at the end."""
    made: list[Canned] = []

    def make(replies: dict[str, Reply]) -> Canned:
        made.append(Canned(replies))
        return made[-1]

    yield make
    for c in made:
        c.close()


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < 5.0, what
        time.sleep(0.005)


def _open(cls: Any, name: str, server: Canned, timeout: float = 0.3) -> Any:
    return cls(name, server.address, visalib="@py", device_clear=False, timeout=timeout)


def test_trip_status_refuses_any_reply_but_an_integer(canned):
    """Any reply to ``STAT:TRIP?`` that is not an integer (blanks around it allowed) raises
    InstrumentReplyError naming the instrument, the query and the reply, and leaves the cache
    alone; an integer is the new mask."""
    reply = ["0"]
    server = canned({"SYST:CHAN:COUN?": "2", "STAT:TRIP?": lambda q: reply[0]})
    src = _open(VirtualLabSource, "src_trip", server)
    assert src.trip_status.get() == 0
    ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
    ints = st.integers(-(2**40), 2**40).map(lambda i: f" {i:+d} " if i % 2 else str(i))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(said=st.one_of(ascii_text, ints))
    def check(said: str) -> None:
        before = src.trip_status.cache.get(get_if_invalid=False)
        reply[0] = said
        if re.fullmatch(r" *[+-]?[0-9]+ *", said):
            assert src.trip_status.get() == int(said)
            assert src.trip_status.cache.get(get_if_invalid=False) == int(said)
            return
        with pytest.raises(InstrumentReplyError) as info:
            src.trip_status.get()
        assert info.value.instrument == "src_trip"
        assert info.value.args[0] == (
            f"src_trip replied {said.strip()!r} to 'STAT:TRIP?'; expected an integer"
        )
        assert src.trip_status.cache.get(get_if_invalid=False) == before

    check()


def test_a_reply_that_is_not_ascii_is_a_bad_reply(canned):
    """Line noise (bytes that are no text) is a garbled reply like any other: it names the
    instrument, the query and what arrived, and the session stays usable."""
    server = canned({"SYST:CHAN:COUN?": "2", "STAT:TRIP?": b"1\xff\xfe", "OUTP1?": "1"})
    src = _open(VirtualLabSource, "src_noise", server)
    with pytest.raises(InstrumentReplyError) as info:
        src.trip_status.get()
    msg = info.value.args[0]
    assert msg.startswith("src_noise replied '1") and "\\xff" in msg and "'STAT:TRIP?'" in msg
    assert src.ch1.output.get() is True  # the next exchange gets its own reply


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
def test_a_bad_scan_is_refused_and_leaves_the_caches(canned, reply):
    replies = ["42,0.125,-0.5,1.0", reply]
    server = canned({"READ?": lambda q: replies.pop(0)})
    dmm = _open(VirtualLabDMM, "dmm_bad", server)
    dmm.scan_list.set([101, 102, 103])
    np.testing.assert_array_equal(dmm.readings.get(), [0.125, -0.5, 1.0])
    with pytest.raises(InstrumentReplyError) as info:
        dmm.readings.get()
    assert info.value.args[0].startswith(f"dmm_bad replied {reply!r} to 'READ?'; expected ")
    np.testing.assert_array_equal(dmm.readings.cache.get(get_if_invalid=False), [0.125, -0.5, 1])
    assert dmm.reading_number.get() == 42


def test_a_scan_is_an_array_and_its_counter_costs_no_query(canned):
    server = canned({"READ?": "7,1e-07,-2.5,9.9E37"})
    dmm = _open(VirtualLabDMM, "dmm_ok", server)
    assert dmm.reading_number.get() == -1  # no scan yet
    dmm.scan_list.set([101, 102, 103])
    got = dmm.readings.get()
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert got.tolist() == [1e-07, -2.5, 9.9e37]
    n = len(server.received)
    assert dmm.reading_number.get() == 7
    dmm.ask("*OPC?")  # every line sent before it has been received
    assert server.received[n:] == ["*OPC?"]


#: what a pots bank answers while the driver sets up: 4 devices of 1024 taps
BANK: dict[str, Reply] = {"POT:COUN?": "4", "POT:TAPS?": "1024"}


@pytest.mark.parametrize(
    ("reply", "taps"),
    [("1,2,3,1023", [1, 2, 3, 1023]), (" 1 , 2,3 ,+4", [1, 2, 3, 4]), ("0,0,0,0", [0, 0, 0, 0])],
)
def test_taps_parse(canned, reply, taps):
    pots = _open(VirtualLabPots, "pots_ok", canned({**BANK, "POT:TAP:ALL?": reply}))
    got = pots.taps.get()
    assert got.dtype == np.int64 and got.tolist() == taps


@pytest.mark.parametrize(
    "reply", ["1,2,3", "1,2,3,4,5", "1,2,3,4.0", "1,2,,4", "1_0,2,3,4", "a,b,c,d"]
)
def test_taps_refuse(canned, reply):
    pots = _open(VirtualLabPots, "pots_bad", canned({**BANK, "POT:TAP:ALL?": reply}))
    with pytest.raises(InstrumentReplyError) as info:
        pots.taps.get()
    assert info.value.args[0] == (
        f"pots_bad replied {reply!r} to 'POT:TAP:ALL?'; expected 4 comma-separated integers"
    )


def test_taps_are_validated_before_anything_is_sent(canned):
    """``taps.set`` sends every tap in one command when all are integers within the bank's
    range, and refuses anything else (wrong count, out of range) before sending."""
    bank = ["0,0,0,0"]

    def taps_back(q: str) -> str:
        return bank[0]

    server = canned({**BANK, "POT:TAP:ALL?": taps_back})
    pots = _open(VirtualLabPots, "pots_set", server)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(taps=st.lists(st.integers(-3, 1030), min_size=3, max_size=5).map(np.array))
    def check(taps: np.ndarray) -> None:
        server.received.clear()
        ok = taps.shape == (4,) and bool(np.all((taps >= 0) & (taps <= 1023)))
        if not ok:
            with pytest.raises(ValueError):
                pots.taps.set(taps)
            pots.ask("*OPC?")  # every line sent before it has been received
            assert server.received == ["*OPC?"]
            return
        pots.taps.set(taps)
        bank[0] = ",".join(map(str, taps.tolist()))
        assert pots.taps.get().tolist() == taps.tolist()
        assert server.received == ["POT:TAP:ALL " + bank[0], "POT:TAP:ALL?"]

    check()


def test_no_reply_is_an_io_error_and_every_cache_is_invalidated(canned):
    """A query left unanswered raises InstrumentIOError naming the instrument, the query and
    the timeout; what the instrument holds is then unknown: every cache is invalid."""
    server = canned({"SYST:CHAN:COUN?": "2", "STAT:TRIP?": None, "SOUR1:VOLT?": "0.5"})
    src = _open(VirtualLabSource, "src_mute", server)
    assert src.ch1.volt.get() == 0.5 and src.ch1.volt.cache.valid
    with pytest.raises(InstrumentIOError) as info:
        src.trip_status.get()
    assert info.value.instrument == "src_mute"
    assert info.value.args[0] == "src_mute: no reply to 'STAT:TRIP?' within 300 ms"
    assert not src.ch1.volt.cache.valid


def test_an_exchange_stopped_midway_reopens_the_session_before_the_next(canned):
    """A KeyboardInterrupt inside an exchange (a second Ctrl-C, which qcodes lets through at
    once) leaves its reply on its way: the next exchange opens a new session first, so it never
    takes that reply for its own."""
    interrupted = threading.Event()

    def late(q: str) -> str:  # sent once nobody waits for it any more
        interrupted.wait(5)
        return "LATE"

    server = canned({"SLOW?": late, "*IDN?": "canned,1"})
    inst = _open(LabVisaInstrument, "midway", server, timeout=10.0)

    def interrupt() -> None:
        wait_for(lambda: "SLOW?" in server.received, "the query went out")
        os.kill(os.getpid(), signal.SIGINT)
        interrupted.set()

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, stop)
    t = threading.Thread(target=interrupt)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            inst.ask("SLOW?")
    finally:
        t.join()
        signal.signal(signal.SIGINT, old)
    wait_for(lambda: b"LATE" in server.sent, "the late reply was sent")
    assert inst.ask("*IDN?") == "canned,1"
    assert server.connections == 2
