"""Binding the roles of a station config to qcodes instruments and parameters.

:class:`Instruments` loads the instruments a config names from its qcodes Station YAML (serving
the virtual lab first if the config asks for it), checks their identities, resolves dotted names
(``psu1.ch1.source_voltage``, ``smu1.source.current``) through public attributes only, reopens
the VISA sessions after a lost link (``set_address``) and closes everything.
:class:`BoundSource` is one source role bound to its channels' parameters (level, output,
compliance, settings, trip status); :class:`BoundSwitches` the relays of a nudge. A role whose
level lives under a function-dependent part of its driver (the Keithley 2450's ``source`` is the
voltage or the current submodule, whichever function is set) resolves once its ``settings`` are
written at open; until then it is *pending* and only its outputs and settings are bound.

Nothing here writes to an instrument except :meth:`Instruments.reconnect` (none of the role's
levels) and :meth:`BoundSource.apply_envelope` (the qcodes parameters' validators, steps and
delays, not the instrument).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from physlearn.drivers.errors import (
    IdentityError,
    InstrumentFault,
    InstrumentIOError,
    InstrumentReplyError,
)
from physlearn.drivers.station.roles import SourceRole, SwitchRole
from physlearn.drivers.station.safety import RoleEnvelope, apply_to_parameter, hardware_range
from physlearn.drivers.station.transactions import classify

if TYPE_CHECKING:
    from physlearn.drivers.station.config import StationConfig
    from physlearn.drivers.virtual_lab.server import LabServer


def is_off(value: Any) -> bool:
    """Whether an on/off parameter's value means off (``False``, 0, ``"off"`` in any case)."""
    return value is False or value == 0 or str(value).strip().lower() in ("off", "0", "false")


