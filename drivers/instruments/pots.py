"""The digital-potentiometer bank: :class:`VirtualLabPots` (every device's tap in one exchange,
per-device channels measuring a device isolated).

See :mod:`physlearn.drivers.instruments.base` for what every driver shares.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import numpy as np
from qcodes import validators as vals
from qcodes.instrument import InstrumentChannel

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.instruments.base import LabVisaInstrument, _width

#: a reply of comma-separated integers (as ``_INT`` each, blanks around them allowed)
_INTS = re.compile(r"\s*[+-]?\d+\s*(?:,\s*[+-]?\d+\s*)*")


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
        """Ask the bank's size; add the channels and ``taps``."""
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


_TAPS_QUERY = "POT:TAP:ALL?"


def _taps_command(taps: np.ndarray) -> str:
    ks = np.asarray(taps)
    if ks.dtype.kind not in "iu":  # the validator admits integer arrays only; be sure
        ks = ks.astype(np.int64)
    return "POT:TAP:ALL " + ",".join(map(str, ks.tolist()))
