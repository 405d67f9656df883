"""Keithley 2450 SourceMeter dialect (driver ``qcodes...Keithley.Keithley2450``), on one bench
source channel (``stock.k2450[].channel``; its node from ``source.wiring``).

Source (``F`` = ``VOLTage`` | ``CURRent``; the driver sends lower-case long forms):
``:SOURce:FUNCtion VOLT|CURR`` / ``?`` (a change switches the output off, as the instrument
does); ``SOURce:F[:LEVel] <x>`` / ``?``; ``SOURce:F:RANGe <x>`` / ``?`` (rounded up to the next
range), ``SOURce:F:RANGe:AUTO`` ; ``SOURce:VOLTage:ILIMit <A>`` and ``SOURce:CURRent:VLIMit <V>``
(the compliance: the bench channel's current / voltage limit) / ``?``;
``SOURce:F:ILIMit|VLIMit:TRIPped?`` (``1`` when the bench tripped the channel on compliance);
``SOURce:F:DELay[:AUTO|:USER<n>]``, ``SOURce:F:READ:BACK``; ``:OUTPut[:STATe]``.
Sense (``F`` also ``RESistance``): ``:SENSe:FUNCtion "VOLT:DC"|"CURR:DC"|"RES"`` / ``?``
(quoted), ``SENSe:F:RANGe[:AUTO]``, ``SENSe:F:NPLCycles`` (0.01..10), ``SENSe:F:AZERo``,
``SENSe:F:RSENse``, ``SENSe:F:DELay:USER<n>``, ``SENSe:AZERo:ONCE``, ``SENSe:COUNt``.
``:MEASure? ['<buffer>']`` makes ``count`` readings into the buffer and returns the last: the
node voltage (output on; 0 V off), the current into the node (the forced current in CURR mode, the
delivered current from the bench physics in VOLT mode) or their ratio. Reading buffers:
``:TRACe:MAKE|DELete|CLEar|TRIGger '<b>'``, ``:TRACe:POINts[?]``, ``:TRACe:ACTual? '<b>'``,
``:TRACe:DATA? a, b, '<b>'[, elements]``, ``:FETCh? '<b>'[, elements]``. Linear sweep:
``:SOURce:SWEep:F:LINear start,stop,points,delay,count,range,fail,dual,'<b>'`` then
``:INITiate`` (and ``*WAI``, which holds the next reply until the sweep ends).

Out-of-range levels, limits, ranges and NPLC queue -222 "Data out of range" and change nothing.
Reading noise (when the lab's ``dmm.noise`` > 0): 10 ppm of the sense range / sqrt(NPLC), rms
(an assumption of the same order as the data sheet's). Timing: ``smu_settle`` after a level,
``count * NPLC / f_line`` (× ``autozero_factor``) per ``:MEASure?``.
"""

from __future__ import annotations

import functools
import math
import re

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.dialects.base import (
    StockInstrument,
    args,
    bit,
    in_range,
    on_off,
    sci,
    unquote,
)
from physlearn.drivers.virtual_lab.dialects.keysight_n6705b import node_current
from physlearn.drivers.virtual_lab.dialects.specs import K2450Spec, TimingSpec
from physlearn.drivers.virtual_lab.instrument import Handler, need_query
from physlearn.drivers.virtual_lab.scpi import ScpiError, integer, number

SOURCE_RANGES = {
    "VOLT": (0.02, 0.2, 2.0, 20.0, 200.0),
    "CURR": tuple(10.0**k for k in range(-8, 1)),
}
SENSE_RANGES = {**SOURCE_RANGES, "RES": tuple(2 * 10.0**k for k in range(1, 9))}
_FN = {"VOLT": "VOLTage", "CURR": "CURRent", "RES": "RESistance"}
_SENSE = {"VOLT:DC": "VOLT", "CURR:DC": "CURR", "RES": "RES", "VOLT": "VOLT", "CURR": "CURR"}
_ELEMENTS = ("READ", "SOUR", "REL", "SEC", "FRAC", "UNIT", "STAT", "TST", "DATE", "TIME")


