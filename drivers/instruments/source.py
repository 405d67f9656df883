"""Source instrument drivers: :class:`VirtualLabSource` (voltage/current source channels with
compliance), its bulk :class:`LevelWriter` and :class:`PreparedLevels` (the station's hot path:
levels in one compound message, ramps as qcodes would).

See :mod:`physlearn.drivers.instruments.base` for what every driver shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from operator import attrgetter
from typing import Any

from qcodes import validators as vals
from qcodes.instrument import InstrumentChannel
from qcodes.parameters import Parameter

from physlearn.drivers.errors import InstrumentReplyError
from physlearn.drivers.instruments.base import (
    _INT,
    LabVisaInstrument,
    _Held,
    _LevelPlan,
    _width,
)

_PARAMETER_VALIDATE = Parameter.validate


def _number_bounds(p: Parameter) -> tuple[float, float] | None:
    """(min, max) a value must lie within to pass ``p.validate`` when that is exactly a chain
    of plain :class:`qcodes.validators.Numbers` checks of a float (their intersection); None
    when anything else validates (then ``p.validate`` itself is called)."""
    if type(p).validate is not _PARAMETER_VALIDATE:
        return None
    lo: Any = -math.inf  # the validators' own bounds, compared as they compare them
    hi: Any = math.inf
    found = False
    for v in p.validators:
        if v is None:
            continue
        if type(v) is not vals.Numbers:
            return None
        found = True
        lo = max(lo, v._min_value)
        hi = min(hi, v._max_value)
    return (lo, hi) if found else None


def _refuse(p: Parameter, value: float) -> None:
    """Raise the parameter's own validation error for ``value`` (outside its bounds)."""
    p.validate(value)
    raise ValueError(f"{value!r} is invalid; Parameter: {p.full_name}")  # pragma: no cover


def _ramp_commands(
    p: Parameter, head: str, bounds: tuple[float, float] | None, step: Any, start: float, v: float
) -> list[str]:
    """The intermediate commands of a ramp of ``p`` from ``start`` to ``v`` (``|v - start| >
    step``): exactly qcodes' ramp (``get_ramp_values``), every value checked against the
    parameter's bounds (its validators if ``bounds`` is None) before any is returned."""
    signed = abs(step) * (1 if v > start else -1)
    count = math.ceil((v - start) / signed - 1e-10)
    ramp = [float(start + i * signed) for i in range(1, count)]
    if bounds is None:
        for r in ramp:
            p.validate(r)
    else:
        lo, hi = bounds
        for r in ramp:
            if not lo <= r <= hi:
                _refuse(p, r)
    return [head + repr(r) for r in ramp]


class SourceChannel(InstrumentChannel):
    """One source channel: ``function`` (VOLT/CURR), ``volt`` (V), ``curr`` (A), ``curr_limit``
    (A, compliance in VOLT mode), ``volt_limit`` (V, compliance in CURR mode), ``output``."""

    def __init__(self, parent: VirtualLabSource, name: str, channel: int) -> None:
        super().__init__(parent, name)
        c = channel
        vmax, imax = parent.max_voltage, parent.max_current
        self.channel = c
        self.function = self.add_parameter(
            "function",
            get_cmd=partial(parent.query_choice, f"SOUR{c}:FUNC?", ("VOLT", "CURR")),
            set_cmd=f"SOUR{c}:FUNC {{}}",
            vals=vals.Enum("VOLT", "CURR"),
            docstring="VOLT: voltage source; CURR: current source",
        )
        self.volt = self.add_parameter(
            "volt",
            unit="V",
            get_cmd=partial(parent.query_float, f"SOUR{c}:VOLT?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:VOLT {{}}"),
            vals=vals.Numbers(-vmax, vmax),
            docstring="voltage level (V)",
        )
        self.curr = self.add_parameter(
            "curr",
            unit="A",
            get_cmd=partial(parent.query_float, f"SOUR{c}:CURR?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:CURR {{}}"),
            vals=vals.Numbers(-imax, imax),
            docstring="current level (A, positive into the node)",
        )
        self.curr_limit = self.add_parameter(
            "curr_limit",
            unit="A",
            get_cmd=partial(parent.query_float, f"SOUR{c}:CURR:LIM?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:CURR:LIM {{}}"),
            vals=vals.Numbers(1e-9, imax),
            docstring="compliance current of the voltage source (A)",
        )
        self.volt_limit = self.add_parameter(
            "volt_limit",
            unit="V",
            get_cmd=partial(parent.query_float, f"SOUR{c}:VOLT:LIM?"),
            set_cmd=partial(parent.write_float, f"SOUR{c}:VOLT:LIM {{}}"),
            vals=vals.Numbers(1e-6, vmax),
            docstring="compliance voltage of the current source (V)",
        )
        self.output = self.add_parameter(
            "output",
            get_cmd=partial(parent.query_bool, f"OUTP{c}?"),
            set_cmd=lambda on, _c=c: parent.write(f"OUTP{_c} {1 if on else 0}"),
            vals=vals.Bool(),
            docstring="output relay (True: connected)",
        )


