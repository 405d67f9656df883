"""qcodes drivers of the virtual-lab instruments (SCPI over VISA).

They are ordinary :class:`qcodes.instrument.VisaInstrument` subclasses: with
``visalib: '@py'`` and address ``TCPIP::127.0.0.1::<port>::SOCKET`` they talk to the virtual
lab through pyvisa-py exactly as they would to a LAN instrument; with a pyvisa-sim file
(``pyvisa_sim_file="physlearn.drivers:virtual_lab_sim.yaml"``) they replay canned replies for
protocol tests. The SCPI command sets are documented in :mod:`physlearn.drivers.virtual_lab`.

Every reply is parsed strictly: a reply that is not what was asked for raises
:class:`~physlearn.drivers.errors.InstrumentReplyError` naming the instrument, the command and
the reply; a timeout or a broken connection raises
:class:`~physlearn.drivers.errors.InstrumentIOError`. :meth:`LabVisaInstrument.reconnect` closes
and reopens the VISA session. Each instrument counts the seconds spent in VISA reads and writes
(``io_seconds``, ``io_count``) for the benchmarks, and notes when the last reply arrived
(``reply_time``, a ``time.perf_counter()`` reading): the station system counts the settling of
a phase from the arrival of the instruments' confirmation.

For the station system's hot path (one phase of one pattern: levels written, trip status
queried, a scan read) the drivers offer, next to their qcodes parameters, methods doing the same
as those parameters' set and get without qcodes' per-call machinery: the same commands and
queries, the same validation (the parameters' own validators, bounds read from them) and strict
parsing, the parameters' caches updated as a set or get would -- ``VirtualLabSource.set_levels``
and ``level_writer`` (levels in bulk, one compound message), ``read_trip_status``,
``VirtualLabDMM.read_scan`` and ``read_scan_floats`` (also in two parts: ``query_scan``, the
exchange, and ``parse_scan``, its parsing). A level writer's write can be prepared
ahead and sent later (``LevelWriter.prepare`` / ``send``). Writes and queries hold a first Ctrl-C
until the exchange is over, as qcodes does, whenever Python's default SIGINT handler is the one
installed.

Channels are named ``ch<k>`` with ``k`` zero-padded to the width of the channel count
(``src.ch01``, ``pots.ch001``, ``swm.ch1``).
"""

from __future__ import annotations

import _signal
import logging
import math
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from operator import attrgetter
from types import TracebackType
from typing import Any

import numpy as np
import pyvisa
import pyvisa.constants
import pyvisa.errors
import pyvisa.resources
from qcodes import validators as vals
from qcodes.instrument import InstrumentChannel, VisaInstrument
from qcodes.parameters import Parameter
from qcodes.utils import DelayedKeyboardInterrupt

from physlearn.drivers.errors import InstrumentIOError, InstrumentReplyError

_INT = re.compile(r"[+-]?\d+")
#: a reply of comma-separated integers (as ``_INT`` each, blanks around them allowed)
_INTS = re.compile(r"\s*[+-]?\d+\s*(?:,\s*[+-]?\d+\s*)*")
_PARAMETER_VALIDATE = Parameter.validate
_ROOTED = (":", "*")
_DEBUG = logging.DEBUG


def _interrupts_need_holding() -> bool:
    """True when qcodes' :class:`DelayedKeyboardInterrupt` would hold a Ctrl-C: Python's default
    SIGINT handler is installed. Otherwise (e.g. a run's own handler, which only sets a stop
    flag) it does nothing but look, and the look is all that is skipped. Looked up on every
    exchange, or once per :meth:`LabVisaInstrument.batch`. Read from ``_signal`` (the C module
    behind :mod:`signal`): ``signal.getsignal`` turns the handler into a ``signal.Handlers``
    member when it is one, and for any other handler that enum lookup fails, at about 2 us."""
    return _signal.getsignal(signal.SIGINT) is signal.default_int_handler


#: (parameter, SCPI header from the root, bounds of its Numbers validators or None, step):
#: see VirtualLabSource._level_plan
_LevelPlan = tuple[Parameter, str, "tuple[float, float] | None", Any]


def _rooted(cmd: str) -> str:
    """``cmd`` from the root (``:``), as it goes into a compound message."""
    return cmd if cmd.startswith(_ROOTED) else ":" + cmd


class _DeferredWrites:
    """The context manager of :meth:`LabVisaInstrument.deferred_writes` (a class: it is entered
    once per phase of a run, and a generator-based one costs several times more)."""

    __slots__ = ("_inst", "_outer")

    def __init__(self, inst: LabVisaInstrument) -> None:
        self._inst = inst
        self._outer = False

    def __enter__(self) -> None:
        inst = self._inst
        self._outer = inst._pending is None  # nested: the outer block sends
        if self._outer:
            inst._pending = []

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._outer:
            return
        inst = self._inst
        pending, inst._pending = inst._pending, None
        if exc_type is None and pending:
            inst._send(";".join(pending))


class _Batch:
    """The context manager of :meth:`LabVisaInstrument.batch` (a class, as
    :class:`_DeferredWrites`: entered once per measurement batch of a run)."""

    __slots__ = ("_inst", "_outer")

    def __init__(self, inst: LabVisaInstrument) -> None:
        self._inst = inst
        self._outer = False

    def __enter__(self) -> None:
        inst = self._inst
        self._outer = inst._held is None  # nested: the outer block owns the batch
        if self._outer:
            inst._held = {}
            inst._hold_interrupts = _interrupts_need_holding()
            inst._log_debug = inst.visa_log.isEnabledFor(_DEBUG)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._outer:
            return
        inst = self._inst
        held, inst._held = inst._held, None
        inst._hold_interrupts = None
        inst._log_debug = None
        if held:
            inst._push_held(held)


#: A cache update held back inside :meth:`LabVisaInstrument.batch`: the parameter, its value,
#: its cache's timestamp when the update was held (a different timestamp later means someone
#: else updated the cache since: that update is the newer one), and what turns the value into
#: the cached one (None: nothing)
_Held = tuple[Parameter, Any, Any, "Callable[[Any], Any] | None"]


