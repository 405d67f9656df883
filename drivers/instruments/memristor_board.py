"""qcodes driver of a memristor board (VLAB-MEM,
:mod:`physlearn.drivers.virtual_lab.memristor_board`): pulse-programmed memristive weight
devices behind a small SCPI command set, over TCP or serial
(pyvisa ``TCPIP::host::port::SOCKET`` or ``ASRL...``, ``\\n`` terminated).

A :class:`~physlearn.drivers.instruments.base.LabVisaInstrument` (strict replies, ``errors()``)
with parameters

* ``conductances`` (get, S): every device's conductance, one array in device order;
* ``pulse_counts`` (set): signed pulse counts, one per device (``+`` SET, ``-`` RESET), validated
  as integers within ``+-max_pulses``;
* ``pulse_width`` (s), ``set_voltage`` and ``reset_voltage`` (V): the pulse settings, validated
  against the limits the board reports;

and :meth:`read_conductances` / :meth:`apply_pulses`, the two calls the programming
algorithms (:mod:`physlearn.drivers.station.programming`) need. Replies are parsed strictly: a
reply that is not what was asked raises :class:`~physlearn.drivers.errors.InstrumentReplyError`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
from qcodes import validators as vals

from physlearn.drivers.instruments.base import LabVisaInstrument
from physlearn.system import FloatArray

#: the smallest pulse amplitude the validators pass (V): the board takes any amplitude above 0
_V_MIN = math.nextafter(0.0, math.inf)


class MemristorBoard(LabVisaInstrument):
    """A memristor board: ``count`` devices, nominal ``window`` (S), ``max_pulses`` per command."""

    default_timeout = 5.0

    def __init__(self, name: str, address: str, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        with self._closed_on_error():
            self._setup()

    def _setup(self) -> None:
        """Ask the board its size and limits; add the parameters they bound."""
        self.count = self.query_int("MEM:COUN?")
        if self.count < 1:
            raise self.bad_reply("MEM:COUN?", str(self.count), "at least one device")
        self.max_pulses = self.query_int("MEM:PULS:MAX?")
        if self.max_pulses < 1:
            raise self.bad_reply("MEM:PULS:MAX?", str(self.max_pulses), "at least one pulse")
        g_lo, g_hi = self._floats("MEM:WIND?", 2)
        self.window = (float(g_lo), float(g_hi))
        w_lo, w_hi = self._floats("MEM:PULS:WIDT:LIM?", 2)
        v_max = float(self._floats("MEM:VOLT:LIM?", 1)[0])
        n, top = self.count, self.max_pulses
        self.conductances = self.add_parameter(
            "conductances",
            unit="S",
            get_cmd=partial(self._floats, f"MEM:READ? (@1:{n})", n),
            vals=vals.Arrays(shape=(n,)),
            snapshot_value=False,
            docstring="conductance of every device, in device order (S, read noise included)",
        )
        self.pulse_counts = self.add_parameter(
            "pulse_counts",
            set_cmd=lambda c: self.write(_counts_command(c)),
            vals=vals.Arrays(min_value=-top, max_value=top, shape=(n,), valid_types=(np.integer,)),
            snapshot_value=False,
            docstring="signed pulses per device: + SET (raise G), - RESET (lower G)",
        )
        self.pulse_width = self.add_parameter(
            "pulse_width", unit="s", get_cmd="MEM:PULS:WIDT?", set_cmd="MEM:PULS:WIDT {!r}",
            get_parser=float, set_parser=float, vals=vals.Numbers(float(w_lo), float(w_hi)),
            docstring="width of every pulse (s)",
        )  # fmt: skip
        self.set_voltage = self.add_parameter(
            "set_voltage", unit="V", get_cmd="MEM:VOLT:SET?", set_cmd="MEM:VOLT:SET {!r}",
            get_parser=float, set_parser=float, vals=vals.Numbers(_V_MIN, v_max),
            docstring="amplitude of SET pulses (V, above 0)",
        )  # fmt: skip
        self.reset_voltage = self.add_parameter(
            "reset_voltage", unit="V", get_cmd="MEM:VOLT:RES?", set_cmd="MEM:VOLT:RES {!r}",
            get_parser=float, set_parser=float, vals=vals.Numbers(_V_MIN, v_max),
            docstring="amplitude of RESET pulses (V, above 0)",
        )  # fmt: skip

    def _floats(self, cmd: str, n: int) -> FloatArray:
        """``n`` finite comma-separated numbers asked with ``cmd``."""
        reply = self.ask(cmd)
        out = self.parse_floats(cmd, reply, n)
        if not np.isfinite(out).all():
            raise self.bad_reply(cmd, reply, f"{n} finite comma-separated numbers")
        return out

    # -- the programming interface -------------------------------------------------------------
    def read_conductances(self) -> FloatArray:
        """Every device's conductance (S): ``conductances.get()``."""
        return np.asarray(self.conductances.get(), dtype=np.float64)

    def apply_pulses(self, counts: np.ndarray) -> None:
        """Send signed pulse counts (one per device): ``pulse_counts.set(counts)``."""
        self.pulse_counts.set(np.asarray(counts))

    def pulse(self, kind: str, n: int, devices: list[int]) -> None:
        """``n`` pulses of ``kind`` (``"SET"`` or ``"RESET"``) to the devices numbered
        ``devices`` (1-based), in one command."""
        head = {"SET": "MEM:PULS:SET", "RESET": "MEM:PULS:RES"}[kind]
        vals.Ints(0, self.max_pulses).validate(n)
        for d in devices:
            vals.Ints(1, self.count).validate(d)
        self.write(f"{head} {int(n)},(@{','.join(str(int(d)) for d in devices)})")


def _counts_command(counts: np.ndarray) -> str:
    return "MEM:PULS:ALL " + ",".join(str(int(c)) for c in np.asarray(counts).tolist())
