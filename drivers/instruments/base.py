"""qcodes drivers of the virtual-lab instruments (SCPI over VISA).

They are ordinary :class:`qcodes.instrument.VisaInstrument` subclasses: with ``visalib: '@py'`` and
address ``TCPIP::127.0.0.1::<port>::SOCKET`` they talk to the virtual lab through pyvisa-py exactly
as they would to a LAN instrument; with a pyvisa-sim file
(``pyvisa_sim_file="physlearn.drivers.virtual_lab:virtual_lab_sim.yaml"``) they replay canned
replies for protocol tests. The SCPI command sets are documented in
:mod:`physlearn.drivers.virtual_lab.lab`.

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
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any

import numpy as np
import pyvisa
import pyvisa.constants
import pyvisa.errors
import pyvisa.resources
from qcodes.instrument import VisaInstrument
from qcodes.parameters import Parameter
from qcodes.utils import DelayedKeyboardInterrupt

from physlearn.drivers.errors import InstrumentIOError, InstrumentReplyError

_INT = re.compile(r"[+-]?\d+")
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


def _width(n: int) -> int:
    return len(str(n))