def _round_up(ranges: tuple[float, ...], v: float, what: str) -> float:
    for r in ranges:
        if abs(v) <= r * (1 + 1e-9):
            return r
    raise ScpiError(-222, f"{what} {v:g} above the top range {ranges[-1]:g}")


class K2450(StockInstrument):
    """One 2450 on one bench source channel."""

    driver = "qcodes.instrument_drivers.Keithley.Keithley2450"
    model = "2450"

    def __init__(self, spec: K2450Spec, bench: Bench, timing: TimingSpec) -> None:
        self.spec = spec
        self.ch = spec.channel - 1
        self.src_misc: dict[str, str] = {}  # bound into the command table: reset clears them
        self.sense_misc: dict[str, str] = {}
        super().__init__(spec.name, bench, spec.serial, timing)
        self.reset()

    def idn(self) -> str:
        return f"KEITHLEY INSTRUMENTS,MODEL 2450,{self.serial},1.7.12b"

    def reset(self) -> None:
        b, c = self.bench, self.ch
        b.func[c], b.volt[c], b.curr[c], b.output[c], b.tripped[c] = "VOLT", 0.0, 0.0, False, False
        b.curr_limit[c], b.volt_limit[c] = 105e-6, 21.0
        b.changed()
        self.src_range = {"VOLT": 20.0, "CURR": 1e-4}
        self.src_auto = {"VOLT": True, "CURR": True}
        self.src_misc.clear()
        self.sense = "CURR"
        self.sense_range = {"VOLT": 20.0, "CURR": 1e-4, "RES": 2e5}
        self.sense_auto = {"VOLT": True, "CURR": True, "RES": True}
        self.nplc = {"VOLT": 1.0, "CURR": 1.0, "RES": 1.0}
        self.azero = {"VOLT": True, "CURR": True, "RES": True}
        self.sense_misc.clear()
        self.count = 1
        self.terminals = "FRON"
        self.buffers: dict[str, list[tuple[float, float, float]]] = {
            "defbuffer1": [],
            "defbuffer2": [],
        }
        self.sizes = {"defbuffer1": 100000, "defbuffer2": 100000}
        self.sweep: tuple[str, list[float], float, int, str] | None = None

    def commands(self) -> list[tuple[str, Handler]]:
        cmds: list[tuple[str, Handler]] = []
        for f in ("VOLT", "CURR"):
            w = f"SOURce:{_FN[f]}"
            p = functools.partial
            cmds += [
                (f"{w}:RANGe:AUTO", p(self._src_auto, f)),
                (f"{w}:RANGe", p(self._src_range, f)),
                (f"{w}:ILIMit[:LEVel]:TRIPped", p(self._tripped, f)),
                (f"{w}:VLIMit[:LEVel]:TRIPped", p(self._tripped, f)),
                (f"{w}:{'ILIMit' if f == 'VOLT' else 'VLIMit'}[:LEVel]", p(self._limit, f)),
                (f"{w}:DELay:AUTO", p(self._misc, self.src_misc, f"{f}:DAUTO", "1")),
                (f"{w}:DELay:USER#", p(self._user, self.src_misc, f)),
                (f"{w}:DELay", p(self._misc, self.src_misc, f"{f}:DEL", "0.0")),
                (f"{w}:READ:BACK", p(self._misc, self.src_misc, f"{f}:RB", "1")),
                (f"SOURce:SWEep:{_FN[f]}:LINear", p(self._sweep_setup, f)),
                (f"{w}[:LEVel][:IMMediate][:AMPLitude]", p(self._level, f)),
            ]
        for f in ("VOLT", "CURR", "RES"):
            w = f"SENSe:{_FN[f]}"
            p = functools.partial
            cmds += [
                (f"{w}:RANGe:AUTO", p(self._sense_auto, f)),
                (f"{w}:RANGe[:UPPer]", p(self._sense_range, f)),
                (f"{w}:NPLCycles", p(self._nplc, f)),
                (f"{w}:AZERo[:STATe]", p(self._azero, f)),
                (f"{w}:RSENse", p(self._misc, self.sense_misc, f"{f}:RS", "0")),
                (f"{w}:DELay:USER#", p(self._user, self.sense_misc, f)),
            ]
        return cmds + [
            ("SOURce:FUNCtion[:MODE]", self._src_func),
            ("SENSe:FUNCtion[:ON]", self._sense_func),
            ("SENSe:AZERo:ONCE", self._nothing),
            ("SENSe:COUNt", self._count),
            ("OUTPut[:STATe]", self._output),
            ("ROUTe:TERMinals", self._terminals),
            ("SYSTem:LFRequency", self._lfreq),
            ("MEASure", self._measure),
            ("TRACe:MAKE", self._make),
            ("TRACe:DELete", self._delete),
            ("TRACe:CLEar", self._clear),
            ("TRACe:POINts", self._points),
            ("TRACe:ACTual", self._actual),
            ("TRACe:DATA", self._data),
            ("TRACe:TRIGger", self._measure),
            ("FETCh", self._fetch),
            ("INITiate[:IMMediate]", self._initiate),
            ("ABORt", self._nothing),
            ("STATus:CLEar", self._nothing),
            ("SYSTem:CLEar", self._nothing),
        ]

    # -- source ------------------------------------------------------------------------------
    def _src_func(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        b, c = self.bench, self.ch
        if query:
            return b.func[c]
        f = (arg or "").strip().upper()
        f = {"VOLTAGE": "VOLT", "CURRENT": "CURR"}.get(f, f)
        if f not in ("VOLT", "CURR"):
            raise ScpiError(-224, f"{(arg or '')[:20]!r} is not VOLT or CURR")
        if f != b.func[c]:
            b.func[c], b.output[c] = f, False
            b.changed()
        return None

    def _level(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        b, c = self.bench, self.ch
        arr = b.volt if f == "VOLT" else b.curr
        if query:
            return sci(arr[c])
        v = number(arg)
        top = SOURCE_RANGES[f][-1] if self.src_auto[f] else self.src_range[f]
        if abs(v) > 1.05 * top:
            raise ScpiError(-222, f"level {v:g} beyond 105 % of the {top:g} range")
        if self.src_auto[f]:
            self.src_range[f] = _round_up(SOURCE_RANGES[f], v / 1.05, "level")
        arr[c] = v
        b.changed()
        self.occupy(self.timing.get("smu_settle"))
        return None

    def _src_range(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return sci(self.src_range[f])
        self.src_range[f] = _round_up(SOURCE_RANGES[f], number(arg), "range")
        self.src_auto[f] = False
        return None

    def _src_auto(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return bit(self.src_auto[f])
        self.src_auto[f] = on_off(arg)
        return None

    def _limit(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        b, c = self.bench, self.ch
        arr, lo, hi = (b.curr_limit, 1e-9, 1.05) if f == "VOLT" else (b.volt_limit, 0.02, 210.0)
        if query:
            return sci(arr[c])
        arr[c] = in_range(arg, lo, hi, "limit")
        b.changed()
        return None

    def _tripped(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query, "TRIPped")
        self.bench.voltages()  # solving may trip the channel
        return bit(bool(self.bench.tripped[self.ch]))

    def _output(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        b, c = self.bench, self.ch
        if query:
            b.voltages()
            return bit(bool(b.output[c]))
        if b.set_output(c, on_off(arg)):
            self.occupy(self.timing.get("smu_settle"))
        return None

    # -- settings without physics ------------------------------------------------------------
    def _misc(
        self,
        store: dict[str, str],
        key: str,
        default: str,
        m: re.Match[str],
        query: bool,
        arg: str | None,
    ) -> str | None:
        if query:
            return store.get(key, default)
        if key.endswith(("DAUTO", "RB", "RS")):
            store[key] = bit(on_off(arg))
        else:
            store[key] = sci(in_range(arg, 0, 1e4, "delay"))
        return None

    def _user(
        self, store: dict[str, str], f: str, m: re.Match[str], query: bool, arg: str | None
    ) -> str | None:
        n = integer(m.group(1))
        if not 1 <= n <= 5:
            raise ScpiError(-114, f"user delay {n} does not exist (1..5)")
        return self._misc(store, f"{f}:USER{n}", sci(0.0), m, query, arg)

    def _nothing(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        return None

    def _terminals(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return self.terminals
        t = (arg or "").strip().upper()[:4]
        if t not in ("FRON", "REAR"):
            raise ScpiError(-224, f"{(arg or '')[:20]!r} is not FRONt or REAR")
        self.terminals = t
        return None

    def _lfreq(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        return str(self.timing.line_frequency)

    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return str(self.count)
        self.count = int(in_range(arg, 1, 300000, "count"))
        return None

    # -- sense -------------------------------------------------------------------------------
    def _sense_func(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return '"' + {"VOLT": "VOLT:DC", "CURR": "CURR:DC", "RES": "RES"}[self.sense] + '"'
        f = _SENSE.get(unquote(arg).upper())
        if f is None:
            raise ScpiError(-224, f'{arg!r} is not "VOLT:DC", "CURR:DC" or "RES"')
        self.sense = f
        return None

    def _sense_range(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return sci(self.sense_range[f])
        self.sense_range[f] = _round_up(SENSE_RANGES[f], number(arg), "range")
        self.sense_auto[f] = False
        return None

    def _sense_auto(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return bit(self.sense_auto[f])
        self.sense_auto[f] = on_off(arg)
        return None

    def _nplc(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return sci(self.nplc[f])
        self.nplc[f] = in_range(arg, 0.01, 10.0, "NPLC")
        return None

    def _azero(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return bit(self.azero[f])
        self.azero[f] = on_off(arg)
        return None

    def _true_value(self) -> float:
        """What the sense function sees now (no noise)."""
        b, c = self.bench, self.ch
        node = b.src_node[c]
        if node is None or not b.output[c]:
            return 0.0 if self.sense != "RES" else 9.9e37
        v = float(b.voltages()[node])
        i = float(b.curr[c]) if b.func[c] == "CURR" else -node_current(b, node)
        return {"VOLT": v, "CURR": i, "RES": v / i if i else 9.9e37}[self.sense]

    def _reading(self) -> float:
        f = self.sense
        x = self._true_value()
        if abs(x) >= 9.9e37:
            return x
        if self.sense_auto[f]:
            self.sense_range[f] = _round_up(SENSE_RANGES[f], min(abs(x), SENSE_RANGES[f][-1]), "")
        rng = self.sense_range[f]
        if self.bench.config.dmm.noise > 0:
            x += (
                rng
                * 10e-6
                / math.sqrt(self.nplc[f])
                * float(self.bench.noise_rng.standard_normal())
            )
        return x if abs(x) <= 1.05 * rng else math.copysign(9.9e37, x)

    def _read_into(self, buffer: str, n: int) -> float:
        """``n`` readings into ``buffer`` (timed); the last one."""
        if buffer not in self.buffers:
            raise ScpiError(-222, f"buffer {buffer!r} does not exist")
        f = self.sense
        t = (
            self.nplc[f]
            / self.timing.line_frequency
            * (self.timing.autozero_factor if self.azero[f] else 1.0)
        )
        b, c = self.bench, self.ch
        x = 0.0
        for _ in range(n):
            x = self._reading()
            src = b.volt[c] if b.func[c] == "VOLT" else b.curr[c]
            rows = self.buffers[buffer]
            rows.append((x, float(src), b.clock() - b.t0))
            del rows[: max(0, len(rows) - self.sizes[buffer])]
        if self.timing.mode != "fast":
            self.occupy(n * t)
        return x

    def _measure(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        parts = args(arg)
        buffer = unquote(parts[0]) if parts else "defbuffer1"
        x = self._read_into(buffer, self.count)
        if not query:
            return None
        self.observe()
        return sci(x)

    # -- buffers -----------------------------------------------------------------------------
    def _buffer(self, text: str | None) -> str:
        name = unquote(text)
        if name not in self.buffers:
            raise ScpiError(-222, f"buffer {name!r} does not exist")
        return name

    def _make(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        parts = args(arg)
        if len(parts) < 2:
            raise ScpiError(-109, "expected '<name>', <size>[, <style>]")
        name = unquote(parts[0])
        self.buffers[name] = []
        self.sizes[name] = int(in_range(parts[1], 10, 10_000_000, "buffer size"))
        return None

    def _delete(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        name = self._buffer(arg)
        if name.startswith("defbuffer"):
            raise ScpiError(-221, "default buffers cannot be deleted")
        del self.buffers[name], self.sizes[name]
        return None

    def _clear(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        self.buffers[self._buffer(arg or "'defbuffer1'")].clear()
        return None

    def _points(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        parts = args(arg)
        if query:
            return str(self.sizes[self._buffer(parts[0] if parts else "'defbuffer1'")])
        name = self._buffer(parts[1] if len(parts) > 1 else "'defbuffer1'")
        self.sizes[name] = int(in_range(parts[0] if parts else None, 1, 10_000_000, "points"))
        return None

    def _actual(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        return str(len(self.buffers[self._buffer(arg or "'defbuffer1'")]))

    def _elements(self, row: tuple[float, float, float], names: list[str]) -> list[str]:
        out = []
        for e in names:
            key = e.strip().upper()
            match = next((k for k in _ELEMENTS if key.startswith(k)), None)
            if match is None:
                raise ScpiError(-224, f"{e[:20]!r} is not a buffer element")
            out.append(
                {
                    "READ": sci(row[0]),
                    "SOUR": sci(row[1]),
                    "REL": sci(row[2]),
                    "SEC": str(int(row[2])),
                    "FRAC": sci(row[2] % 1),
                    "UNIT": {"VOLT": "Volt DC", "CURR": "Amp DC", "RES": "Ohm"}[self.sense],
                }.get(match, "0")
            )
        return out

    def _data(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        parts = args(arg)
        if len(parts) < 3:
            raise ScpiError(-109, "expected <start>, <end>, '<buffer>'")
        rows = self.buffers[self._buffer(parts[2])]
        a, z = integer(parts[0]), integer(parts[1])
        if not 1 <= a <= z <= len(rows):
            raise ScpiError(-222, f"indices {a}..{z} outside the buffer's 1..{len(rows)}")
        self.observe()
        if len(parts) == 3:
            return ",".join(sci(r[0]) for r in rows[a - 1 : z])
        return ",".join(x for r in rows[a - 1 : z] for x in self._elements(r, parts[3:]))

    def _fetch(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        parts = args(arg)
        rows = self.buffers[self._buffer(parts[0] if parts else "'defbuffer1'")]
        if not rows:
            raise ScpiError(-221, "the buffer is empty")
        self.observe()
        return ",".join(self._elements(rows[-1], parts[1:] or ["READ"]))

    # -- sweep -------------------------------------------------------------------------------
    def _sweep_setup(self, f: str, m: re.Match[str], query: bool, arg: str | None) -> None:
        p = args(arg)
        if len(p) < 3:
            raise ScpiError(-109, "expected start, stop, points[, delay, count, ...]")
        start, stop, n = number(p[0]), number(p[1]), integer(p[2])
        if not 2 <= n <= 1_000_000:
            raise ScpiError(-222, f"points {n} outside 2..1000000")
        top = 1.05 * SOURCE_RANGES[f][-1]
        if max(abs(start), abs(stop)) > top:
            raise ScpiError(-222, f"sweep beyond +-{top:g}")
        delay = number(p[3]) if len(p) > 3 else 0.0
        count = integer(p[4]) if len(p) > 4 else 1
        buf = self._buffer(p[8]) if len(p) > 8 else "defbuffer1"
        levels = [start + (stop - start) * k / (n - 1) for k in range(n)] * count
        self.sweep = (f, levels, delay, count, buf)
        return None

    def _initiate(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        if self.sweep is None:
            self._read_into("defbuffer1", self.count)
            return None
        f, levels, delay, _, buf = self.sweep
        b, c = self.bench, self.ch
        if b.func[c] != f:
            raise ScpiError(-221, "the sweep's function is not the source function")
        arr = b.volt if f == "VOLT" else b.curr
        b.set_output(c, True)
        for x in levels:
            arr[c] = x
            b.changed()
            self.occupy(delay + self.timing.get("smu_settle"))
            self._read_into(buf, 1)
        return None
