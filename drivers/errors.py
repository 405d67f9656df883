"""Errors raised at the bench. Light module: no qcodes, no pyvisa.

Every message names the instrument (its station name) and, for a bad reply, what it said.
The retry policy of :class:`~physlearn.drivers.station.system.StationSystem` depends on the type:

* :class:`InstrumentIOError` (timeout, lost connection): close and reopen the VISA session, retry.
* :class:`InstrumentReplyError` (garbled or unexpected reply), :class:`StaleReadingError`
  (a meter repeated an old reading): retry on the same session, reconnect if it persists.
* :class:`ComplianceTrip`, :class:`IdentityError`: never retried; the run aborts to the safe state.
* :class:`InstrumentFault`: the retries are exhausted; the run aborts to the safe state.
* :class:`SafeStateError`: the sources could not be confirmed safe; the operator must act.
* :class:`EnvelopeViolation` (a ``ValueError``): a value outside the safety envelope was refused
  before anything was written.

All of them are :class:`physlearn.errors.DeviceError`: the command line prints their
:meth:`failure_message` and exits 1 without knowing these classes.
"""

from __future__ import annotations

from physlearn.errors import DeviceError

#: What a stopped run left behind, for the operator (the sources were ramped down first).
_AFTER_A_STOP = (
    "\n  every source it drove was ramped to its safe state; a run store, if one was created, "
    "keeps every committed step (`physlearn inspect STORE`; fix the cause, then `physlearn "
    "resume STORE`)."
)


class InstrumentError(DeviceError, RuntimeError):
    """Base class of bench errors; ``instrument`` is the station name ("" if unknown)."""

    def __init__(self, message: str, instrument: str = "") -> None:
        super().__init__(message)
        self.instrument = instrument

    def __str__(self) -> str:
        # qcodes appends context strings ("setting src_ch01_volt to 0.5") to ``args``.
        return "; ".join(str(a) for a in self.args)

    def failure_message(self) -> str:
        return f"physlearn: the run stopped: {self}{_AFTER_A_STOP}"


class InstrumentIOError(InstrumentError):
    """No reply within the timeout, or the connection broke (retry after reconnecting)."""


class InstrumentReplyError(InstrumentError):
    """An instrument replied something that cannot be what was asked (garbled, wrong count)."""


class StaleReadingError(InstrumentError):
    """A meter returned a reading it had already returned (its reading counter did not advance)."""


class ComplianceTrip(InstrumentError):
    """A source hit its compliance limit and switched its output off (not retried)."""


class IdentityError(InstrumentError):
    """An instrument's ``*IDN?`` does not match what the config expects (not retried)."""


class InstrumentFault(InstrumentError):
    """Retries and reconnects are exhausted: the run stops and the bench goes to its safe state."""


class SafeStateError(InstrumentError):
    """Some sources could not be confirmed at their safe value: switch them off by hand."""

    def failure_message(self) -> str:
        return (
            f"physlearn: {self}\n  THE BENCH IS NOT CONFIRMED SAFE: switch the listed sources off "
            "by hand. A run store keeps every committed step (`physlearn resume STORE`)."
        )


class EnvelopeViolation(DeviceError, ValueError):
    """A value outside the safety envelope; refused before anything was sent."""

    def failure_message(self) -> str:
        return f"physlearn: the run refused by the safety envelope: {self}{_AFTER_A_STOP}"
