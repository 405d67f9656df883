"""Keysight 34980A switch mainframe with one 34934A matrix in 8x64, 1-wire (driver
``qcodes...Keysight.Keysight34980A``; the card becomes its ``slot_<s>_34934A`` submodule).

Wiring: column ``c`` of the card is a network node (``stock.k34980a[].columns``, default node
``k`` on column ``k + 1``); rows are buses -- a 34465A reads one of them (``row: 1``). Channels
are numbered slot-row-column, ``s101`` ... ``s864`` (8x64: ``s * 1000 + row * 100 + col``).

Commands: ``SYSTem:CTYPe? <s>`` (``Agilent Technologies,34934A-8x64,<sn>,1.00`` in the card's
slot; ``Agilent Technologies,0,0,0`` in an empty slot), ``SYSTem:MODule:TERMinal:TYPE? <s>``
(``R8_R64``; ``NONE`` for an empty slot),
``SYSTem:MODule:ROW:PROTection <s>, AUTO100|AUTO0|FIX|ISO`` / ``? <s>``,
``ROUTe:CLOSe (@...)`` / ``ROUTe:OPEN (@...)``, their queries (``1,0,...``: one
per channel, in list order), ``ROUTe:OPEN:ALL [<s>|ALL]``. A channel that does not exist queues
-222 and nothing switches. Timing: a command that closes a relay keeps the mainframe busy
``relay_close``, one that opens a relay ``relay_open`` (once per command, the relays of one list
switch together); the driver's ``*ESR?`` after each command (and ``*OPC?``) is answered only
then, as on the real mainframe.
"""

from __future__ import annotations

import re

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.dialects.base import StockInstrument, args, bit
from physlearn.drivers.virtual_lab.dialects.specs import K34980ASpec, TimingSpec
from physlearn.drivers.virtual_lab.instrument import Handler, need_command, need_query
from physlearn.drivers.virtual_lab.scpi import ScpiError, channel_list, integer

ROWS, COLS = 8, 64
_MODES = ("AUTO100", "AUTO0", "FIX", "ISO")


class Matrix34980A(StockInstrument):
    """The mainframe and its 34934A; ``closed`` holds the closed (row, column) crosspoints."""

    driver = "qcodes.instrument_drivers.Keysight.Keysight34980A"
    model = "34980A"

    def __init__(self, spec: K34980ASpec, bench: Bench, timing: TimingSpec) -> None:
        self.spec = spec
        self.closed: set[tuple[int, int]] = set()
        self.protection = "AUTO100"
        cols = spec.columns or {k: k + 1 for k in range(min(bench.n_nodes, COLS))}
        self.column_node = {c: n for n, c in cols.items()}
        super().__init__(spec.name, bench, spec.serial, timing)

    def idn(self) -> str:
        return f"Agilent Technologies,34980A,{self.serial},2.43"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("SYSTem:CTYPe", self._ctype),
            ("SYSTem:MODule:TERMinal:TYPE", self._terminal),
            ("SYSTem:MODule:ROW:PROTection", self._protection),
            ("ROUTe:OPEN:ALL", self._open_all),
            ("ROUTe:CLOSe", self._close),
            ("ROUTe:OPEN", self._open),
        ]

    def reset(self) -> None:
        self.closed.clear()
        self.protection = "AUTO100"

    def nodes_on_row(self, row: int) -> list[int]:
        """Network nodes connected to ``row`` now (closed crosspoints on wired columns)."""
        return sorted(
            self.column_node[c] for r, c in self.closed if r == row and c in self.column_node
        )

    def _slot(self, arg: str | None) -> int:
        s = integer(arg)
        if not 1 <= s <= 8:
            raise ScpiError(-222, f"slot {s} outside 1..8")
        return s

    def _ctype(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query, "SYST:CTYP")
        if self._slot(arg) == self.spec.slot:
            return f"Agilent Technologies,34934A-8x64,{self.serial}C,1.00"
        return "Agilent Technologies,0,0,0"

    def _terminal(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query, "the terminal type")
        return "R8_R64" if self._slot(arg) == self.spec.slot else "NONE"

    def _protection(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        parts = args(arg)
        if query:
            self._card(self._slot(parts[0] if parts else None))
            return self.protection
        if len(parts) != 2:
            raise ScpiError(-109, "expected <slot>, <mode>")
        self._card(self._slot(parts[0]))
        mode = parts[1].upper()
        if mode not in _MODES:
            raise ScpiError(-224, f"{parts[1]!r} is not one of {', '.join(_MODES)}")
        self.protection = mode
        return None

    def _card(self, slot: int) -> None:
        if slot != self.spec.slot:
            raise ScpiError(-222, f"slot {slot} is empty")

    def _crosspoints(self, arg: str | None) -> list[tuple[int, int]]:
        out = []
        for ch in channel_list(arg, 1101, 8864, ROWS * COLS):
            slot, row, col = ch // 1000, ch % 1000 // 100, ch % 100
            if slot != self.spec.slot or not (1 <= row <= ROWS and 1 <= col <= COLS):
                raise ScpiError(-222, f"channel {ch} does not exist")
            out.append((row, col))
        return out

    def _switch(self, arg: str | None, close: bool) -> None:
        points = set(self._crosspoints(arg))
        before = len(self.closed)
        if close:
            self.closed |= points
        else:
            self.closed -= points
        if len(self.closed) != before:
            self.occupy(self.timing.get("relay_close" if close else "relay_open"))

    def _close(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return ",".join(bit(p in self.closed) for p in self._crosspoints(arg))
        self._switch(arg, True)
        return None

    def _open(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return ",".join(bit(p not in self.closed) for p in self._crosspoints(arg))
        self._switch(arg, False)
        return None

    def _open_all(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        need_command(query, "ROUT:OPEN:ALL")
        if arg is not None and arg.strip().upper() != "ALL":
            self._card(self._slot(arg))
        if self.closed:
            self.closed.clear()
            self.occupy(self.timing.get("relay_open"))
        return None
