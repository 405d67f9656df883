"""Source instrument driver: :class:`VirtualLabSource`, voltage/current source channels with
compliance, and the instrument's compliance ``trip_status``.

Every level (``volt``, ``curr``) is a plain qcodes parameter bounded by the source's hardware
range (a :class:`~qcodes.validators.Numbers` validator); the station system narrows it to a safety
envelope and sets ``step`` / ``inter_delay``, and qcodes ramps. See
:mod:`physlearn.drivers.instruments.base` for what every driver shares.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from qcodes import validators as vals
from qcodes.instrument import InstrumentChannel

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.instruments.base import LabVisaInstrument, _width


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
        """Ask the channel count; add the channels and ``trip_status``."""
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

    def clear_trips(self) -> None:
        """Clear the compliance trips (``trip_status`` back to 0; outputs stay off)."""
        self.write("OUTP:PROT:CLE")
