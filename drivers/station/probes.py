"""Reading every node voltage of the network: the ``probes`` role.

Two kinds of bench (``probes.kind``):

* ``scan`` -- a meter with a multiplexer and a scan list: one query returns one reading per
  node (``readings``), with a reading counter (``counter``) that must advance every scan, else
  the scan is stale (:class:`StaleReadingError`). physlearn's virtual-lab DMM works so, as do
  DMMs with a scanner card whose driver exposes the scan.
* ``switched`` -- a switch matrix and a DMM, as qcodes' stock drivers offer them (Keysight
  34980A with a 34934A matrix card and a 34465A on one of its rows): for each node, close its
  column onto the meter's row, read the meter (``meter``, e.g. ``dmm.volt``: the meter's own
  ``READ?``, which returns once the reading is integrated), open the column. A reading is only
  taken while its node alone is connected, so the meter never shorts two nodes.

Either way a reading beyond ``range`` (an overload: 9.9e37 on Keysight meters) or NaN stops the
run (:class:`InstrumentFault`, never retried: it means the network is not where the config
says). Every driver call is timed as instrument time and its errors classified
(:func:`~physlearn.drivers.station.transactions.call`).
"""

from __future__ import annotations

from typing import Any, Protocol

from physlearn.drivers.errors import InstrumentFault, InstrumentReplyError, StaleReadingError
from physlearn.drivers.station.binding import Instruments, parameter
from physlearn.drivers.station.roles import ScanProbe, SwitchedProbe
from physlearn.drivers.station.transactions import Timers, call


class NodeReader(Protocol):
    """Reads every node voltage (V), node order."""

    name: str

    def configure(self) -> None:
        """Set the meter up (scan list, meter settings); at open."""

    def read(self) -> list[float]:
        """One reading of every node (V), checked."""

    def release(self) -> None:
        """Leave the probes in their safe state (relays open); at close."""


def check_readings(v: list[float], n: int, limit: float, name: str) -> list[float]:
    """``v`` if it holds ``n`` finite readings within +-``limit`` V."""
    if len(v) != n:
        raise InstrumentReplyError(f"{name}: {len(v)} readings, expected {n}", name)
    total = sum(v)  # NaN if a reading is NaN
    if not (total == total and -limit <= min(v) and max(v) <= limit):
        k = next(k for k, x in enumerate(v) if not abs(x) <= limit)
        raise InstrumentFault(f"{name}: overload on node {k} ({v[k]:g} V beyond {limit:g} V)", name)
    return v


class ScanReader:
    """A meter scanning every node through its multiplexer (``probes.kind: scan``)."""

    def __init__(self, insts: Instruments, cfg: ScanProbe, n_nodes: int, timers: Timers) -> None:
        self.cfg, self.n, self.timers = cfg, n_nodes, timers
        self.readings = insts.resolve(cfg.readings)
        self.scan_list = insts.resolve(cfg.scan_list) if cfg.scan_list else None
        self.counter = insts.resolve(cfg.counter) if cfg.counter else None
        self.name = self.readings.root_instrument.name
        self.last_count = -1

    def configure(self) -> None:
        if self.scan_list is None:
            return
        chans = self.cfg.channel_list()
        call(self.timers, self.name, False, self.scan_list.set, chans)
        got = list(call(self.timers, self.name, True, self.scan_list.get))
        if got != chans:
            raise InstrumentReplyError(
                f"{self.scan_list.full_name}: wrote {chans}, reads {got}", self.name
            )

    def read(self) -> list[float]:
        raw = call(self.timers, self.name, True, self.readings.get)
        v = [float(x) for x in raw]
        if self.counter is not None:
            count = int(call(self.timers, self.name, True, self.counter.get))
            if count <= self.last_count:
                raise StaleReadingError(
                    f"{self.name}: stale scan (reading counter {count} did not advance past "
                    f"{self.last_count})",
                    self.name,
                )
            self.last_count = count
        self.timers.readings += 1
        return check_readings(v, self.n, self.cfg.range, self.name)

    def release(self) -> None:
        return None


class SwitchedReader:
    """A switch matrix routing one node at a time to a DMM (``probes.kind: switched``)."""

    def __init__(
        self, insts: Instruments, cfg: SwitchedProbe, n_nodes: int, timers: Timers
    ) -> None:
        self.cfg, self.n, self.timers = cfg, n_nodes, timers
        self.switch = insts.resolve(cfg.switch)
        for method in ("connect", "disconnect"):
            if not callable(getattr(self.switch, method, None)):
                raise KeyError(
                    f"probes.switch: {cfg.switch} has no {method}(row, column) method (a qcodes "
                    "switch-matrix module, e.g. Keysight34980A's slot_1_34934A)"
                )
        self.meter = insts.resolve(cfg.meter)
        meter_inst = self.meter.root_instrument
        self.settings = [(parameter(meter_inst, k, "probes.settings"), v) for k, v in
                         cfg.settings.items()]  # fmt: skip
        self.columns = cfg.column_list()
        self.name = meter_inst.name
        self.switch_name = self.switch.root_instrument.name
        #: a relay of the row may be closed (a read did not complete): open them all first
        self.unsure = True

    def configure(self) -> None:
        for param, value in self.settings:
            call(self.timers, self.name, False, param.set, value)
        self.release()

    def _switch(self, method: Any, col: int) -> None:
        # the matrix drivers confirm every command with a query (the 34980A's *ESR?): a reply
        # they cannot parse is a garbled reply, retried
        call(self.timers, self.switch_name, True, method, self.cfg.row, col)

    def read(self) -> list[float]:
        if self.unsure:
            self.release()
        self.unsure = True
        out = []
        for col in self.columns:
            self._switch(self.switch.connect, col)
            out.append(float(call(self.timers, self.name, True, self.meter.get)))
            self._switch(self.switch.disconnect, col)
            self.timers.readings += 1
        self.unsure = False
        return check_readings(out, self.n, self.cfg.range, self.name)

    def release(self) -> None:
        """Open every node's relay on the meter's row."""
        for col in self.columns:
            self._switch(self.switch.disconnect, col)
        self.unsure = False


def node_reader(insts: Instruments, cfg: Any, n_nodes: int, timers: Timers) -> NodeReader:
    """The reader of a ``probes`` section."""
    if isinstance(cfg, SwitchedProbe):
        return SwitchedReader(insts, cfg, n_nodes, timers)
    return ScanReader(insts, cfg, n_nodes, timers)
