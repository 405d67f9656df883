"""The measurement loop of a station system: one phase of one pattern at a time.

A *phase* is one transaction (:mod:`physlearn.drivers.station.transactions`):

1. release any other nudge than the one this phase applies (error currents to 0 A, relays open,
   clamp outputs off);
2. write the input levels, then the nudge's levels (and close its relays or switch its outputs
   on) -- every value already checked against the envelope by the caller, each through its
   qcodes parameter's ``set``, which ramps by the envelope's ``step`` and ``inter_delay``; a
   level whose qcodes cache already holds the value is not rewritten;
3. synchronise with every instrument written (its compliance-trip status, else ``*OPC?``):
   the levels are applied when the reply arrives;
4. wait ``settle_time``, then read every node (:mod:`~physlearn.drivers.station.probes`); with
   ``tolerance``, read again until two successive readings agree within it (at most
   ``max_reads`` readings and ``timeout`` seconds; otherwise the phase is ``converged=False``).

A failed attempt leaves the levels unknown: every driven parameter's cache is invalidated
(:meth:`Phases.forget`) and re-read before the retry, so qcodes ramps from the truth.
"""

from __future__ import annotations

import time
from typing import Any

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.station.binding import BoundSource, BoundSwitches, is_off, sync
from physlearn.drivers.station.probes import NodeReader
from physlearn.drivers.station.roles import EquilibriumConfig
from physlearn.drivers.station.transactions import Timers, call

#: nudge state on the bench: a kind, None (free), or UNKNOWN
UNKNOWN = "?"


def wait(seconds: float, timers: Timers) -> float:
    """Sleep ``seconds`` (the network settling) and return the time slept (at least that)."""
    t0 = time.perf_counter()
    time.sleep(seconds)
    waited = time.perf_counter() - t0
    timers.settle += waited
    return waited


class Phases:
    """Measures phases on the bench: sources and switches bound by role name
    (``inputs``, ``nudge.<kind>``), the node reader, equilibrium detection."""

    def __init__(
        self,
        sources: dict[str, BoundSource],
        switches: dict[str, BoundSwitches],
        reader: NodeReader,
        eq: EquilibriumConfig,
        timers: Timers,
    ) -> None:
        self.sources, self.switches, self.reader = sources, switches, reader
        self.eq, self.timers = eq, timers
        self.applied: str | None = UNKNOWN
        self.written: dict[int, Any] = {}
        self.trips: dict[int, list[Any]] = {}
        self.bind_trips()

    def bind_trips(self) -> None:
        """The trip-status parameters per instrument, from the roles as bound now (again once
        a pending role's levels and trip status are bound at open)."""
        self.trips = {}
        for src in self.sources.values():
            for p in src.trips:
                on_root = self.trips.setdefault(id(p.root_instrument), [])
                if all(q is not p for q in on_root):
                    on_root.append(p)

    # -- writes ------------------------------------------------------------------------------
    def set(self, param: Any, value: Any) -> None:
        """``param.set(value)`` unless its cache holds ``value``. An unknown level is read
        first (a reply error there is a garbled reply, retried), so qcodes' ramp, which starts
        from the cache, never queries inside the set."""
        if not param.cache.valid:
            self.get(param)
        if param.cache.get(get_if_invalid=False) == value:
            return
        root = param.root_instrument
        self.written[id(root)] = root
        call(self.timers, root.name, False, param.set, value)

    def get(self, param: Any) -> Any:
        """``param.get()``, timed, its errors classified."""
        return call(self.timers, param.root_instrument.name, True, param.get)

    def sync_written(self) -> None:
        """Synchronise with every instrument written since the last synchronisation."""
        sync(self.written, self.trips, self.timers)

    def set_levels(self, src: BoundSource, values: list[float]) -> None:
        for param, value in zip(src.levels, values, strict=True):
            self.set(param, value)

    def release(self, keep: str | None) -> None:
        """Every nudge but ``keep`` in its free-phase state."""
        if self.applied is None or self.applied == keep:
            return
        for name, src in self.sources.items():
            kind = name.removeprefix("nudge.")
            if name == "inputs" or kind == keep:
                continue
            if kind in self.switches:
                for p in self.switches[kind].states:
                    self.set(p, False)
            elif kind == "error":
                self.set_levels(src, [0.0] * len(src.levels))
            elif kind == "clamp":
                for p in src.outputs or []:
                    self.set(p, src.cfg.output_values[1])

    def apply(self, kind: str, levels: list[float]) -> None:
        src = self.sources[f"nudge.{kind}"]
        self.set_levels(src, levels)
        if kind in self.switches:
            for p in self.switches[kind].states:
                self.set(p, True)
        elif kind == "clamp":
            for p in src.outputs or []:
                self.set(p, src.cfg.output_values[0])

    def forget(self) -> None:
        """Every driven level, output and relay unknown (a failed attempt)."""
        for src in self.sources.values():
            for p in [*src.levels, *(src.outputs or [])]:
                p.cache.invalidate()
        for sw in self.switches.values():
            for p in sw.states:
                p.cache.invalidate()
        self.applied = UNKNOWN
        self.written.clear()

    def resync(self) -> None:
        """Read back every level, output and relay the system drives."""
        for src in self.sources.values():
            for p in [*src.levels, *(src.outputs or [])]:
                self.get(p)
        for sw in self.switches.values():
            for p in sw.states:
                self.get(p)
        self.applied = UNKNOWN

    def make_off(self, out: tuple[Any, Any] | None, level: Any, safe: float | None) -> None:
        """The safe state of one channel: ramp ``level`` to ``safe`` (from its value read
        back), set ``out`` = (parameter, off value), verify by reading both back."""
        if level is not None and safe is not None:
            self.get(level)  # the truth, so the ramp starts where the level really is
            self.set(level, safe)
        if out is not None:
            self.get(out[0])
            self.set(*out)
        self.written.clear()  # the read-backs below are queries: answered after the writes
        if level is not None and safe is not None and float(self.get(level)) != safe:
            raise InstrumentReplyError(f"{level.full_name} does not read {safe}")
        if out is not None and not is_off(self.get(out[0])):
            raise InstrumentReplyError(f"{out[0].full_name} is still on")

    # -- one phase ---------------------------------------------------------------------------
    def phase(
        self, u: list[float], kind: str | None, levels: list[float] | None
    ) -> tuple[list[float], int, bool, float]:
        """One phase of one pattern (inputs ``u``, nudge ``kind`` with ``levels``): the node
        readings (V), the number of readings, whether they agreed, the seconds waited."""
        self.release(kind)
        self.applied = UNKNOWN if kind is not None else None
        self.set_levels(self.sources["inputs"], u)
        if kind is not None and levels is not None:
            self.apply(kind, levels)
            self.applied = kind
        self.sync_written()
        self.timers.phases += 1
        return self.read()

    def read(self) -> tuple[list[float], int, bool, float]:
        """Settle, then read (until stable, with ``tolerance``)."""
        eq = self.eq
        waited = wait(eq.settle_time, self.timers) if eq.settle_time > 0 else 0.0
        v = self.reader.read()
        if eq.tolerance is None:
            return v, 1, True, waited
        reads, start = 1, time.perf_counter()
        while reads < eq.max_reads and time.perf_counter() - start < eq.timeout:
            if eq.poll_interval > 0:
                waited += wait(eq.poll_interval, self.timers)
            v2 = self.reader.read()
            reads += 1
            if max(abs(a - b) for a, b in zip(v2, v, strict=True)) <= eq.tolerance:
                return v2, reads, True, waited
            v = v2
        return v, reads, False, waited
