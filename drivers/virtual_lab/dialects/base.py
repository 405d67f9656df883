"""Shared base of the stock dialects: IEEE 488.2 common commands, the standard event status
register, quoted strings, SCPI number replies and the timing of replies.

Common commands every stock instrument answers: ``*IDN?``, ``*RST``, ``*CLS`` (clears the error
queue and the event register), ``*ESR?`` (read and clear), ``*ESE``/``*ESE?``, ``*STB?``,
``*OPC``, ``*OPC?`` (``1`` once pending operations finished), ``*WAI``, ``*OPT?``, ``*LANG?``,
``*TRG`` (dialects that trigger override :meth:`trigger`), ``SYST:ERR?``. Headers are matched
case-insensitively in short or long form (``SOUR:voltage:ILIM`` = ``SOURce:VOLTage:ILIMit``).

Standard event status register (IEEE 488.2 11.5.1): a queued error sets the bit of its class,
as real instruments do -- -1xx command error CME (32), -2xx execution error EXE (16), -3xx
device-specific error DDE (8), -4xx query error QYE (4); ``*OPC`` sets OPC (1).

Timing: an operation (a relay switching, a source settling, a reading) marks the instrument
busy until it would finish on the real model (:meth:`StockInstrument.occupy`); the query that
observes it calls :meth:`StockInstrument.observe` and the server sleeps
:meth:`StockInstrument.take_delay` seconds (asynchronously: other instruments keep answering)
before it sends the reply. In ``timing: fast`` every duration is 0.
"""

from __future__ import annotations

import re

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.dialects.specs import TimingSpec
from physlearn.drivers.virtual_lab.instrument import SimInstrument
from physlearn.drivers.virtual_lab.scpi import ErrorQueue, ScpiError, number

#: ESR bit of each error class (first digit of -code)
_ESR_BIT = {1: 32, 2: 16, 3: 8, 4: 4}


class EventQueue(ErrorQueue):
    """An error queue that sets the standard event register bit of every error it queues."""

    def __init__(self) -> None:
        super().__init__()
        self.esr = 0

    def push(self, err: ScpiError) -> None:
        super().push(err)
        self.esr |= _ESR_BIT.get(abs(err.code) // 100, 8)


def unquote(text: str | None) -> str:
    """``'defbuffer1'`` / ``"VOLT:DC"`` -> the string inside (-109 if missing, -104 unquoted)."""
    t = (text or "").strip()
    if not t:
        raise ScpiError(-109, "expected a quoted string")
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1].replace(t[0] * 2, t[0])
    raise ScpiError(-104, f"{t[:40]!r} is not a quoted string")


def args(text: str | None) -> list[str]:
    """Comma-separated parameters, stripped; quoted strings and ``(@...)`` lists kept whole."""
    if text is None or not text.strip():
        return []
    return [p.strip() for p in re.findall(r"(?:'[^']*'|\"[^\"]*\"|\([^)]*\)|[^,])+", text)]


def sci(v: float) -> str:
    """A reading as the instruments send it: ``+1.23456789E-01``."""
    return f"{float(v):+.9E}"


def on_off(text: str | None) -> bool:
    t = (text or "").strip().upper()
    if t in ("1", "ON"):
        return True
    if t in ("0", "OFF"):
        return False
    if not t:
        raise ScpiError(-109)
    raise ScpiError(-104, f"{t[:40]!r} is not ON/OFF/1/0")


def bit(on: bool) -> str:
    return "1" if on else "0"


def in_range(value: str | None, lo: float, hi: float, what: str) -> float:
    """A number in ``lo..hi`` (-222 "Data out of range" otherwise, as the instruments do)."""
    v = number(value)
    if not lo <= v <= hi:
        raise ScpiError(-222, f"{what} {v:g} outside {lo:g}..{hi:g}")
    return v


class StockInstrument(SimInstrument):
    """A virtual instrument speaking the SCPI dialect of a real model."""

    #: dotted path of the qcodes driver class that talks to it (for station files)
    driver = ""
    options = "0"

    def __init__(self, name: str, bench: Bench, serial: str, timing: TimingSpec) -> None:
        super().__init__(name, bench, serial)
        self.errors = EventQueue()
        self.timing = timing
        self.ese = 0
        self.busy_until = bench.clock()
        self._delay = 0.0

    # -- timing ------------------------------------------------------------------------------
    def occupy(self, seconds: float) -> None:
        """An operation of ``seconds`` starts once the pending ones end."""
        if seconds > 0:
            self.busy_until = max(self.bench.clock(), self.busy_until) + seconds

    def observe(self, extra: float = 0.0) -> None:
        """This query's reply waits for every pending operation, then ``extra`` seconds."""
        wait = max(0.0, self.busy_until - self.bench.clock()) + extra
        self._delay = max(self._delay, wait)

    def take_delay(self) -> float:
        """Seconds the server waits before answering the line just executed (then reset)."""
        d, self._delay = self._delay, 0.0
        return d

    # -- common commands -----------------------------------------------------------------------
    def execute(self, line: str) -> str | None:
        reply = super().execute(line)
        self._delay += self.timing.get("latency")
        return reply

    def _one(self, cmd: str) -> str | None:
        head, _, arg = cmd.partition(" ")
        up = head.upper()
        if up == "*ESR?":
            self.observe()
            esr, self.errors.esr = self.errors.esr, 0
            return str(esr)
        if up == "*CLS":
            self.errors.clear()
            self.errors.esr = 0
            return None
        if up == "*OPC?":
            self.observe()
            return "1"
        if up == "*OPC":
            self.errors.esr |= 1
            return None
        if up == "*WAI":
            self.observe()
            return None
        if up == "*OPT?":
            return self.options
        if up == "*LANG?":
            return "SCPI"
        if up == "*ESE?":
            return str(self.ese)
        if up == "*ESE":
            self.ese = int(in_range(arg, 0, 255, "event enable"))
            return None
        if up == "*STB?":
            return str((32 if self.errors.esr & self.ese else 0) | (4 if len(self.errors) else 0))
        if up == "*TRG":
            self.trigger()
            return None
        return super()._one(cmd)

    def trigger(self) -> None:
        """``*TRG``: a bus trigger (nothing to trigger by default)."""
        raise ScpiError(-200, "no trigger system")
