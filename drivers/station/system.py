"""A resistor network on the bench, trained through a qcodes station (``system: kind: station``).

Physics and sign conventions are those of :mod:`physlearn.simulators.resistor.linear` (see
``docs/physics.md``, §Bench (station) and virtual lab, and §Resistor networks):

* node voltages V (volts) are *measured* by a meter scanning every node through a multiplexer;
* edge e carries a digital potentiometer of conductance g_e (S), the trainable group
  ``"conductance"`` ``(n_edges,)``; the bank holds taps, and ``set_parameters`` writes the tap
  nearest to each requested conductance (nominal law or calibration), reads the taps back,
  verifies them and returns the conductances the bank now holds (the group declares
  ``resolution = 0``: the grid is the bank's, per device);
* energy E = 1/2 sum_e g_e (V_i - V_j)^2 (W); conjugate dE/dg_e = 1/2 (V_i - V_j)^2 (V^2 = W/S)
  from the measured node voltages, per pattern;
* inputs: voltage-source channels clamp the input nodes (V); outputs: output-node voltages (V);
* nudges (what the hardware realises; ``supported_nudges`` follows the config):
    - ``error``: current I_o = -beta * eps_o (A) injected into output o by current-mode channels;
      beta real (W for an error eps in 1/V, S for eps in V), either sign;
    - ``clamp``: output o held at the clamp voltage by a voltage source switched onto it (coupled
      learning); beta unused;
    - ``target``: relays connect each output through the hardware nudge conductance beta_hw (S)
      to a source at the target voltage: E + beta_hw/2 sum (V_o - y_o)^2 (``native_cost = mse``);
      the nudge's beta must equal beta_hw (a negative conductance cannot be built).

One pattern at a time, but a whole batch per call (``max_batch`` is not limited): every input and
nudge value of the batch is checked against the envelope before the first write, so a batch with
one bad pattern is refused whole, never partly applied; then each pattern is measured in turn.
EP's nudged phases come in one request (``equilibrate_many``) and are measured in one sweep, as
one batch of every pattern under each nudge in turn (checked whole, set up once).
The phase of one pattern is one *transaction*: remove the previous nudge, set the inputs, apply
the nudge, synchronise with every instrument written (a compliance-trip query or ``*OPC?``),
wait ``settle_time`` from that confirmation's arrival (the levels are applied by then; reading
the reply is part of the wait), scan until two successive scans agree within ``tolerance`` (if
set; at most ``max_reads`` scans and ``timeout`` seconds). Unchanged levels are not rewritten;
changed ones go to a source offering a bulk writer (the virtual-lab source's ``level_writer``,
or its ``set_levels``) in one call, which checks them against the channels' qcodes validators and
ramps them exactly as qcodes would, leaving the parameters' caches at the levels written; the
writer reads the validators, steps and delays once per batch (``equilibrate``), when the batch
is checked against the envelope. Every role on one instrument shares that instrument's writer:
a phase's changed levels (nudge released, inputs, nudge applied) are collected and go to it in
one call, just before the phase writes anything else (a relay, an output) or synchronises --
the same commands in the same order as writing role after role. When every level a batch's
phases write (inputs, error-nudge currents) goes to one writer that can prepare writes ahead
(``LevelWriter.prepare``), each phase's writes -- changed levels, checks of every value and ramp
value, the commands -- are prepared while the phase before it settles (work inside a wait the
bench needs anyway; a batch's first phase's before the batch starts, unless a nudge is to be
released first), and the phase only sends them; a phase whose preparation no longer stands
(a nudge to release, a retry after a failed exchange, a resync) writes its levels as above.
Likewise a scan's reply is parsed and checked while the next phase settles (the last one's at
the end of the batch; at once with ``tolerance``, whose scans compare): a scan found bad there
fails its phase's transaction as if found at once -- the phase is measured again, and so is the
phase that had started meanwhile; an overload stops the batch one phase later than it would
have (every level of that phase within the envelope). A checked scan's readings go into the
batch's result while the next phase settles too, and while the last phase of a batch settles the
result of the phases before it is computed and the caches the drivers hold back for the batch
are updated. The compliance-trip query and the scan
go through the drivers' own readers (``read_trip_status``; ``query_scan`` and ``parse_scan``:
the parameters' get without qcodes' per-call machinery, the same queries, parsing, errors and
caches) when they offer them, and so does a weight update's write and read-back
(``write_taps_read_back``: the taps parameter's set and get, in one exchange).

Every value of a transaction is checked against the safety envelope before its first write
(:mod:`physlearn.drivers.station.safety`); qcodes validators, steps and inter-delays enforce it
again.

Faults: a timeout or lost connection closes and reopens the VISA sessions, re-reads every level
the system drives (so that ramps start from the truth) and redoes the transaction; a garbled
reply or a stale scan (the meter's reading counter did not advance) redoes it on the same
session first. What a failed attempt wrote counts as unknown (a compound message of levels is
confirmed only by the reply to the query it carries): if the re-read fails too, the next
attempt writes every level again, its ramps starting from levels read back (the drivers
invalidate their caches when an exchange is lost). After ``retry.attempts`` tries
(``retry.reconnects`` reconnections) the system raises
:class:`~physlearn.drivers.errors.InstrumentFault`; the orchestrator then commits the complete
steps and closes the system, which ramps every source to its safe state. A compliance trip is
never retried.

Lifecycle: ``connect()`` (also done by ``snapshot()`` and ``dry_run()``) starts the virtual lab
if configured, loads the station's instruments, checks their identities, installs the envelope
on the qcodes parameters and reads their state -- it writes nothing. ``open()`` configures the
sources (function, compliance), ramps them to their safe levels, switches the outputs on, sets
the scan list and writes the initial weights. ``close()`` ramps to the safe state, closes every
instrument (qcodes names are global) and stops the virtual lab, on every exit path.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from physlearn.drivers.errors import (
    ComplianceTrip,
    EnvelopeViolation,
    IdentityError,
    InstrumentError,
    InstrumentFault,
    InstrumentIOError,
    InstrumentReplyError,
    SafeStateError,
    StaleReadingError,
)
from physlearn.drivers.station.phases import (
    Timers,
    _bulk_writer,
    _BulkWriter,
    _PendingScan,
    _PhaseLevels,
    _PreparedPhase,
    _Preparing,
    _root,
    _Rows,
    _Source,
    _Switches,
    wait_at_least,
)
from physlearn.drivers.station.roles import SourceRole, expand_names
from physlearn.drivers.station.safety import (
    RoleEnvelope,
    apply_tap_limits,
    apply_to_parameter,
    check_taps,
    hardware_range,
    shield_interrupts,
)
from physlearn.drivers.station.tapmap import TapMap
from physlearn.system import (
    Equilibrium,
    FloatArray,
    Nudge,
    NudgeKind,
    ParameterGroup,
    Params,
    PhysicalSystem,
    Port,
    check_parameters,
)

if TYPE_CHECKING:
    from physlearn.config import ExperimentConfig
    from physlearn.drivers.station.config import StationConfig
    from physlearn.drivers.virtual_lab.server import LabServer
    from physlearn.dryrun import Check

GROUP = "conductance"
T = TypeVar("T")

#: the errors a transaction retries (see the module docstring)
_RETRIED = (InstrumentIOError, InstrumentReplyError, StaleReadingError)


class StationSystem(PhysicalSystem):
    """See the module docstring. ``seed`` draws the initial conductances (``init: random``)."""

    # max_batch: the default (no limit) -- a batch is one operation, checked whole before its
    # first write, then measured one pattern (one transaction) at a time
    native_cost = "mse"
    energy_unit = "W"

    def __init__(self, config: StationConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = int(seed)
        self.graph = config.graph.build()
        self.edges = np.asarray(self.graph.edges, dtype=np.int64)
        self.n_nodes = int(self.graph.n_nodes)
        # per-phase constants (equilibrate)
        self._ei = np.ascontiguousarray(self.edges[:, 0])
        self._ej = np.ascontiguousarray(self.edges[:, 1])
        self._eij = np.concatenate([self._ei, self._ej])
        self._out_idx = np.asarray(self.graph.output_nodes, dtype=np.int64)
        self._in_port = Port(
            size=int(self.graph.input_nodes.size),
            unit="V",
            labels=tuple(f"node{n}" for n in self.graph.input_nodes),
            long_name="input source voltages",
        )
        self._out_port = Port(
            size=int(self.graph.output_nodes.size),
            unit="V",
            labels=tuple(f"node{n}" for n in self.graph.output_nodes),
            long_name="output node voltages (measured)",
        )
        self.supported_nudges: frozenset[NudgeKind] = frozenset(config.nudge.kinds())
        w = config.weights
        self.tapmap = TapMap(w.law, self.edges.shape[0], w.tap_limits, w.calibration)
        lo_r, hi_r = self.tapmap.reachable()
        b = w.conductance
        if b.min < lo_r * (1 - 1e-12) or b.max > hi_r * (1 + 1e-12):
            raise ValueError(
                f"weights.conductance [{b.min:g}, {b.max:g}] S is not reachable by every device "
                f"within taps {w.tap_limits[0]}..{w.tap_limits[1]} ({self.tapmap.source}: "
                f"[{lo_r:g}, {hi_r:g}] S)"
            )
        self._group = ParameterGroup(
            name=GROUP,
            shape=(self.edges.shape[0],),
            dims=("edge",),
            lower=b.min,
            upper=b.max,
            unit="S",
            resolution=0.0,
            long_name="edge conductance (potentiometer bank; held values are the bank's)",
            energy_unit="W",
        )
        self.envelopes: dict[str, RoleEnvelope] = {
            "inputs": RoleEnvelope(
                "inputs", "V", config.inputs.limits, tuple(config.inputs.names())
            )
        }
        for kind in config.nudge.kinds():
            src = getattr(config.nudge, kind).sources
            self.envelopes[f"nudge.{kind}"] = RoleEnvelope(
                f"nudge.{kind}", src.unit, src.limits, tuple(src.names())
            )
        self.timers = Timers()
        self.events: list[str] = []
        self.lab: LabServer | None = None
        self._station: Any = None
        self._instruments: dict[str, Any] = {}
        self._identity: dict[str, str] = {}
        self._sources: dict[str, _Source] = {}
        self._switches: dict[str, _Switches] = {}
        self._readings: Any = None
        #: the meter's own scan reader (readings as Python floats, reading counter), if any
        #: the meter's scan in two parts (its driver's query_scan, parse_scan), when offered
        self._scan_parts: tuple[Callable[[], str], Callable[[str], tuple[list[float], int]]] | None
        self._scan_parts = None
        self._scan_list: Any = None
        self._counter: Any = None
        self._taps: Any = None
        self._taps_exchange: Callable[[np.ndarray | None], np.ndarray] | None = None
        self._connected = False
        self._opened = False
        self._held = np.zeros(self.edges.shape[0])
        self._last_counter = -1
        self._dirty_roots: dict[int, Any] = {}
        self._batch_roots: list[Any] = []
        #: _batch(_batch_roots) is the deferred writes of one instrument
        self._single_deferred = False
        #: every distinct bulk level writer of the source roles (refreshed once per batch)
        self._writers: list[_BulkWriter] = []
        #: per source instrument (by id): the compliance-trip status reader (0: no trip)
        self._trips: dict[int, Callable[[], Any]] = {}
        self._roots: dict[int, Any] = {}
        self._weight_names = expand_names(config.weights.channels or [])
        #: nudge kind possibly applied on the bench ("?" unknown; None: free state)
        self._applied: str | None = "?"

    # -- description -------------------------------------------------------------------------
    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return (self._group,)

    @property
    def inputs(self) -> Port:
        return self._in_port

    @property
    def outputs(self) -> Port:
        return self._out_port

    # -- connection --------------------------------------------------------------------------
    def _station_yaml(self) -> dict[str, Any]:
        from physlearn.yamlload import load_yaml_file

        raw = load_yaml_file(self.config.station)
        if self.lab is not None:
            served = self.lab.station_config()["instruments"]
            for name, entry in served.items():
                if name in raw["instruments"]:
                    raw["instruments"][name]["address"] = entry["address"]
                    init = raw["instruments"][name].setdefault("init", {}) or {}
                    init.setdefault("visalib", "@py")
                    raw["instruments"][name]["init"] = init
        return dict(raw)

    def _needed_instruments(self) -> list[str]:
        names: list[str] = []
        for _, path in self.config.referenced():
            inst = path.split(".")[0]
            if inst not in names:
                names.append(inst)
        for inst in self.config.identity:
            if inst not in names:
                names.append(inst)
        return names

    def _start_lab(self) -> None:
        if self.config.lab is None or self.lab is not None:
            return
        from physlearn.drivers.virtual_lab.config import load_lab_config
        from physlearn.drivers.virtual_lab.server import LabServer

        self.lab = LabServer(load_lab_config(self.config.lab.serve)).start()
        self.events.append(f"virtual lab serving {self.lab.addresses}")

    def _load_instruments(self) -> None:
        import yaml
        from qcodes.station import Station

        self._station = Station(default=False, update_snapshot=False)
        self._station.load_config(yaml.safe_dump(self._station_yaml()))
        attempts = self.config.retry.attempts
        for name in self._needed_instruments():
            for attempt in range(attempts):
                try:
                    inst = self._station.load_instrument(name, update_snapshot=False)
                    break
                except (InstrumentIOError, InstrumentReplyError) as exc:
                    # a flaky link while the driver sets itself up: try again
                    self.events.append(f"loading {name}: attempt {attempt + 1} failed: {exc}")
                    if attempt == attempts - 1:
                        raise InstrumentFault(
                            f"{name}: cannot set up the driver after {attempts} attempt(s): {exc}",
                            name,
                        ) from exc
                except InstrumentError:
                    raise
                except Exception as exc:
                    raise InstrumentIOError(
                        f"{name}: cannot connect ({type(exc).__name__}: {exc})", name
                    ) from exc
            self._instruments[name] = inst

    def _check_identities(self) -> None:
        for name, inst in self._instruments.items():
            idn = inst.ask("*IDN?").strip()
            self._identity[name] = idn
            pattern = self.config.identity.get(name)
            if pattern is not None and re.search(pattern, idn) is None:
                raise IdentityError(
                    f"{name} at {getattr(inst, 'address', '?')} identifies as {idn!r}, which "
                    f"does not match identity.{name} = {pattern!r}: wrong instrument?",
                    name,
                )

    def _resolve(self, path: str) -> Any:
        """A channel or parameter from a dotted name ``inst.sub.param``."""
        from qcodes.parameters import ParameterBase

        parts = path.split(".")
        obj: Any = self._instruments.get(parts[0])
        if obj is None:
            raise KeyError(f"{path!r}: instrument {parts[0]!r} is not loaded")
        for k, part in enumerate(parts[1:], start=1):
            subs = getattr(obj, "submodules", {})
            params = getattr(obj, "parameters", {})
            if part in subs:
                obj = subs[part]
            elif part in params and k == len(parts) - 1:
                obj = params[part]
            else:
                have = sorted([*subs, *params])[:12]
                raise KeyError(
                    f"{path!r}: {'.'.join(parts[:k])} has no {part!r} (it has {have}...)"
                )
        if isinstance(obj, ParameterBase) or hasattr(obj, "parameters"):
            return obj
        raise KeyError(f"{path!r} is neither a channel nor a parameter")

    def _param(self, channel: Any, name: str, where: str) -> Any:
        params = getattr(channel, "parameters", {})
        if name not in params:
            raise KeyError(f"{where}: {channel.full_name} has no parameter {name!r}")
        return params[name]

    def _bind(self) -> None:
        cfg = self.config
        roles: list[tuple[str, SourceRole]] = [("inputs", cfg.inputs)]
        for kind in cfg.nudge.kinds():
            roles.append((f"nudge.{kind}", getattr(cfg.nudge, kind).sources))
        for name, rc in roles:
            src = _Source(name, rc, self.envelopes[name])
            for ch_name in rc.names():
                ch = self._resolve(ch_name)
                src.levels.append(self._param(ch, rc.level, name))
                if rc.output is not None:
                    src.outputs = src.outputs or []
                    src.outputs.append(self._param(ch, rc.output, name))
                if rc.compliance is not None:
                    src.compliance = src.compliance or []
                    src.compliance.append(self._param(ch, rc.compliance.parameter, name))
                src.settings.append({k: self._param(ch, k, name) for k in rc.settings})
            if rc.trip_status is not None:
                src.trip = self._resolve(rc.trip_status)
            src.roots = list({id(_root(p)): _root(p) for p in src.levels}.values())
            src.last = [math.nan] * len(src.levels)
            self._sources[name] = src
        for kind in ("clamp", "target"):
            role = getattr(cfg.nudge, kind)
            if role is None or role.switches is None:
                continue
            sw = _Switches(f"nudge.{kind}", role.switches)
            for ch_name in role.switches.names():
                sw.states.append(self._param(self._resolve(ch_name), role.switches.state, kind))
            sw.roots = list({id(_root(p)): _root(p) for p in sw.states}.values())
            self._switches[kind] = sw
        # Writes to an instrument are batched (compound messages) unless a role on it ramps
        # with an inter-delay, which must separate its writes in time.
        slow = {
            id(r)
            for src in self._sources.values()
            if src.env.limits.inter_delay > 0
            for r in src.roots
        }
        roots = [r for src in self._sources.values() for r in src.roots]
        roots += [r for sw in self._switches.values() for r in sw.roots]
        self._batch_roots = list({id(r): r for r in roots if id(r) not in slow}.values())
        self._single_deferred = len(self._batch_roots) == 1 and hasattr(
            self._batch_roots[0], "deferred_writes"
        )
        self._bind_writers()
        # the compliance-trip query per source instrument: the driver's own reader when it is
        # that parameter's get without qcodes' per-call machinery (same query, parsing, cache)
        self._trips = {}
        for src in self._sources.values():
            if src.trip is None:
                continue
            root = _root(src.trip)
            fast = getattr(root, "read_trip_status", None)
            if callable(fast) and getattr(root, "trip_status", None) is src.trip:
                self._trips[id(root)] = fast
            else:
                self._trips[id(root)] = src.trip.get
        p = cfg.probes
        self._readings = self._resolve(p.readings)
        self._scan_list = self._resolve(p.scan_list) if p.scan_list else None
        self._counter = self._resolve(p.counter) if p.counter else None
        self._taps = self._resolve(cfg.weights.taps)
        # the weight update's write and read-back through the bank's own exchange when it is
        # that parameter's set and get without qcodes' per-call machinery
        bank = _root(self._taps)
        fast_taps = getattr(bank, "write_taps_read_back", None)
        self._taps_exchange = (
            fast_taps if callable(fast_taps) and getattr(bank, "taps", None) is self._taps else None
        )
        # a meter whose driver reads a scan and its counter in one exchange and parses them
        # apart (the same query and parsing as the parameters' get, their caches updated) is
        # read through it directly
        meter = _root(self._readings)
        self._scan_parts = None
        if getattr(meter, "readings", None) is self._readings and (
            self._counter is None or getattr(meter, "reading_number", None) is self._counter
        ):
            query, parse = (getattr(meter, a, None) for a in ("query_scan", "parse_scan"))
            if callable(query) and callable(parse):
                self._scan_parts = (query, parse)

    def _bind_writers(self) -> None:
        """Give every role that can be written in bulk (one instrument, no inter-delay) its
        instrument's writer: one writer of the levels of all such roles on the instrument
        (each role at its ``offset``), else -- if the instrument cannot write them together --
        one per role."""
        groups: dict[int, list[_Source]] = {}
        for src in self._sources.values():
            src.bulk, src.offset = None, 0
            if len(src.roots) == 1 and src.env.limits.inter_delay == 0:
                groups.setdefault(id(src.roots[0]), []).append(src)
        self._writers = []
        for roles in groups.values():
            root = roles[0].roots[0]
            shared = _bulk_writer(root, [p for src in roles for p in src.levels])
            if shared is not None:
                offset = 0
                for src in roles:
                    src.bulk, src.offset = shared, offset
                    offset += len(src.levels)
                self._writers.append(shared)
                continue
            for src in roles:
                src.bulk = _bulk_writer(root, src.levels)
                if src.bulk is not None:
                    self._writers.append(src.bulk)

    def _install_envelope(self) -> None:
        for src in self._sources.values():
            for param in src.levels:
                apply_to_parameter(param, src.env, hardware_range(param))
        apply_tap_limits(self._taps, self.config.weights.tap_limits, self.edges.shape[0])

    def _resync(self) -> None:
        """Read back every level, output, relay the system drives (qcodes caches = truth)."""
        t0 = time.perf_counter()
        try:
            for src in self._sources.values():
                src.last = [float(param.get()) for param in src.levels]
                for param in src.outputs or []:
                    param.get()
            for sw in self._switches.values():
                for param in sw.states:
                    param.get()
        finally:
            self.timers.instrument += time.perf_counter() - t0
            self._applied = "?"  # whatever the read showed, release every nudge next phase

    def connect(self) -> None:
        """Load the instruments, check identities, install the envelope, read the state.
        Writes nothing to any instrument."""
        if self._connected:
            return
        try:
            self._start_lab()
            self._load_instruments()
            self._transaction("checking identities", self._check_identities)
            self._bind()
            self._install_envelope()
            self._transaction("reading the present state", self._resync)
        except BaseException:
            self._disconnect()
            raise
        self._connected = True

    def visa_seconds(self) -> float:
        """Seconds spent in VISA reads and writes so far, over every instrument."""
        live = sum(getattr(i, "io_seconds", 0.0) for i in self._instruments.values())
        return self.timers.visa_closed + live

    def _disconnect(self) -> None:
        errors = []
        for name, inst in list(self._instruments.items()):
            self.timers.visa_closed += getattr(inst, "io_seconds", 0.0)
            try:
                inst.close()
            except Exception as exc:  # noqa: BLE001 - close them all
                errors.append(f"{name}: {exc}")
        self._instruments.clear()
        self._roots.clear()
        self._sources.clear()
        self._switches.clear()
        self._writers = []
        self._trips = {}
        self._scan_parts = None
        self._taps_exchange = None
        self._station = None
        self._connected = False
        self._opened = False
        if self.lab is not None:
            self.lab.stop()
            self.lab = None
        if errors:
            self.events.append("closing: " + "; ".join(errors))

    # -- retries -----------------------------------------------------------------------------
    def _forget_levels(self) -> None:
        """Mark every driven level unknown (NaN: differs from any level to write)."""
        for src in self._sources.values():
            src.last = [math.nan] * len(src.last)
        self._applied = "?"

    def _reconnect_all(self) -> None:
        self.timers.reconnects += 1
        for inst in self._instruments.values():
            inst.reconnect()
        self._resync()

    def _resync_quietly(self) -> None:
        """Re-read the driven levels after a failed operation (a batch may have been dropped),
        on the same session; a failure here is left to the next attempt."""
        try:
            self._resync()
        except InstrumentError as exc:
            self.events.append(f"resync failed: {exc}")

    def _transaction(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        attempts: int | None = None,
        failed: InstrumentError | None = None,
    ) -> T:
        """``fn(*args)``, retried as the module docstring says (``attempts``: instead of
        ``retry.attempts``; ``failed``: the first attempt already made, failing with it)."""
        r = self.config.retry
        n_attempts = attempts or r.attempts
        reconnects = 0
        data_errors = 0
        last: BaseException | None = None
        for attempt in range(n_attempts):
            try:
                if failed is not None:
                    exc0, failed = failed, None
                    raise exc0
                return fn(*args)
            except _RETRIED as exc:
                last = exc
                # what the failed attempt wrote may or may not have reached the instruments
                # (a compound message is confirmed only by the query sent with it): the levels
                # are unknown until the resync below reads them back, and if it fails, the
                # next attempt writes every level again
                self._forget_levels()
                link = isinstance(exc, InstrumentIOError)
                data_errors = 0 if link else data_errors + 1
                self.events.append(f"{what}: attempt {attempt + 1} failed: {exc}")
                if attempt == n_attempts - 1:
                    break
                self.timers.retries += 1
                if r.backoff:
                    time.sleep(r.backoff)
                if link or data_errors >= 2:
                    if reconnects >= r.reconnects:
                        break
                    reconnects += 1
                    try:
                        self._reconnect_all()
                    except InstrumentError as exc2:
                        last = exc2
                        self.events.append(f"{what}: reconnect failed: {exc2}")
                else:
                    self._resync_quietly()
        raise InstrumentFault(
            f"{what}: gave up after {n_attempts} attempt(s) and {reconnects} reconnect(s); "
            f"last error: {last}"
        ) from last

    # -- low-level writes (every value already checked against the envelope) -----------------
    def _root_of(self, param: Any) -> Any:
        """The instrument a parameter belongs to (cached: qcodes walks the parent chain)."""
        key = id(param)
        root = self._roots.get(key)
        if root is None:
            root = self._roots[key] = _root(param)
        return root

    @staticmethod
    def _holds(param: Any, value: Any) -> bool:
        """Whether ``param``'s cache is valid and holds ``value`` (after a lost exchange the
        driver invalidates every cache: a set queued with it never arrived)."""
        if not param.cache.valid:
            return False
        cached = param.cache.get(get_if_invalid=False)
        if cached is None:
            return False
        if isinstance(value, np.ndarray) or isinstance(cached, np.ndarray):
            return bool(np.array_equal(cached, value))
        return bool(cached == value)

    def _set(self, param: Any, value: Any) -> None:
        """``param.set(value)`` unless its cache holds ``value`` (:meth:`_holds`)."""
        if self._holds(param, value):
            return
        t0 = time.perf_counter()
        try:
            param.set(value)
        finally:
            self.timers.instrument += time.perf_counter() - t0
        root = self._root_of(param)
        self._dirty_roots[id(root)] = root

    def _exchange_batch(self) -> ExitStack:
        """Every instrument's ``batch()`` block (drivers that offer one, like
        :meth:`~physlearn.drivers.instruments.LabVisaInstrument.batch`), entered: around a
        measurement batch, whose exchanges it makes cheaper. The caches it holds back are
        updated when it exits, before anything else (a resync, the safe state) reads them."""
        stack = ExitStack()
        try:
            for inst in self._instruments.values():
                if callable(getattr(type(inst), "batch", None)):  # a method, not a parameter
                    stack.enter_context(inst.batch())
        except BaseException:
            stack.close()
            raise
        return stack

    def _batch(self, roots: list[Any]) -> AbstractContextManager[Any]:
        """Deferred writes (compound messages) on the given instruments that support them."""
        if len(roots) == 1 and hasattr(roots[0], "deferred_writes"):
            cm: AbstractContextManager[Any] = roots[0].deferred_writes()
            return cm
        stack = ExitStack()
        for root in roots:
            deferred = getattr(root, "deferred_writes", None)
            if deferred is not None:
                stack.enter_context(deferred())
        return stack

    def _set_levels(self, phase: _PhaseLevels, src: _Source, new: list[float]) -> None:
        """Write the levels (floats, one per channel) that differ from the last written ones
        (values already checked against the envelope; the instrument's validators check them
        again). Through a bulk writer, they join ``phase`` (written by :meth:`_flush_levels`)
        after what it holds of the same writer; what it holds of another writer, or of this
        role already, is written first."""
        last = src.last
        idx = [k for k, v in enumerate(new) if v != last[k]]  # NaN (unknown) differs always
        if not idx:
            return
        writer = src.bulk
        if writer is None:
            self._flush_levels(phase)
            for k in idx:
                last[k] = math.nan  # unknown until the write is through
                self._set(src.levels[k], new[k])
                last[k] = new[k]
            return
        if phase.writer is not writer or id(src) in phase.ids:
            self._flush_levels(phase)
            phase.writer, phase.root = writer, src.roots[0]
        values = [new[k] for k in idx]
        phase.values += values
        offset = src.offset
        phase.index += [offset + k for k in idx] if offset else idx
        phase.roles.append((src, idx, values))
        phase.ids.append(id(src))

    def _flush_levels(self, phase: _PhaseLevels) -> None:
        """Hand the levels ``phase`` holds to their writer, in one call (it checks every one of
        them before queueing the first), and note them as written."""
        writer = phase.writer
        if writer is None:
            return
        values, index, roles, root = phase.values, phase.index, phase.roles, phase.root
        phase.writer, phase.root = None, None
        phase.values, phase.index, phase.roles, phase.ids = [], [], [], []
        t0 = time.perf_counter()
        try:
            writer.write(values, index)
        except BaseException:
            for src, idx, _ in roles:
                for k in idx:
                    src.last[k] = math.nan  # unknown: the write may or may not have gone through
            raise
        finally:
            self.timers.instrument += time.perf_counter() - t0
        for src, idx, new in roles:
            last = src.last
            for k, v in zip(idx, new, strict=True):
                last[k] = v
        self._dirty_roots[id(root)] = root

    def _sync(self) -> float | None:
        """Wait until every written instrument has executed its commands; check trips. Returns
        when the last confirmation arrived (``time.perf_counter()``: the reply's arrival as the
        instrument's driver notes it, ``reply_time``, else the end of the exchange), None if
        nothing was written (no exchange). The exchanges count as instrument time up to then;
        what follows (reading the confirmation) is already part of the settling wait."""
        dirty = self._dirty_roots
        if not dirty:
            return None
        trips = self._trips
        t0 = time.perf_counter()
        confirmed = t0
        try:
            for key, root in dirty.items():
                trip = trips.get(key)
                if trip is not None:
                    mask = trip()
                    if mask:
                        raise ComplianceTrip(
                            f"{root.name}: channels tripped by their compliance (status "
                            f"{mask}: bit k = channel k+1); the run stops in the safe state",
                            root.name,
                        )
                else:
                    reply = root.ask("*OPC?").strip()
                    if reply != "1":
                        raise InstrumentReplyError(
                            f"{root.name} replied {reply!r} to '*OPC?'; expected 1", root.name
                        )
                arrived = getattr(root, "reply_time", None)
                now = time.perf_counter()
                # a driver's reply time, if it is this exchange's (else: now)
                confirmed = arrived if type(arrived) is float and t0 <= arrived <= now else now
        except BaseException:
            self.timers.instrument += time.perf_counter() - t0
            raise
        self.timers.instrument += confirmed - t0
        dirty.clear()
        return confirmed

    # -- open / close ------------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        try:
            self.connect()
            self._transaction("opening the bench", self._configure)
            self._opened = True
            if self.config.weights.conductance.init == "random":
                b = self.config.weights.conductance
                lo, hi = b.init_range()
                g0 = np.random.default_rng(self.seed).uniform(lo, hi, self.edges.shape[0])
                self.set_parameters({GROUP: g0})
            else:
                self._held = self.get_parameters()[GROUP]
        except BaseException:
            self.close()
            raise

    def _configure(self) -> None:
        """Bring every role to its free, safe starting state (see ``open``)."""
        self._resync()
        for sw in self._switches.values():
            for param in sw.states:
                self._set(param, False)
        for src in self._sources.values():
            lim = src.env.limits
            for k, level in enumerate(src.levels):
                out = src.outputs[k] if src.outputs else None
                on = bool(out.cache.get(get_if_invalid=False)) if out is not None else True
                value = level.cache.get(get_if_invalid=False)
                inside = value is not None and lim.min <= float(value) <= lim.max
                if not inside:
                    if on:
                        raise EnvelopeViolation(
                            f"{src.name}: {level.full_name} outputs {value} {src.env.unit}, "
                            f"outside the envelope [{lim.min:g}, {lim.max:g}]; bring it inside "
                            "by hand (or switch its output off) before running"
                        )
                    # disconnected: the level may jump straight to the safe value
                    step = level.step
                    level.step = None
                    try:
                        self._set(level, lim.safe)
                    finally:
                        level.step = step
                needs = {
                    name: val
                    for name, val in src.cfg.settings.items()
                    if src.settings[k][name].get() != val
                }
                if needs and on and out is not None:
                    self._set(level, lim.safe)
                    self._set(out, False)
                    on = False
                for name, val in needs.items():
                    self._set(src.settings[k][name], val)
                if src.compliance is not None and src.cfg.compliance is not None:
                    want = src.cfg.compliance.value
                    self._set(src.compliance[k], want)
                    got = src.compliance[k].get()
                    if not math.isclose(float(got), want, rel_tol=1e-9):
                        raise InstrumentReplyError(
                            f"{src.compliance[k].full_name}: wrote {want:g}, reads {got}",
                            _root(level).name,
                        )
                self._set(level, lim.safe)
        for name, src in self._sources.items():
            if src.outputs is None:
                continue
            clamp_by_output = name == "nudge.clamp" and "clamp" not in self._switches
            for out in src.outputs:
                self._set(out, not clamp_by_output)
        if self._scan_list is not None:
            chans = self.config.probes.channel_list()
            self._set(self._scan_list, chans)
            got = list(self._scan_list.get())
            if got != chans:
                raise InstrumentReplyError(
                    f"{self._scan_list.full_name}: wrote {chans}, reads {got}",
                    _root(self._scan_list).name,
                )
        self._sync()
        self._refresh_last()
        self._applied = None

    def _refresh_last(self) -> None:
        """Re-derive the fast-skip memory of written levels from the qcodes caches."""
        for src in self._sources.values():
            got = [p.cache.get(get_if_invalid=False) for p in src.levels]
            src.last = [math.nan if v is None else float(v) for v in got]

    def safe_state(self) -> None:
        """Open every relay, ramp every source to its safe level, switch its output off, and
        verify by read-back. Retries with reconnects; raises :class:`SafeStateError` naming every
        channel that could not be confirmed safe. Idempotent; a no-op when not connected."""
        if not self._connected:
            return
        failures: list[str] = []
        attempts = self.config.retry.safe_state_attempts

        def guarded(what: str, fn: Callable[[], None]) -> None:
            try:
                self._transaction(what, fn, attempts=attempts)
            except (InstrumentError, ValueError) as exc:
                failures.append(f"{what}: {exc}")

        with shield_interrupts("ramping the sources to their safe state"):
            for sw in self._switches.values():
                for param in sw.states:

                    def open_relay(p: Any = param) -> None:
                        p.get()
                        self._set(p, False)
                        if p.get() is not False:
                            raise InstrumentReplyError(f"{p.full_name} did not open")

                    guarded(f"opening {param.full_name}", open_relay)
            order = [n for n in self._sources if n != "inputs"] + ["inputs"]
            for name in order:
                src = self._sources[name]
                safe = src.env.limits.safe
                for k, level in enumerate(src.levels):
                    out = src.outputs[k] if src.outputs else None

                    def make_safe(lv: Any = level, o: Any = out, safe: float = safe) -> None:
                        lv.get()  # the truth, so the ramp starts where the level really is
                        self._set(lv, safe)
                        if o is not None:
                            self._set(o, False)
                        got = lv.get()
                        if float(got) != safe:
                            raise InstrumentReplyError(f"{lv.full_name} reads {got}, not {safe}")
                        if o is not None and o.get() is not False:
                            raise InstrumentReplyError(f"{o.full_name} is still on")

                    guarded(f"ramping {level.full_name} to {safe:g} {src.env.unit}", make_safe)
        self._opened = False
        self._refresh_last()
        self._applied = "?"
        if failures:
            raise SafeStateError(
                "NOT CONFIRMED SAFE -- switch these off by hand: " + " | ".join(failures)
            )

    def close(self) -> None:
        try:
            self.safe_state()
        finally:
            self._disconnect()

    # -- parameters --------------------------------------------------------------------------
    def set_parameters(self, params: Params) -> Params:
        """Write the conductances (S) as taps; returns the conductances the bank holds.

        Refuses (``ValueError``) unknown or missing groups, a wrong shape, non-finite values and
        values outside the group's bounds; the taps are checked against ``tap_limits``
        (``EnvelopeViolation``) before anything is written, then written, read back and compared.
        """
        g = check_parameters((self._group,), params)[GROUP]
        taps = self.tapmap.nearest(g)
        check_taps(taps, self.config.weights.tap_limits, self._weight_names)
        self._require_open()

        def write() -> None:
            with self._batch([_root(self._taps)]):
                self._write_taps(taps)

        self._transaction("writing the weights", write)
        self._held = self.tapmap.conductance(taps)
        return {GROUP: self._held.copy()}

    def _write_taps(self, taps: np.ndarray) -> None:
        """Write the taps, read them back and compare (InstrumentReplyError if they differ)."""
        if not self.config.weights.verify:
            self._set(self._taps, taps)
            return
        fast = self._taps_exchange
        if fast is None:
            self._set(self._taps, taps)  # timed as instrument time by _set
            read: Callable[[], Any] = self._taps.get
        else:  # the write (unless the bank holds these taps) joins the read-back's message
            read = partial(fast, None if self._holds(self._taps, taps) else taps)
        t0 = time.perf_counter()
        try:
            back = np.asarray(read())
        finally:
            self.timers.instrument += time.perf_counter() - t0
        if back.shape != taps.shape or not np.array_equal(back, taps):
            k = int(np.flatnonzero(back != taps)[0]) if back.shape == taps.shape else 0
            self._taps.cache.invalidate()
            raise InstrumentReplyError(
                f"{_root(self._taps).name}: wrote tap {int(taps[k])} on device {k + 1}, "
                f"reads back {back[k] if back.shape == taps.shape else back.shape}",
                _root(self._taps).name,
            )
        self._dirty_roots.pop(id(_root(self._taps)), None)

    def get_parameters(self) -> Params:
        """Read the taps back from the bank and return their conductances (S)."""
        self._require_connected()

        def read() -> np.ndarray:
            t0 = time.perf_counter()
            try:
                return np.asarray(self._taps.get(), dtype=np.int64)
            finally:
                self.timers.instrument += time.perf_counter() - t0

        taps = self._transaction("reading the weights", read)
        return {GROUP: np.asarray(self.tapmap.conductance(taps))}

    def _require_connected(self) -> None:
        if not self._connected:
            raise RuntimeError("the station system is not connected (use it as a context manager)")

    def _require_open(self) -> None:
        if not self._opened:
            raise RuntimeError("the station system is not open (use it as a context manager)")

    # -- physics -----------------------------------------------------------------------------
    def _nudge_levels(
        self, nudge: Nudge | None, batch: int
    ) -> tuple[str | None, FloatArray | None]:
        if nudge is None:
            return None, None
        kind = nudge.kind
        if kind not in self.supported_nudges:
            raise ValueError(
                f"this bench cannot realise a {kind!r} nudge (configured: "
                f"{sorted(self.supported_nudges)})"
            )
        v = nudge.checked_values(batch, self.outputs.size)
        beta = complex(nudge.beta)
        if kind in ("error", "target") and beta.imag != 0:
            raise ValueError("an instrument cannot realise a complex nudge (holomorphic EP)")
        if kind == "error":
            return kind, np.asarray(-beta.real * v, dtype=np.float64)
        if kind == "target":
            assert self.config.nudge.target is not None
            hw = self.config.nudge.target.conductance
            if not math.isclose(beta.real, hw, rel_tol=1e-9):
                raise ValueError(
                    f"target nudge: the bench's nudge conductance is {hw:g} S; beta = "
                    f"{beta.real:g} cannot be realised (a negative or different conductance "
                    "would need other hardware; use one-sided EP with beta = the hardware value, "
                    "or an error nudge)"
                )
        return kind, np.asarray(v, dtype=np.float64)

    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Measure ``inputs`` ``(batch, n_in)`` (V) one pattern at a time.

        Every value (inputs, nudge levels) is checked against the envelope before the first
        write (``EnvelopeViolation``). ``warm_start`` and ``rng`` are unused (the bench relaxes
        by itself; its noise is its own). Diagnostics: ``iterations`` = scans read,
        ``converged`` = the scans agreed within ``tolerance`` (always true without one),
        ``settle_time`` = seconds waited, ``residual`` = NaN (KCL cannot be measured directly),
        ``energy`` = E from the measured voltages and the held conductances (W); observable
        ``node_voltages`` ``(batch, n_nodes)`` (V): the scan each pattern's values come from
        (the last one read).
        """
        return self._sweep(inputs, [nudge])[0]

    def equilibrate_many(
        self,
        inputs: FloatArray,
        nudges: Sequence[Nudge | None],
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> list[Equilibrium]:
        """The phases ``nudges`` of the batch ``inputs`` in one sweep when every nudge is of one
        kind (EP's nudged phases): the batch's patterns measured phase after phase as one batch
        of ``len(nudges) * batch`` patterns -- the same transactions in the same order as one
        :meth:`equilibrate` call per nudge, every value of every phase checked against the
        envelope before the first write, and one set-up instead of one per phase (envelope
        refresh, the first pattern's preparation, the batch's end), the next phase's first
        pattern prepared while the last pattern of the phase before settles. Nudges of
        different kinds: one call each."""
        kinds = {None if n is None else n.kind for n in nudges}
        if len(nudges) < 2 or len(kinds) != 1:
            return super().equilibrate_many(inputs, nudges, warm_start, rng)
        return self._sweep(inputs, nudges)

    def _sweep(self, inputs: FloatArray, nudges: Sequence[Nudge | None]) -> list[Equilibrium]:
        """:meth:`equilibrate` of ``inputs`` under each of ``nudges`` (one kind), back to back
        as one batch; one result per nudge."""
        self._require_open()
        x = np.asarray(inputs)
        n_in = self._in_port.size
        if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] < 1:
            raise ValueError(f"inputs must have shape (batch, {n_in}), got {x.shape}")
        if x.dtype.kind == "c":
            raise ValueError("inputs must be real (volts)")
        x = self.envelopes["inputs"].check(x)
        kind: str | None = None
        nudged: list[FloatArray | None] = []
        for nudge in nudges:
            kind, levels = self._nudge_levels(nudge, x.shape[0])
            if kind is not None and levels is not None:
                self.envelopes[f"nudge.{kind}"].check(levels)
            nudged.append(levels)
        # the bulk writers read the levels' validators, steps and delays once per batch
        t0 = time.perf_counter()
        try:
            for writer in self._writers:
                writer.refresh()
        finally:
            self.timers.instrument += time.perf_counter() - t0
        size = x.shape[0]
        batch = size * len(nudges)
        scans: list[list[float]] = [[]] * batch
        reads = [0] * batch
        converged = [True] * batch
        waits = [0.0] * batch
        # Python floats per pattern and per scan: the drivers format and parse them one by one,
        # and an array of a few dozen values costs more than it saves
        rows = x.tolist() * len(nudges)
        lv_rows: list[Any] = []
        for levels in nudged:
            lv_rows += [None] * size if levels is None else levels.tolist()
        transaction = self._transaction
        measure = self._measure_one
        eq = self.config.equilibrium
        # while a phase settles, the next phase's levels are prepared (_prepare_phase) and the
        # scan of the phase before is checked (_window)
        ahead = self._preparing(kind) is not None and eq.settle_time > 0
        defer = self._scan_parts is not None and eq.settle_time > 0 and eq.tolerance is None
        # the first phase's writes too, if no other nudge is to be released (they cost less
        # prepared and sent than written: the writer's checks and ramps run once either way)
        prepared: _PreparedPhase | None = None
        if ahead and self._applied in (None, kind):
            prepared = self._prepare_phase(kind, rows[0], lv_rows[0])
        pending: _PendingScan | None = None  # the scan of phase b - 1, read but not checked
        # while phase b settles, scan b - 1 goes into the result (in the last phase, the rows
        # before it are computed)
        early = self._rows(batch) if batch > 1 and eq.settle_time > 0 else None
        with self._exchange_batch():
            b = 0
            while b < batch:
                nxt = (rows[b + 1], lv_rows[b + 1]) if ahead and b + 1 < batch else None
                fin = None
                if early is not None and b > 0:
                    fin = partial(self._collect, early, scans, b - 1, b == batch - 1)
                args = (rows[b], kind, lv_rows[b], prepared, nxt, pending, defer, fin)
                try:  # a transaction (retries) once the first attempt failed
                    got, reads[b], converged[b], waits[b], prepared = measure(*args)
                except _RETRIED as exc:
                    got, reads[b], converged[b], waits[b], prepared = transaction(
                        "measuring a pattern", measure, *args, failed=exc
                    )
                if pending is not None:  # checked while phase b settled, as a rule
                    checked, pending = self._checked(pending, False), None
                    if not isinstance(checked, list):  # the check failed: measure b - 1 again
                        b -= 1
                        prepared = None
                        scans[b], reads[b], converged[b], waits[b] = self._remeasure(
                            rows[b], kind, lv_rows[b], checked
                        )
                        b += 1
                        continue  # and b: its levels were replaced meanwhile
                    scans[b - 1] = checked
                if isinstance(got, _PendingScan):
                    pending = got
                else:
                    scans[b] = got
                b += 1
            if pending is not None:  # the last scan, checked now
                checked = self._checked(pending, True)
                if isinstance(checked, list):
                    scans[-1] = checked
                else:
                    scans[-1], reads[-1], converged[-1], waits[-1] = self._remeasure(
                        rows[-1], kind, lv_rows[-1], checked
                    )
        out = self._rows(batch) if early is None else early
        self._fill_rows(out, scans)
        results = []
        for a in range(0, batch, size):
            b = a + size
            results.append(
                Equilibrium(
                    outputs=out.outputs[a:b],
                    conjugates={GROUP: out.conj[a:b]},
                    state=None,
                    residual=np.full(size, np.nan),
                    iterations=np.array(reads[a:b], dtype=np.int64),
                    shots=0,
                    settle_time=sum(waits[a:b]),
                    energy=out.energy[a:b],
                    observables={"node_voltages": out.volts[a:b]},
                    converged=np.array(converged[a:b], dtype=bool),
                )
            )
        return results

    def _release_nudge(self, phase: _PhaseLevels, keep: str | None) -> None:
        """Bring every nudge role except ``keep`` to its free-phase state (levels into
        ``phase``)."""
        if self._applied is None or self._applied == keep:
            return  # nothing else applied (set before a nudge is applied, cleared after this)
        for kind in self.supported_nudges:
            if kind == keep:
                continue
            if kind == "error":
                src = self._sources["nudge.error"]
                self._set_levels(phase, src, [0.0] * len(src.levels))
            elif kind in self._switches:
                self._flush_levels(phase)
                for p in self._switches[kind].states:
                    self._set(p, False)
            elif kind == "clamp":
                self._flush_levels(phase)
                src = self._sources["nudge.clamp"]
                for p in src.outputs or []:
                    self._set(p, False)

    def _preparing(self, kind: str | None) -> _Preparing | None:
        """The bulk writer that can prepare the levels of a batch's phases with nudge ``kind``
        ahead (:meth:`_prepare_phase`): when every level they write (inputs; an error nudge's
        currents) goes to that one writer, and nothing else (no relay, no output); else None."""
        if kind not in (None, "error"):
            return None
        writer = self._sources["inputs"].bulk
        if writer is None or not callable(getattr(writer, "prepare", None)):
            return None
        if kind == "error" and self._sources["nudge.error"].bulk is not writer:
            return None
        return writer

    def _prepare_phase(
        self, kind: str | None, u: list[float], levels: list[float] | None
    ) -> _PreparedPhase | None:
        """The level writes of the next phase of the batch (inputs ``u``, nudge ``levels``),
        prepared while this phase settles -- the levels that differ from this phase's, every
        value and ramp value checked, the commands formatted -- as :meth:`_measure_one` would
        write them after this phase (the nudge ``kind`` stays applied: nothing to release).
        None if it cannot be (a value refused, a level to ramp from unknown without a query):
        the next phase then writes its levels itself, and meets and reports the problem in its
        own transaction. Never raises (anything but a KeyboardInterrupt and the like)."""
        writer = self._preparing(kind)
        if writer is None:
            return None
        given = [(self._sources["inputs"], u)]
        if kind == "error" and levels is not None:
            given.append((self._sources["nudge.error"], levels))
        values: list[float] = []
        index: list[int] = []
        roles: list[tuple[_Source, list[int], list[float]]] = []
        lasts: list[tuple[_Source, list[float]]] = []
        for src, new in given:
            last = src.last
            lasts.append((src, list(last)))
            idx = [k for k, v in enumerate(new) if v != last[k]]  # NaN (unknown) differs
            if idx:
                changed = [new[k] for k in idx]
                values += changed
                offset = src.offset
                index += [offset + k for k in idx] if offset else idx
                roles.append((src, idx, changed))
        try:
            prepared = writer.prepare(values, index) if values else None
        except Exception:  # noqa: BLE001 - the phase meets it again, in its own transaction
            return None
        return _PreparedPhase(writer, given[0][0].roots[0], prepared, roles, lasts)

    def _send_prepared(self, prepared: _PreparedPhase, kind: str | None) -> bool:
        """Queue a phase's prepared level writes (:meth:`_prepare_phase`) if they still stand:
        no other nudge to release, the skip memory as it was prepared against, and the writer
        accepting them (nothing it rests on changed: see ``LevelWriter.send``). False, with
        nothing queued, otherwise: the phase then writes its levels itself."""
        if self._applied not in (None, kind):
            return False
        for src, last in prepared.lasts:
            if src.last != last:
                return False
        if prepared.levels is not None:
            t0 = time.perf_counter()
            try:
                if not prepared.writer.send(prepared.levels):
                    return False
            except BaseException:
                for src, idx, _ in prepared.roles:
                    for k in idx:
                        src.last[k] = math.nan  # unknown: may or may not have gone through
                raise
            finally:
                self.timers.instrument += time.perf_counter() - t0
            root = prepared.root
            self._dirty_roots[id(root)] = root
        self._applied = kind
        for src, idx, new in prepared.roles:
            last = src.last
            if len(idx) == len(last):  # every channel (idx ascending, each once)
                last[:] = new
                continue
            for k, v in zip(idx, new, strict=True):
                last[k] = v
        return True

    def _measure_one(
        self,
        u: list[float],
        kind: str | None,
        levels: list[float] | None,
        prepared: _PreparedPhase | None = None,
        ahead: tuple[list[float], list[float] | None] | None = None,
        pending: _PendingScan | None = None,
        defer: bool = False,
        finish: Callable[[_PendingScan | None], None] | None = None,
    ) -> tuple[list[float] | _PendingScan, int, bool, float, _PreparedPhase | None]:
        """One phase of one pattern (a transaction; see the module docstring): ``u`` the input
        levels, ``levels`` the nudge's (floats, already checked against the envelope); the
        scan, the number of scans, whether they agreed, the seconds waited, and the next
        phase's prepared levels.

        ``prepared``: this phase's level writes, prepared while the phase before settled; they
        are sent if they still stand (:meth:`_send_prepared`; not on a retry after a failed
        attempt), else the phase writes its levels itself. ``ahead``: the next phase's inputs
        and nudge levels, whose writes are prepared while this phase settles. ``pending``: the
        scan of the phase before, checked while this one settles (:meth:`_window`: its result
        stays in it). ``defer``: this phase's own scan is returned unchecked, as a
        :class:`_PendingScan` (the caller has it checked, by the next phase or itself).
        ``finish``: work on the batch's result done while the phase settles, after ``pending``
        is checked (:meth:`_collect`; called with ``pending``)."""
        roots = self._batch_roots
        batch = roots[0].deferred_writes() if self._single_deferred else self._batch(roots)
        with batch:
            if prepared is None or not self._send_prepared(prepared, kind):
                phase = _PhaseLevels()
                self._release_nudge(phase, kind)
                self._applied = kind
                self._set_levels(phase, self._sources["inputs"], u)
                if kind is not None and levels is not None:
                    src = self._sources[f"nudge.{kind}"]
                    self._set_levels(phase, src, levels)
                    if kind in self._switches:
                        self._flush_levels(phase)
                        for p in self._switches[kind].states:
                            self._set(p, True)
                    elif kind == "clamp":
                        self._flush_levels(phase)
                        for p in src.outputs or []:
                            self._set(p, True)
                self._flush_levels(phase)
            synced = self._sync()
        self.timers.phases += 1
        if ahead is None and pending is None and finish is None:
            return self._read(synced, None, defer)
        return self._read(synced, partial(self._window, kind, ahead, pending, finish), defer)

    def _checked(self, pending: _PendingScan, timed: bool) -> list[float] | InstrumentError:
        """The result of checking a scan read unchecked: found by a settling wait
        (:meth:`_window`), else found now (``timed``: as instrument time)."""
        if pending.result is None:
            try:
                pending.result = self._checked_scan(pending.reply, timed)
            except InstrumentError as exc:
                pending.result = exc
        return pending.result

    def _remeasure(
        self, u: list[float], kind: str | None, levels: list[float] | None, failed: InstrumentError
    ) -> tuple[list[float], int, bool, float]:
        """A phase measured again because the check of its scan failed (``failed``: the first
        attempt of its transaction); this time the scan is checked at once."""
        got, n, ok, waited, _ = self._transaction(
            "measuring a pattern", self._measure_one, u, kind, levels, failed=failed
        )
        assert not isinstance(got, _PendingScan)  # not deferred
        return got, n, ok, waited

    def _window(
        self,
        kind: str | None,
        ahead: tuple[list[float], list[float] | None] | None,
        pending: _PendingScan | None,
        finish: Callable[[_PendingScan | None], None] | None = None,
    ) -> _PreparedPhase | None:
        """The work done while a phase settles: check the scan of the phase before
        (``pending``, once: its result -- the readings, or the error -- stays in it, for the
        caller and for a retry of this phase), ``finish(pending)`` (the batch's result:
        :meth:`_collect`), and prepare the next phase's levels. Raises nothing an instrument
        error would cause."""
        if pending is not None:
            self._checked(pending, False)
        if finish is not None:
            finish(pending)
        return None if ahead is None else self._prepare_phase(kind, *ahead)

    def _collect(
        self,
        out: _Rows,
        scans: list[list[float]],
        k: int,
        last: bool,
        pending: _PendingScan | None,
    ) -> None:
        """While phase k + 1 of a batch settles: row k of the result ``out`` -- scan k, which is
        ``pending``'s if checked fine (if not, the phase is measured again and the end of the
        batch puts its new scan), else already in ``scans`` (not deferred, or measured again).
        In the batch's last phase (``last``) also the caches the instruments hold back for the
        batch are updated (their final levels are written) and the rows before it computed,
        leaving the end of the batch only the last phase's. Never raises (the end of the batch
        does what is left)."""
        if pending is None:
            scan = scans[k]
        elif isinstance(pending.result, list):
            scan = pending.result
        else:
            return
        try:
            out.put(k, scan)
            if last:
                for inst in self._instruments.values():
                    if callable(getattr(type(inst), "flush_held", None)):
                        inst.flush_held()
                self._derive_rows(out, k + 1)
        except Exception:  # noqa: BLE001 - left to the end of the batch
            pass

    def _rows(self, batch: int) -> _Rows:
        """Empty result arrays for a batch of ``batch`` phases."""
        return _Rows(batch, self.n_nodes, self._out_idx.size, self._ei.size)

    def _fill_rows(self, out: _Rows, scans: list[list[float]]) -> None:
        """Complete a batch's result ``out`` at the end of the batch: every row whose readings
        are not its scan's in ``scans`` (not yet put, or measured again since) put, and every
        row not computed from the readings it holds computed."""
        held = out.scans
        for k, scan in enumerate(scans):
            if held[k] is not scan:
                out.put(k, scan)
        self._derive_rows(out, len(scans))

    def _derive_rows(self, out: _Rows, stop: int) -> None:
        """The rows of a batch's result not yet computed (``out.derived``) up to ``stop``, from
        the node voltages (V) they hold: outputs, edge conjugates 0.5 (V_i - V_j)^2 (V^2) and
        energy E = sum_e g_e conj_e (W, held conductances), each row computed alone (a row's
        numbers do not depend on the rows computed with it)."""
        start = out.derived
        if stop <= start:
            return
        block = out.volts[start:stop]
        # take: C-contiguous results (block[:, idx] would be a transposed buffer); every
        # operation writes into the result or reuses a buffer (a call's cost is mostly its own)
        block.take(self._out_idx, axis=1, out=out.outputs[start:stop])
        ends = block.take(self._eij, axis=1)  # V_i of every edge, then V_j
        n_e = self._ei.size
        c = out.conj[start:stop]
        np.subtract(ends[:, :n_e], ends[:, n_e:], out=c)
        np.multiply(c, c, out=c)
        c *= 0.5
        # per row, whatever the rows (a row sum, no BLAS blocking)
        np.multiply(c, self._held).sum(axis=1, out=out.energy[start:stop])
        out.derived = stop

    def _scan(self) -> list[float]:
        """One scan of every node (V, Python floats), checked (:meth:`_check_scan`)."""
        if self._scan_parts is not None:
            return self._checked_scan(self._scan_reply(), True)
        t0 = time.perf_counter()
        try:
            arr = np.asarray(self._readings.get(), dtype=np.float64)
            v = arr.tolist() if arr.ndim == 1 else [arr.tolist()]  # 2-D: refused below
            count = None if self._counter is None else int(self._counter.get())
        finally:
            self.timers.instrument += time.perf_counter() - t0
        self.timers.scans += 1
        return self._check_scan(v, count)

    def _scan_reply(self) -> str:
        """The exchange of one scan, through the meter's driver (``query_scan``): its reply."""
        assert self._scan_parts is not None
        t0 = time.perf_counter()
        try:
            return self._scan_parts[0]()
        finally:
            self.timers.instrument += time.perf_counter() - t0
            self.timers.scans += 1

    def _checked_scan(self, reply: str, timed: bool) -> list[float]:
        """A scan's reply parsed by the meter's driver (``parse_scan``) and checked; ``timed``:
        its parsing counts as instrument time (not when it runs inside a settling wait)."""
        assert self._scan_parts is not None
        t0 = time.perf_counter()
        try:
            v, number = self._scan_parts[1](reply)
        finally:
            if timed:
                self.timers.instrument += time.perf_counter() - t0
        return self._check_scan(v, None if self._counter is None else number)

    def _check_scan(self, v: list[float], count: int | None) -> list[float]:
        """A scan's readings, checked: its length, the reading counter ``count`` (stale; None:
        no counter), overload (beyond ``probes.range``, NaN)."""
        if len(v) != self.n_nodes or (v and type(v[0]) is not float):
            name = self._root_of(self._readings).name
            size = len(v) if v and type(v[0]) is float else np.size(v)
            raise InstrumentReplyError(
                f"{name}: a scan returned {size} readings, expected {self.n_nodes}", name
            )
        if count is not None:
            if count <= self._last_counter:
                name = self._root_of(self._readings).name
                raise StaleReadingError(
                    f"{name}: stale scan (reading counter {count} did not advance past "
                    f"{self._last_counter})",
                    name,
                )
            self._last_counter = count
        rng = self.config.probes.range
        total = sum(v)  # NaN if a reading is NaN (or +inf and -inf: both overloads anyway)
        if not (total == total and -rng <= min(v) and max(v) <= rng):
            name = self._root_of(self._readings).name
            k = next(k for k, x in enumerate(v) if not abs(x) <= rng)
            raise InstrumentFault(
                f"{name}: overload on node {k} ({v[k]:g} V beyond {rng:g} V)", name
            )
        return v

    def _wait(
        self,
        seconds: float,
        since: float | None = None,
        idle: Callable[[], T] | None = None,
    ) -> tuple[float, T | None]:
        """Wait until ``seconds`` have passed since ``since`` (default: now; :func:`wait_at_least`)
        and return the time since then, with what ``idle`` returned: work done first, inside
        the wait (the network settles meanwhile). The time since ``since`` counts as settling,
        the work done in it included; the part of that work that runs past the deadline does
        not (it is the system's own time)."""
        t0 = time.perf_counter() if since is None else since
        out = None if idle is None else idle()
        late = time.perf_counter() - t0 - seconds
        dt = wait_at_least(seconds, t0)
        self.timers.settle += dt - late if late > 0 else dt
        return dt, out

    def _read(
        self, since: float | None, idle: Callable[[], _PreparedPhase | None] | None, defer: bool
    ) -> tuple[list[float] | _PendingScan, int, bool, float, _PreparedPhase | None]:
        """Settle (``settle_time`` from ``since``: the instruments' confirmation that the levels
        are applied; ``idle`` runs meanwhile), then scan (until stable, with ``tolerance``;
        ``defer``: one scan, returned unchecked)."""
        eq = self.config.equilibrium
        nxt = None
        waited = 0.0
        if eq.settle_time > 0:
            waited, nxt = self._wait(eq.settle_time, since, idle)
        if defer:
            return _PendingScan(self._scan_reply()), 1, True, waited, nxt
        v = self._scan()
        reads = 1
        if eq.tolerance is None:
            return v, reads, True, waited, nxt
        start = time.perf_counter()
        while reads < eq.max_reads and time.perf_counter() - start < eq.timeout:
            if eq.poll_interval > 0:
                waited += self._wait(eq.poll_interval)[0]
            v2 = self._scan()
            reads += 1
            if max([abs(a - b) for a, b in zip(v2, v, strict=True)]) <= eq.tolerance:
                return v2, reads, True, waited, nxt
            v = v2
        return v, reads, False, waited, nxt

    # -- description -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Identities, addresses and the settings of every parameter the system drives, plus
        the envelope. Connects (reads only) if not yet connected."""
        self.connect()
        instruments = {}
        for name, inst in self._instruments.items():
            instruments[name] = {
                "idn": self._identity.get(name, ""),
                "class": f"{type(inst).__module__}.{type(inst).__name__}",
                "address": getattr(inst, "address", None),
            }
        params = {}
        for src in self._sources.values():
            for group in (src.levels, src.outputs or [], src.compliance or []):
                for p in group:
                    params[p.full_name] = {
                        "value": p.cache.get(get_if_invalid=False),
                        "unit": p.unit,
                        "vals": repr(p.vals),
                        "step": p.step,
                        "inter_delay": p.inter_delay,
                    }
        return {
            "class": type(self).__name__,
            "station": self.config.station,
            "virtual_lab": None if self.lab is None else self.lab.addresses,
            "instruments": instruments,
            "parameters": params,
            "envelope": {
                name: {**env.limits.model_dump(), "unit": env.unit}
                for name, env in self.envelopes.items()
            },
            "tap_limits": list(self.config.weights.tap_limits),
            "tap_law": self.tapmap.source,
            "n_nodes": self.n_nodes,
            "n_edges": int(self.edges.shape[0]),
            "supported_nudges": sorted(self.supported_nudges),
        }

    def graph_layout(self) -> dict[str, Any]:
        g = self.graph
        return {
            "positions": np.asarray(g.positions).copy(),
            "edges": np.asarray(g.edges).copy(),
            "edge_group": GROUP,
            "node_roles": list(g.roles),
        }

    # -- calibration -------------------------------------------------------------------------
    def calibrate(self, points: int) -> dict[str, Any]:
        """Measure every potentiometer's conductance (S) at ``points`` taps spread over
        ``tap_limits``, with every source in its safe state and each device measured isolated
        (``weights.channels`` x ``weights.measure``); the taps are restored afterwards. Returns
        the calibration table (see :mod:`physlearn.drivers.station.tapmap`); connects and closes."""
        from physlearn.drivers.station.tapmap import CALIBRATION_FORMAT

        w = self.config.weights
        if w.channels is None:
            raise ValueError("weights.channels: name the devices to calibrate them")
        if points < 2:
            raise ValueError("calibration needs at least 2 taps per device")
        lo, hi = w.tap_limits
        taps = np.unique(np.round(np.linspace(lo, hi, points)).astype(np.int64))
        self.connect()
        try:
            self.safe_state()  # no voltage on the network while the devices are measured
            meas = [
                self._param(self._resolve(n), w.measure, "weights")
                for n in expand_names(w.channels)
            ]
            n_dev = len(meas)
            table = np.empty((n_dev, taps.size))

            def sweep() -> None:
                before = np.asarray(self._taps.get(), dtype=np.int64)
                for j, k in enumerate(taps):
                    self._write_taps(np.full(n_dev, k, dtype=np.int64))
                    for d, p in enumerate(meas):
                        table[d, j] = float(p.get())
                self._write_taps(before)

            self._transaction("calibrating the bank", sweep)
            bank = _root(self._taps).name
            return {
                "format": CALIBRATION_FORMAT,
                "instrument": self._identity.get(bank, ""),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "taps": taps.tolist(),
                "conductance": table.tolist(),
            }
        finally:
            self.close()

    # -- dry run -----------------------------------------------------------------------------
    def dry_run(self, experiment: ExperimentConfig | None = None) -> list[Check]:
        """Check the station, identities and envelope without applying anything (only
        queries are sent). Returns the report; the system is disconnected afterwards."""
        from physlearn.drivers.station.dryrun import station_checks

        try:
            return station_checks(self, experiment)
        finally:
            self._disconnect()
