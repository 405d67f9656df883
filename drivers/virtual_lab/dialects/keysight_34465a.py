"""Keysight 34465A DMM dialect (driver ``qcodes...Keysight.Keysight34465A``), reading a row of a
34980A matrix (``stock.k34465a[].matrix`` / ``row``; LO on ground).

IDN ``Keysight Technologies,34465A,<sn>,A.03.01-03.15-03.01-00.52-05-02`` (firmware A.03: the
driver enables the DIG option), ``*OPT?`` ``0,0,DIG,MEM,0``, ``SYSTem:LFRequency?`` (timing
``line_frequency``). DC voltage: ``SENSe:FUNCtion "VOLT"`` / ``?`` (quoted);
``SENSe:VOLTage[:DC]:NPLC`` (the driver's list 0.001..100; other values round up, > 100 queues
-222); ``...:RANGe`` (0.1..1000 V, rounded up; switches autorange off) ``...:RANGe:AUTO
ON|OFF|ONCE``; ``...:ZERO:AUTO``; ``...:RESolution`` (resolution factor × range; selects the
NPLC); ``...:APERture[:ENABled]``. Trigger: ``TRIGger:COUNt|SOURce|DELay[:AUTO]|SLOPe|LEVel``,
``SAMPle:COUNt[:PRETrigger]|SOURce|TIMer``; ``INIT`` arms (IMM/INT: measures at once; BUS: each
``*TRG`` takes ``SAMPle:COUNt`` readings); ``FETCh?`` returns reading memory (-214 "Trigger
deadlock" while triggers are missing; no reply then, as the real meter would hang);
``READ?`` = INIT + FETCh? (-214 with source BUS/EXT); ``ABORt``. Display: ``DISPlay:STATe``,
``DISPlay:TEXT "<t>"`` / ``?``, ``DISPlay:TEXT:CLEar``. Other functions are accepted but read
overload (only DC voltage is wired).

A reading is the voltage of the row's bus: no node connected -> 0 V + noise (an open input, the
34465A's >10 GOhm DCV input); one node -> that node's bench voltage; several nodes -> the nodes
shorted together through the relay paths, solved from the network's impedance matrix (the
bus reads the compromise voltage a real short gives; the bench, and so the other instruments,
do not see the short). Beyond 120 % of the range: ``+-9.9E37``. Noise (when the lab's
``dmm.noise`` > 0): rms = the driver's resolution factor for the NPLC × range. Timing per
reading: aperture or NPLC / f_line, × ``autozero_factor`` with autozero on, plus the trigger
delay per trigger (automatic: ``dmm_trigger_delay`` up to 0.02 PLC, × 1.3 up to 0.2 PLC, × 1.6
from 1 PLC, as the automatic DC-volts delays step); ``dmm_range_change`` per range change. The
reading is taken at the trigger (the bench as it is then), its duration then keeps the meter
busy: a relay opened during that time leaves the reading as it was (on a real bench it would
spoil the reading: wait for the meter, e.g. ``*OPC?``, before switching).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.dialects.base import (
    StockInstrument,
    bit,
    in_range,
    on_off,
    sci,
    unquote,
)
from physlearn.drivers.virtual_lab.dialects.keysight_34980a import Matrix34980A
from physlearn.drivers.virtual_lab.dialects.specs import K34465ASpec, TimingSpec
from physlearn.drivers.virtual_lab.instrument import Handler
from physlearn.drivers.virtual_lab.scpi import ScpiError, number

NPLCS = (0.001, 0.002, 0.006, 0.02, 0.06, 0.2, 1.0, 10.0, 100.0)
RES_FACTORS = (30e-6, 15e-6, 6e-6, 3e-6, 1.5e-6, 0.7e-6, 0.3e-6, 0.1e-6, 0.03e-6)
RANGES = (0.1, 1.0, 10.0, 100.0, 1000.0)
_FUNCS = ("VOLT", "VOLT:AC", "CURR", "CURR:AC", "RES", "FRES")
_SPECIAL = {"MIN": 0, "DEF": 1, "MAX": 2}


def bus_voltage(bench: Bench, nodes: list[int], g: float) -> float:
    """Voltage of a bus tied to ``nodes`` through conductance ``g`` each (no other load)."""
    v = bench.voltages()
    if len(nodes) <= 1:
        return float(v[nodes[0]]) if nodes else 0.0
    n = bench.n_nodes
    held = {
        bench.src_node[c]
        for c in range(len(bench.func))
        if bench.output[c] and bench.func[c] == "VOLT" and bench.src_node[c] is not None
    }
    ge = bench.edge_conductance()
    i, j = bench.edges[:, 0], bench.edges[:, 1]
    lap = np.zeros((n, n))
    np.add.at(lap, (i, i), ge)
    np.add.at(lap, (j, j), ge)
    np.add.at(lap, (i, j), -ge)
    np.add.at(lap, (j, i), -ge)
    lap[np.diag_indices(n)] += bench.config.leakage
    for r, relay in enumerate(bench.relays):
        ch = relay.source - 1
        if bench.closed[r] and bench.output[ch] and bench.func[ch] == "VOLT":
            lap[relay.node, relay.node] += relay.conductance
    free = [k for k in range(n) if k not in held]
    z = np.zeros((n, n))
    if free:
        z[np.ix_(free, free)] = np.linalg.inv(lap[np.ix_(free, free)])
    k = len(nodes)
    a = np.zeros((k + 1, k + 1))
    a[:k, :k] = np.eye(k) + g * z[np.ix_(nodes, nodes)]
    a[:k, k] = -g
    a[k, :k] = 1.0
    rhs = np.append(-g * v[nodes], 0.0)
    return float(np.linalg.solve(a, rhs)[k])


def auto_trigger_delay(timing: TimingSpec, nplc: float) -> float:
    """The automatic trigger delay at ``nplc`` (DC volts; 0 in fast mode): ``dmm_trigger_delay``
    up to 0.02 PLC, x 1.3 up to 0.2 PLC, x 1.6 from 1 PLC (the steps of the data sheet's table,
    100/130/160 us)."""
    step = 1.0 if nplc <= 0.02 else (1.3 if nplc < 1.0 else 1.6)
    return step * timing.get("dmm_trigger_delay")


class DMM34465A(StockInstrument):
    """The 34465A on one row of a 34980A matrix."""

    driver = "qcodes.instrument_drivers.Keysight.Keysight34465A"
    model = "34465A"
    options = "0,0,DIG,MEM,0"

    def __init__(
        self, spec: K34465ASpec, bench: Bench, timing: TimingSpec, matrix: Matrix34980A
    ) -> None:
        self.spec = spec
        self.matrix = matrix
        super().__init__(spec.name, bench, spec.serial, timing)
        self.reset()

    def idn(self) -> str:
        return f"Keysight Technologies,34465A,{self.serial},A.03.01-03.15-03.01-00.52-05-02"

    def reset(self) -> None:
        self.func = "VOLT"
        self.s: dict[str, Any] = {
            "nplc": 10.0,
            "range": 10.0,
            "auto": True,
            "zero": True,
            "apon": False,
            "aper": 0.1,
            "tcount": 1,
            "tsrc": "IMM",
            "tdelay": self.timing.dmm_trigger_delay,
            "tauto": True,
            "slope": "NEG",
            "level": 0.0,
            "scount": 1,
            "pre": 0,
            "ssrc": "IMM",
            "timer": 0.001,
            "disp": True,
            "text": "",
        }
        self.memory: list[float] = []
        self.pending = 0

    def commands(self) -> list[tuple[str, Handler]]:
        v = "[SENSe:]VOLTage[:DC]"
        return [
            ("SENSe:FUNCtion[:ON]", self._func),
            (f"{v}:NPLCycles", self._nplc),
            (f"{v}:RANGe:AUTO", self._autorange),
            (f"{v}:RANGe[:UPPer]", self._range),
            (f"{v}:ZERO:AUTO", self._autozero),
            (f"{v}:RESolution", self._resolution),
            (f"{v}:APERture:ENABled", self._flag("apon")),
            (f"{v}:APERture", self._aperture),
            ("TRIGger:COUNt", self._num("tcount", 1, 1e9, True)),
            ("TRIGger:DELay:AUTO", self._flag("tauto")),
            ("TRIGger:DELay", self._num("tdelay", 0, 3600, False)),
            ("TRIGger:SOURce", self._word("tsrc", ("IMM", "EXT", "BUS", "INT"))),
            ("TRIGger:SLOPe", self._word("slope", ("POS", "NEG"))),
            ("TRIGger:LEVel", self._num("level", -1200, 1200, False)),
            ("SAMPle:COUNt:PRETrigger", self._num("pre", 0, 2e6, True)),
            ("SAMPle:COUNt", self._num("scount", 1, 1e9, True)),
            ("SAMPle:SOURce", self._word("ssrc", ("IMM", "TIM"))),
            ("SAMPle:TIMer", self._timer),
            ("DISPlay:TEXT:CLEar", self._clear_text),
            ("DISPlay:TEXT[:DATA]", self._text),
            ("DISPlay[:WINDow][:STATe]", self._flag("disp")),
            ("SYSTem:LFRequency", lambda m, q, a: str(self.timing.line_frequency)),
            ("INITiate[:IMMediate]", self._init),
            ("FETCh", self._fetch),
            ("READ", self._read),
            ("ABORt", self._abort),
        ]

    # -- generic settings --------------------------------------------------------------------
    def _flag(self, key: str) -> Handler:
        def h(m: re.Match[str], query: bool, arg: str | None) -> str | None:
            if query:
                return bit(bool(self.s[key]))
            self.s[key] = on_off(arg)
            return None

        return h

    def _word(self, key: str, words: tuple[str, ...]) -> Handler:
        def h(m: re.Match[str], query: bool, arg: str | None) -> str | None:
            if query:
                return str(self.s[key])
            w = (arg or "").strip().upper()
            match = next((x for x in words if w.startswith(x)), None)
            if match is None:
                raise ScpiError(-224, f"{w[:20]!r} is not one of {', '.join(words)}")
            self.s[key] = match
            return None

        return h

    def _num(self, key: str, lo: float, hi: float, integral: bool) -> Handler:
        def h(m: re.Match[str], query: bool, arg: str | None) -> str | None:
            if query:
                x = self.s[key]
                return str(int(x)) if integral else sci(float(x))
            w = (arg or "").strip().upper()
            if w in _SPECIAL or w == "INF":
                x = (lo, lo, hi)[_SPECIAL[w]] if w != "INF" else hi
            else:
                x = in_range(arg, lo, hi, key)
            if key == "tdelay":
                self.s["tauto"] = False
            self.s[key] = int(x) if integral else float(x)
            return None

        return h

    # -- measurement settings ----------------------------------------------------------------
    def _func(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return f'"{self.func}"'
        f = unquote(arg).upper()
        f = {"VOLT:DC": "VOLT", "VOLTAGE": "VOLT", "CURR:DC": "CURR"}.get(f, f)
        if f not in _FUNCS:
            raise ScpiError(-224, f"{f[:20]!r} is not a measurement function")
        if f != self.func:
            self.func = f
            self.occupy(self.timing.get("dmm_range_change"))
        return None

    def _nplc(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return sci(float(self.s["nplc"]))
        x = (
            number(arg)
            if (arg or "").strip().upper() not in _SPECIAL
            else (NPLCS[0], 10.0, NPLCS[-1])[_SPECIAL[(arg or "").strip().upper()]]
        )
        if not 0 < x <= NPLCS[-1]:
            raise ScpiError(-222, f"NPLC {x:g} outside {NPLCS[0]:g}..{NPLCS[-1]:g}")
        self.s["nplc"] = next(p for p in NPLCS if p >= x * (1 - 1e-9))
        self.s["apon"] = False
        return None

    def _set_range(self, r: float) -> None:
        if r != self.s["range"]:
            self.s["range"] = r
            self.occupy(self.timing.get("dmm_range_change"))

    def _range(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return sci(float(self.s["range"]))
        w = (arg or "").strip().upper()
        x = RANGES[(0, 2, 4)[_SPECIAL[w]]] if w in _SPECIAL else number(arg)
        r = next((r for r in RANGES if abs(x) <= r * (1 + 1e-9)), None)
        if r is None:
            raise ScpiError(-222, f"range {x:g} above 1000 V")
        self._set_range(r)
        self.s["auto"] = False
        return None

    def _autorange(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return bit(bool(self.s["auto"]))
        if (arg or "").strip().upper() == "ONCE":
            self._set_range(self._auto_range(abs(self._true_value())))
            self.s["auto"] = False
        else:
            self.s["auto"] = on_off(arg)
        return None

    def _autozero(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return bit(bool(self.s["zero"]))
        if (arg or "").strip().upper() != "ONCE":
            self.s["zero"] = on_off(arg)
        return None

    def _resolution(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        rng = float(self.s["range"])
        if query:
            return sci(RES_FACTORS[NPLCS.index(float(self.s["nplc"]))] * rng)
        w = (arg or "").strip().upper()
        if w in _SPECIAL:
            self.s["nplc"] = (NPLCS[-1], 10.0, NPLCS[0])[_SPECIAL[w]]
            return None
        x = number(arg)
        ok = [k for k, f in enumerate(RES_FACTORS) if f * rng <= x * (1 + 1e-6)]
        if not ok:
            raise ScpiError(-222, f"resolution {x:g} finer than {RES_FACTORS[-1] * rng:g}")
        self.s["nplc"] = NPLCS[ok[0]]
        self.s["apon"] = False
        return None

    def _aperture(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return sci(float(self.s["aper"]))
        top = 2.0 if self.timing.line_frequency == 50 else 1.67
        w = (arg or "").strip().upper()
        self.s["aper"] = (
            (20e-6, 0.1, top)[_SPECIAL[w]]
            if w in _SPECIAL
            else in_range(arg, 20e-6, top, "aperture")
        )
        self.s["apon"] = True
        return None

    def _timer(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            if (arg or "").strip().upper() == "MIN":
                return sci(max(self._t_reading(), 1e-6))
            return sci(float(self.s["timer"]))
        w = (arg or "").strip().upper()
        self.s["timer"] = (
            (1e-6, 1e-3, 3600.0)[_SPECIAL[w]]
            if w in _SPECIAL
            else in_range(arg, 0, 3600, "sample timer")
        )
        return None

    def _text(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return '"' + str(self.s["text"]).replace('"', '""') + '"'
        self.s["text"] = unquote(arg)[:40]
        return None

    def _clear_text(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        self.s["text"] = ""
        return None

    # -- readings ----------------------------------------------------------------------------
    def _true_value(self) -> float:
        if self.func != "VOLT":
            return 9.9e37
        nodes = self.matrix.nodes_on_row(self.spec.row)
        return bus_voltage(self.bench, nodes, self.matrix.spec.relay_conductance)

    @staticmethod
    def _auto_range(x: float) -> float:
        return next((r for r in RANGES if x <= 1.2 * r), RANGES[-1])

    def _t_reading(self) -> float:
        """Seconds per reading (integration, autozero) on the data sheet (0 in fast mode)."""
        if self.timing.mode == "fast":
            return 0.0
        t = (
            float(self.s["aper"])
            if self.s["apon"]
            else float(self.s["nplc"]) / self.timing.line_frequency
        )
        return t * (self.timing.autozero_factor if self.s["zero"] else 1.0)

    def _reading(self) -> float:
        x = self._true_value()
        if abs(x) >= 9.9e37:
            return x
        if self.s["auto"]:
            self._set_range(self._auto_range(abs(x)))
        rng = float(self.s["range"])
        if self.bench.config.dmm.noise > 0:
            rms = RES_FACTORS[NPLCS.index(float(self.s["nplc"]))] * rng
            x += rms * float(self.bench.noise_rng.standard_normal())
        return x if abs(x) <= 1.2 * rng else float(np.copysign(9.9e37, x))

    def _take(self) -> None:
        """One trigger: the trigger delay, then ``SAMPle:COUNt`` readings into memory."""
        delay = (
            auto_trigger_delay(self.timing, float(self.s["nplc"]))
            if self.s["tauto"]
            else (0.0 if self.timing.mode == "fast" else float(self.s["tdelay"]))
        )
        t = self._t_reading()
        if self.s["ssrc"] == "TIM" and self.timing.mode != "fast":
            t = max(t, float(self.s["timer"]))
        n = int(self.s["scount"])
        self.memory += [self._reading() for _ in range(n)]
        self.occupy(delay + n * t)
        self.pending -= 1

    def _init(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        self.memory = []
        self.pending = int(self.s["tcount"])
        if self.s["tsrc"] in ("IMM", "INT"):
            while self.pending > 0:
                self._take()
        return None

    def trigger(self) -> None:
        if self.pending <= 0 or self.s["tsrc"] != "BUS":
            raise ScpiError(-211, "no measurement waits for a bus trigger (INIT, TRIG:SOUR BUS)")
        self._take()

    def _fetch(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        if self.pending > 0:
            raise ScpiError(-214, f"{self.pending} triggers missing")
        if not self.memory:
            raise ScpiError(-221, "no readings in memory (INIT first)")
        self.observe()
        return ",".join(sci(x) for x in self.memory)

    def _read(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        if self.s["tsrc"] in ("BUS", "EXT"):
            raise ScpiError(-214, f"READ? with trigger source {self.s['tsrc']}")
        self._init(m, False, None)
        return self._fetch(m, True, None)

    def _abort(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        self.pending = 0
        return None
