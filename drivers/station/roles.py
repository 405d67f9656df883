"""The sections of a station config and the names they use: shared by the config, the system,
its safety layer and the virtual lab.

* Channel names with brace ranges: ``"src.ch{01..10}"`` is ``src.ch01 ... src.ch10`` (the width
  of the first bound sets the zero padding), counted before they are expanded.
* :class:`Limits`: one role's share of the safety envelope (range, ramp step and delay,
  safe value); see :mod:`physlearn.drivers.station.safety`.
* The roles (:class:`SourceRole`, :class:`SwitchRole`, :class:`ProbeRole`), the nudges,
  equilibrium detection and the retry policy; the weights' section is
  :mod:`physlearn.drivers.station.weight_roles`.

:class:`~physlearn.drivers.station.config.StationConfig` assembles them; it lives in its own
module because it builds the system, which imports these types (a config module that both
defined them and imported the system would make a cycle).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from physlearn.configbase import StrictModel
from physlearn.simulators.graphs.config import GraphConfig

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")

#: Most channel names one role may expand to: far above any bench (a mux card has tens to
#: hundreds of channels), far below a brace range that would fill memory ({1..1000000000}).
MAX_CHANNELS = 100_000


def count_names(spec: str | list[str]) -> int:
    """How many names :func:`expand_names` would give, computed without expanding."""
    if isinstance(spec, list):
        return sum(count_names(item) for item in spec)
    n = 1
    for m in _RANGE.finditer(spec):
        n *= abs(int(m.group(2)) - int(m.group(1))) + 1
    return n


def check_channels(spec: str | list[str] | list[int]) -> str | list[str] | list[int]:
    """Refuse a channel spec expanding to more than :data:`MAX_CHANNELS` names (before any
    expansion); for a pydantic field validator, so the error names the field."""
    names = [str(v) for v in spec] if isinstance(spec, list) else spec
    n = count_names(names)
    if n > MAX_CHANNELS:
        raise ValueError(f"expands to {n:,} channels, more than the {MAX_CHANNELS:,} allowed")
    return spec


def expand_names(spec: str | list[str]) -> list[str]:
    """Expand brace ranges: ``"src.ch{1..3}"`` -> ``["src.ch1", "src.ch2", "src.ch3"]``.

    ``{01..10}`` zero-pads to the width of the first bound; a descending range counts down; several
    ranges in one name expand as a product (first range outermost). Lists expand element-wise.
    A spec of more than :data:`MAX_CHANNELS` names is refused before it is expanded.
    """
    if count_names(spec) > MAX_CHANNELS:
        raise ValueError(
            f"{spec!r} expands to {count_names(spec):,} names, more than {MAX_CHANNELS:,}"
        )
    if isinstance(spec, list):
        return [name for item in spec for name in expand_names(item)]
    m = _RANGE.search(spec)
    if m is None:
        return [spec]
    a, b = int(m.group(1)), int(m.group(2))
    width = len(m.group(1)) if m.group(1).startswith("0") else 0
    step = 1 if b >= a else -1
    head, tail = spec[: m.start()], spec[m.end() :]
    return [
        name
        for k in range(a, b + step, step)
        for name in expand_names(f"{head}{k:0{width}d}{tail}")
    ]


def expand_ints(spec: str | list[int]) -> list[int]:
    """``"{101..121}"`` or ``[101, 102]`` -> list of ints."""
    if isinstance(spec, list):
        return [int(v) for v in spec]
    return [int(v) for v in expand_names(spec)]


def graph_counts(graph: GraphConfig) -> tuple[int, int]:
    """(nodes, edges) of a graph config; layered and edge-list graphs without building them."""
    if graph.type == "layered":
        s = graph.sizes
        n_edges = sum(a * b for a, b in zip(s, s[1:], strict=False))
        if graph.skip:
            n_edges += sum(a * b for a, b in zip(s, s[2:], strict=False))
        return sum(s), n_edges
    if graph.type == "edges":
        return graph.n_nodes, len(graph.edges)
    g = graph.build()  # lattice: build (imports scipy)
    return int(g.n_nodes), int(g.n_edges)


def check_public(path: str) -> str:
    """Refuse a dotted name with a private part: roles reach instruments through public
    attributes only."""
    bad = [p for p in path.split(".") if p.startswith("_") or not p]
    if bad:
        raise ValueError(f"{path!r}: {bad[0]!r} is not a public attribute name")
    return path


def resolve_path(path: str) -> str:
    """``path`` absolute, with ``~`` expanded: configs store paths resolved, so a run resumed
    from another directory finds the same files."""
    return str(Path(path).expanduser().resolve())


# --------------------------------------------------------------------------------------------
# The safety envelope of one role


class Limits(StrictModel):
    """Envelope of one source role, in the role's unit (V or A).

    Nothing outside ``[min, max]`` is ever sent; a level changes by at most ``step`` per write
    (qcodes ``step``) and successive ramp writes are at least ``inter_delay`` seconds apart
    (qcodes ``inter_delay``), so the ramp rate is at most ``step / inter_delay``. ``safe`` is the
    level every exit path ramps to.
    """

    min: float = Field(description="lowest level ever sent (V or A)")
    max: float = Field(description="highest level ever sent (V or A)")
    step: float | None = Field(
        None, gt=0, description="largest change per write (V or A); null: jump (no ramp)"
    )
    inter_delay: float = Field(0.0, ge=0, description="minimum time between ramp writes (s)")
    safe: float = Field(0.0, description="safe-state level (V or A)")

    @model_validator(mode="after")
    def _check(self) -> Limits:
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min < self.max):
            raise ValueError(f"limits need finite min < max, got [{self.min}, {self.max}]")
        if not self.min <= self.safe <= self.max:
            raise ValueError(f"safe level {self.safe} lies outside [{self.min}, {self.max}]")
        largest = max(abs(self.min), abs(self.max))
        if self.step is not None and self.step <= 1e-6 * largest:
            raise ValueError(
                f"step {self.step:g} is below a millionth of the largest level {largest:g}: "
                "finer than the 8 significant digits instruments are sent"
            )
        return self

    def rate(self) -> float:
        """Largest ramp rate (unit/s); inf without a step or a delay."""
        if self.step is None or self.inter_delay == 0:
            return math.inf
        return self.step / self.inter_delay


class Compliance(StrictModel):
    """The protection limit a source channel enforces itself: a current limit (A) for a voltage
    source, a voltage limit (V) for a current source. Written at open, read back and verified."""

    parameter: str = Field(description="parameter on each channel, e.g. curr_limit")
    value: float = Field(gt=0, description="limit (A for voltage sources, V for current sources)")

    _public = field_validator("parameter")(check_public)


class SourceRole(StrictModel):
    """Source channels playing one role, in port order."""

    channels: str | list[str] = Field(
        description="qcodes channel paths, brace ranges allowed: 'src.ch{01..10}'"
    )
    level: str = Field("volt", description="parameter on each channel setting its level")
    unit: Literal["V", "A"] = Field("V", description="unit of the level")
    limits: Limits = Field(description="envelope of the level")
    output: str | None = Field(
        "output", description="on/off parameter on each channel (null: none)"
    )
    output_values: tuple[bool | int | str, bool | int | str] = Field(
        (True, False),
        description="what the output parameter is set to for on and for off, e.g. [on, off]",
    )
    compliance: Compliance | None = Field(None, description="protection limit set at open")
    settings: dict[str, float | int | str | bool] = Field(
        default_factory=dict,
        description="other parameters written on each channel at open, e.g. {function: VOLT}",
    )
    trip_status: str | list[str] | None = Field(
        None,
        description="parameter(s) non-zero while a channel is tripped by its compliance, "
        "queried after every change: src.trip_status, or 'smu{1..3}.source.limit_tripped'",
    )

    _channels = field_validator("channels")(check_channels)

    @field_validator("level", "output", "settings")
    @classmethod
    def _public(cls, v: Any) -> Any:
        for name in v if isinstance(v, dict) else [v]:
            if name is not None:
                check_public(str(name))
        return v

    def names(self) -> list[str]:
        return expand_names(self.channels)

    def trip_names(self) -> list[str]:
        return [] if self.trip_status is None else expand_names(self.trip_status)


class SwitchRole(StrictModel):
    """Switch-matrix relays, one per output, in output order."""

    channels: str | list[str] = Field(description="qcodes channel paths: 'swm.ch{1..3}'")
    state: str = Field("closed", description="boolean parameter: true = relay closed")

    _channels = field_validator("channels")(check_channels)

    def names(self) -> list[str]:
        return expand_names(self.channels)


class ErrorNudge(StrictModel):
    """Current injection I_o = -beta * eps_o (A) through current-mode channels on the outputs."""

    sources: SourceRole


class ClampNudge(StrictModel):
    """Voltage sources switched onto the outputs (coupled learning). Without ``switches`` the
    channels' own output relays connect them: off in the free phase, on when clamping."""

    sources: SourceRole
    switches: SwitchRole | None = None


