"""What the qcodes drivers of the virtual-lab instruments (SCPI over VISA) share.

They are ordinary :class:`qcodes.instrument.VisaInstrument` subclasses: with ``visalib: '@py'`` and
address ``TCPIP::127.0.0.1::<port>::SOCKET`` they talk to the virtual lab through pyvisa-py exactly
as they would to a LAN instrument; with a pyvisa-sim file
(``pyvisa_sim_file="physlearn.drivers.virtual_lab:virtual_lab_sim.yaml"``) they replay canned
replies for protocol tests. The SCPI command sets are documented in
:mod:`physlearn.drivers.virtual_lab.lab`. Every level is a plain qcodes parameter (``set_cmd`` /
``get_cmd``, a :class:`~qcodes.validators.Numbers` validator for the hardware range): qcodes
validates, ramps (``step``, ``inter_delay``) and caches.

:class:`LabVisaInstrument` adds to qcodes' own write and query path (which holds a first Ctrl-C
until the exchange is over):

* strict replies: a reply that is not what was asked for raises
  :class:`~physlearn.drivers.errors.InstrumentReplyError` naming the instrument, the command and
  the reply;
* clear I/O errors: a timeout or a broken connection raises
  :class:`~physlearn.drivers.errors.InstrumentIOError`, and every parameter cache is invalidated
  (a command sent just before may or may not have been executed);
* :meth:`LabVisaInstrument.set_address` reopens a working session -- after a lost link,
  ``inst.set_address(inst.address)`` -- with the same backend, terminators and timeout, Nagle's
  algorithm off on TCP sockets, and every cache invalidated.

Channels are named ``ch<k>`` with ``k`` zero-padded to the width of the channel count
(``src.ch01``, ``pots.ch001``, ``swm.ch1``).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pyvisa
import pyvisa.constants
import pyvisa.errors
import pyvisa.resources
from qcodes.instrument import VisaInstrument

from physlearn.drivers.errors import InstrumentIOError, InstrumentReplyError

_INT = re.compile(r"[+-]?\d+")
#: what a broken or closed VISA session raises besides VisaIOError
_LOST = (pyvisa.errors.InvalidSession, OSError)


def _fmt(v: float) -> str:
    """A float as exact SCPI text (shortest round-trip repr)."""
    return repr(float(v))


def _width(n: int) -> int:
    """Digits of the channel count ``n``: channel names are zero-padded to it."""
    return len(str(n))


class LabVisaInstrument(VisaInstrument):
    """SCPI instrument base: strict reply parsing, clear I/O errors, :meth:`set_address` that
    reopens a working session."""

    default_terminator = "\n"
    default_timeout = 2.0

    def __init__(self, name: str, address: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, address=address, **kwargs)
        #: the backend :meth:`set_address` reopens with when given none: the one asked for, else
        #: the one qcodes chose (pyvisa-sim's for a ``pyvisa_sim_file``, the default otherwise)
        lib = self.visa_handle.visalib
        self._backend: str = kwargs.get("visalib") or f"{lib.library_path}@{self.visabackend}"
        #: an exchange was stopped midway by something other than an I/O error (a second Ctrl-C
        #: while qcodes held the first): its reply, or the rest of its command, may still be in
        #: the session, and the next exchange would take it for its own. That one reopens first.
        self._midway = False
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

    # -- the session ---------------------------------------------------------------------------
    def set_address(self, address: str, visalib: str | None = None) -> None:
        """Close the VISA session and open a new one at ``address`` (``inst.address`` after a
        lost link): nothing of the old session's unread replies or half-sent commands carries
        over. ``visalib``: the backend; None keeps this instrument's (qcodes' own
        ``set_address`` would take pyvisa's default). The terminators and the timeout carry
        over, Nagle's algorithm is off again on a TCP socket, and every parameter cache is
        invalidated: what the instrument holds is read anew. InstrumentIOError if the session
        cannot be opened (call again later)."""
        old = self.visa_handle
        read_term, write_term, timeout = old.read_termination, old.write_termination, old.timeout
        with suppress(Exception):  # the old session may already be dead: closing it may fail
            old.close()
        self.invalidate_cache()
        backend = self._backend if visalib is None else visalib
        try:
            super().set_address(address, backend)
        except Exception as exc:
            raise InstrumentIOError(
                f"{self.name}: cannot open a session at {address} ({exc})", self.name
            ) from exc
        self._backend = backend
        h = self.visa_handle
        h.read_termination, h.write_termination = read_term, write_term
        h.timeout = timeout
        self._nodelay()
        self._midway = False

    def _reopen_if_midway(self) -> None:
        if self._midway:
            self.set_address(self.visa_handle.resource_name)

    def write_raw(self, cmd: str) -> None:
        """qcodes' write, with InstrumentIOError on a broken connection."""
        self._reopen_if_midway()
        try:
            super().write_raw(cmd)
        except (pyvisa.errors.VisaIOError, *_LOST) as exc:
            self.invalidate_cache()
            raise InstrumentIOError(
                f"{self.name}: could not send {cmd!r} ({exc})", self.name
            ) from None
        except BaseException:
            self._midway = True
            self.invalidate_cache()
            raise

    def ask_raw(self, cmd: str) -> str:
        """qcodes' query, stripped, with InstrumentIOError on a timeout or a broken
        connection."""
        self._reopen_if_midway()
        try:
            reply = super().ask_raw(cmd)
        except pyvisa.errors.VisaIOError as exc:
            self.invalidate_cache()
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                msg = f"{self.name}: no reply to {cmd!r} within {self.visa_handle.timeout:g} ms"
            else:
                msg = f"{self.name}: I/O error on {cmd!r} ({exc})"
            raise InstrumentIOError(msg, self.name) from None
        except _LOST as exc:
            self.invalidate_cache()
            raise InstrumentIOError(
                f"{self.name}: connection lost on {cmd!r} ({exc})", self.name
            ) from None
        except UnicodeDecodeError as exc:  # line noise: the whole line was read, and is garbled
            said = bytes(exc.object).decode("ascii", "backslashreplace").strip()
            raise self.bad_reply(cmd, said, "text in the session's encoding") from None
        except BaseException:
            self._midway = True
            self.invalidate_cache()
            raise
        return reply.strip()

    # -- strict parsing ------------------------------------------------------------------------
    def bad_reply(self, cmd: str, reply: str, expected: str) -> InstrumentReplyError:
        """The error of a reply to ``cmd`` that is not ``expected``."""
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
        """``template`` (one ``{}``) filled with ``value`` as exact SCPI text, written."""
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