class VirtualLabSource(LabVisaInstrument):
    """VLAB-SRC multi-channel source. ``max_voltage`` (V) / ``max_current`` (A): its hardware
    range, which bounds the validators of every channel."""

    def __init__(
        self,
        name: str,
        address: str | None = None,
        max_voltage: float = 10.0,
        max_current: float = 0.1,
        **kwargs: Any,
    ) -> None:
        self.max_voltage = float(max_voltage)
        self.max_current = float(max_current)
        super().__init__(name, address, **kwargs)
        with self._closed_on_error():
            self._setup()

    def _setup(self) -> None:
        name = self.name
        n = self.query_int("SYST:CHAN:COUN?")
        if not 1 <= n <= 99:
            raise InstrumentReplyError(f"{name}: implausible channel count {n}", name)
        w = _width(n)
        self.channels: list[SourceChannel] = []
        for c in range(1, n + 1):
            ch = SourceChannel(self, f"ch{c:0{w}d}", c)
            self.add_submodule(ch.short_name, ch)
            self.channels.append(ch)
        self.trip_status = self.add_parameter(
            "trip_status",
            get_cmd=partial(self.query_int, "STAT:TRIP?"),
            docstring="bit mask of channels tripped by their compliance (bit k: channel k+1)",
        )
        #: level writes queued so far (set_levels, a level writer's write or send): a prepared
        #: write (LevelWriter.prepare) stands only while it is unchanged
        self.level_writes = 0
        #: SCPI header of every level parameter, by parameter, from the root (for set_levels)
        self._level_headers: dict[int, str] = {}
        #: (validators, their bounds) by level parameter, recomputed when its validators change
        self._level_bounds: dict[int, tuple[tuple[Any, ...], tuple[float, float] | None]] = {}
        for ch in self.channels:
            self._level_headers[id(ch.volt)] = f":SOUR{ch.channel}:VOLT "
            self._level_headers[id(ch.curr)] = f":SOUR{ch.channel}:CURR "

    def set_levels(self, params: Sequence[Parameter], values: Sequence[float]) -> None:
        """Set several ``volt``/``curr`` parameters of this source's channels at once.

        The same as ``p.set(v)`` for each pair in turn -- the same SCPI commands in the same
        order, each value and every intermediate ramp value checked by the parameter's own
        validators (the safety envelope installed on them), a parameter with a ``step`` ramped
        from its cached level (read first if the cache is invalid; an unknown level is refused,
        never jumped from), the caches holding the new levels afterwards (at the end of a
        :meth:`batch`, inside which a ramp starts from the level last queued) -- but without qcodes'
        per-call machinery, and stricter: every value is checked before the first command is
        queued (a refused value sends nothing), and the commands travel as one compound message
        (or join the pending one inside :meth:`deferred_writes`). Parameters with an
        ``inter_delay`` or ``post_delay`` are refused (their writes must be separated in time),
        and so are parameters with a ``scale``, ``offset``, ``val_mapping`` or ``set_parser``
        (what is sent would not be the value): set them one by one.

        Every call reads each parameter's validators, step and delays afresh; to set the same
        parameters again and again (one phase after another), :meth:`level_writer` reads them
        once per batch of calls.
        """
        plans = [self._level_plan(p) for p in params]
        if len(plans) != len(values):
            raise ValueError(
                f"{self.name}.set_levels: {len(plans)} parameters, {len(values)} values"
            )
        repeated = len(params) > 1 and len(set(map(id, params))) < len(params)
        self._queue_levels(plans, values, repeated)

    def level_writer(self, params: Sequence[Parameter]) -> LevelWriter:
        """A :class:`LevelWriter` for ``params`` (distinct levels of this source's channels)."""
        return LevelWriter(self, params)

    def _level_plan(self, p: Parameter) -> _LevelPlan:
        """What writing level ``p`` takes, from its present validators, step and delays:
        ``(parameter, SCPI header, (min, max) of its plain Numbers validators or None to call
        its validate, step or None, cache, whether the cache may be read directly)``;
        ValueError if it cannot be set in bulk."""
        key = id(p)
        head = self._level_headers.get(key)
        if head is None:
            raise ValueError(f"{self.name}.set_levels: {p!r} is not a level of {self.name}")
        if p.inter_delay or p.post_delay:
            raise ValueError(
                f"{self.name}.set_levels: {p.full_name} has an inter_delay/post_delay; "
                "set it on its own"
            )
        if (
            p.scale is not None
            or p.offset is not None
            or p.val_mapping is not None
            or p.set_parser is not None
        ):
            raise ValueError(
                f"{self.name}.set_levels: {p.full_name} converts its values (scale, offset, "
                "val_mapping or set_parser); set it on its own"
            )
        checks = p.validators
        known = self._level_bounds.get(key)
        if known is not None and known[0] == checks:
            bounds = known[1]
        else:
            bounds = _number_bounds(p)
            self._level_bounds[key] = (checks, bounds)
        return (p, head, bounds, p.step)

    def _level_now(self, p: Parameter, query: bool = True) -> float:
        """The level a ramp of ``p`` starts from: the one last queued in the open :meth:`batch`
        (unless its cache was updated since), else the cached level, else (``query``) a get.
        InstrumentReplyError if it is unknown (a ramp never jumps from a guess)."""
        start = self._held_value(p)
        if start is None:
            if query:
                start = p.cache.get()  # a get (a query) if the cache is invalid
                if start is None:
                    start = p.get()
            elif p.cache.valid:
                start = p.cache.get(get_if_invalid=False)
        if not isinstance(start, (int, float)) or start != start:
            raise InstrumentReplyError(
                f"{p.full_name}: present level {start!r} unknown; refusing to ramp from it",
                self.name,
            )
        return float(start)

    def _queue_levels(
        self, plans: Sequence[_LevelPlan], values: Sequence[float], repeated: bool
    ) -> None:
        """Check every value (and ramp value) of ``plans`` against its bounds, then queue the
        commands (one compound message, or the pending one) and update the caches
        (``repeated``: a parameter may appear twice; it ramps on from its first value)."""
        cmds, news = self._level_commands(plans, values, repeated, True)
        self._send_levels(plans, cmds, news)

    def _level_commands(
        self, plans: Sequence[_LevelPlan], values: Sequence[float], repeated: bool, query: bool
    ) -> tuple[list[str], list[float]]:
        """The commands that set ``plans`` to ``values`` (every value and ramp value checked,
        ramps from :meth:`_level_now`; ``query``: it may ask for an unknown level), and each
        parameter's final level."""
        cmds: list[str] = []
        news: list[float] = []  # the final level of each parameter, in order
        latest: dict[int, float] | None = {} if repeated else None
        for (p, head, bounds, step), value in zip(plans, values, strict=True):
            v = float(value)
            if bounds is None:
                p.validate(v)
            elif not bounds[0] <= v <= bounds[1]:  # NaN fails too
                _refuse(p, v)
            news.append(v)
            if step is not None:
                if latest is not None and id(p) in latest:
                    start = latest[id(p)]
                else:
                    start = self._level_now(p, query)
                if not abs(v - start) <= step:
                    cmds.extend(_ramp_commands(p, head, bounds, step, start, v))
                if latest is not None:
                    latest[id(p)] = v
            cmds.append(head + repr(v))
        return cmds, news

    def _send_levels(
        self,
        plans: Sequence[_LevelPlan],
        cmds: list[str],
        news: list[float],
        held: dict[int, _Held] | None = None,
    ) -> None:
        """Queue level commands and note the levels they leave (see :meth:`_queue_levels`;
        ``held``: the cache updates to hold inside a :meth:`batch`, if already made)."""
        self._write_rooted(cmds)
        self.level_writes += 1
        # the caches as a set would leave them (raw value = value: nothing converts it; held
        # to the end of a batch); a parameter given twice ends at its last value
        if held is not None and self._held is not None:
            self._held.update(held)
            return
        for plan, v in zip(plans, news, strict=True):
            self._hold(plan[0], v)

    def _forget_state(self) -> None:
        super()._forget_state()
        self.level_writes += 1  # a prepared write stands no more: its ramps start from guesses

    def read_trip_status(self) -> int:
        """``trip_status.get()`` without qcodes' per-call machinery (the station system's hot
        path): the same query (``STAT:TRIP?``, joining pending deferred writes), the same
        strict parsing and error, the parameter's cache updated as a get would (held to the end
        of a :meth:`batch`)."""
        cmd = "STAT:TRIP?"
        try:
            reply = self.ask_raw(cmd)
        except Exception as e:
            e.args = (*e.args, f"asking {cmd!r} to {self!r}")  # as qcodes' ask
            raise
        if not _INT.fullmatch(reply):
            raise self.bad_reply(cmd, reply, "an integer")
        mask = int(reply)
        p = self.trip_status
        held = self._held
        if held is not None:  # _hold, inlined: once per phase
            held[id(p)] = (p, mask, p.cache.timestamp, None)
        else:
            p.cache.set(mask)
        return mask

    def clear_trips(self) -> None:
        self.write("OUTP:PROT:CLE")


