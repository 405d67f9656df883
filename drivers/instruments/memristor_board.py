"""qcodes driver of a memristor board (VLAB-MEM,
:mod:`physlearn.drivers.virtual_lab.memristor_board`): pulse-programmed memristive weight
devices behind a small SCPI command set, over TCP or serial
(pyvisa ``TCPIP::host::port::SOCKET`` or ``ASRL...``, ``\\n`` terminated).

Only qcodes' public API: a :class:`~qcodes.instrument.VisaInstrument` with parameters

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

import re
from functools import partial
from typing import Any

import numpy as np
from qcodes import validators as vals
from qcodes.instrument import VisaInstrument

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.system import FloatArray

_INT = re.compile(r"[+-]?\d+")


class MemristorBoard(VisaInstrument):
    """A memristor board: ``count`` devices, nominal ``window`` (S), ``max_pulses`` per command."""

    default_terminator = "\n"
    default_timeout = 5.0

    def __init__(self, name: str, address: str, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        try:
            self.count = _query_int(self, "MEM:COUN?")
            self.max_pulses = _query_int(self, "MEM:PULS:MAX?")
            if self.count < 1 or self.max_pulses < 1:
                raise _bad(self, "MEM:COUN?", str(self.count), "at least one device")
            g_lo, g_hi = _floats(self, "MEM:WIND?", 2)
            self.window = (float(g_lo), float(g_hi))
            w_lo, w_hi = _floats(self, "MEM:PULS:WIDT:LIM?", 2)
            v_max = float(_floats(self, "MEM:VOLT:LIM?", 1)[0])
        except BaseException:
            self.close()  # the name would stay taken otherwise
            raise
        n, top = self.count, self.max_pulses
        self.conductances = self.add_parameter(
            "conductances",
            unit="S",
            get_cmd=partial(_floats, self, f"MEM:READ? (@1:{n})", n),
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
            get_parser=float, set_parser=float, vals=vals.Numbers(0.0, v_max),
            docstring="amplitude of SET pulses (V)",
        )  # fmt: skip
        self.reset_voltage = self.add_parameter(
            "reset_voltage", unit="V", get_cmd="MEM:VOLT:RES?", set_cmd="MEM:VOLT:RES {!r}",
            get_parser=float, set_parser=float, vals=vals.Numbers(0.0, v_max),
            docstring="amplitude of RESET pulses (V)",
        )  # fmt: skip

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

    def errors(self, limit: int = 32) -> list[str]:
        """Drain the error queue (``SYST:ERR?``): the entries, oldest first; empty if none."""
        out = []
        for _ in range(limit):
            reply = self.ask("SYST:ERR?")
            code = reply.split(",", 1)[0].strip()
            if not _INT.fullmatch(code):
                raise _bad(self, "SYST:ERR?", reply, '<code>,"<message>"')
            if int(code) == 0:
                break
            out.append(reply)
        return out


def _bad(inst: MemristorBoard, cmd: str, reply: str, expected: str) -> InstrumentReplyError:
    return InstrumentReplyError(
        f"{inst.name} replied {reply!r} to {cmd!r}; expected {expected}", inst.name
    )


def _query_int(inst: MemristorBoard, cmd: str) -> int:
    reply = inst.ask(cmd).strip()
    if not _INT.fullmatch(reply):
        raise _bad(inst, cmd, reply, "an integer")
    return int(reply)


def _floats(inst: MemristorBoard, cmd: str, n: int) -> FloatArray:
    """``n`` finite comma-separated numbers asked with ``cmd``."""
    reply = inst.ask(cmd).strip()
    try:
        out = np.array([float(x) for x in reply.split(",")], dtype=np.float64)
    except ValueError:
        raise _bad(inst, cmd, reply, f"{n} comma-separated numbers") from None
    if out.size != n or not np.isfinite(out).all():
        raise _bad(inst, cmd, reply, f"{n} finite comma-separated numbers")
    return out


def _counts_command(counts: np.ndarray) -> str:
    return "MEM:PULS:ALL " + ",".join(str(int(c)) for c in np.asarray(counts).tolist())