class Instruments:
    """The instruments of a station config, loaded through a qcodes Station."""

    def __init__(self, config: StationConfig, events: list[str]) -> None:
        self.config = config
        self.events = events
        self.lab: LabServer | None = None
        self.by_name: dict[str, Any] = {}
        self.identity: dict[str, str] = {}
        self.station: Any = None

    def start_lab(self) -> None:
        """Serve the virtual lab in this process if the config asks for it (once)."""
        if self.config.lab is None or self.lab is not None:
            return
        from physlearn.drivers.virtual_lab.config import load_lab_config
        from physlearn.drivers.virtual_lab.server import LabServer

        self.lab = LabServer(load_lab_config(self.config.lab.serve)).start()
        self.events.append(f"virtual lab serving {self.lab.addresses}")

    def station_yaml(self) -> dict[str, Any]:
        """The station YAML, with the served virtual lab's addresses in place of its own."""
        from physlearn.yamlload import load_yaml_file

        raw = load_yaml_file(self.config.station)
        if self.lab is not None:
            for name, entry in self.lab.station_config()["instruments"].items():
                if name in raw["instruments"]:
                    inst = raw["instruments"][name]
                    inst["address"] = entry["address"]
                    inst["init"] = {"visalib": "@py", **(inst.get("init") or {})}
        return dict(raw)

    def needed(self) -> list[str]:
        """Every instrument the roles and identity patterns name, in order of first use."""
        names = [path.split(".")[0] for _, path in self.config.referenced()]
        return list(dict.fromkeys([*names, *self.config.identity]))

    def new_station(self) -> Any:
        import yaml
        from qcodes.station import Station

        self.station = Station(default=False, update_snapshot=False)
        self.station.load_config(yaml.safe_dump(self.station_yaml()))
        return self.station

    def load(self) -> None:
        """Load every needed instrument (a flaky link while a driver sets up is retried)."""
        station = self.new_station()
        attempts = self.config.retry.attempts
        for name in self.needed():
            for attempt in range(attempts):
                try:
                    self.by_name[name] = station.load_instrument(name, update_snapshot=False)
                    break
                except Exception as exc:  # noqa: BLE001 - classified below
                    err = classify(exc, name, reading=True)
                    if not isinstance(err, InstrumentIOError | InstrumentReplyError):
                        raise InstrumentIOError(
                            f"{name}: cannot connect ({type(exc).__name__}: {exc})", name
                        ) from exc
                    self.events.append(f"loading {name}: attempt {attempt + 1} failed: {err}")
                    if attempt == attempts - 1:
                        raise InstrumentFault(
                            f"{name}: cannot set up the driver after {attempts} attempt(s): {err}",
                            name,
                        ) from exc

    def check_identities(self) -> None:
        """``*IDN?`` of every instrument against its ``identity`` pattern."""
        for name, inst in self.by_name.items():
            try:
                idn = str(inst.ask("*IDN?")).strip()
            except Exception as exc:
                raise classify(exc, name, reading=True) from exc
            self.identity[name] = idn
            pattern = self.config.identity.get(name)
            if pattern is not None and re.search(pattern, idn) is None:
                raise IdentityError(
                    f"{name} at {getattr(inst, 'address', '?')} identifies as {idn!r}, which "
                    f"does not match identity.{name} = {pattern!r}: wrong instrument?",
                    name,
                )

    def resolve(self, path: str) -> Any:
        """The channel, submodule or parameter a dotted name gives, through public attributes
        (``KeyError`` naming the part that is missing)."""
        parts = path.split(".")
        obj: Any = self.by_name.get(parts[0])
        if obj is None:
            raise KeyError(f"{path!r}: instrument {parts[0]!r} is not loaded")
        return walk(obj, parts[1:], path)

    def reconnect(self) -> None:
        """Reopen every VISA session (:meth:`reopen`); the first failure is raised."""
        for name in self.by_name:
            self.reopen(name)

    def reopen(self, name: str) -> None:
        """Reopen one instrument's VISA session: qcodes' ``set_address`` to the same address
        and VISA backend, then the session's terminations and timeout as they were (a new
        session starts without them). Whatever the old session still held -- the reply to a
        query whose exchange was interrupted -- is gone with it."""
        inst = self.by_name[name]
        try:
            handle = inst.visa_handle
            terms = (handle.read_termination, handle.write_termination)
            timeout = inst.timeout.get()
            inst.set_address(inst.address, f"@{inst.visabackend}")
            inst.visa_handle.read_termination, inst.visa_handle.write_termination = terms
            inst.timeout.set(timeout)
        except Exception as exc:
            raise classify(exc, name, reading=True) from exc

    def close(self) -> None:
        """Close every instrument (qcodes names are global) and stop the virtual lab."""
        errors = []
        for name, inst in list(self.by_name.items()):
            try:
                inst.close()
            except Exception as exc:  # noqa: BLE001 - close them all
                errors.append(f"{name}: {exc}")
        self.by_name.clear()
        self.station = None
        if self.lab is not None:
            self.lab.stop()
            self.lab = None
        if errors:
            self.events.append("closing: " + "; ".join(errors))


def walk(obj: Any, parts: list[str], path: str) -> Any:
    """``obj.parts[0].parts[1]...`` through public attributes; ``KeyError`` naming the gap."""
    for k, part in enumerate(parts):
        if part.startswith("_"):
            raise KeyError(f"{path!r}: {part!r} is private; name public attributes only")
        nxt = getattr(obj, part, None)
        if nxt is None:
            subs = [*getattr(obj, "submodules", {}), *getattr(obj, "parameters", {})]
            have = sorted(s for s in subs if not s.startswith("_"))[:12]
            where = ".".join([path.split(".")[0], *parts[:k]])
            raise KeyError(f"{path!r}: {where} has no {part!r} (it has {have}...)")
        obj = nxt
    return obj


def parameter(channel: Any, name: str, where: str) -> Any:
    """The parameter ``name`` (dotted, relative to ``channel``) -- ``KeyError`` if it is not
    one."""
    from qcodes.parameters import ParameterBase

    p = walk(channel, name.split("."), f"{channel.full_name}.{name}")
    if not isinstance(p, ParameterBase):
        raise KeyError(f"{where}: {channel.full_name}.{name} is not a qcodes parameter")
    return p