class LevelWriter:
    """:meth:`VirtualLabSource.set_levels` of a fixed list of level parameters, prepared.

    :meth:`refresh` reads what writing each parameter takes (its validators' bounds, step,
    delays, conversions: the checks ``set_levels`` makes on every call) and :meth:`write` then
    writes with it, one phase after another, without reading them again: the same commands,
    the same validation of every value and ramp value against those bounds, the same ramps
    from the cached levels, the same caches afterwards. Call :meth:`refresh` before each batch
    of writes (the station system does, at the start of every ``equilibrate``, where it also
    checks the batch against the safety envelope): a validator, step or delay changed since
    the last refresh is not seen by :meth:`write` until the next one.

    A write can also be prepared ahead (:meth:`prepare`: checked and formatted, nothing
    queued) and sent later (:meth:`send`), as long as nothing it rests on changed in between.
    """

    def __init__(self, source: VirtualLabSource, params: Sequence[Parameter]) -> None:
        if len(set(map(id, params))) != len(params):
            raise ValueError(f"{source.name}.level_writer: a parameter is given twice")
        self.source = source
        self.params = list(params)
        self._plans: list[_LevelPlan] = []
        self._inputs: list[tuple[Any, ...]] | None = None  # what the plans were made from
        self.refresh()

    def refresh(self) -> None:
        """Read every parameter's validators, step, delays and conversions afresh (ValueError
        if one can no longer be set in bulk). The plans are made anew when any of these
        changed since the last refresh (reading them costs half of making the plans)."""
        inputs = list(map(_plan_inputs, self.params))
        if inputs == self._inputs:
            return
        self._plans = [self.source._level_plan(p) for p in self.params]
        self._inputs = inputs

    def write(self, values: Sequence[float], indices: Sequence[int] | None = None) -> None:
        """Set ``params[indices[j]]`` to ``values[j]`` (every parameter, in order, when
        ``indices`` is None): see the class docstring."""
        self.source._queue_levels(self._plans_of(values, indices), values, False)

    def prepare(
        self, values: Sequence[float], indices: Sequence[int] | None = None
    ) -> PreparedLevels:
        """What :meth:`write` of these values would queue now -- every value and ramp value
        checked, the commands formatted, ramps from the present levels -- without queueing it
        (:meth:`send` does), and without a query: a level to ramp from that is not known
        without asking (no held level, no valid cache) raises InstrumentReplyError. The
        station system prepares the next phase's levels while the network settles."""
        plans = self._plans_of(values, indices)
        src = self.source
        cmds, news = src._level_commands(plans, values, False, False)
        params = [plan[0] for plan in plans]
        return PreparedLevels(plans, cmds, news, list(map(_stamp_of, params)), src.level_writes)

    def send(self, prepared: PreparedLevels) -> bool:
        """Queue what :meth:`prepare` prepared, exactly as :meth:`write` would have then, and
        update the caches the same way -- if it still stands: no level write on this source and
        no change of a written parameter's cache since it was prepared (a get, a set, a resync:
        the levels to ramp from may have changed). Else False, and nothing is queued: write
        the levels anew. A prepared write is sent at most once."""
        src = self.source
        if (
            prepared.writes != src.level_writes
            or list(map(_stamp_of, prepared.params)) != prepared.stamps
        ):
            return False
        src._send_levels(prepared.plans, prepared.cmds, prepared.levels, prepared.held)
        return True

    def _plans_of(self, values: Sequence[float], indices: Sequence[int] | None) -> list[_LevelPlan]:
        plans = self._plans
        if indices is None:
            if len(values) != len(plans):
                raise ValueError(
                    f"{self.source.name}: {len(values)} values for {len(plans)} levels"
                )
            return plans
        if len(indices) != len(values) or len(set(indices)) != len(indices):
            raise ValueError(
                f"{self.source.name}: {len(values)} values for level indices {list(indices)} "
                "(each index once)"
            )
        return [plans[k] for k in indices]