class TargetNudge(StrictModel):
    """A fixed nudge conductance (S) from each output through a relay to a source at the target
    voltage: the nudged energy is E + beta/2 sum (V_o - y_o)^2 with beta = ``conductance``."""

    sources: SourceRole
    switches: SwitchRole
    conductance: float = Field(gt=0, description="nudge conductance beta of the hardware (S)")


class NudgeConfig(StrictModel):
    error: ErrorNudge | None = None
    clamp: ClampNudge | None = None
    target: TargetNudge | None = None

    def kinds(self) -> list[str]:
        return [k for k in ("target", "error", "clamp") if getattr(self, k) is not None]


class ScanProbe(StrictModel):
    """A meter scanning every node of the network through its multiplexer (one query per scan)."""

    kind: Literal["scan"] = Field("scan", description="a meter with a scan list")
    readings: str = Field(
        "dmm.readings", description="array parameter: one reading (V) per scanned channel"
    )
    scan_list: str | None = Field(
        "dmm.scan_list", description="parameter taking the scan list, set at open (null: none)"
    )
    channels: str | list[int] = Field(
        description="multiplexer channel of each node, in node order: '{101..129}'"
    )
    counter: str | None = Field(
        "dmm.reading_number",
        description="parameter holding the reading counter of the last scan (stale-reading "
        "detection; null: none)",
    )
    range: float = Field(10.0, gt=0, description="|reading| above this is an overload (V)")

    _channels = field_validator("channels")(check_channels)

    def channel_list(self) -> list[int]:
        return expand_ints(self.channels)

    def paths(self) -> list[tuple[str, str]]:
        """(field, dotted name) of every instrument path this section uses."""
        out = [("probes.readings", self.readings)]
        out += [(f"probes.{f}", getattr(self, f)) for f in ("scan_list", "counter")]
        return [(f, p) for f, p in out if p is not None]


