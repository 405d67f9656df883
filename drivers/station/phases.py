"""The parts a phase of :class:`~physlearn.drivers.station.system.StationSystem` is made of.

A bound source role (:class:`_Source`: its qcodes parameters, envelope, the levels last written
and the instrument's bulk writer) and switch role; the changed levels of one phase collected for
one bulk write (:class:`_PhaseLevels`) or prepared ahead while the phase before settles
(:class:`_PreparedPhase`); a batch's result rows (:class:`_Rows`) and its scans awaiting their
check (:class:`_PendingScan`); the settling wait (:func:`wait_at_least`) and the benchmark timers.
Each is documented where the station system's module docstring describes the transaction it
serves. No qcodes import: the instruments are reached through the objects handed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from physlearn.drivers.errors import InstrumentError
from physlearn.drivers.station.roles import SourceRole, SwitchRole
from physlearn.drivers.station.safety import RoleEnvelope

#: The last stretch of a wait that :func:`wait_at_least` spends polling the clock instead of
#: asleep (s): about what a Linux sleep of a few hundred microseconds overshoots (timer slack
#: and wake-up latency, 60-150 us on an idle machine).
SPIN_SECONDS = 2e-4


def wait_at_least(seconds: float, since: float | None = None) -> float:
    """Wait until ``seconds`` have passed since ``since`` (a ``time.perf_counter()`` reading;
    default: now) -- the bench settling -- and return the time since then, never less.

    Sleeps until ``SPIN_SECONDS`` before the deadline, then polls the clock. A plain sleep of
    ``settle_time = 3e-4`` s returns after about 4e-4 s, so every phase would wait a third longer
    than configured; the poll ends the wait within a microsecond or two of the deadline, at the
    cost of at most ``SPIN_SECONDS`` of busy CPU per wait (a Ctrl-C still interrupts it). The
    core is also awake when the scan that follows is sent, instead of waking from idle. On a
    loaded machine the sleep can overshoot the whole wait: the network only settles further.
    """
    t0 = time.perf_counter() if since is None else since
    asleep = seconds - SPIN_SECONDS - (time.perf_counter() - t0)
    if asleep > 0:
        time.sleep(asleep)
    waited = time.perf_counter() - t0
    while waited < seconds:  # on the difference itself: t0 + seconds could round below it
        waited = time.perf_counter() - t0
    return waited


@dataclass
class Timers:
    """Wall-clock seconds by activity (for benchmarks): ``instrument`` = inside qcodes/VISA
    calls, ``settle`` = waiting for the physics, ``visa_closed`` = VISA read/write time of the
    instruments already closed (see :meth:`StationSystem.visa_seconds`); counts of phases,
    scans, retries, reconnects."""

    instrument: float = 0.0
    settle: float = 0.0
    visa_closed: float = 0.0
    phases: int = 0
    scans: int = 0
    retries: int = 0
    reconnects: int = 0


@dataclass
class _Source:
    """A bound source role: qcodes parameters per channel."""

    name: str
    cfg: SourceRole
    env: RoleEnvelope
    levels: list[Any] = field(default_factory=list)
    outputs: list[Any] | None = None
    compliance: list[Any] | None = None
    settings: list[dict[str, Any]] = field(default_factory=list)
    trip: Any = None
    roots: list[Any] = field(default_factory=list)
    #: level last written per channel (a fast skip of unchanged levels; NaN = unknown)
    last: list[float] = field(default_factory=list)
    #: the instrument's bulk level writer (``level_writer(levels)``, or its ``set_levels``)
    #: when every channel is on one instrument that offers it and the role does not ramp with
    #: an inter-delay; shared by every such role on the instrument when it can be
    bulk: _BulkWriter | None = None
    #: index of the role's first level among the levels of ``bulk``
    offset: int = 0


class _PhaseLevels:
    """The changed levels of one phase not yet handed to their bulk writer (one writer at a
    time: see :meth:`StationSystem._set_levels`). Local to the phase: a phase that fails drops
    it, and nothing it still holds was handed to an instrument."""

    __slots__ = ("writer", "root", "values", "index", "roles", "ids")

    def __init__(self) -> None:
        self.writer: _BulkWriter | None = None
        self.root: Any = None
        self.values: list[float] = []  # new levels, in the order written
        self.index: list[int] = []  # their indices among the writer's levels
        #: per role queued: the role, its changed channels and their new levels
        self.roles: list[tuple[_Source, list[int], list[float]]] = []
        self.ids: list[int] = []  # id() of each role queued


@dataclass
class _Switches:
    name: str
    cfg: SwitchRole
    states: list[Any] = field(default_factory=list)
    roots: list[Any] = field(default_factory=list)


def _root(p: Any) -> Any:
    return p.root_instrument


class _BulkWriter(Protocol):
    """Sets a source role's levels in one go (see ``VirtualLabSource.level_writer``)."""

    def refresh(self) -> None: ...

    def write(self, values: list[float], indices: list[int] | None = None) -> None: ...