def _float_array(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def _fmt(v: float) -> str:
    """A float as exact SCPI text (shortest round-trip repr)."""
    return repr(float(v))


class LabVisaInstrument(VisaInstrument):
    """SCPI instrument base: strict reply parsing, clear errors, reconnect, I/O timing."""

    default_terminator = "\n"
    default_timeout = 2.0

    #: Longest compound message :meth:`deferred_writes` sends (commands).
    max_batch = 64

    def __init__(self, name: str, address: str | None = None, **kwargs: Any) -> None:
        self._visalib_arg: str | None = kwargs.get("visalib")
        self.io_seconds = 0.0
        self.io_count = 0
        #: ``time.perf_counter()`` when the last query's reply was read (its VISA read returned)
        self.reply_time = 0.0
        self._pending: list[str] | None = None
        #: inside :meth:`batch`: the held-back cache updates by parameter id, and whether an
        #: exchange holds a Ctrl-C (looked up once per batch); None outside
        self._held: dict[int, _Held] | None = None
        self._hold_interrupts: bool | None = None
        #: inside :meth:`batch`: whether the VISA log records debug messages (looked up once per
        #: batch); None outside
        self._log_debug: bool | None = None
        #: an exchange stopped midway by something other than an I/O error (a KeyboardInterrupt:
        #: a run's second Ctrl-C is raised wherever the run is): its reply, or the rest of its
        #: command, may still be in the session, and the next exchange would take it for its own.
        #: The next exchange reopens the session first.
        self._interrupted = False
        super().__init__(name, address=address, **kwargs)
        self._address_arg = address
        self._nodelay()

    def _nodelay(self) -> None:
        """Disable Nagle's algorithm on TCP sockets: small SCPI writes must not wait for ACKs."""
        h = self.visa_handle
        if not isinstance(h, pyvisa.resources.TCPIPSocket):
            return
        try:
            h.set_visa_attribute(
                pyvisa.constants.ResourceAttribute.tcpip_nodelay, pyvisa.constants.VI_TRUE
            )
            return
        except Exception:  # noqa: BLE001 - pyvisa-py 0.8 registers the wrong setter
            pass
        session = getattr(h.visalib, "sessions", {}).get(h.session)
        sock = getattr(session, "interface", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        """Close the instrument if its set-up fails (its name would stay taken otherwise)."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    # -- raw I/O -----------------------------------------------------------------------------
    def deferred_writes(self) -> AbstractContextManager[None]:
        """Collect writes into SCPI compound messages (``:A;:B;...``): they are sent together,
        in order, with the next query (one round trip) or at the end of the block. Commands
        pending when the block exits with an exception are dropped (never sent). Nested blocks
        join the outer one. Do not use it around ramps with an inter-delay: the delays would not
        separate the writes."""
        return _DeferredWrites(self)

    def batch(self) -> AbstractContextManager[None]:
        """A block of exchanges that belong together (the station system opens one per
        measurement batch of patterns), made cheaper per exchange:

        * whether an exchange must hold a Ctrl-C until it is over (qcodes'
          :class:`DelayedKeyboardInterrupt`: Python's default SIGINT handler is installed), and
          whether the exchanges are logged (the VISA log's debug level), are looked up once, on
          entry, instead of on every exchange -- neither is expected to change inside the
          block;
        * the parameter caches the hot-path methods update (:meth:`LevelWriter.write`,
          :meth:`VirtualLabSource.read_trip_status`, :meth:`VirtualLabDMM.read_scan_floats`)
          are updated once, on exit (also on an exception), with the last value of each. Inside
          the block these methods use the held values themselves (a ramp starts from the level
          last queued). A cache that something else updated in the meantime (a get, a set, a
          resync) is newer than what is held for it: it is used, and kept.

        Nested blocks join the outer one."""
        return _Batch(self)

    def _hold(self, p: Parameter, value: Any, convert: Callable[[Any], Any] | None = None) -> None:
        """``p.cache.set(value)`` (of ``convert(value)`` if given), held back to the end of the
        :meth:`batch` if one is open (and converted only then)."""
        held = self._held
        if held is not None:
            held[id(p)] = (p, value, p.cache.timestamp, convert)
        else:
            p.cache.set(value if convert is None else convert(value))

    def _held_value(self, p: Parameter) -> Any:
        """The value held for ``p`` in the open :meth:`batch`, or None (none held, or its cache
        was updated since, which drops the held value)."""
        held = self._held
        if not held:
            return None
        entry = held.get(id(p))
        if entry is None:
            return None
        if p.cache.timestamp != entry[2]:
            del held[id(p)]
            return None
        return entry[1]

    def _forget_state(self) -> None:
        """After an exchange that failed midway: what this instrument holds is unknown. A
        command sent just before (a compound message sent with a query, or a write on a
        connection the instrument had already closed) may or may not have been executed, so
        every parameter cache is invalidated and what a :meth:`batch` holds is dropped: the next
        read asks the instrument, and a ramp starts from a level read back, never from the one
        last sent."""
        if self._held:
            self._held.clear()
        for p in self._all_parameters():
            p.cache.invalidate()

    def _all_parameters(self) -> Iterator[Parameter]:
        """Every parameter of this instrument and of its channels (submodules)."""
        stack: list[Any] = [self]
        while stack:
            node = stack.pop()
            yield from node.parameters.values()
            stack.extend(node.submodules.values())

    def flush_held(self) -> None:
        """Inside a :meth:`batch`: update now the caches it has held back so far (those nobody
        updated since), as its end would; it goes on holding the updates that follow. The
        station system does this while the last phase of a batch settles. Nothing outside a
        batch."""
        held = self._held
        if held:
            self._held = {}
            self._push_held(held)

    def _push_held(self, held: dict[int, _Held]) -> None:
        """Update the caches held back by a :meth:`batch` (those nobody updated since)."""
        for p, value, stamp, convert in held.values():
            if p.cache.timestamp == stamp:
                p.cache.set(value if convert is None else convert(value))

    # The I/O below is qcodes' VisaInstrument.write_raw / ask_raw (a first Ctrl-C is held until
    # the exchange is over, debug logging), timing only the VISA call: io_seconds is VISA time,
    # nothing else. qcodes' DelayedKeyboardInterrupt is entered only when it would hold an
    # interrupt (see _interrupts_need_holding; inside a batch, as looked up on entry) and the log
    # messages are only built when debug logging is on: the same behaviour without their cost on
    # every exchange.
    def _holds_interrupts(self) -> bool:
        hold = self._hold_interrupts
        return _interrupts_need_holding() if hold is None else hold

    def _send(self, message: str) -> None:
        if self._holds_interrupts():
            with DelayedKeyboardInterrupt(context={"instrument": self.name, "reason": "write"}):
                self._write_visa(message)
        else:
            self._write_visa(message)

    def _write_visa(self, message: str) -> None:
        if self._interrupted:
            self.reconnect()
        if self._debug():
            self.visa_log.debug(f"Writing: {message}")
        t0 = time.perf_counter()
        try:
            self.visa_handle.write(message)
        except (pyvisa.errors.VisaIOError, pyvisa.errors.InvalidSession, OSError) as exc:
            self._forget_state()
            raise InstrumentIOError(
                f"{self.name}: could not send {message!r} ({exc})", self.name
            ) from None
        except BaseException:
            self._interrupted = True
            self._forget_state()
            raise
        finally:
            self.io_seconds += time.perf_counter() - t0
            self.io_count += 1

    def write_raw(self, cmd: str) -> None:
        pending = self._pending
        if pending is not None:
            pending.append(_rooted(cmd))
            if len(pending) >= self.max_batch:
                self._pending = []
                self._send(";".join(pending))
            return
        self._send(cmd)

    def write_many(self, cmds: list[str]) -> None:
        """Write several commands: into the pending compound message inside
        :meth:`deferred_writes`, else as compound messages of at most ``max_batch`` commands."""
        self._write_rooted([_rooted(c) for c in cmds])

    def _write_rooted(self, cmds: list[str]) -> None:
        """:meth:`write_many` of commands that already start from the root (``:``/``*``)."""
        pending = self._pending
        step = self.max_batch
        if pending is None:
            for k in range(0, len(cmds), step):
                self._send(";".join(cmds[k : k + step]))
            return
        pending.extend(cmds)
        if len(pending) >= step:
            self._pending = []
            for k in range(0, len(pending), step):
                self._send(";".join(pending[k : k + step]))

    def ask_raw(self, cmd: str) -> str:
        pending = self._pending
        if pending:
            self._pending = []
            pending.append(cmd if cmd.startswith(_ROOTED) else ":" + cmd)  # _rooted, inlined
            cmd = ";".join(pending)
        hold = self._hold_interrupts  # _holds_interrupts, inlined: once per query
        if hold is None:
            hold = _interrupts_need_holding()
        if hold:
            with DelayedKeyboardInterrupt(context={"instrument": self.name, "reason": "ask"}):
                return self._query_visa(cmd)
        return self._query_visa(cmd)

    def _debug(self) -> bool:
        """Whether exchanges are logged (the VISA log's debug level; inside a :meth:`batch`: as
        looked up on entry)."""
        debug = self._log_debug
        return self.visa_log.isEnabledFor(_DEBUG) if debug is None else debug

    def _query_visa(self, cmd: str) -> str:
        if self._interrupted:
            self.reconnect()
        debug = self._log_debug  # _debug, inlined: once per query
        if debug is None:
            debug = self.visa_log.isEnabledFor(_DEBUG)
        if debug:
            self.visa_log.debug(f"Querying: {cmd}")
        t0 = time.perf_counter()
        try:
            reply = self.visa_handle.query(cmd)
        except pyvisa.errors.VisaIOError as exc:
            self._forget_state()
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                msg = f"{self.name}: no reply to {cmd!r} within {self.visa_handle.timeout:g} ms"
            else:
                msg = f"{self.name}: I/O error on {cmd!r} ({exc})"
            raise InstrumentIOError(msg, self.name) from None
        except (pyvisa.errors.InvalidSession, OSError) as exc:
            self._forget_state()
            raise InstrumentIOError(
                f"{self.name}: connection lost on {cmd!r} ({exc})", self.name
            ) from None
        except BaseException:
            self._interrupted = True
            self._forget_state()
            raise
        finally:
            self.reply_time = t1 = time.perf_counter()
            self.io_seconds += t1 - t0
            self.io_count += 1
        if debug:
            self.visa_log.debug(f"Response: {reply}")
        return reply.strip()

    def reconnect(self) -> None:
        """Close the VISA session and open a new one at the same address (nothing of the old
        session's unread replies or half-sent commands carries over)."""
        term = self.visa_handle.read_termination
        timeout = self.visa_handle.timeout
        try:
            self.visa_handle.close()
        except Exception:  # noqa: BLE001 - the old session may already be dead
            pass
        if self._address_arg is None:
            raise InstrumentIOError(f"{self.name}: no address to reconnect to", self.name)
        try:
            self.set_address(self._address_arg, self._visalib_arg)
        except Exception as exc:
            raise InstrumentIOError(
                f"{self.name}: cannot reconnect to {self._address_arg} ({exc})", self.name
            ) from exc
        if term is not None:
            self.visa_handle.read_termination = term
            self.visa_handle.write_termination = term
        self.visa_handle.timeout = timeout
        self._nodelay()
        self._interrupted = False

    # -- strict parsing ----------------------------------------------------------------------
    def bad_reply(self, cmd: str, reply: str, expected: str) -> InstrumentReplyError:
        return InstrumentReplyError(
            f"{self.name} replied {reply!r} to {cmd!r}; expected {expected}", self.name
        )

    def query_float(self, cmd: str) -> float:
        reply = self.ask(cmd)
        try:
            return float(reply)
        except ValueError:
            raise self.bad_reply(cmd, reply, "a number") from None

    def query_int(self, cmd: str) -> int:
        reply = self.ask(cmd)
        if not _INT.fullmatch(reply):
            raise self.bad_reply(cmd, reply, "an integer")
        return int(reply)

    def query_bool(self, cmd: str) -> bool:
        reply = self.ask(cmd)
        if reply not in ("0", "1"):
            raise self.bad_reply(cmd, reply, "0 or 1")
        return reply == "1"

    def query_choice(self, cmd: str, choices: tuple[str, ...]) -> str:
        reply = self.ask(cmd)
        if reply.upper() not in choices:
            raise self.bad_reply(cmd, reply, f"one of {', '.join(choices)}")
        return reply.upper()

    def parse_floats(
        self, cmd: str, reply: str, n: int | None = None, whole: str | None = None
    ) -> np.ndarray:
        """Comma-separated floats of ``reply`` (``whole``: the full reply, for the message)."""
        said = reply if whole is None else whole
        try:
            out = np.array(list(map(float, reply.split(","))), dtype=np.float64)
        except ValueError:
            raise self.bad_reply(cmd, said, "comma-separated numbers") from None
        if n is not None and out.size != n:
            raise self.bad_reply(cmd, said, f"{n} values, got {out.size}")
        return out

    def write_float(self, template: str, value: float) -> None:
        self.write(template.format(_fmt(value)))

    def errors(self, limit: int = 32) -> list[str]:
        """Drain the SCPI error queue (``SYST:ERR?``); empty if no error."""
        out = []
        for _ in range(limit):
            reply = self.ask("SYST:ERR?")
            code = reply.split(",", 1)[0].strip()
            if not _INT.fullmatch(code):
                raise self.bad_reply("SYST:ERR?", reply, '<code>,"<message>"')
            if int(code) == 0:
                break
            out.append(reply)
        return out

    def sync(self) -> None:
        """Wait until every command sent so far has been executed (``*OPC?``)."""
        reply = self.ask("*OPC?")
        if reply != "1":
            raise self.bad_reply("*OPC?", reply, "1")


def _number_bounds(p: Parameter) -> tuple[float, float] | None:
    """(min, max) a value must lie within to pass ``p.validate`` when that is exactly a chain
    of plain :class:`qcodes.validators.Numbers` checks of a float (their intersection); None
    when anything else validates (then ``p.validate`` itself is called)."""
    if type(p).validate is not _PARAMETER_VALIDATE:
        return None
    lo: Any = -math.inf  # the validators' own bounds, compared as they compare them
    hi: Any = math.inf
    found = False
    for v in p.validators:
        if v is None:
            continue
        if type(v) is not vals.Numbers:
            return None
        found = True
        lo = max(lo, v._min_value)
        hi = min(hi, v._max_value)
    return (lo, hi) if found else None


def _refuse(p: Parameter, value: float) -> None:
    """Raise the parameter's own validation error for ``value`` (outside its bounds)."""
    p.validate(value)
    raise ValueError(f"{value!r} is invalid; Parameter: {p.full_name}")  # pragma: no cover


def _ramp_commands(
    p: Parameter, head: str, bounds: tuple[float, float] | None, step: Any, start: float, v: float
) -> list[str]:
    """The intermediate commands of a ramp of ``p`` from ``start`` to ``v`` (``|v - start| >
    step``): exactly qcodes' ramp (``get_ramp_values``), every value checked against the
    parameter's bounds (its validators if ``bounds`` is None) before any is returned."""
    signed = abs(step) * (1 if v > start else -1)
    count = math.ceil((v - start) / signed - 1e-10)
    ramp = [float(start + i * signed) for i in range(1, count)]
    if bounds is None:
        for r in ramp:
            p.validate(r)
    else:
        lo, hi = bounds
        for r in ramp:
            if not lo <= r <= hi:
                _refuse(p, r)
    return [head + repr(r) for r in ramp]


def _width(n: int) -> int:
    return len(str(n))


class SourceChannel(InstrumentChannel):
    """One source channel: ``function`` (VOLT/CURR), ``volt`` (V), ``curr`` (A), ``curr_limit``
    (A, compliance in VOLT mode), ``volt_limit`` (V, compliance in CURR mode), ``output``."""

    def __init__(self, parent: VirtualLabSource, name: str, channel: int) -> None:
        super().__init__(parent, name)
        c = channel
        vmax, imax = parent.max_voltage, parent.max_current
        self.channel = c
        self.function = self.add_parameter(
            "function",
            get_cmd=partial(parent.query_choice, f"SOUR{c}:FUNC?", ("VOLT", "CURR")),
            set_cmd=f"SOUR{c}:FUNC {{}}",
            vals=vals.Enum("VOLT", "CURR"),
            docstring="VOLT: voltage source; CURR: current source",
        )
        self.volt = self.add_parameter(
            "volt",
            unit="V",
            get_cmd=partial(parent.query_float, f"SOUR{c}:VOLT?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:VOLT {{}}"),
            vals=vals.Numbers(-vmax, vmax),
            docstring="voltage level (V)",
        )
        self.curr = self.add_parameter(
            "curr",
            unit="A",
            get_cmd=partial(parent.query_float, f"SOUR{c}:CURR?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:CURR {{}}"),
            vals=vals.Numbers(-imax, imax),
            docstring="current level (A, positive into the node)",
        )
        self.curr_limit = self.add_parameter(
            "curr_limit",
            unit="A",
            get_cmd=partial(parent.query_float, f"SOUR{c}:CURR:LIM?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:CURR:LIM {{}}"),
            vals=vals.Numbers(1e-9, imax),
            docstring="compliance current of the voltage source (A)",
        )
        self.volt_limit = self.add_parameter(
            "volt_limit",
            unit="V",
            get_cmd=partial(parent.query_float, f"SOUR{c}:VOLT:LIM?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:VOLT:LIM {{}}"),
            vals=vals.Numbers(1e-6, vmax),
            docstring="compliance voltage of the current source (V)",
        )
        self.output = self.add_parameter(
            "output",
            get_cmd=partial(parent.query_bool, f"OUTP{c}?"),
            set_cmd=lambda on, _c=c: parent.write(f"OUTP{_c} {1 if on else 0}"),
            vals=vals.Bool(),
            docstring="output relay (True: connected)",
        )


class VirtualLabSource(LabVisaInstrument):
    """VLAB-SRC multi-channel source. ``max_voltage`` (V) / ``max_current`` (A): its hardware
    range, which bounds the validators of every channel."""

    def __init__(
        self,
        name: str,
        address: str | None = None,
        max_voltage: float = 10.0,
        max_current: float = 0.1,
        **kwargs: Any,
    ) -> None:
        self.max_voltage = float(max_voltage)
        self.max_current = float(max_current)
        super().__init__(name, address, **kwargs)
        with self._closed_on_error():
            self._setup()

    def _setup(self) -> None:
        name = self.name
        n = self.query_int("SYST:CHAN:COUN?")
        if not 1 <= n <= 99:
            raise InstrumentReplyError(f"{name}: implausible channel count {n}", name)
        w = _width(n)
        self.channels: list[SourceChannel] = []
        for c in range(1, n + 1):
            ch = SourceChannel(self, f"ch{c:0{w}d}", c)
            self.add_submodule(ch.short_name, ch)
            self.channels.append(ch)
        self.trip_status = self.add_parameter(
            "trip_status",
            get_cmd=partial(self.query_int, "STAT:TRIP?"),
            docstring="bit mask of channels tripped by their compliance (bit k: channel k+1)",
        )
        #: level writes queued so far (set_levels, a level writer's write or send): a prepared
        #: write (LevelWriter.prepare) stands only while it is unchanged
        self.level_writes = 0
        #: SCPI header of every level parameter, by parameter, from the root (for set_levels)
        self._level_headers: dict[int, str] = {}
        #: (validators, their bounds) by level parameter, recomputed when its validators change
        self._level_bounds: dict[int, tuple[tuple[Any, ...], tuple[float, float] | None]] = {}
        for ch in self.channels:
            self._level_headers[id(ch.volt)] = f":SOUR{ch.channel}:VOLT "
            self._level_headers[id(ch.curr)] = f":SOUR{ch.channel}:CURR "

    def set_levels(self, params: Sequence[Parameter], values: Sequence[float]) -> None:
        """Set several ``volt``/``curr`` parameters of this source's channels at once.

        The same as ``p.set(v)`` for each pair in turn -- the same SCPI commands in the same
        order, each value and every intermediate ramp value checked by the parameter's own
        validators (the safety envelope installed on them), a parameter with a ``step`` ramped
        from its cached level (read first if the cache is invalid; an unknown level is refused,
        never jumped from), the caches holding the new levels afterwards (at the end of a
        :meth:`batch`, inside which a ramp starts from the level last queued) -- but without qcodes'
        per-call machinery, and stricter: every value is checked before the first command is
        queued (a refused value sends nothing), and the commands travel as one compound message
        (or join the pending one inside :meth:`deferred_writes`). Parameters with an
        ``inter_delay`` or ``post_delay`` are refused (their writes must be separated in time),
        and so are parameters with a ``scale``, ``offset``, ``val_mapping`` or ``set_parser``
        (what is sent would not be the value): set them one by one.

        Every call reads each parameter's validators, step and delays afresh; to set the same
        parameters again and again (one phase after another), :meth:`level_writer` reads them
        once per batch of calls.
        """
        plans = [self._level_plan(p) for p in params]
        if len(plans) != len(values):
            raise ValueError(
                f"{self.name}.set_levels: {len(plans)} parameters, {len(values)} values"
            )
        repeated = len(params) > 1 and len(set(map(id, params))) < len(params)
        self._queue_levels(plans, values, repeated)

    def level_writer(self, params: Sequence[Parameter]) -> LevelWriter:
        """A :class:`LevelWriter` for ``params`` (distinct levels of this source's channels)."""
        return LevelWriter(self, params)

    def _level_plan(self, p: Parameter) -> _LevelPlan:
        """What writing level ``p`` takes, from its present validators, step and delays:
        ``(parameter, SCPI header, (min, max) of its plain Numbers validators or None to call
        its validate, step or None, cache, whether the cache may be read directly)``;
        ValueError if it cannot be set in bulk."""
        key = id(p)
        head = self._level_headers.get(key)
        if head is None:
            raise ValueError(f"{self.name}.set_levels: {p!r} is not a level of {self.name}")
        if p.inter_delay or p.post_delay:
            raise ValueError(
                f"{self.name}.set_levels: {p.full_name} has an inter_delay/post_delay; "
                "set it on its own"
            )
        if (
            p.scale is not None
            or p.offset is not None
            or p.val_mapping is not None
            or p.set_parser is not None
        ):
            raise ValueError(
                f"{self.name}.set_levels: {p.full_name} converts its values (scale, offset, "
                "val_mapping or set_parser); set it on its own"
            )
        checks = p.validators
        known = self._level_bounds.get(key)
        if known is not None and known[0] == checks:
            bounds = known[1]
        else:
            bounds = _number_bounds(p)
            self._level_bounds[key] = (checks, bounds)
        return (p, head, bounds, p.step)

    def _level_now(self, p: Parameter, query: bool = True) -> float:
        """The level a ramp of ``p`` starts from: the one last queued in the open :meth:`batch`
        (unless its cache was updated since), else the cached level, else (``query``) a get.
        InstrumentReplyError if it is unknown (a ramp never jumps from a guess)."""
        start = self._held_value(p)
        if start is None:
            if query:
                start = p.cache.get()  # a get (a query) if the cache is invalid
                if start is None:
                    start = p.get()
            elif p.cache.valid:
                start = p.cache.get(get_if_invalid=False)
        if not isinstance(start, (int, float)) or start != start:
            raise InstrumentReplyError(
                f"{p.full_name}: present level {start!r} unknown; refusing to ramp from it",
                self.name,
            )
        return float(start)

    def _queue_levels(
        self, plans: Sequence[_LevelPlan], values: Sequence[float], repeated: bool
    ) -> None:
        """Check every value (and ramp value) of ``plans`` against its bounds, then queue the
        commands (one compound message, or the pending one) and update the caches
        (``repeated``: a parameter may appear twice; it ramps on from its first value)."""
        cmds, news = self._level_commands(plans, values, repeated, True)
        self._send_levels(plans, cmds, news)

    def _level_commands(
        self, plans: Sequence[_LevelPlan], values: Sequence[float], repeated: bool, query: bool
    ) -> tuple[list[str], list[float]]:
        """The commands that set ``plans`` to ``values`` (every value and ramp value checked,
        ramps from :meth:`_level_now`; ``query``: it may ask for an unknown level), and each
        parameter's final level."""
        cmds: list[str] = []
        news: list[float] = []  # the final level of each parameter, in order
        latest: dict[int, float] | None = {} if repeated else None
        for (p, head, bounds, step), value in zip(plans, values, strict=True):
            v = float(value)
            if bounds is None:
                p.validate(v)
            elif not bounds[0] <= v <= bounds[1]:  # NaN fails too
                _refuse(p, v)
            news.append(v)
            if step is not None:
                if latest is not None and id(p) in latest:
                    start = latest[id(p)]
                else:
                    start = self._level_now(p, query)
                if not abs(v - start) <= step:
                    cmds.extend(_ramp_commands(p, head, bounds, step, start, v))
                if latest is not None:
                    latest[id(p)] = v
            cmds.append(head + repr(v))
        return cmds, news

    def _send_levels(
        self,
        plans: Sequence[_LevelPlan],
        cmds: list[str],
        news: list[float],
        held: dict[int, _Held] | None = None,
    ) -> None:
        """Queue level commands and note the levels they leave (see :meth:`_queue_levels`;
        ``held``: the cache updates to hold inside a :meth:`batch`, if already made)."""
        self._write_rooted(cmds)
        self.level_writes += 1
        # the caches as a set would leave them (raw value = value: nothing converts it; held
        # to the end of a batch); a parameter given twice ends at its last value
        if held is not None and self._held is not None:
            self._held.update(held)
            return
        for plan, v in zip(plans, news, strict=True):
            self._hold(plan[0], v)

    def _forget_state(self) -> None:
        super()._forget_state()
        self.level_writes += 1  # a prepared write stands no more: its ramps start from guesses

    def read_trip_status(self) -> int:
        """``trip_status.get()`` without qcodes' per-call machinery (the station system's hot
        path): the same query (``STAT:TRIP?``, joining pending deferred writes), the same
        strict parsing and error, the parameter's cache updated as a get would (held to the end
        of a :meth:`batch`)."""
        cmd = "STAT:TRIP?"
        try:
            reply = self.ask_raw(cmd)
        except Exception as e:
            e.args = (*e.args, f"asking {cmd!r} to {self!r}")  # as qcodes' ask
            raise
        if not _INT.fullmatch(reply):
            raise self.bad_reply(cmd, reply, "an integer")
        mask = int(reply)
        p = self.trip_status
        held = self._held
        if held is not None:  # _hold, inlined: once per phase
            held[id(p)] = (p, mask, p.cache.timestamp, None)
        else:
            p.cache.set(mask)
        return mask

    def clear_trips(self) -> None:
        self.write("OUTP:PROT:CLE")


class LevelWriter:
    """:meth:`VirtualLabSource.set_levels` of a fixed list of level parameters, prepared.

    :meth:`refresh` reads what writing each parameter takes (its validators' bounds, step,
    delays, conversions: the checks ``set_levels`` makes on every call) and :meth:`write` then
    writes with it, one phase after another, without reading them again: the same commands,
    the same validation of every value and ramp value against those bounds, the same ramps
    from the cached levels, the same caches afterwards. Call :meth:`refresh` before each batch
    of writes (the station system does, at the start of every ``equilibrate``, where it also
    checks the batch against the safety envelope): a validator, step or delay changed since
    the last refresh is not seen by :meth:`write` until the next one.

    A write can also be prepared ahead (:meth:`prepare`: checked and formatted, nothing
    queued) and sent later (:meth:`send`), as long as nothing it rests on changed in between.
    """

    def __init__(self, source: VirtualLabSource, params: Sequence[Parameter]) -> None:
        if len(set(map(id, params))) != len(params):
            raise ValueError(f"{source.name}.level_writer: a parameter is given twice")
        self.source = source
        self.params = list(params)
        self._plans: list[_LevelPlan] = []
        self._inputs: list[tuple[Any, ...]] | None = None  # what the plans were made from
        self.refresh()

    def refresh(self) -> None:
        """Read every parameter's validators, step, delays and conversions afresh (ValueError
        if one can no longer be set in bulk). The plans are made anew when any of these
        changed since the last refresh (reading them costs half of making the plans)."""
        inputs = list(map(_plan_inputs, self.params))
        if inputs == self._inputs:
            return
        self._plans = [self.source._level_plan(p) for p in self.params]
        self._inputs = inputs

    def write(self, values: Sequence[float], indices: Sequence[int] | None = None) -> None:
        """Set ``params[indices[j]]`` to ``values[j]`` (every parameter, in order, when
        ``indices`` is None): see the class docstring."""
        self.source._queue_levels(self._plans_of(values, indices), values, False)

    def prepare(
        self, values: Sequence[float], indices: Sequence[int] | None = None
    ) -> PreparedLevels:
        """What :meth:`write` of these values would queue now -- every value and ramp value
        checked, the commands formatted, ramps from the present levels -- without queueing it
        (:meth:`send` does), and without a query: a level to ramp from that is not known
        without asking (no held level, no valid cache) raises InstrumentReplyError. The
        station system prepares the next phase's levels while the network settles."""
        plans = self._plans_of(values, indices)
        src = self.source
        cmds, news = src._level_commands(plans, values, False, False)
        params = [plan[0] for plan in plans]
        return PreparedLevels(plans, cmds, news, list(map(_stamp_of, params)), src.level_writes)

    def send(self, prepared: PreparedLevels) -> bool:
        """Queue what :meth:`prepare` prepared, exactly as :meth:`write` would have then, and
        update the caches the same way -- if it still stands: no level write on this source and
        no change of a written parameter's cache since it was prepared (a get, a set, a resync:
        the levels to ramp from may have changed). Else False, and nothing is queued: write
        the levels anew. A prepared write is sent at most once."""
        src = self.source
        if (
            prepared.writes != src.level_writes
            or list(map(_stamp_of, prepared.params)) != prepared.stamps
        ):
            return False
        src._send_levels(prepared.plans, prepared.cmds, prepared.levels, prepared.held)
        return True

    def _plans_of(self, values: Sequence[float], indices: Sequence[int] | None) -> list[_LevelPlan]:
        plans = self._plans
        if indices is None:
            if len(values) != len(plans):
                raise ValueError(
                    f"{self.source.name}: {len(values)} values for {len(plans)} levels"
                )
            return plans
        if len(indices) != len(values) or len(set(indices)) != len(indices):
            raise ValueError(
                f"{self.source.name}: {len(values)} values for level indices {list(indices)} "
                "(each index once)"
            )
        return [plans[k] for k in indices]


#: the cache timestamp of a parameter (one C-level call per parameter list)
_stamp_of = attrgetter("cache.timestamp")
#: everything of a level parameter that :meth:`VirtualLabSource._level_plan` reads (but the
#: header, fixed per parameter)
_plan_inputs = attrgetter(
    "inter_delay",
    "post_delay",
    "scale",
    "offset",
    "val_mapping",
    "set_parser",
    "validators",
    "step",
)


class PreparedLevels:
    """A :class:`LevelWriter` write prepared ahead (:meth:`LevelWriter.prepare`): the level
    plans, the commands, the final levels, what it rests on -- the written parameters' cache
    timestamps and the source's count of level writes when it was prepared -- and the cache
    updates a :meth:`LabVisaInstrument.batch` holds for it when it is sent."""

    __slots__ = ("plans", "params", "cmds", "levels", "stamps", "writes", "held")

    def __init__(
        self,
        plans: list[_LevelPlan],
        cmds: list[str],
        levels: list[float],
        stamps: list[Any],
        writes: int,
    ) -> None:
        self.plans = plans
        self.params = params = [plan[0] for plan in plans]
        self.cmds = cmds
        self.levels = levels
        self.stamps = stamps
        self.writes = writes
        # a parameter given twice ends at its last value
        self.held: dict[int, _Held] = {
            id(p): (p, v, stamp, None) for p, v, stamp in zip(params, levels, stamps, strict=True)
        }


class VirtualLabDMM(LabVisaInstrument):
    """VLAB-DMM: ``scan_list`` (multiplexer channels), ``readings`` (one scan, V, as an array),
    ``reading_number`` (counter of the last scan's first reading; no I/O)."""

    def __init__(self, name: str, address: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        self._scan: list[int] = []
        self._reading_number = -1
        self.scan_list = self.add_parameter(
            "scan_list",
            get_cmd=self._get_scan,
            set_cmd=self._set_scan,
            vals=vals.Lists(vals.Ints(0)),
            docstring="multiplexer channels scanned by READ?",
        )
        self.readings = self.add_parameter(
            "readings",
            unit="V",
            get_cmd=self._read,
            snapshot_value=False,
            docstring="one scan: a reading per channel of scan_list (V)",
        )
        self.reading_number = self.add_parameter(
            "reading_number",
            get_cmd=lambda: self._reading_number,
            snapshot_value=False,
            docstring="reading counter of the first reading of the last scan (no I/O)",
        )

    def _set_scan(self, chs: list[int]) -> None:
        self.write("ROUT:SCAN (@" + ",".join(str(int(c)) for c in chs) + ")")
        self._scan = [int(c) for c in chs]

    def _get_scan(self) -> list[int]:
        cmd = "ROUT:SCAN?"
        reply = self.ask(cmd)
        m = re.fullmatch(r"\(@([0-9,:]*)\)", reply.replace(" ", ""))
        if m is None:
            raise self.bad_reply(cmd, reply, "a channel list (@...)")
        chs: list[int] = []
        for part in filter(None, m.group(1).split(",")):
            if ":" in part:
                a, b = (int(x) for x in part.split(":"))
                chs.extend(range(a, b + 1))
            else:
                chs.append(int(part))
        self._scan = chs
        return chs

    def _read(self) -> np.ndarray:
        return self.read_scan()[0]

    def read_scan(self) -> tuple[np.ndarray, int]:
        """One scan (``READ?``): the readings (V) and the reading counter of its first reading.

        The same query and the same strict parsing as ``readings.get()`` (which calls it), the
        caches of ``readings`` and ``reading_number`` updated as a get would (held to the end of
        a :meth:`batch`), without qcodes' per-call machinery."""
        values, number = self.read_scan_floats()
        return np.array(values, dtype=np.float64), number

    def read_scan_floats(self) -> tuple[list[float], int]:
        """:meth:`read_scan` with the readings as Python floats (the same scan, parsing and
        caches; the ``readings`` cache holds them as an array): the station system's hot path,
        where an array of a few dozen values costs more than it saves."""
        return self.parse_scan(self.query_scan())

    def query_scan(self) -> str:
        """The exchange of one scan (``READ?``): its reply, not yet parsed -- :meth:`parse_scan`
        does, and only then is the scan read (:meth:`read_scan_floats` = both at once). The
        station system checks a scan while the next phase settles."""
        try:
            return self.ask_raw("READ?")
        except Exception as e:
            e.args = (*e.args, f"asking 'READ?' to {self!r}")  # as qcodes' ask
            raise

    def parse_scan(self, reply: str) -> tuple[list[float], int]:
        """The readings (V, Python floats) and reading counter of a :meth:`query_scan` reply,
        parsed strictly (InstrumentReplyError), the caches updated as a get would."""
        cmd = "READ?"
        head, _, rest = reply.partition(",")
        if not _INT.fullmatch(head.strip()):
            raise self.bad_reply(cmd, reply, "<reading number>,<v1>,...")
        try:  # float() of each part: its numbers and its refusals
            values = list(map(float, rest.split(",")))
        except ValueError:
            raise self.bad_reply(cmd, reply, "comma-separated numbers") from None
        n = len(self._scan)
        if n and len(values) != n:
            raise self.bad_reply(cmd, reply, f"{n} values, got {len(values)}")
        number = int(head)
        self._reading_number = number
        # the caches as the parameters' get would leave them (readings: as an array)
        self._hold(self.readings, values, _float_array)
        self._hold(self.reading_number, number)
        return values, number

    def measure(self, channel: int) -> float:
        """One reading (V) of one multiplexer channel."""
        return self.query_float(f"MEAS:VOLT? (@{int(channel)})")


class PotChannel(InstrumentChannel):
    """One digital potentiometer: ``tap`` and ``conductance`` (S, measured isolated)."""

    def __init__(self, parent: VirtualLabPots, name: str, channel: int) -> None:
        super().__init__(parent, name)
        c = channel
        self.channel = c
        self.tap = self.add_parameter(
            "tap",
            get_cmd=partial(parent.query_int, f"POT{c}:TAP?"),
            set_cmd=lambda k, _c=c: parent.write(f"POT{_c}:TAP {int(k)}"),
            vals=vals.Ints(0, parent.n_taps - 1),
            snapshot_get=False,
            docstring="tap setting",
        )
        self.conductance = self.add_parameter(
            "conductance",
            unit="S",
            get_cmd=partial(parent.query_float, f"POT{c}:MEAS:COND?"),
            snapshot_get=False,
            snapshot_value=False,
            docstring="conductance of the device measured with it isolated (S)",
        )


class VirtualLabPots(LabVisaInstrument):
    """VLAB-POT bank: ``taps`` (every device's tap, one array), per-device channels."""

    def __init__(self, name: str, address: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        with self._closed_on_error():
            self._setup()

    def _setup(self) -> None:
        name = self.name
        self.count = self.query_int("POT:COUN?")
        self.n_taps = self.query_int("POT:TAPS?")
        if self.count < 1 or self.n_taps < 2:
            raise InstrumentReplyError(
                f"{name}: implausible bank ({self.count} devices, {self.n_taps} taps)", name
            )
        w = _width(self.count)
        self.channels: list[PotChannel] = []
        for c in range(1, self.count + 1):
            ch = PotChannel(self, f"ch{c:0{w}d}", c)
            self.add_submodule(ch.short_name, ch)
            self.channels.append(ch)
        self.taps = self.add_parameter(
            "taps",
            get_cmd=self._get_taps,
            set_cmd=self._set_taps,
            vals=vals.Arrays(
                min_value=0,
                max_value=self.n_taps - 1,
                shape=(self.count,),
                valid_types=(np.integer,),
            ),
            docstring="tap of every device, in channel order",
        )

    def _get_taps(self) -> np.ndarray:
        return self._parse_taps(self.ask(_TAPS_QUERY))

    def _parse_taps(self, reply: str) -> np.ndarray:
        parts = reply.split(",")
        if len(parts) != self.count or not _INTS.fullmatch(reply):
            raise self.bad_reply(_TAPS_QUERY, reply, f"{self.count} comma-separated integers")
        return np.array(list(map(int, parts)), dtype=np.int64)

    def _set_taps(self, taps: np.ndarray) -> None:
        self.write(_taps_command(taps))

    def write_taps_read_back(self, taps: np.ndarray | None) -> np.ndarray:
        """``taps.set(taps)`` (unless None) then ``taps.get()`` without qcodes' per-call
        machinery (the station system's weight update, once per training step): the same
        validation (the parameter's validators), the same commands -- inside
        :meth:`deferred_writes` the write joins the query's message -- the same strict parsing,
        and the cache holding what was read back, as after that set and get."""
        p = self.taps
        if taps is not None:
            p.validate(taps)
            self.write_raw(_taps_command(taps))
        try:
            reply = self.ask_raw(_TAPS_QUERY)
        except Exception as e:
            e.args = (*e.args, f"asking {_TAPS_QUERY!r} to {self!r}")  # as qcodes' ask
            raise
        back = self._parse_taps(reply)
        p.cache.set(back)
        return back


_TAPS_QUERY = "POT:TAP:ALL?"


def _taps_command(taps: np.ndarray) -> str:
    ks = np.asarray(taps)
    if ks.dtype.kind not in "iu":  # the validator admits integer arrays only; be sure
        ks = ks.astype(np.int64)
    return "POT:TAP:ALL " + ",".join(map(str, ks.tolist()))


class SwitchChannel(InstrumentChannel):
    """One relay: ``closed`` (True: the relay connects its source to its node)."""

    def __init__(self, parent: VirtualLabSwitch, name: str, relay: int) -> None:
        super().__init__(parent, name)
        r = relay
        self.relay = r
        self.closed = self.add_parameter(
            "closed",
            get_cmd=partial(parent.query_bool, f"ROUT:CLOS? (@{r})"),
            set_cmd=lambda on, _r=r: parent.write(f"ROUT:{'CLOS' if on else 'OPEN'} (@{_r})"),
            vals=vals.Bool(),
            docstring="relay state (True: closed)",
        )


class VirtualLabSwitch(LabVisaInstrument):
    """VLAB-SWM switch matrix."""

    def __init__(self, name: str, address: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        with self._closed_on_error():
            self._setup()

    def _setup(self) -> None:
        name = self.name
        n = self.query_int("SYST:CHAN:COUN?")
        if n < 1:
            raise InstrumentReplyError(f"{name}: implausible relay count {n}", name)
        w = _width(n)
        self.channels: list[SwitchChannel] = []
        for r in range(1, n + 1):
            ch = SwitchChannel(self, f"ch{r:0{w}d}", r)
            self.add_submodule(ch.short_name, ch)
            self.channels.append(ch)

    def open_all(self) -> None:
        self.write("ROUT:OPEN:ALL")
