"""A resistor network on the bench, trained through a qcodes station (``system: kind: station``).

Node voltages V (V) are measured (:mod:`~physlearn.drivers.station.probes`); edge e carries a
device of conductance g_e (S), the trainable group ``"conductance"``
(:mod:`~physlearn.drivers.station.weights`); E = 1/2 sum_e g_e (V_i - V_j)^2 (W) and its
conjugate dE/dg_e = 1/2 (V_i - V_j)^2 (V^2) come from the measured voltages, per pattern
(``docs/physics.md``, §Bench). With ``system.mirrors`` (a simulator config) they come from that
simulator's ``conjugates_from_voltages`` instead (e.g. a diode network's diode co-content).
Inputs are voltage sources on the input nodes; the nudges are what the hardware realises:
``error`` (current I_o = -beta eps_o injected into the outputs), ``clamp`` (outputs held by
voltage sources, coupled learning), ``target`` (relays connect each output through the
hardware's nudge conductance beta to a source at the target voltage).

Every input and nudge value of a batch is checked against the safety envelope before the first
write (:mod:`~physlearn.drivers.station.safety`); then each phase of each pattern is measured as
one transaction (:mod:`~physlearn.drivers.station.measurement`), retried on faults
(:mod:`~physlearn.drivers.station.transactions`). The instruments are reached only through
qcodes' public API (:mod:`~physlearn.drivers.station.binding`), so stock qcodes drivers work.

Lifecycle: ``connect()`` loads the instruments, checks identities, installs the envelope on the
qcodes parameters and reads the present state -- it writes nothing; ``open()`` configures the
sources, ramps them to their safe levels, switches outputs on and writes the initial weights;
``close()`` brings every source to its safe state and closes every instrument, on every exit
path. The operator's guide is ``lab_protocols.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.drivers.errors import EnvelopeViolation, InstrumentReplyError, SafeStateError
from physlearn.drivers.station.binding import (
    BoundSource,
    BoundSwitches,
    Instruments,
    bind_levels,
    bind_source,
    bind_switches,
    is_off,
)
from physlearn.drivers.station.measurement import UNKNOWN, Phases
from physlearn.drivers.station.nudges import nudge_levels
from physlearn.drivers.station.probes import NodeReader, node_reader
from physlearn.drivers.station.safety import RoleEnvelope, shield_interrupts
from physlearn.drivers.station.transactions import Timers, Transactions
from physlearn.drivers.station.weights import GROUP, PotBank, weight_bank
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
    from physlearn.dryrun import Check


class StationSystem(PhysicalSystem):
    """See the module docstring. ``seed`` draws the initial conductances (``init: random``)."""

    native_cost = "mse"
    energy_unit = "W"
    realises_parameters = True  # the bank's taps or the devices' read-back, logged per step
    residual_unit = "A"  # KCL is not measured: NaN

    def observable_meta(self, name: str) -> tuple[str, tuple[str, ...], str] | None:
        if name == "node_voltages":
            return "V", ("node",), "node voltages measured (the reading each phase gives)"
        return None

    def counters(self) -> dict[str, tuple[float, str, str]]:
        """The bench's bookkeeping since the system was built (this process), per step."""
        from physlearn.drivers.station.description import station_counters

        return station_counters(self)

    def __init__(self, config: StationConfig, seed: int = 0) -> None:
        self.config, self.seed = config, int(seed)
        self.graph = config.graph.build()
        #: the simulator the bench mirrors (``system.mirrors``): the conjugates and energy of
        #: the measured node voltages are its ``conjugates_from_voltages``; None: linear
        self.mirror: Any = None if config.mirrors is None else config.mirrors.build(self.seed)
        self.edges = np.asarray(self.graph.edges, dtype=np.int64)
        self.n_nodes = int(self.graph.n_nodes)
        self._out_idx = np.asarray(self.graph.output_nodes, dtype=np.int64)
        self._in_port = Port(
            size=int(self.graph.input_nodes.size),
            unit="V",
            labels=tuple(f"node{n}" for n in self.graph.input_nodes),
            long_name="input source voltages",
        )
        self._out_port = Port(
            size=int(self._out_idx.size),
            unit="V",
            labels=tuple(f"node{n}" for n in self.graph.output_nodes),
            long_name="output node voltages (measured)",
        )
        self.supported_nudges: frozenset[NudgeKind] = frozenset(config.nudge.kinds())
        self.timers = Timers()
        self.events: list[str] = []
        self.bank = weight_bank(config.weights, self.edges.shape[0], self.timers, self.events)
        self.envelopes = {"inputs": _envelope("inputs", config.inputs)}
        for kind in config.nudge.kinds():
            name = f"nudge.{kind}"
            self.envelopes[name] = _envelope(name, getattr(config.nudge, kind).sources)
        self.insts = Instruments(config, self.events)
        self.sources: dict[str, BoundSource] = {}
        self.switches: dict[str, BoundSwitches] = {}
        self.reader: NodeReader | None = None
        self.phases: Phases | None = None
        self.tx = Transactions(
            config.retry, self.timers, self.events, self._reconnect, self._resync, self._forget
        )
        self._held = np.zeros(self.edges.shape[0])
        self._connected = self._opened = False

    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return (self.bank.group,)

    @property
    def inputs(self) -> Port:
        return self._in_port

    @property
    def outputs(self) -> Port:
        return self._out_port

    @property
    def lab(self) -> Any:
        """The virtual lab served in-process, if any."""
        return self.insts.lab

    # -- connection --------------------------------------------------------------------------
    def bind(self) -> None:
        """Resolve every role (``KeyError`` naming what is missing); writes nothing."""
        cfg = self.config
        self.sources = {
            "inputs": bind_source(self.insts, "inputs", cfg.inputs, self.envelopes["inputs"])
        }
        for kind in cfg.nudge.kinds():
            name, role = f"nudge.{kind}", getattr(cfg.nudge, kind)
            self.sources[name] = bind_source(self.insts, name, role.sources, self.envelopes[name])
            if getattr(role, "switches", None) is not None:
                self.switches[kind] = bind_switches(self.insts, name, role.switches)
        self.reader = node_reader(self.insts, cfg.probes, self.n_nodes, self.timers)
        self.bank.bind(self.insts)
        self.phases = Phases(self.sources, self.switches, self.reader, cfg.equilibrium, self.timers)

    def install_envelope(self) -> None:
        for src in self.sources.values():
            src.apply_envelope()

    def connect(self) -> None:
        """Load the instruments, check identities, install the envelope, read the state."""
        if self._connected:
            return
        try:
            self.insts.start_lab()
            self.insts.load()
            self.tx.run("checking identities", self.insts.check_identities)
            self.bind()
            self.install_envelope()
            self.tx.run("reading the present state", self._resync)
        except BaseException:
            self._disconnect()
            raise
        self._connected = True

    def _disconnect(self) -> None:
        self.insts.close()
        self.sources, self.switches = {}, {}
        self.reader = self.phases = None
        self._connected = self._opened = False

    def _reconnect(self) -> None:
        self.insts.reconnect()
        self._resync()

    def _resync(self) -> None:
        if self.phases is not None:
            self.phases.resync()

    def _forget(self) -> None:
        if self.phases is not None:
            self.phases.forget()

    # -- open / close ------------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        try:
            self.connect()
            self.tx.run("opening the bench", self._configure)
            self._opened = True
            b = self.config.weights.conductance
            if b.init == "random":
                lo, hi = b.init_range()
                g0 = np.random.default_rng(self.seed).uniform(lo, hi, self.edges.shape[0])
                self.set_parameters({GROUP: g0})
            else:
                self._held = self.get_parameters()[GROUP]
        except BaseException:
            self.close()
            raise

    def _configure(self) -> None:
        """Every role in its free, safe starting state; the probes set up."""
        assert self.phases is not None and self.reader is not None
        ph = self.phases
        self._resync()
        for sw in self.switches.values():
            for p in sw.states:
                ph.set(p, False)
        for src in self.sources.values():
            if src.pending:
                self._settle_settings(src)
            for k in range(len(src.channels)):
                self._configure_channel(src, k)
        for name, src in self.sources.items():
            clamp_by_output = name == "nudge.clamp" and "clamp" not in self.switches
            on, off = src.cfg.output_values
            for out in src.outputs or []:
                ph.set(out, off if clamp_by_output else on)
        self.reader.configure()
        ph.sync_written()
        ph.applied = None

    def _settle_settings(self, src: BoundSource) -> None:
        """A pending role's settings written on every channel, then its levels bound (see
        :mod:`~physlearn.drivers.station.binding`), enveloped and read."""
        assert self.phases is not None
        ph = self.phases
        for k, params in enumerate(src.settings):
            needs = {n: v for n, v in src.cfg.settings.items() if ph.get(params[n]) != v}
            out = src.outputs[k] if src.outputs else None
            if needs and (out is None or not is_off(out.cache.get(get_if_invalid=False))):
                raise EnvelopeViolation(
                    f"{src.name}: {src.cfg.names()[k]} is on with other settings than the "
                    f"config's ({', '.join(needs)}); switch its output off by hand before running"
                )
            for n, v in needs.items():
                ph.set(params[n], v)
        bind_levels(self.insts, src)
        src.apply_envelope()
        ph.bind_trips()
        for p in src.levels:
            ph.get(p)

    def _configure_channel(self, src: BoundSource, k: int) -> None:
        """Channel ``k`` of a source: inside the envelope, its settings and compliance written,
        at its safe level."""
        assert self.phases is not None
        ph, lim, unit = self.phases, src.env.limits, src.env.unit
        out = src.outputs[k] if src.outputs else None
        on = out is None or not is_off(out.cache.get(get_if_invalid=False))
        needs = {n: v for n, v in src.cfg.settings.items() if ph.get(src.settings[k][n]) != v}
        if needs and on and out is not None:
            ph.set(src.levels[k], lim.safe)
            ph.set(out, src.cfg.output_values[1])
            on = False
        for n, v in needs.items():
            ph.set(src.settings[k][n], v)
        level = src.levels[k]
        value = level.cache.get(get_if_invalid=False)
        if value is None or not lim.min <= float(value) <= lim.max:
            if on:
                raise EnvelopeViolation(
                    f"{src.name}: {level.full_name} outputs {value} {unit}, outside the envelope "
                    f"[{lim.min:g}, {lim.max:g}]; bring it inside by hand (or switch its output "
                    "off) before running"
                )
            step, level.step = level.step, None  # disconnected: may jump to the safe value
            try:
                ph.set(level, lim.safe)
            finally:
                level.step = step
        if src.compliance is not None and src.cfg.compliance is not None:
            want = src.cfg.compliance.value
            ph.set(src.compliance[k], want)
            got = ph.get(src.compliance[k])
            if not math.isclose(float(got), want, rel_tol=1e-6):
                raise InstrumentReplyError(
                    f"{src.compliance[k].full_name}: wrote {want:g}, reads {got}",
                    level.root_instrument.name,
                )
        ph.set(level, lim.safe)

    def safe_state(self) -> None:
        """Open every relay, ramp every source to its safe level, switch its output off, and
        verify by read-back; retried with reconnects. Raises :class:`SafeStateError` naming
        every channel not confirmed safe. Idempotent; a no-op when not connected."""
        if not self._connected or self.phases is None:
            return
        ph, failures = self.phases, []
        attempts = self.config.retry.safe_state_attempts

        def guarded(what: str, fn: Any, *args: Any) -> None:
            try:
                self.tx.run(what, fn, *args, attempts=attempts)
            except Exception as exc:  # noqa: BLE001 - every channel is tried
                failures.append(f"{what}: {exc}")

        with shield_interrupts("ramping the sources to their safe state"):
            # fresh sessions: an exchange cut short (a second Ctrl-C) may have left its reply
            # in a driver's session, which the read-backs below would take for the level
            for name in self.insts.by_name:
                guarded(f"reopening {name}", self.insts.reopen, name)
            for sw in self.switches.values():
                for p in sw.states:
                    guarded(f"opening {p.full_name}", ph.make_off, (p, False), None, None)
            if self.reader is not None:
                guarded("opening the probe relays", self.reader.release)
            order = [n for n in self.sources if n != "inputs"] + ["inputs"]
            for name in order:
                src = self.sources[name]
                for k in range(len(src.channels)):
                    level = src.levels[k] if src.levels else None
                    out = (src.outputs[k], src.cfg.output_values[1]) if src.outputs else None
                    what = f"{name}: channel {k + 1} to its safe state"
                    guarded(what, ph.make_off, out, level, src.env.limits.safe)
        self._opened = False
        ph.applied = UNKNOWN
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
        """Write the conductances (S); returns the conductances the bank holds (see
        :mod:`~physlearn.drivers.station.weights`)."""
        g = check_parameters((self.bank.group,), params)[GROUP]
        plan = self.bank.plan(g)
        self._require(self._opened, "open")
        self._held = self.tx.run("writing the weights", self.bank.program, plan)
        return {GROUP: self._held.copy()}

    def get_parameters(self) -> Params:
        """Read the bank back: the conductances (S) it holds."""
        self._require(self._connected, "connected")
        return {GROUP: self.tx.run("reading the weights", self.bank.read)}

    def _require(self, ok: bool, what: str) -> None:
        if not ok:
            raise RuntimeError(f"the station system is not {what} (use it as a context manager)")

    # -- physics -----------------------------------------------------------------------------
    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Measure ``inputs`` ``(batch, n_in)`` (V) one pattern at a time; every value is
        checked against the envelope before the first write. ``warm_start`` and ``rng`` are
        unused (the bench relaxes by itself). Diagnostics: ``iterations`` = readings per node,
        ``converged`` = successive readings agreed within ``tolerance`` (always true without),
        ``residual`` = NaN (KCL is not measured), ``energy`` from the measured voltages and
        held conductances (W); observable ``node_voltages`` ``(batch, n_nodes)`` (V)."""
        return self.equilibrate_many(inputs, [nudge])[0]

    def equilibrate_many(
        self,
        inputs: FloatArray,
        nudges: Sequence[Nudge | None],
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> list[Equilibrium]:
        """Every phase in ``nudges`` of the batch ``inputs``, every value of every phase
        checked against the envelope before the first write; one result per nudge."""
        self._require(self._opened, "open")
        x = np.asarray(inputs)
        n_in = self._in_port.size
        if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] < 1:
            raise ValueError(f"inputs must have shape (batch, {n_in}), got {x.shape}")
        if x.dtype.kind == "c":
            raise ValueError("inputs must be real (volts)")
        x = self.envelopes["inputs"].check(x)
        plans = []
        for nudge in nudges:
            kind, levels = nudge_levels(self, nudge, x.shape[0])
            if kind is not None:
                self.envelopes[f"nudge.{kind}"].check(levels)
            plans.append((kind, levels))
        return [self._measure(x, kind, levels) for kind, levels in plans]

    def _measure(self, x: np.ndarray, kind: str | None, levels: Any) -> Equilibrium:
        """One phase of every pattern of ``x`` (nudge ``kind`` with ``levels``)."""
        assert self.phases is not None
        n = x.shape[0]
        volts = np.empty((n, self.n_nodes))
        reads = np.empty(n, dtype=np.int64)
        converged = np.empty(n, dtype=bool)
        waited = 0.0
        for b in range(n):
            lv = None if levels is None else levels[b].tolist()
            v, reads[b], converged[b], dt = self.tx.run(
                "measuring a pattern", self.phases.phase, x[b].tolist(), kind, lv
            )
            volts[b] = v
            waited += dt
        if self.mirror is not None:  # the mirrored family's physics (system.mirrors)
            group = self.mirror.parameter_groups[0].name
            mc, energy = self.mirror.conjugates_from_voltages(volts, {group: self._held})
            conj = mc[group]
        else:
            ends = volts[:, self.edges]  # (batch, edge, 2)
            conj = 0.5 * (ends[..., 0] - ends[..., 1]) ** 2
            energy = conj @ self._held
        return Equilibrium(
            outputs=volts[:, self._out_idx],
            conjugates={GROUP: conj},
            state=None,
            residual=np.full(n, np.nan),
            iterations=reads,
            shots=0,
            settle_time=waited,
            energy=energy,
            observables={"node_voltages": volts},
            converged=converged,
        )

    # -- description -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Identities, addresses, the settings of every driven parameter, the envelope.
        Connects (reads only) if not yet connected."""
        from physlearn.drivers.station.description import station_snapshot

        self.connect()
        return station_snapshot(self)

    def graph_layout(self) -> dict[str, Any]:
        g = self.graph
        return {
            "positions": np.asarray(g.positions).copy(),
            "edges": np.asarray(g.edges).copy(),
            "edge_group": GROUP,
            "node_roles": list(g.roles),
        }

    def calibrate(self, points: int) -> dict[str, Any]:
        """Measure every potentiometer isolated (sources safe), restore the taps; connects and
        closes. See :meth:`PotBank.calibrate`."""
        if not isinstance(self.bank, PotBank):
            raise ValueError("weights: only a potentiometer bank (kind: pots) is calibrated")
        bank = self.bank
        self.connect()
        try:
            self.safe_state()  # no voltage on the network while the devices are measured
            return self.tx.run(
                "calibrating the bank", bank.calibrate, self.insts, points, attempts=1
            )
        finally:
            self.close()

    def dry_run(self, experiment: ExperimentConfig | None = None) -> list[Check]:
        """Check the station, identities and envelope without applying anything."""
        from physlearn.drivers.station.dryrun import station_checks

        try:
            return station_checks(self, experiment)
        finally:
            self._disconnect()


def _envelope(name: str, role: Any) -> RoleEnvelope:
    return RoleEnvelope(name, role.unit, role.limits, tuple(role.names()))