class _SetLevelsWriter:
    """A :class:`_BulkWriter` over an instrument's ``set_levels(params, values)`` (which reads
    the parameters' validators on every call: nothing to refresh)."""

    def __init__(self, set_levels: Callable[[list[Any], list[float]], None], params: list[Any]):
        self._set_levels = set_levels
        self._params = params

    def refresh(self) -> None:
        pass

    def write(self, values: list[float], indices: list[int] | None = None) -> None:
        params = self._params if indices is None else [self._params[k] for k in indices]
        self._set_levels(params, values)


class _Preparing(_BulkWriter, Protocol):
    """A bulk writer whose writes can be prepared ahead and sent later (see
    ``LevelWriter.prepare`` and ``send`` in :mod:`physlearn.drivers.instruments.source`)."""

    def prepare(self, values: list[float], indices: list[int] | None = None) -> Any: ...

    def send(self, prepared: Any) -> bool: ...


class _PreparedPhase:
    """A phase's level writes, prepared while the phase before it settled
    (:meth:`StationSystem._prepare_phase`): the writer's prepared write (None: the phase
    changes no level), the roles and channels it sets, and the skip memory (``last``) of each
    role it was prepared against."""

    __slots__ = ("writer", "root", "levels", "roles", "lasts")

    def __init__(
        self,
        writer: _Preparing,
        root: Any,
        levels: Any,
        roles: list[tuple[_Source, list[int], list[float]]],
        lasts: list[tuple[_Source, list[float]]],
    ) -> None:
        self.writer = writer
        self.root = root
        self.levels = levels
        self.roles = roles
        self.lasts = lasts


class _Rows:
    """The arrays of a batch's result, one row per phase: node voltages (V), outputs (V), edge
    conjugates (V^2) and energy (W). ``scans[k]``: the scan whose readings row k of ``volts``
    holds (None: none yet; :meth:`put`); ``derived``: the leading rows whose outputs,
    conjugates and energy are computed from ``volts`` as it stands
    (:meth:`StationSystem._derive_rows`)."""

    __slots__ = ("volts", "outputs", "conj", "energy", "scans", "derived")

    def __init__(self, batch: int, n_nodes: int, n_out: int, n_edges: int) -> None:
        self.volts = np.empty((batch, n_nodes))
        self.outputs = np.empty((batch, n_out))
        self.conj = np.empty((batch, n_edges))
        self.energy = np.empty(batch)
        self.scans: list[list[float] | None] = [None] * batch
        self.derived = 0

    def put(self, k: int, scan: list[float]) -> None:
        """Row k's readings: ``scan`` (V, a checked scan of every node)."""
        self.volts[k] = scan
        self.scans[k] = scan
        if self.derived > k:
            self.derived = k


class _PendingScan:
    """A scan read but not yet checked (its reply), and, once checked, the result: the
    readings (V), or the error the check raised."""

    __slots__ = ("reply", "result")

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.result: list[float] | InstrumentError | None = None


def _bulk_writer(root: Any, levels: list[Any]) -> _BulkWriter | None:
    """The instrument's bulk writer of ``levels``: ``level_writer`` (prepared once per batch),
    else ``set_levels``; None if it has neither or cannot write these levels in bulk."""
    make = getattr(root, "level_writer", None)
    if callable(make):
        try:
            writer: _BulkWriter = make(levels)
        except ValueError:  # e.g. a level with a post_delay: set them one by one
            return None
        return writer
    bulk = getattr(root, "set_levels", None)
    return _SetLevelsWriter(bulk, levels) if callable(bulk) else None
