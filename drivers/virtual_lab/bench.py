"""The bench of the virtual lab: a resistor network driven by the state of its instruments.

Physics
-------
The network of :class:`~physlearn.drivers.virtual_lab.config.LabConfig` (``graph``) carries node
voltages V (volts); each edge's conductance (S) comes from the lab's weight bank:

* ``pots``: edge e holds the digital potentiometer wired to it, of conductance
  ``g_e = f(tap) * (1 + spread_e) * (1 + drift_e * t)``, where ``f`` is the bank's tap law,
  ``spread_e`` a per-device gain error and ``drift_e`` a per-device drift rate (1/s), both drawn
  once from the lab seed (drift applied in steps of ``pots.drift_interval``);
* ``memristors``: edge e is memristive device e of :attr:`Bench.memristors` (a
  :class:`~physlearn.drivers.virtual_lab.memristor.MemristorArray` seeded from the lab seed,
  programmed by the memristor board's pulses); the network sees each device's *true*
  conductance at the time of the reading, retention drift included (re-evaluated at every
  reading while the devices drift), never the read noise of the board's ``MEM:READ?``.

Drift moves the equilibrium the node voltages relax to; unlike a change of the instruments'
state it does not restart their relaxation (below).

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
A bench with a ``diodes`` section (fixed diodes to bias rails held inside the bench, mirroring a
``diode_resistor`` system; :mod:`physlearn.drivers.virtual_lab.diodes`) is solved exactly by
:class:`NonlinearResistorNetwork` on the same internal graph instead.

After any change the node voltages relax exponentially towards the new equilibrium with time
constant ``settling_tau`` (s): ``V(t) = V_eq + (V_0 - V_eq) exp(-(t - t_change) / tau)``, except
nodes held by a voltage source, which follow it at once. Changes closer together than a reading
are treated as one change at the time of the last of them.

Sources protect themselves: a voltage channel delivering more than its current limit, or a
current channel whose node exceeds its voltage limit, *trips* -- its output switches off and
``STAT:TRIP?`` reports it -- and the equilibrium is solved again without it.

The DMM reads ``V + offset_drift * t + noise`` (V), quantised to ``resolution``, through its
multiplexer; readings beyond ``range`` read ``9.9E37`` (overload).

The instruments that change this state over SCPI are in
:mod:`physlearn.drivers.virtual_lab.lab`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from physlearn.drivers.virtual_lab.config import LabConfig, PotSpec
from physlearn.drivers.virtual_lab.diodes import BenchDiodes, solve_free
from physlearn.drivers.virtual_lab.memristor import MemristorArray
from physlearn.drivers.virtual_lab.scpi import ScpiError
from physlearn.system import FloatArray, Nudge

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
        self.t0 = clock()
        self._init_weights()
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
        #: fixed diodes and bias rails (a bench mirroring a diode_resistor system), or None
        self.diodes = BenchDiodes.from_config(config)

    # -- conductances ------------------------------------------------------------------------
    def _init_weights(self) -> None:
        """The weight bank's devices: potentiometers (taps, gain errors, drift rates drawn from
        ``[seed, 0]``) or memristors (``memristors``, drawn from ``[seed, 11]``)."""
        c = self.config
        n_edges = self.edges.shape[0]
        #: the memristive devices when the bank is a memristor board (device k on edge k)
        self.memristors: MemristorArray | None = None
        if c.memristors is not None:
            mem = c.memristors
            self.memristors = MemristorArray(mem.device, n_edges, [c.seed, 11], t=self.t0)
            g0 = mem.device.g_min if mem.initial is None else mem.initial
            self.memristors.initialise(g0, self.t0)
            self.device_edge = np.arange(n_edges, dtype=np.int64)
            self.gain = np.ones(n_edges)
            self.drift_rate = np.zeros(n_edges)
            self.taps = np.zeros(0, dtype=np.int64)
            return
        pots = self.pot_spec()
        rng = np.random.default_rng([c.seed, 0])
        n_pots = c.pot_count()
        self.device_edge = np.asarray(c.pot_wiring(), dtype=np.int64)
        self.gain = np.clip(1.0 + pots.spread * rng.standard_normal(n_pots), 0.05, None)
        self.drift_rate = pots.drift * rng.standard_normal(n_pots)
        self.taps = np.full(n_pots, pots.initial_tap, dtype=np.int64)

    def pot_spec(self) -> PotSpec:
        """The potentiometer bank's spec (a bench whose weights are memristors has none)."""
        if self.config.pots is None:
            raise RuntimeError("virtual lab: this bench's weights are memristors, not pots")
        return self.config.pots

    def device_conductance(self, t: float | None = None) -> FloatArray:
        """True conductance of every weight device (S) at time ``t`` (default: the time the
        network's conductances were last brought up to date)."""
        tt = self._t_drift if t is None else t
        if self.memristors is not None:
            return self.memristors.conductance(tt)
        pots = self.pot_spec()
        g = np.asarray(pots.law.conductance(self.taps)) * self.gain
        if pots.drift > 0:
            g = g * np.clip(1.0 + self.drift_rate * (tt - self.t0), 0.01, None)
        return np.asarray(g)

    def edge_conductance(self) -> FloatArray:
        """Conductance of every network edge (S), in edge order, as the network sees it."""
        g = np.empty(self.edges.shape[0])
        g[self.device_edge] = self.device_conductance()
        return g

    def _drift_due(self, t: float) -> bool:
        """Whether the devices' conductances have drifted since they were last evaluated."""
        if t <= self._t_drift:
            return False
        mem = self.config.memristors
        if mem is not None:
            return mem.device.drift != "none" and mem.device.drift_nu > 0
        pots = self.pot_spec()
        return pots.drift > 0 and t - self._t_drift >= pots.drift_interval

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

    def set_output(self, ch: int, on: bool) -> bool:
        """Switch channel ``ch``'s output (0-based); True when that changed anything.

        Every instrument switches outputs here, so none can wire two voltage sources to one
        node: switching a ``VOLT`` channel on while another ``VOLT`` channel with its output on
        holds the same node is refused with -221 (settings conflict). Switching on clears a trip.
        """
        node = self.src_node[ch]
        if on and self.func[ch] == "VOLT" and node is not None:
            for other in range(len(self.func)):
                if (
                    other != ch
                    and self.output[other]
                    and self.func[other] == "VOLT"
                    and self.src_node[other] == node
                ):
                    raise ScpiError(-221, f"channel {other + 1} already holds node {node}")
        if on == bool(self.output[ch]):
            return False
        self.output[ch] = on
        if on:
            self.tripped[ch] = False
        self.changed()
        return True

    def _transient(self, t: float) -> FloatArray:
        tau = self.config.settling_tau
        if tau <= 0:
            return self._v_to
        w = math.exp(-max(0.0, t - self._t_change) / tau)
        return np.asarray(self._v_to + (self._v_from - self._v_to) * (w * self._relaxing))

    def voltages(self) -> FloatArray:
        """Node voltages (V) now, including settling, without meter imperfections."""
        t = self.clock()
        if self._drift_due(t):
            # a new equilibrium to relax to; the relaxation in progress is not restarted
            self._t_drift = t
            self._g_version += 1
            self._dirty = True
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
        from physlearn.simulators.graphs.generators import from_edge_list
        from physlearn.simulators.resistor.linear import LinearResistorNetwork

        held, inj, terminals = self._drive()
        n = self.n_nodes
        self.solves += 1
        if not held and not terminals and self.diodes is None:
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
                if self.diodes is not None:
                    net = self.diodes.network(graph, g0)
                else:
                    net = LinearResistorNetwork(
                        graph, g0, bounds=(1e-300, 1e300), blas_threads=None
                    )
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
            if self.diodes is not None:
                full_int[:] = solve_free(entry.net, vs, entry.outputs, inj)
                return full_int[:n].copy(), {"held": held, "inj": inj, "terminals": terminals}
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
        noise = self.pot_spec().measure_noise
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