#: the cache timestamp of a parameter (one C-level call per parameter list)
_stamp_of = attrgetter("cache.timestamp")
#: everything of a level parameter that :meth:`VirtualLabSource._level_plan` reads (but the
#: header, fixed per parameter)
_plan_inputs = attrgetter(
    "inter_delay",
    "post_delay",
    "scale",
    "offset",
    "val_mapping",
    "set_parser",
    "validators",
    "step",
)


class PreparedLevels:
    """A :class:`LevelWriter` write prepared ahead (:meth:`LevelWriter.prepare`): the level
    plans, the commands, the final levels, what it rests on -- the written parameters' cache
    timestamps and the source's count of level writes when it was prepared -- and the cache
    updates a :meth:`LabVisaInstrument.batch` holds for it when it is sent."""

    __slots__ = ("plans", "params", "cmds", "levels", "stamps", "writes", "held")

    def __init__(
        self,
        plans: list[_LevelPlan],
        cmds: list[str],
        levels: list[float],
        stamps: list[Any],
        writes: int,
    ) -> None:
        self.plans = plans
        self.params = params = [plan[0] for plan in plans]
        self.cmds = cmds
        self.levels = levels
        self.stamps = stamps
        self.writes = writes
        # a parameter given twice ends at its last value
        self.held: dict[int, _Held] = {
            id(p): (p, v, stamp, None) for p, v, stamp in zip(params, levels, stamps, strict=True)
        }
