"""The one exception type the core shares with device plugins.

A plugin's errors that stop a run at a physical device (an instrument that does not answer, a
value refused by a safety envelope) subclass :class:`DeviceError` and say, in
:meth:`~DeviceError.failure_message`, what the operator must know. The command line catches this
type, prints that message and exits 1 (the run failed), so the core needs no plugin's classes.
"""

from __future__ import annotations


class DeviceError(Exception):
    """A failure at a physical device that stopped (or refused) a run: not a bug, and not a
    mistake in the config. Subclasses refine :meth:`failure_message`."""

    def failure_message(self) -> str:
        """What the command line prints (without a traceback) before it exits 1."""
        return f"physlearn: the run stopped: {self}"
