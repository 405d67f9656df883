"""The base of every simulated instrument: a SCPI line executor with an error queue.

A :class:`SimInstrument` matches each command of a received line against its command table
(``commands()``: header specs in SCPI short/long form and their handlers), answers the IEEE 488.2
common queries every instrument shares, and queues one SCPI error per refused command. The
instruments themselves -- physlearn's own boards (:mod:`physlearn.drivers.virtual_lab.lab`,
:mod:`physlearn.drivers.virtual_lab.memristor_board`) and the stock dialects
(:mod:`physlearn.drivers.virtual_lab.dialects`) -- subclass it; see ``lab_protocols.md`` §0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.scpi import ErrorQueue, ScpiError, header_pattern

_log = logging.getLogger(__name__)

Handler = Callable[[re.Match[str], bool, str | None], str | None]


class SimInstrument:
    """An instrument on the bench: executes SCPI lines, keeps an error queue."""

    model = "VLAB"

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        self.name = name
        self.bench = bench
        self.serial = serial
        self.errors = ErrorQueue()
        self._table: list[tuple[re.Pattern[str], Handler]] = [
            (self._compile(spec), handler) for spec, handler in self.commands()
        ]

    @staticmethod
    def _compile(spec: str) -> re.Pattern[str]:
        return re.compile(rf":?{header_pattern(spec)}(\?)?(?:\s+(.*))?", re.IGNORECASE | re.DOTALL)

    def commands(self) -> list[tuple[str, Handler]]:
        return []

    def idn(self) -> str:
        return f"physlearn,{self.model},{self.serial},1.0"

    def reset(self) -> None:
        """``*RST``."""

    def report(self, error: ScpiError) -> None:
        """Queue ``error`` (a line the server refused before it reached :meth:`execute`)."""
        with self.bench.lock:
            self.errors.push(error)

    def execute(self, line: str) -> str | None:
        """Execute one received line; the reply (without terminator) or None."""
        replies: list[str] = []
        with self.bench.lock:
            for cmd in line.split(";"):
                cmd = cmd.strip()
                if not cmd:
                    continue
                try:
                    r = self._one(cmd)
                except ScpiError as err:
                    self.errors.push(err)
                    continue
                except Exception as exc:  # a bug of the simulation, not the client's mistake
                    _log.exception("%s: %r failed", self.name, cmd[:80])
                    self.errors.push(ScpiError(-300, f"internal error {type(exc).__name__}"))
                    continue
                if r is not None:
                    replies.append(r)
        return ";".join(replies) if replies else None

    def _one(self, cmd: str) -> str | None:
        up = cmd.upper()
        if up == "*IDN?":
            return self.idn()
        if up == "*RST":
            self.reset()
            return None
        if up == "*CLS":
            self.errors.clear()
            return None
        if up == "*OPC?":
            return "1"
        if re.fullmatch(r":?SYST(EM)?:ERR(OR)?(:NEXT)?\?", up):
            return self.errors.pop()
        for pattern, handler in self._table:
            m = pattern.fullmatch(cmd)
            if m is not None:
                groups = m.groups()
                query = groups[-2] is not None
                arg = groups[-1]
                return handler(m, query, arg)
        raise ScpiError(-113, repr(cmd.split()[0][:40]))

    def take_delay(self) -> float:
        """Seconds the server waits before answering the line just executed (timed dialects)."""
        return 0.0

    def stale_reply(self, line: str) -> str | None:
        """For a 'stuck' fault: the reply this instrument would repeat instead of answering
        ``line`` (None: the line is not a reading)."""
        return None


def need_query(query: bool, header: str = "this header") -> None:
    """Refuse ``header`` sent as a command: it is a query only (-113)."""
    if not query:
        raise ScpiError(-113, f"{header} is a query only")


def need_command(query: bool, header: str = "this header") -> None:
    """Refuse ``header`` sent as a query: it is a command only (-113)."""
    if query:
        raise ScpiError(-113, f"{header} is a command, not a query")
