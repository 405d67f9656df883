"""The meter behind the multiplexer: :class:`VirtualLabDMM` (scan list, one scan as an array,
the reading counter that exposes stale scans).

See :mod:`physlearn.drivers.instruments.base` for what every driver shares.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from qcodes import validators as vals

from physlearn.drivers.instruments.base import _INT, LabVisaInstrument

_SCAN_QUERY = "READ?"


class VirtualLabDMM(LabVisaInstrument):
    """VLAB-DMM: ``scan_list`` (multiplexer channels), ``readings`` (one scan, V, as an array),
    ``reading_number`` (counter of the last scan's first reading)."""

    def __init__(self, name: str, address: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        #: the scan list last set or read: a scan must have one reading per channel of it
        self._scan: list[int] = []
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
            docstring="one scan (READ?): a reading per channel of scan_list (V)",
        )
        self.reading_number = self.add_parameter(
            "reading_number",
            get_cmd=None,  # the cache: set by every readings get
            set_cmd=False,
            initial_cache_value=-1,
            snapshot_value=False,
            docstring="reading counter of the first reading of the last scan (-1: no scan yet); "
            "a scan whose counter did not advance is a stale one",
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
        """One scan: ``<reading number>,<v1>,...`` parsed strictly (a value per channel of the
        scan list); ``reading_number`` takes the scan's counter."""
        reply = self.ask(_SCAN_QUERY)
        head, _, rest = reply.partition(",")
        if not _INT.fullmatch(head.strip()):
            raise self.bad_reply(_SCAN_QUERY, reply, "<reading number>,<v1>,...")
        n = len(self._scan)
        values = self.parse_floats(_SCAN_QUERY, rest, n or None, whole=reply)
        self.reading_number.cache.set(int(head))
        return values

    def measure(self, channel: int) -> float:
        """One reading (V) of one multiplexer channel."""
        return self.query_float(f"MEAS:VOLT? (@{int(channel)})")
