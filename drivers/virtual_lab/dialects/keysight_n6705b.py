"""Keysight N6705B DC Power Analyzer dialect (driver ``qcodes...Keysight.KeysightN6705B``).

Four module channels ``c = 1..4``, each on a bench source channel (``stock.n6705b[].channels``)
in voltage priority: ``SOURce:VOLTage[:LEVel] <V>, (@c)`` / ``?`` (the held node voltage),
``SOURce:CURRent[:LEVel] <A>, (@c)`` / ``?`` (the current limit in CV), ``MEASure:VOLTage? (@c)``,
``MEASure:CURRent? (@c)`` (current delivered into the node, from the bench physics),
``OUTPut[:STATe] 0|1, (@c)`` / ``?``, ``SOURce:VOLTage:PROTection[:LEVel] <V>, (@c)`` / ``?``
(over-voltage protection), ``OUTPut:PMODe VOLT|CURR, (@c)`` / ``?``. ``*IDN?`` has exactly 4
fields (the driver splits it strictly).

As on the instrument: a level beyond the module range queues -222 and is not applied; the
driver's ``SOUR:VOLT:PROT v, @(c)`` (a malformed channel list) queues -104 "Data type error"
and changes nothing; a module slot without a bench channel reads 0 and refuses levels (-221).
Timing: a level change keeps the module busy ``psu_settle``, switching its output on
``psu_output_on`` and off ``psu_output_off`` (seen by ``*OPC?``).
"""

from __future__ import annotations

import re

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.dialects.base import StockInstrument, args, bit, on_off, sci
from physlearn.drivers.virtual_lab.dialects.specs import N6705BSpec, TimingSpec
from physlearn.drivers.virtual_lab.instrument import Handler
from physlearn.drivers.virtual_lab.scpi import ScpiError, channel_list, number


def node_current(bench: Bench, node: int) -> float:
    """Current (A) a source holding ``node`` delivers into the network and the leakage."""
    v = bench.voltages()
    g = bench.edge_conductance()
    i, j = bench.edges[:, 0], bench.edges[:, 1]
    flow = g * (v[i] - v[j])
    out = float(flow[i == node].sum() - flow[j == node].sum())
    return out + bench.config.leakage * float(v[node])


class N6705B(StockInstrument):
    """The N6705B mainframe with 4 modules on bench source channels."""

    driver = "qcodes.instrument_drivers.Keysight.KeysightN6705B"
    model = "N6705B"

    def __init__(self, spec: N6705BSpec, bench: Bench, timing: TimingSpec) -> None:
        self.spec = spec
        self.ovp = [spec.max_voltage * 1.1] * 4
        self.pmode = ["VOLT"] * 4
        super().__init__(spec.name, bench, spec.serial, timing)

    def idn(self) -> str:
        return f"Agilent Technologies,N6705B,{self.serial},D.01.08"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("SOURce:VOLTage:PROTection[:LEVel]", self._ovp),
            ("SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._volt),
            ("SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]", self._curr),
            ("MEASure[:SCALar]:VOLTage[:DC]", self._meas_v),
            ("MEASure[:SCALar]:CURRent[:DC]", self._meas_i),
            ("OUTPut:PMODe", self._pmode),
            ("OUTPut[:STATe]", self._output),
        ]

    def reset(self) -> None:
        b = self.bench
        for c in self._bench_channels():
            b.func[c], b.volt[c], b.curr_limit[c], b.output[c] = (
                "VOLT",
                0.0,
                self.spec.max_current,
                False,
            )
        self.ovp = [self.spec.max_voltage * 1.1] * 4
        b.changed()

    def _bench_channels(self) -> list[int]:
        return [c - 1 for c in self.spec.channels if c is not None]

    def _split(self, arg: str | None, query: bool) -> tuple[str | None, int]:
        """(value or None, module index 0..3) of ``<value>, (@c)`` or ``(@c)``."""
        parts = args(arg)
        if not parts:
            raise ScpiError(-109, "expected a channel list (@c)")
        chs = channel_list(parts[-1], 1, 4, 1)
        if len(parts) != (1 if query else 2) or len(chs) != 1:
            raise ScpiError(
                -109 if not query and len(parts) < 2 else -104,
                "expected <value>, (@c) with one channel",
            )
        return (None if query else parts[0]), chs[0] - 1

    def _bench(self, module: int) -> int:
        c = self.spec.channels[module]
        if c is None:
            raise ScpiError(-221, f"module {module + 1} is not installed")
        return c - 1

    def _volt(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        value, mod = self._split(arg, query)
        b = self.bench
        if query:
            c = self.spec.channels[mod]
            return sci(0.0 if c is None else b.volt[c - 1])
        v = number(value)
        lo, hi = self.spec.min_voltage, self.spec.max_voltage
        if not lo <= v <= hi:
            raise ScpiError(-222, f"{v:g} V outside the module range {lo:g}..{hi:g}")
        if v > self.ovp[mod]:
            raise ScpiError(-221, f"{v:g} V above the over-voltage protection {self.ovp[mod]:g}")
        c = self._bench(mod)
        b.volt[c] = v
        b.func[c] = "VOLT"
        b.changed()
        self.occupy(self.timing.get("psu_settle"))
        return None

    def _curr(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        value, mod = self._split(arg, query)
        b = self.bench
        if query:
            c = self.spec.channels[mod]
            return sci(0.0 if c is None else b.curr_limit[c - 1])
        v = number(value)
        if not 0 < v <= self.spec.max_current:
            raise ScpiError(-222, f"{v:g} A outside the module range 0..{self.spec.max_current:g}")
        b.curr_limit[self._bench(mod)] = v
        b.changed()
        return None

    def _ovp(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        value, mod = self._split(arg, query)
        if query:
            return sci(self.ovp[mod])
        v = number(value)
        if not 0 <= v <= self.spec.max_voltage * 1.1:
            raise ScpiError(-222, f"protection {v:g} V outside 0..{self.spec.max_voltage * 1.1:g}")
        self.ovp[mod] = v
        return None

    def _meas_v(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _, mod = self._split(arg, True)
        c = self.spec.channels[mod]
        b = self.bench
        if c is None or not b.output[c - 1] or b.src_node[c - 1] is None:
            return sci(0.0)
        return sci(b.voltages()[b.src_node[c - 1]])

    def _meas_i(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _, mod = self._split(arg, True)
        c = self.spec.channels[mod]
        b = self.bench
        node = None if c is None else b.src_node[c - 1]
        if c is None or node is None or not b.output[c - 1]:
            return sci(0.0)
        return sci(node_current(b, node))

    def _pmode(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        value, mod = self._split(arg, query)
        if query:
            return self.pmode[mod]
        mode = (value or "").upper()
        mode = {"VOLTAGE": "VOLT", "CURRENT": "CURR"}.get(mode, mode)
        if mode not in ("VOLT", "CURR"):
            raise ScpiError(-224, f"{value!r} is not VOLT or CURR")
        self.pmode[mod] = mode
        return None

    def _output(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        value, mod = self._split(arg, query)
        b = self.bench
        if query:
            c = self.spec.channels[mod]
            return bit(c is not None and bool(b.output[c - 1]))
        on = on_off(value)
        if b.set_output(self._bench(mod), on):
            self.occupy(self.timing.get("psu_output_on" if on else "psu_output_off"))
        return None
