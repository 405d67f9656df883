"""The virtual lab: a resistor network behind instruments that behave like hardware.

Physics
-------
The network of :class:`~physlearn.drivers.lab_config.LabConfig` (``graph``) carries node voltages
V (volts); edge e holds the digital potentiometer wired to it, of conductance
``g_e = f(tap) * (1 + spread_e) * (1 + drift_e * t)`` (S), where ``f`` is the bank's tap law,
``spread_e`` a per-device gain error and ``drift_e`` a per-device drift rate (1/s), both drawn
once from the lab seed (drift applied in steps of ``pots.drift_interval``).

What drives the network is decided by the instrument states, exactly as on a bench:

* a source channel in ``VOLT`` mode with its output on, wired to node n: n is held at its
  voltage (an ideal voltage source);
* a channel in ``CURR`` mode with its output on, wired to node n: current I (A, positive *into*
  the node) is injected there (an ideal current source; off or at 0 A it is an open circuit);
* a switch-matrix relay, closed, from channel c to node n: a conductance (S) from n to a terminal
  held by channel c (``VOLT``) or a current injected through it (``CURR``);
* every node leaks to ground through ``leakage`` (S);
* a channel whose output is off is disconnected.

The equilibrium (Kirchhoff's current law) is solved by :class:`LinearResistorNetwork` -- the
same simulator physlearn trains offline -- on an internal graph made of the network, one extra
source node per closed relay and the leakage ground; injected currents are its ``error`` nudge
(``beta = 1``, ``error = -I``). One internal network is built per switching topology and cached.

After any change the node voltages relax exponentially towards the new equilibrium with time
constant ``settling_tau`` (s): ``V(t) = V_eq + (V_0 - V_eq) exp(-(t - t_change) / tau)``, except
nodes held by a voltage source, which follow it at once. Changes closer together than a reading
are treated as one change at the time of the last of them.

Sources protect themselves: a voltage channel delivering more than its current limit, or a
current channel whose node exceeds its voltage limit, *trips* -- its output switches off and
``STAT:TRIP?`` reports it -- and the equilibrium is solved again without it.

The DMM reads ``V + offset_drift * t + noise`` (V), quantised to ``resolution``, through its
multiplexer; readings beyond ``range`` read ``9.9E37`` (overload).

Instruments and their SCPI commands
-----------------------------------
Every instrument answers ``*IDN?`` (``physlearn,<model>,<serial>,1.0``), ``*RST``, ``*CLS``,
``*OPC?`` (``1``) and ``SYST:ERR?`` (``<code>,"<message>"``; ``0,"No error"`` when empty).
Headers are case-insensitive, short or long form (``SOUR`` / ``SOURCE``); several commands may
share a line separated by ``;`` (their replies are joined by ``;``). Channel lists are
``(@1,2,5:8)``, at most as many channels as the instrument has, checked before they are expanded.
An erroneous command is not executed and queues exactly one error (``<code>,"<standard
message>; <detail>"``: -104 data type error, -109 missing parameter, -113 undefined header, -114
header suffix out of range, -221 settings conflict, -222 data out of range, -223 too much data,
-224 illegal parameter value; see :mod:`physlearn.drivers.scpi`); an unanswerable query gets no
reply (the client times out), as on a real instrument. The error queue holds 32 entries and
overflows as SCPI-99 21.8 says: the last entry becomes ``-350,"Queue overflow"``, later errors
are discarded until one is read.

``VLAB-SRC<n>`` -- multi-channel source (channels ``c = 1..n``)
    ``SYST:CHAN:COUN?``; ``SOUR<c>:FUNC VOLT|CURR``; ``SOUR<c>:VOLT <V>``;
    ``SOUR<c>:CURR <A>``; ``SOUR<c>:CURR:LIM <A>`` (compliance in VOLT mode);
    ``SOUR<c>:VOLT:LIM <V>`` (compliance in CURR mode); ``OUTP<c> ON|OFF``; each with its ``?``
    query. ``STAT:TRIP?`` -> bit mask of tripped channels (bit c-1); ``OUTP:PROT:CLE`` clears it.
    Levels beyond the hardware range (``max_voltage``, ``max_current``) are refused (-222).
``VLAB-DMM`` -- DMM with a multiplexer card (channels ``first_channel ...``)
    ``ROUT:SCAN (@101:121)`` / ``ROUT:SCAN?``; ``READ?`` -> ``<n>,<v1>,...,<vk>``: one reading per
    scanned channel (V), preceded by the number ``n`` of the first reading since power-on (the
    reading counter: a repeated ``n`` is a stale reply); ``MEAS:VOLT? (@c)`` -> one reading.
``VLAB-POT<n>`` -- bank of digital potentiometers (devices ``c = 1..n``)
    ``POT:COUN?``; ``POT:TAPS?`` (taps per device); ``POT<c>:TAP <k>`` / ``?``;
    ``POT:TAP:ALL <k1>,...,<kn>`` / ``?`` (every device at once);
    ``POT<c>:MEAS:COND?`` -> the device's conductance (S), measured with the device isolated
    from the network (for calibration).
``VLAB-SWM<n>`` -- switch matrix (relays ``r = 1..n``)
    ``SYST:CHAN:COUN?``; ``ROUT:CLOS (@r,...)``; ``ROUT:OPEN (@r,...)``; ``ROUT:OPEN:ALL``;
    ``ROUT:CLOS? (@r,...)`` -> ``1,0,...`` (1 = closed).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from physlearn.drivers.lab_config import LabConfig
from physlearn.drivers.scpi import (
    ErrorQueue,
    ScpiError,
    boolean,
    channel_list,
    fmt,
    format_channels,
    header_pattern,
    integer,
    number,
    suffix,
)
from physlearn.system import FloatArray, Nudge

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The bench


@dataclass
class _Net:
    """An internal network for one switching topology."""

    net: Any  # LinearResistorNetwork
    sources: np.ndarray  # internal source nodes, in the network's source order
    outputs: np.ndarray  # internal output nodes (injection points)
    free: np.ndarray  # internal free nodes, ascending
    relay_edges: list[int]  # relays (0-based) that are edges of this topology
    g_version: int = -1


class Bench:
    """The simulated network and the state of every instrument on it (thread-safe).

    ``clock`` returns seconds (``time.monotonic`` by default); settling and drift follow it.
    """

    def __init__(self, config: LabConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        graph = config.graph.build()
        self.n_nodes = int(graph.n_nodes)
        self.edges = np.asarray(graph.edges, dtype=np.int64)
        c = config
        rng = np.random.default_rng([c.seed, 0])
        n_pots = c.pot_count()
        self.pot_edge = np.asarray(c.pot_wiring(), dtype=np.int64)
        self.gain = np.clip(1.0 + c.pots.spread * rng.standard_normal(n_pots), 0.05, None)
        self.drift_rate = c.pots.drift * rng.standard_normal(n_pots)
        self.taps = np.full(n_pots, c.pots.initial_tap, dtype=np.int64)
        self.noise_rng = np.random.default_rng([c.seed, 1])
        n_ch = c.source.channels
        self.src_node = c.source_wiring()
        self.func = ["VOLT"] * n_ch
        self.volt = np.zeros(n_ch)
        self.curr = np.zeros(n_ch)
        self.curr_limit = np.full(n_ch, c.source.max_current)
        self.volt_limit = np.full(n_ch, c.source.max_voltage)
        self.output = np.zeros(n_ch, dtype=bool)
        self.tripped = np.zeros(n_ch, dtype=bool)
        self.relays = list(c.switch.relays) if c.switch is not None else []
        self.closed = np.zeros(len(self.relays), dtype=bool)
        self.mux_node = c.mux_wiring()
        self.reading_number = 0
        self.t0 = clock()
        self._g_version = 0
        self._t_drift = self.t0
        self._nets: dict[tuple[Any, ...], _Net] = {}
        self._v_from = np.zeros(self.n_nodes)
        self._v_to = np.zeros(self.n_nodes)
        self._relaxing = np.ones(self.n_nodes)  # 0 on nodes held by a source (no transient)
        self._t_change = self.t0
        self._dirty = True
        self.solves = 0
        self.trip_log: list[str] = []

    # -- conductances ------------------------------------------------------------------------
    def device_conductance(self, t: float | None = None) -> FloatArray:
        """True conductance of every device (S) at time ``t`` (default: the last drift step)."""
        law = self.config.pots.law
        g = np.asarray(law.conductance(self.taps)) * self.gain
        if self.config.pots.drift > 0:
            tt = self._t_drift if t is None else t
            g = g * np.clip(1.0 + self.drift_rate * (tt - self.t0), 0.01, None)
        return np.asarray(g)

    def edge_conductance(self) -> FloatArray:
        g = np.empty(self.edges.shape[0])
        g[self.pot_edge] = self.device_conductance()
        return g

    # -- state changes -----------------------------------------------------------------------
    def changed(self, conductances: bool = False) -> None:
        """Record a change of sources, relays or conductances at the current time."""
        t = self.clock()
        if not self._dirty:
            self._v_from = self._transient(t)
            self._dirty = True
        self._t_change = t
        if conductances:
            self._g_version += 1

    def _transient(self, t: float) -> FloatArray:
        tau = self.config.settling_tau
        if tau <= 0:
            return self._v_to
        w = math.exp(-max(0.0, t - self._t_change) / tau)
        return np.asarray(self._v_to + (self._v_from - self._v_to) * (w * self._relaxing))

    def voltages(self) -> FloatArray:
        """Node voltages (V) now, including settling, without meter imperfections."""
        t = self.clock()
        if self.config.pots.drift > 0 and t - self._t_drift >= self.config.pots.drift_interval:
            self._t_drift = t
            self.changed(conductances=True)
        if self._dirty:
            self._settle_topology()
            self._dirty = False
        return self._transient(t)

    # -- the equilibrium ---------------------------------------------------------------------
    def _drive(self) -> tuple[dict[int, float], dict[int, float], list[tuple[int, float]]]:
        """(node -> held voltage, node -> injected current, [(relay, terminal voltage)])."""
        held: dict[int, float] = {}
        inj: dict[int, float] = {}
        terminals: list[tuple[int, float]] = []
        for ch in range(len(self.func)):
            if not self.output[ch]:
                continue
            node = self.src_node[ch]
            if node is not None:
                if self.func[ch] == "VOLT":
                    held[node] = float(self.volt[ch])
                else:
                    inj[node] = inj.get(node, 0.0) + float(self.curr[ch])
        for r, relay in enumerate(self.relays):
            ch = relay.source - 1
            if not (self.closed[r] and self.output[ch]):
                continue
            if self.func[ch] == "VOLT":
                terminals.append((r, float(self.volt[ch])))
            else:
                inj[relay.node] = inj.get(relay.node, 0.0) + float(self.curr[ch])
        return held, inj, terminals

    def _settle_topology(self) -> None:
        for _ in range(len(self.func) + 1):
            v, node_current = self._solve()
            if not self._check_compliance(v, node_current):
                self._v_to = v
                self._relaxing = np.ones(self.n_nodes)
                self._relaxing[list(node_current["held"])] = 0.0
                return
        self._v_to = v  # pragma: no cover - every trip removes a source; this terminates above

    def _solve(self) -> tuple[FloatArray, dict[str, Any]]:
        from physlearn.simulators.graphs import from_edge_list
        from physlearn.simulators.resistor import LinearResistorNetwork

        held, inj, terminals = self._drive()
        n = self.n_nodes
        self.solves += 1
        if not held and not terminals:
            return np.zeros(n), {"held": held, "inj": inj, "terminals": terminals, "float": True}
        key = (tuple(sorted(held)), tuple(r for r, _ in terminals), tuple(sorted(inj)))
        entry = self._nets.get(key)
        if entry is None:
            relay_ids = [r for r, _ in terminals]
            n_int = n + len(relay_ids) + 1
            ground = n_int - 1
            edges = [self.edges]
            edges.append(
                np.array(
                    [[self.relays[r].node, n + i] for i, r in enumerate(relay_ids)], np.int64
                ).reshape(-1, 2)
            )
            edges.append(np.stack([np.arange(n), np.full(n, ground)], axis=1))
            sources = np.array([*sorted(held), *range(n, n + len(relay_ids)), ground], np.int64)
            is_src = np.zeros(n_int, dtype=bool)
            is_src[sources] = True
            outs = np.array([k for k in sorted(inj) if not is_src[k]], dtype=np.int64)
            free = np.flatnonzero(~is_src).astype(np.int64)
            if free.size == 0:  # every node held: nothing to solve
                entry = _Net(None, sources, outs, free, relay_ids)
            else:
                out_nodes = outs if outs.size else free[:1]
                graph = from_edge_list(n_int, np.concatenate(edges), sources, out_nodes)
                g0 = np.ones(graph.n_edges)
                net = LinearResistorNetwork(graph, g0, bounds=(1e-300, 1e300), blas_threads=None)
                entry = _Net(net, sources, out_nodes, free, relay_ids)
            self._nets[key] = entry
        vs = np.array(
            [*(held[k] for k in sorted(held)), *(v for _, v in terminals), 0.0], dtype=np.float64
        )
        full_int = np.zeros(n + len(terminals) + 1)
        full_int[entry.sources] = vs
        if entry.net is not None:
            if entry.g_version != self._g_version:
                g = np.concatenate(
                    [
                        self.edge_conductance(),
                        [self.relays[r].conductance for r in entry.relay_edges],
                        np.full(n, self.config.leakage),
                    ]
                )
                entry.net.set_parameters({"conductance": g})
                entry.g_version = self._g_version
            nudge = None
            if entry.outputs.size and inj:
                cur = np.array([inj.get(int(k), 0.0) for k in entry.outputs])
                nudge = Nudge(beta=1.0, error=-cur[None, :])
            eq = entry.net.equilibrate(vs[None, :], nudge)
            full_int[entry.free] = np.asarray(eq.state.v)[:, 0].real
            # guard: the simulator's free-node order is ascending (checked on its outputs)
            if not np.allclose(full_int[entry.outputs], eq.outputs[0].real, rtol=0, atol=1e-12):
                raise RuntimeError("virtual lab: unexpected free-node order in the simulator")
        return full_int[:n].copy(), {"held": held, "inj": inj, "terminals": terminals}

    def _check_compliance(self, v: FloatArray, info: dict[str, Any]) -> bool:
        """Trip channels beyond their compliance; True if any tripped (solve again)."""
        g = self.edge_conductance()
        i, j = self.edges[:, 0], self.edges[:, 1]
        flow = g * (v[i] - v[j])  # A from i to j
        out = np.bincount(i, flow, self.n_nodes) - np.bincount(j, flow, self.n_nodes)
        for r, relay in enumerate(self.relays):
            if self.closed[r] and self.output[relay.source - 1]:
                ch = relay.source - 1
                if self.func[ch] == "VOLT":
                    out_r = relay.conductance * (self.volt[ch] - v[relay.node])
                    out[relay.node] -= out_r
        tripped = False
        floating = bool(info.get("float"))
        for ch in range(len(self.func)):
            if not self.output[ch]:
                continue
            node = self.src_node[ch]
            relay_nodes = [
                rl.node
                for r, rl in enumerate(self.relays)
                if rl.source - 1 == ch and self.closed[r]
            ]
            if self.func[ch] == "VOLT":
                if node is None:
                    delivered = sum(
                        rl.conductance * (self.volt[ch] - v[rl.node])
                        for r, rl in enumerate(self.relays)
                        if rl.source - 1 == ch and self.closed[r]
                    )
                else:
                    delivered = out[node]
                if abs(delivered) > self.curr_limit[ch]:
                    self._trip(
                        ch, f"current {delivered:.4g} A exceeds limit {self.curr_limit[ch]:g} A"
                    )
                    tripped = True
            else:
                nodes = [node] if node is not None else relay_nodes
                if not nodes:
                    continue
                if floating and self.curr[ch] != 0:
                    self._trip(ch, "no return path for the current (network unpowered)")
                    tripped = True
                    continue
                vmax = max(abs(v[k]) for k in nodes)
                if vmax > self.volt_limit[ch]:
                    self._trip(ch, f"voltage {vmax:.4g} V exceeds limit {self.volt_limit[ch]:g} V")
                    tripped = True
        return tripped

    def _trip(self, ch: int, why: str) -> None:
        self.output[ch] = False
        self.tripped[ch] = True
        self.trip_log.append(f"channel {ch + 1}: {why}")

    # -- the meter ---------------------------------------------------------------------------
    def scan(self, channels: list[int]) -> tuple[int, FloatArray]:
        """Read the given multiplexer channels: (first reading number, readings in V)."""
        d = self.config.dmm
        v = self.voltages()
        t = self.clock()
        vals = np.empty(len(channels))
        for k, ch in enumerate(channels):
            node = self.mux_node[ch - d.first_channel]
            vals[k] = 0.0 if node is None else v[node]
        vals += d.offset_drift * (t - self.t0)
        if d.noise > 0:
            vals += d.noise * self.noise_rng.standard_normal(vals.size)
        if d.resolution > 0:
            vals = np.round(vals / d.resolution) * d.resolution
        vals[np.abs(vals) > d.range] = 9.9e37
        first = self.reading_number
        self.reading_number += len(channels)
        return first, vals

    def measure_device(self, k: int) -> float:
        """Conductance (S) of device k (0-based), isolated from the network."""
        g = float(self.device_conductance(self.clock())[k])
        noise = self.config.pots.measure_noise
        if noise > 0:
            g *= 1.0 + noise * float(self.noise_rng.standard_normal())
        return g

    def summary(self) -> dict[str, Any]:
        """Source, relay and tap state (for tests and the CLI)."""
        with self.lock:
            return {
                "function": list(self.func),
                "volt": self.volt.copy(),
                "curr": self.curr.copy(),
                "output": self.output.copy(),
                "tripped": self.tripped.copy(),
                "closed": self.closed.copy(),
                "taps": self.taps.copy(),
            }


# --------------------------------------------------------------------------------------------
# Instruments

Handler = Callable[[re.Match[str], bool, str | None], str | None]


class SimInstrument:
    """An instrument on the bench: executes SCPI lines, keeps an error queue."""

    model = "VLAB"

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        self.name = name
        self.bench = bench
        self.serial = serial
        self.errors = ErrorQueue()
        self._table: list[tuple[re.Pattern[str], Handler]] = [
            (self._compile(spec), handler) for spec, handler in self.commands()
        ]

    @staticmethod
    def _compile(spec: str) -> re.Pattern[str]:
        return re.compile(rf":?{header_pattern(spec)}(\?)?(?:\s+(.*))?", re.IGNORECASE | re.DOTALL)

    def commands(self) -> list[tuple[str, Handler]]:
        return []

    def idn(self) -> str:
        return f"physlearn,{self.model},{self.serial},1.0"

    def reset(self) -> None:
        """``*RST``."""

    def report(self, error: ScpiError) -> None:
        """Queue ``error`` (a line the server refused before it reached :meth:`execute`)."""
        with self.bench.lock:
            self.errors.push(error)

    def execute(self, line: str) -> str | None:
        """Execute one received line; the reply (without terminator) or None."""
        replies: list[str] = []
        with self.bench.lock:
            for cmd in line.split(";"):
                cmd = cmd.strip()
                if not cmd:
                    continue
                try:
                    r = self._one(cmd)
                except ScpiError as err:
                    self.errors.push(err)
                    continue
                except Exception as exc:  # a bug of the simulation, not the client's mistake
                    _log.exception("%s: %r failed", self.name, cmd[:80])
                    self.errors.push(ScpiError(-300, f"internal error {type(exc).__name__}"))
                    continue
                if r is not None:
                    replies.append(r)
        return ";".join(replies) if replies else None

    def _one(self, cmd: str) -> str | None:
        up = cmd.upper()
        if up == "*IDN?":
            return self.idn()
        if up == "*RST":
            self.reset()
            return None
        if up == "*CLS":
            self.errors.clear()
            return None
        if up == "*OPC?":
            return "1"
        if re.fullmatch(r":?SYST(EM)?:ERR(OR)?(:NEXT)?\?", up):
            return self.errors.pop()
        for pattern, handler in self._table:
            m = pattern.fullmatch(cmd)
            if m is not None:
                groups = m.groups()
                query = groups[-2] is not None
                arg = groups[-1]
                return handler(m, query, arg)
        raise ScpiError(-113, repr(cmd.split()[0][:40]))

    def stale_reply(self, line: str) -> str | None:
        """For a 'stuck' fault: the reply this instrument would repeat instead of answering
        ``line`` (None: the line is not a reading)."""
        return None


def _need_query(query: bool) -> None:
    if not query:
        raise ScpiError(-113, "this header is a query only")


class SourceInstrument(SimInstrument):
    """VLAB-SRC: the multi-channel voltage/current source."""

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.model = f"VLAB-SRC{len(bench.func)}"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("SYSTem:CHANnel:COUNt", self._count),
            ("SOURce#:FUNCtion[:MODE]", self._func),
            ("SOURce#:VOLTage:LIMit", self._vlim),
            ("SOURce#:CURRent:LIMit", self._ilim),
            ("SOURce#:VOLTage[:LEVel]", self._volt),
            ("SOURce#:CURRent[:LEVel]", self._curr),
            ("OUTPut:PROTection:CLEar", self._clear_trips),
            ("OUTPut#[:STATe]", self._output),
            ("STATus:TRIP", self._trips),
        ]

    def _ch(self, m: re.Match[str]) -> int:
        return suffix(m.group(1), len(self.bench.func), "channel")

    def reset(self) -> None:
        b, c = self.bench, self.bench.config.source
        b.func[:] = ["VOLT"] * len(b.func)
        b.volt[:] = 0.0
        b.curr[:] = 0.0
        b.curr_limit[:] = c.max_current
        b.volt_limit[:] = c.max_voltage
        b.output[:] = False
        b.tripped[:] = False
        b.changed()

    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        return str(len(self.bench.func))

    def _func(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        ch = self._ch(m)
        b = self.bench
        if query:
            return b.func[ch]
        f = (arg or "").strip().upper()
        f = {"VOLTAGE": "VOLT", "CURRENT": "CURR"}.get(f, f)
        if f not in ("VOLT", "CURR"):
            raise ScpiError(-224, f"{arg!r} is not VOLT or CURR")
        if f != b.func[ch] and b.output[ch]:
            raise ScpiError(-221, "switch the output off to change function")
        b.func[ch] = f
        return None

    def _level(self, arr: np.ndarray, hw: float, unit: str, m: re.Match[str], query: bool,
               arg: str | None) -> str | None:  # fmt: skip
        ch = self._ch(m)
        if query:
            return fmt(arr[ch])
        v = number(arg)
        if abs(v) > hw:
            raise ScpiError(-222, f"{v:g} {unit} beyond +-{hw:g} {unit}")
        arr[ch] = v
        self.bench.changed()
        return None

    def _volt(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._level(self.bench.volt, self.bench.config.source.max_voltage, "V", m,
                           query, arg)  # fmt: skip

    def _curr(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._level(self.bench.curr, self.bench.config.source.max_current, "A", m,
                           query, arg)  # fmt: skip

    def _limit(self, arr: np.ndarray, hw: float, m: re.Match[str], query: bool,
               arg: str | None) -> str | None:  # fmt: skip
        ch = self._ch(m)
        if query:
            return fmt(arr[ch])
        v = number(arg)
        if not 0 < v <= hw:
            raise ScpiError(-222, f"limit {v:g} not in (0, {hw:g}]")
        arr[ch] = v
        self.bench.changed()
        return None

    def _ilim(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._limit(self.bench.curr_limit, self.bench.config.source.max_current, m,
                           query, arg)  # fmt: skip

    def _vlim(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        return self._limit(self.bench.volt_limit, self.bench.config.source.max_voltage, m,
                           query, arg)  # fmt: skip

    def _output(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        ch = self._ch(m)
        b = self.bench
        if query:
            return "1" if b.output[ch] else "0"
        on = boolean(arg)
        if on and b.func[ch] == "VOLT" and b.src_node[ch] is not None:
            for other in range(len(b.func)):
                if (
                    other != ch
                    and b.output[other]
                    and b.func[other] == "VOLT"
                    and b.src_node[other] == b.src_node[ch]
                ):
                    raise ScpiError(
                        -221,
                        f"channel {other + 1} already holds node {b.src_node[ch]}",
                    )
        if on != b.output[ch]:
            b.output[ch] = on
            if on:
                b.tripped[ch] = False
            b.changed()
        return None

    def _trips(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        b = self.bench
        b.voltages()  # solving may trip a channel
        mask = sum(1 << k for k in range(len(b.func)) if b.tripped[k])
        return str(mask)

    def _clear_trips(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        self.bench.tripped[:] = False
        return None


class DMMInstrument(SimInstrument):
    """VLAB-DMM: a DMM with a multiplexer card."""

    model = "VLAB-DMM"

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.scan_list: list[int] = []
        self.last_scan_reply: str | None = None

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("ROUTe:SCAN", self._scan),
            ("READ", self._read),
            ("MEASure:VOLTage[:DC]", self._meas),
        ]

    def reset(self) -> None:
        self.scan_list = []

    def _channels(self, arg: str | None) -> list[int]:
        """The multiplexer channels of a channel list: at most as many as the card has."""
        d = self.bench.config.dmm
        last = d.first_channel + d.mux_channels - 1
        return channel_list(arg, d.first_channel, last, d.mux_channels)

    def _scan(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return format_channels(self.scan_list)
        self.scan_list = self._channels(arg)
        return None

    def _read(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        if not self.scan_list:
            raise ScpiError(-221, "empty scan list (ROUT:SCAN first)")
        first, vals = self.bench.scan(self.scan_list)
        reply = ",".join([str(first), *(fmt(v) for v in vals)])
        self.last_scan_reply = reply
        return reply

    def _meas(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        chs = self._channels(arg)
        if len(chs) != 1:
            raise ScpiError(-221, "MEAS:VOLT? takes exactly one channel")
        _, vals = self.bench.scan(chs)
        return fmt(vals[0])

    def stale_reply(self, line: str) -> str | None:
        if re.fullmatch(r"\s*:?READ\?\s*", line, re.IGNORECASE):
            return self.last_scan_reply
        return None


class PotBank(SimInstrument):
    """VLAB-POT: the bank of digital potentiometers."""

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.model = f"VLAB-POT{bench.taps.size}"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("POT:COUNt", self._count),
            ("POT:TAPS", self._ntaps),
            ("POT:TAP:ALL", self._all),
            ("POT#:MEASure:CONDuctance", self._meas),
            ("POT#:TAP", self._tap),
        ]

    def reset(self) -> None:
        self.bench.taps[:] = self.bench.config.pots.initial_tap
        self.bench.changed(conductances=True)

    def _check_tap(self, k: int) -> None:
        top = self.bench.config.pots.law.n_taps - 1
        if not 0 <= k <= top:
            raise ScpiError(-222, f"tap {k} not in 0..{top}")

    def _ch(self, m: re.Match[str]) -> int:
        return suffix(m.group(1), int(self.bench.taps.size), "device")

    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        return str(self.bench.taps.size)

    def _ntaps(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        return str(self.bench.config.pots.law.n_taps)

    def _tap(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        ch = self._ch(m)
        if query:
            return str(int(self.bench.taps[ch]))
        k = integer(arg)
        self._check_tap(k)
        if k != self.bench.taps[ch]:
            self.bench.taps[ch] = k
            self.bench.changed(conductances=True)
        return None

    def _all(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        b = self.bench
        if query:
            return ",".join(str(int(k)) for k in b.taps)
        parts = (arg or "").split(",")
        if len(parts) != b.taps.size:
            raise ScpiError(-109, f"expected {b.taps.size} taps, got {len(parts)}")
        taps = [integer(p) for p in parts]
        for k in taps:
            self._check_tap(k)
        new = np.asarray(taps, dtype=np.int64)
        if not np.array_equal(new, b.taps):
            b.taps[:] = new
            b.changed(conductances=True)
        return None

    def _meas(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        return fmt(self.bench.measure_device(self._ch(m)))


class SwitchMatrix(SimInstrument):
    """VLAB-SWM: relays from source channels to nodes."""

    def __init__(self, name: str, bench: Bench, serial: str) -> None:
        super().__init__(name, bench, serial)
        self.model = f"VLAB-SWM{len(bench.relays)}"

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("SYSTem:CHANnel:COUNt", self._count),
            ("ROUTe:OPEN:ALL", self._open_all),
            ("ROUTe:CLOSe", self._close),
            ("ROUTe:OPEN", self._open),
        ]

    def reset(self) -> None:
        self.bench.closed[:] = False
        self.bench.changed()

    def _relays(self, arg: str | None) -> list[int]:
        n = len(self.bench.relays)
        return [r - 1 for r in channel_list(arg, 1, n, n)]

    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        _need_query(query)
        return str(len(self.bench.relays))

    def _set(self, arg: str | None, closed: bool) -> None:
        rs = self._relays(arg)
        b = self.bench
        if any(b.closed[r] != closed for r in rs):
            b.closed[rs] = closed
            b.changed()

    def _close(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return ",".join("1" if self.bench.closed[r] else "0" for r in self._relays(arg))
        self._set(arg, True)
        return None

    def _open(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return ",".join("0" if self.bench.closed[r] else "1" for r in self._relays(arg))
        self._set(arg, False)
        return None

    def _open_all(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        if self.bench.closed.any():
            self.bench.closed[:] = False
            self.bench.changed()
        return None


class VirtualLab:
    """The bench and its instruments, by name (no sockets; see :mod:`scpi_server`)."""

    def __init__(self, config: LabConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.bench = Bench(config, clock)
        c = config
        insts: list[SimInstrument] = [
            SourceInstrument(c.source.name, self.bench, c.source.serial),
            DMMInstrument(c.dmm.name, self.bench, c.dmm.serial),
            PotBank(c.pots.name, self.bench, c.pots.serial),
        ]
        if c.switch is not None:
            insts.append(SwitchMatrix(c.switch.name, self.bench, c.switch.serial))
        self.instruments: dict[str, SimInstrument] = {i.name: i for i in insts}

    def driver_class(self, name: str) -> str:
        """Dotted path of the qcodes driver of instrument ``name``."""
        kind = {
            SourceInstrument: "VirtualLabSource",
            DMMInstrument: "VirtualLabDMM",
            PotBank: "VirtualLabPots",
            SwitchMatrix: "VirtualLabSwitch",
        }[type(self.instruments[name])]
        return f"physlearn.drivers.instruments.{kind}"