@dataclass
class BoundSource:
    """A source role bound to qcodes parameters, one entry per channel in port order."""

    name: str
    cfg: SourceRole
    env: RoleEnvelope
    channels: list[Any] = field(default_factory=list)
    levels: list[Any] = field(default_factory=list)
    outputs: list[Any] | None = None
    compliance: list[Any] | None = None
    settings: list[dict[str, Any]] = field(default_factory=list)
    trips: list[Any] = field(default_factory=list)
    #: levels not bound yet: they resolve once the settings are written (see the module doc)
    pending: str = ""

    def apply_envelope(self) -> None:
        for param in self.levels:
            apply_to_parameter(param, self.env, hardware_range(param))


def bind_source(insts: Instruments, name: str, cfg: SourceRole, env: RoleEnvelope) -> BoundSource:
    """Resolve a source role; levels under a function-dependent path may stay pending."""
    src = BoundSource(name, cfg, env)
    src.channels = [insts.resolve(n) for n in cfg.names()]
    for ch in src.channels:
        src.settings.append({k: parameter(ch, k, name) for k in cfg.settings})
        if cfg.output is not None:
            src.outputs = [*(src.outputs or []), parameter(ch, cfg.output, name)]
    try:
        bind_levels(insts, src)
    except KeyError as exc:
        if not cfg.settings:
            raise
        src.pending = str(exc.args[0])
    return src


def bind_levels(insts: Instruments, src: BoundSource) -> None:
    """Resolve the levels, compliance and trip status of a role (after its settings)."""
    cfg = src.cfg
    levels = [parameter(ch, cfg.level, src.name) for ch in src.channels]
    compliance = None
    if cfg.compliance is not None:
        compliance = [parameter(ch, cfg.compliance.parameter, src.name) for ch in src.channels]
    trips = [insts.resolve(n) for n in cfg.trip_names()]
    src.levels, src.compliance, src.trips, src.pending = levels, compliance, trips, ""


@dataclass
class BoundSwitches:
    """The relays of one nudge role, one per output, in output order."""

    name: str
    cfg: SwitchRole
    states: list[Any] = field(default_factory=list)


def bind_switches(insts: Instruments, name: str, cfg: SwitchRole) -> BoundSwitches:
    sw = BoundSwitches(name, cfg)
    sw.states = [parameter(insts.resolve(n), cfg.state, name) for n in cfg.names()]
    return sw


def sync(written: dict[int, Any], trips: dict[int, list[Any]], timers: Any) -> None:
    """Wait until every instrument in ``written`` has executed what it was sent (``*OPC?``,
    or its compliance-trip status, which returns only after the writes before it too), then
    read every other trip status: a source trips from what the others did to the network, so
    every phase checks them all (non-zero: :class:`ComplianceTrip`)."""
    from physlearn.drivers.station.transactions import call

    for key, root in written.items():
        if key in trips:
            continue  # synchronised by its trip status, below
        reply = str(call(timers, root.name, True, root.ask, "*OPC?")).strip()
        if reply.lstrip("+") != "1":
            raise InstrumentReplyError(
                f"{root.name} replied {reply!r} to '*OPC?'; expected 1", root.name
            )
    for on_root in trips.values():
        for p in on_root:
            check_trip(p, call(timers, p.root_instrument.name, True, p.get))
    written.clear()


def check_trip(param: Any, status: Any) -> None:
    """:class:`ComplianceTrip` if a trip-status reading says a source tripped."""
    from physlearn.drivers.errors import ComplianceTrip

    if status and not is_off(status):
        raise ComplianceTrip(
            f"{param.full_name} = {status}: sources tripped by their compliance (an integer "
            "status: bit k = channel k+1); the run stops in the safe state",
            param.root_instrument.name,
        )
