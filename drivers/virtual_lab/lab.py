"""The virtual lab: the bench (:mod:`physlearn.drivers.virtual_lab.bench`) behind instruments
that behave like hardware, each executing its SCPI command set.

Instruments and their SCPI commands
-----------------------------------
Every instrument answers ``*IDN?`` (``physlearn,<model>,<serial>,1.0``), ``*RST``, ``*CLS``,
``*OPC?`` (``1``) and ``SYST:ERR?`` (``<code>,"<message>"``; ``0,"No error"`` when empty). Headers
are case-insensitive, short or long form (``SOUR`` / ``SOURCE``); several commands may share a line
separated by ``;`` (their replies are joined by ``;``). Channel lists are ``(@1,2,5:8)``, at most as
many channels as the instrument has, checked before they are expanded. An erroneous command is not
executed and queues exactly one error (``<code>,"<standard message>; <detail>"``: -104 data type
error, -109 missing parameter, -113 undefined header, -114 header suffix out of range, -221 settings
conflict, -222 data out of range, -223 too much data, -224 illegal parameter value; see
:mod:`physlearn.drivers.virtual_lab.scpi`); an unanswerable query gets no reply (the client times
out), as on a real instrument. The error queue holds 32 entries and overflows as SCPI-99 21.8 says:
the last entry becomes ``-350,"Queue overflow"``, later errors are discarded until one is read.

``VLAB-SRC<n>`` -- multi-channel source (channels ``c = 1..n``)
    ``SYST:CHAN:COUN?``; ``SOUR<c>:FUNC VOLT|CURR``; ``SOUR<c>:VOLT <V>``;
    ``SOUR<c>:CURR <A>``; ``SOUR<c>:CURR:LIM <A>`` (compliance in VOLT mode);
    ``SOUR<c>:VOLT:LIM <V>`` (compliance in CURR mode); ``OUTP<c> ON|OFF``; each with its ``?``
    query. ``STAT:TRIP?`` -> bit mask of tripped channels (bit c-1); ``OUTP:PROT:CLE`` clears it.
    Levels beyond the hardware range (``max_voltage``, ``max_current``) are refused (-222).
``VLAB-DMM`` -- DMM with a multiplexer card (channels ``first_channel ...``)
    ``ROUT:SCAN (@101:121)`` / ``ROUT:SCAN?``; ``READ?`` -> ``<n>,<v1>,...,<vk>``: one reading per
    scanned channel (V), preceded by the number ``n`` of the first reading since power-on (the
    reading counter: a repeated ``n`` is a stale reply); ``MEAS:VOLT? (@c)`` -> one reading.
``VLAB-POT<n>`` -- bank of digital potentiometers (devices ``c = 1..n``)
    ``POT:COUN?``; ``POT:TAPS?`` (taps per device); ``POT<c>:TAP <k>`` / ``?``;
    ``POT:TAP:ALL <k1>,...,<kn>`` / ``?`` (every device at once);
    ``POT<c>:MEAS:COND?`` -> the device's conductance (S), measured with the device isolated
    from the network (for calibration).
``VLAB-MEM<n>`` -- memristor board (devices ``d = 1..n``, device d on edge d - 1), instead of
    the potentiometers: see :mod:`physlearn.drivers.virtual_lab.memristor_board`.
``VLAB-SWM<n>`` -- switch matrix (relays ``r = 1..n``)
    ``SYST:CHAN:COUN?``; ``ROUT:CLOS (@r,...)``; ``ROUT:OPEN (@r,...)``; ``ROUT:OPEN:ALL``;
    ``ROUT:CLOS? (@r,...)`` -> ``1,0,...`` (1 = closed).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import numpy as np

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.config import LabConfig
from physlearn.drivers.virtual_lab.instrument import Handler, SimInstrument, need_query
from physlearn.drivers.virtual_lab.scpi import (
    ScpiError,
    boolean,
    channel_list,
    fmt,
    format_channels,
    integer,
    number,
    suffix,
)

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Instruments


class SourceInstrument(SimInstrument):
    """VLAB-SRC: the multi-channel voltage/current source."""

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.model = f"VLAB-SRC{len(bench.func)}"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("SYSTem:CHANnel:COUNt", self._count),
            ("SOURce#:FUNCtion[:MODE]", self._func),
            ("SOURce#:VOLTage:LIMit", self._vlim),
            ("SOURce#:CURRent:LIMit", self._ilim),
            ("SOURce#:VOLTage[:LEVel]", self._volt),
            ("SOURce#:CURRent[:LEVel]", self._curr),
            ("OUTPut:PROTection:CLEar", self._clear_trips),
            ("OUTPut#[:STATe]", self._output),
            ("STATus:TRIP", self._trips),
        ]

    def _ch(self, m: re.Match[str]) -> int:
        return suffix(m.group(1), len(self.bench.func), "channel")

    def reset(self) -> None:
        b, c = self.bench, self.bench.config.source
        b.func[:] = ["VOLT"] * len(b.func)
        b.volt[:] = 0.0
        b.curr[:] = 0.0
        b.curr_limit[:] = c.max_current
        b.volt_limit[:] = c.max_voltage
        b.output[:] = False
        b.tripped[:] = False
        b.changed()

    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return str(len(self.bench.func))

    def _func(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        ch = self._ch(m)
        b = self.bench
        if query:
            return b.func[ch]
        f = (arg or "").strip().upper()
        f = {"VOLTAGE": "VOLT", "CURRENT": "CURR"}.get(f, f)
        if f not in ("VOLT", "CURR"):
            raise ScpiError(-224, f"{arg!r} is not VOLT or CURR")
        if f != b.func[ch] and b.output[ch]:
            raise ScpiError(-221, "switch the output off to change function")
        b.func[ch] = f
        return None

    def _level(self, arr: np.ndarray, hw: float, unit: str, m: re.Match[str], query: bool,
               arg: str | None) -> str | None:  # fmt: skip
        ch = self._ch(m)
        if query:
            return fmt(arr[ch])
        v = number(arg)
        if abs(v) > hw:
            raise ScpiError(-222, f"{v:g} {unit} beyond +-{hw:g} {unit}")
        arr[ch] = v
        self.bench.changed()
        return None

    def _volt(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._level(self.bench.volt, self.bench.config.source.max_voltage, "V", m,
                           query, arg)  # fmt: skip

    def _curr(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._level(self.bench.curr, self.bench.config.source.max_current, "A", m,
                           query, arg)  # fmt: skip

    def _limit(self, arr: np.ndarray, hw: float, m: re.Match[str], query: bool,
               arg: str | None) -> str | None:  # fmt: skip
        ch = self._ch(m)
        if query:
            return fmt(arr[ch])
        v = number(arg)
        if not 0 < v <= hw:
            raise ScpiError(-222, f"limit {v:g} not in (0, {hw:g}]")
        arr[ch] = v
        self.bench.changed()
        return None

    def _ilim(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._limit(self.bench.curr_limit, self.bench.config.source.max_current, m,
                           query, arg)  # fmt: skip

    def _vlim(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._limit(self.bench.volt_limit, self.bench.config.source.max_voltage, m,
                           query, arg)  # fmt: skip

    def _output(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        ch = self._ch(m)
        b = self.bench
        if query:
            return "1" if b.output[ch] else "0"
        b.set_output(ch, boolean(arg))
        return None

    def _trips(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        b = self.bench
        b.voltages()  # solving may trip a channel
        mask = sum(1 << k for k in range(len(b.func)) if b.tripped[k])
        return str(mask)

    def _clear_trips(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        self.bench.tripped[:] = False
        return None


class DMMInstrument(SimInstrument):
    """VLAB-DMM: a DMM with a multiplexer card."""

    model = "VLAB-DMM"

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.scan_list: list[int] = []
        self.last_scan_reply: str | None = None

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("ROUTe:SCAN", self._scan),
            ("READ", self._read),
            ("MEASure:VOLTage[:DC]", self._meas),
        ]

    def reset(self) -> None:
        self.scan_list = []

    def _channels(self, arg: str | None) -> list[int]:
        """The multiplexer channels of a channel list: at most as many as the card has."""
        d = self.bench.config.dmm
        last = d.first_channel + d.mux_channels - 1
        return channel_list(arg, d.first_channel, last, d.mux_channels)

    def _scan(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return format_channels(self.scan_list)
        self.scan_list = self._channels(arg)
        return None

    def _read(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        if not self.scan_list:
            raise ScpiError(-221, "empty scan list (ROUT:SCAN first)")
        first, vals = self.bench.scan(self.scan_list)
        reply = ",".join([str(first), *(fmt(v) for v in vals)])
        self.last_scan_reply = reply
        return reply

    def _meas(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        chs = self._channels(arg)
        if len(chs) != 1:
            raise ScpiError(-221, "MEAS:VOLT? takes exactly one channel")
        _, vals = self.bench.scan(chs)
        return fmt(vals[0])

    def stale_reply(self, line: str) -> str | None:
        if re.fullmatch(r"\s*:?READ\?\s*", line, re.IGNORECASE):
            return self.last_scan_reply
        return None


class PotBank(SimInstrument):
    """VLAB-POT: the bank of digital potentiometers."""

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.model = f"VLAB-POT{bench.taps.size}"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("POT:COUNt", self._count),
            ("POT:TAPS", self._ntaps),
            ("POT:TAP:ALL", self._all),
            ("POT#:MEASure:CONDuctance", self._meas),
            ("POT#:TAP", self._tap),
        ]

    def reset(self) -> None:
        self.bench.taps[:] = self.bench.pot_spec().initial_tap
        self.bench.changed(conductances=True)

    def _check_tap(self, k: int) -> None:
        top = self.bench.pot_spec().law.n_taps - 1
        if not 0 <= k <= top:
            raise ScpiError(-222, f"tap {k} not in 0..{top}")

    def _ch(self, m: re.Match[str]) -> int:
        return suffix(m.group(1), int(self.bench.taps.size), "device")

    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return str(self.bench.taps.size)

    def _ntaps(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return str(self.bench.pot_spec().law.n_taps)

    def _tap(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        ch = self._ch(m)
        if query:
            return str(int(self.bench.taps[ch]))
        k = integer(arg)
        self._check_tap(k)
        if k != self.bench.taps[ch]:
            self.bench.taps[ch] = k
            self.bench.changed(conductances=True)
        return None

    def _all(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        b = self.bench
        if query:
            return ",".join(str(int(k)) for k in b.taps)
        parts = (arg or "").split(",")
        if len(parts) != b.taps.size:
            raise ScpiError(-109, f"expected {b.taps.size} taps, got {len(parts)}")
        taps = [integer(p) for p in parts]
        for k in taps:
            self._check_tap(k)
        new = np.asarray(taps, dtype=np.int64)
        if not np.array_equal(new, b.taps):
            b.taps[:] = new
            b.changed(conductances=True)
        return None

    def _meas(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return fmt(self.bench.measure_device(self._ch(m)))


class SwitchMatrix(SimInstrument):
    """VLAB-SWM: relays from source channels to nodes."""

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.model = f"VLAB-SWM{len(bench.relays)}"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("SYSTem:CHANnel:COUNt", self._count),
            ("ROUTe:OPEN:ALL", self._open_all),
            ("ROUTe:CLOSe", self._close),
            ("ROUTe:OPEN", self._open),
        ]

    def reset(self) -> None:
        self.bench.closed[:] = False
        self.bench.changed()

    def _relays(self, arg: str | None) -> list[int]:
        n = len(self.bench.relays)
        return [r - 1 for r in channel_list(arg, 1, n, n)]

    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return str(len(self.bench.relays))

    def _set(self, arg: str | None, closed: bool) -> None:
        rs = self._relays(arg)
        b = self.bench
        if any(b.closed[r] != closed for r in rs):
            b.closed[rs] = closed
            b.changed()

    def _close(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return ",".join("1" if self.bench.closed[r] else "0" for r in self._relays(arg))
        self._set(arg, True)
        return None

    def _open(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return ",".join("0" if self.bench.closed[r] else "1" for r in self._relays(arg))
        self._set(arg, False)
        return None

    def _open_all(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        if self.bench.closed.any():
            self.bench.closed[:] = False
            self.bench.changed()
        return None


class VirtualLab:
    """The bench and its instruments, by name (no sockets; see :mod:`scpi_server`)."""

    def __init__(self, config: LabConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.bench = Bench(config, clock)
        c = config
        insts: list[SimInstrument] = [
            SourceInstrument(c.source.name, self.bench, c.source.serial),
            DMMInstrument(c.dmm.name, self.bench, c.dmm.serial),
        ]
        if c.pots is not None:
            insts.append(PotBank(c.pots.name, self.bench, c.pots.serial))
        if c.switch is not None:
            insts.append(SwitchMatrix(c.switch.name, self.bench, c.switch.serial))
        if c.memristors is not None:  # imported here: the board's module imports this one
            from physlearn.drivers.virtual_lab.memristor_board import MemristorBoard

            insts.append(MemristorBoard(c.memristors.name, self.bench, c.memristors))
        if c.stock is not None:  # imported here: the dialects import this module
            from physlearn.drivers.virtual_lab.dialects import stock_instruments

            insts += stock_instruments(c.stock, self.bench)
        self.instruments: dict[str, SimInstrument] = {i.name: i for i in insts}

    def driver_class(self, name: str) -> str:
        """Dotted path of the qcodes driver of instrument ``name``."""
        own = getattr(self.instruments[name], "driver", None)
        if isinstance(own, str):
            return own
        driver = {
            SourceInstrument: "source.VirtualLabSource",
            DMMInstrument: "dmm.VirtualLabDMM",
            PotBank: "pots.VirtualLabPots",
            SwitchMatrix: "switch.VirtualLabSwitch",
        }[type(self.instruments[name])]
        return f"physlearn.drivers.instruments.{driver}"