class SwitchedProbe(StrictModel):
    """A switch matrix connecting one node at a time to a DMM's input (stock drivers: a
    Keysight 34980A's 34934A card and a 34465A on one of its rows)."""

    kind: Literal["switched"] = Field(description="a switch matrix routing nodes to a DMM")
    switch: str = Field(
        description="switch-matrix module with connect(row, column) / disconnect(row, column), "
        "e.g. mux.slot_1_34934A"
    )
    row: int = Field(ge=1, description="matrix row wired to the DMM input")
    columns: str | list[int] = Field(
        description="matrix column of each node, in node order: '{1..29}'"
    )
    meter: str = Field(description="parameter reading the DMM once (V), e.g. dmm.volt")
    settings: dict[str, float | int | str | bool] = Field(
        default_factory=dict,
        description="parameters of the meter written at open, in order, e.g. {NPLC: 0.02}",
    )
    range: float = Field(10.0, gt=0, description="|reading| above this is an overload (V)")

    _columns = field_validator("columns")(check_channels)

    def column_list(self) -> list[int]:
        return expand_ints(self.columns)

    def channel_list(self) -> list[int]:
        return self.column_list()

    def paths(self) -> list[tuple[str, str]]:
        return [("probes.switch", self.switch), ("probes.meter", self.meter)]


def kind_or(default: str) -> Discriminator:
    """The discriminator of a section told apart by its ``kind``, ``default`` when absent (a
    config written before the section had kinds stays valid)."""

    def kind(raw: Any) -> str:
        value = raw.get("kind", default) if isinstance(raw, dict) else getattr(raw, "kind", default)
        return str(value)

    return Discriminator(kind)


ProbeRole = Annotated[
    Annotated[ScanProbe, Tag("scan")] | Annotated[SwitchedProbe, Tag("switched")],
    kind_or("scan"),
]


class EquilibriumConfig(StrictModel):
    """When the bench is at equilibrium: after ``settle_time``, and (with ``tolerance``) once two
    successive scans agree within ``tolerance`` on every node, reading at most ``max_reads`` scans
    and for at most ``timeout`` seconds (then the phase is logged ``converged = false``).

    Successive scans taken much faster than the network settles agree long before it has
    settled: space them (``poll_interval``) at a fair fraction of the settling time constant.
    The residual error at the stop is about ``tolerance / (1 - exp(-interval / tau))``."""

    settle_time: float = Field(
        0.0,
        ge=0,
        description="wait after the instruments confirmed a phase's writes, before the scan (s)",
    )
    tolerance: float | None = Field(
        None, gt=0, description="stability: max |dV| between successive scans (V); null: one scan"
    )
    max_reads: int = Field(10, ge=2, description="scans per phase when checking stability")
    timeout: float = Field(2.0, gt=0, description="longest wait for stability (s)")
    poll_interval: float = Field(0.0, ge=0, description="pause between stability scans (s)")


class RetryConfig(StrictModel):
    """What the system does when an instrument misbehaves."""

    attempts: int = Field(4, ge=1, description="tries of one operation (1 = no retry)")
    reconnects: int = Field(2, ge=0, description="VISA session reopenings per operation")
    backoff: float = Field(0.02, ge=0, description="pause before a retry (s)")
    safe_state_attempts: int = Field(
        8, ge=1, description="tries per channel when ramping to the safe state"
    )
