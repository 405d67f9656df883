"""The switch matrix: :class:`VirtualLabSwitch` (relays connecting nudge sources to output
nodes).

See :mod:`physlearn.drivers.instruments.base` for what every driver shares.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from qcodes import validators as vals
from qcodes.instrument import InstrumentChannel

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.instruments.base import LabVisaInstrument, _width


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
        """Ask the relay count; add one channel per relay."""
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
        """Open every relay (``ROUT:OPEN:ALL``)."""
        self.write("ROUT:OPEN:ALL")
