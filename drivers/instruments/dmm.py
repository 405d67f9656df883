"""The meter behind the multiplexer: :class:`VirtualLabDMM` (scan list, one scan as an array,
the reading counter that exposes stale scans).

See :mod:`physlearn.drivers.instruments.base` for what every driver shares.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from qcodes import validators as vals

from physlearn.drivers.instruments.base import (
    _INT,
    LabVisaInstrument,
)


def _float_array(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)


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
