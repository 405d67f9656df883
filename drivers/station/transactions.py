"""Transactions: one operation on the bench, retried when an instrument misbehaves.

An operation (a phase of one pattern, a weight update, a read of the present state) runs as a
*transaction* (:meth:`Transactions.run`). What happens on failure depends on the error
(:mod:`physlearn.drivers.errors`, after :func:`classify` has mapped a stock driver's exception
to one of them):

* a lost link (:class:`InstrumentIOError`: a VISA timeout, a broken socket) reopens every VISA
  session (qcodes' public ``set_address``), re-reads every level the system drives, and retries;
* a garbled reply or a stale reading retries on the same session after re-reading the levels;
  the second such failure in a row reconnects as a lost link does;
* anything else (a compliance trip, an identity mismatch, an envelope violation, a bug) is
  never retried.

After ``retry.attempts`` tries, or ``retry.reconnects`` reconnections, the transaction raises
:class:`InstrumentFault`; the orchestrator then commits the complete steps and closes the
system, which brings every source to its safe state. Failures are noted in ``events`` and
counted in the :class:`Timers`. See ``lab_protocols.md`` (faults) for the operator's view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from physlearn.drivers.errors import (
    InstrumentError,
    InstrumentFault,
    InstrumentIOError,
    InstrumentReplyError,
    StaleReadingError,
)
from physlearn.drivers.station.roles import RetryConfig

T = TypeVar("T")

#: the errors a transaction retries
RETRIED = (InstrumentIOError, InstrumentReplyError, StaleReadingError)


@dataclass
class Timers:
    """Wall-clock seconds by activity, for the benchmarks: ``instrument`` = inside qcodes
    calls (the drivers, VISA and the instruments' replies), ``settle`` = waiting for the
    physics; counts of phases, scans (node readings), retries and reconnects."""

    instrument: float = 0.0
    settle: float = 0.0
    phases: int = 0
    readings: int = 0
    retries: int = 0
    reconnects: int = 0


def classify(exc: BaseException, instrument: str, reading: bool) -> BaseException:
    """The bench error an exception raised inside a driver call stands for.

    physlearn's own errors pass through. A VISA error or a socket error is a lost link. While
    *reading* (a get or a query), a ``ValueError``, ``KeyError`` or ``IndexError`` is a reply
    the driver could not parse (a stock driver's ``float(reply)`` or value mapping failing);
    while writing, those are the driver refusing a value and are not retried.
    """
    if isinstance(exc, InstrumentError):
        return exc
    import pyvisa.errors

    if isinstance(exc, pyvisa.errors.VisaIOError | OSError):  # OSError: sockets, timeouts
        return InstrumentIOError(f"{instrument}: {type(exc).__name__}: {exc}", instrument)
    if reading and isinstance(exc, ValueError | KeyError | IndexError):
        return InstrumentReplyError(
            f"{instrument}: unexpected reply ({type(exc).__name__}: {exc})", instrument
        )
    return exc


def call(timers: Timers, instrument: str, reading: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` -- one driver call -- timed as instrument time, its errors classified."""
    t0 = time.perf_counter()
    try:
        return fn(*args)
    except Exception as exc:
        mapped = classify(exc, instrument, reading)
        if mapped is exc:
            raise
        raise mapped from exc
    finally:
        timers.instrument += time.perf_counter() - t0


class Transactions:
    """Runs operations with the retry policy of ``retry``; ``reconnect`` reopens every session
    and re-reads the driven state, ``resync`` re-reads it on the same sessions, ``forget``
    marks every driven level unknown (what a failed attempt wrote may or may not have arrived).
    """

    def __init__(
        self,
        retry: RetryConfig,
        timers: Timers,
        events: list[str],
        reconnect: Callable[[], None],
        resync: Callable[[], None],
        forget: Callable[[], None],
    ) -> None:
        self.retry = retry
        self.timers = timers
        self.events = events
        self._reconnect = reconnect
        self._resync = resync
        self._forget = forget

    def run(self, what: str, fn: Callable[..., T], *args: Any, attempts: int | None = None) -> T:
        """``fn(*args)``, retried as the module docstring says (``attempts``: instead of
        ``retry.attempts``)."""
        r = self.retry
        n_attempts = attempts or r.attempts
        reconnects = 0
        data_errors = 0
        last: BaseException | None = None
        for attempt in range(n_attempts):
            try:
                return fn(*args)
            except RETRIED as exc:
                last = exc
                self._forget()
                link = isinstance(exc, InstrumentIOError)
                data_errors = 0 if link else data_errors + 1
                self.events.append(f"{what}: attempt {attempt + 1} failed: {exc}")
                if attempt == n_attempts - 1:
                    break
                self.timers.retries += 1
                if r.backoff:
                    time.sleep(r.backoff)
                if link or data_errors >= 2:
                    if reconnects >= r.reconnects:
                        break
                    reconnects += 1
                    self.timers.reconnects += 1
                    self._quietly(what, "reconnect", self._reconnect)
                else:
                    self._quietly(what, "re-read", self._resync)
        raise InstrumentFault(
            f"{what}: gave up after {n_attempts} attempt(s) and {reconnects} reconnect(s); "
            f"last error: {last}"
        ) from last

    def _quietly(self, what: str, step: str, fn: Callable[[], None]) -> None:
        """``fn()``; a failure is noted and left to the next attempt."""
        try:
            fn()
        except InstrumentError as exc:
            self.events.append(f"{what}: {step} failed: {exc}")
