"""The two benches the station tests run on, and what the tests read off the virtual lab.

* ``vlab``: physlearn's own VLAB instruments (``configs/virtual_lab_bench.yaml``, experiment
  ``configs/virtual_lab_resistor.yaml``): one 16-channel source, a scanning DMM, a switch
  matrix of nudge resistors, the potentiometer bank.
* ``stock``: instruments driven by the drivers qcodes ships, unmodified
  (``configs/virtual_lab_stock_bench.yaml``, experiment ``configs/bench_qcodes_stock.yaml``):
  three N6705B (inputs), three Keithley 2450 (error currents), a 34980A matrix routing one node at
  a time to a 34465A, the same potentiometer bank.

Whatever the dialect, a level command names a *bench source channel* (the lab's
``source.wiring``); :func:`level_writes` turns the lines an instrument received into
(bench channel, VOLT|CURR, value) so ramps are checked the same way on both benches.
:func:`opened` is an open system on a fresh lab; :func:`fail_at` makes the lab inject a fault
at a chosen line instead of at random.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from qcodes.instrument import Instrument

from physlearn.config import parse_config
from physlearn.drivers.virtual_lab.testing import bench_experiment, running_lab, write_station
from physlearn.run.start import build_system

from .conftest import CONFIGS


@dataclass(frozen=True)
class BenchCase:
    """A bench: its lab config, its experiment config, the quiet lab's overrides, and the
    relative resolution its drivers send input levels with (0: exactly, ``repr``)."""

    name: str
    lab: Path
    experiment: Path
    quiet: dict[str, Any]
    meter: str = "dmm"  # the instrument that takes the readings (READ?)
    reads_per_phase: int = 1  # READ? per phase: a scan, or one per node
    level_rtol: float = 0.0

    def raw(self, station: Path, **system: Any) -> dict[str, Any]:
        """The bench's experiment retargeted at ``station`` (no in-process lab), no settling
        unless ``equilibrium`` is given; ``system`` as :func:`bench_experiment` takes it."""
        raw = yaml.safe_load(self.experiment.read_text())
        system.setdefault("equilibrium", {"settle_time": 0.0})
        return bench_experiment(raw, station, **system)


_POTS_QUIET = {"spread": 0.0, "measure_noise": 0.0}
VLAB = BenchCase(
    "vlab",
    CONFIGS / "virtual_lab_bench.yaml",
    CONFIGS / "virtual_lab_resistor.yaml",
    {"dmm": {"noise": 0.0, "resolution": 0.0}, "pots": _POTS_QUIET, "settling_tau": 0.0},
)
STOCK = BenchCase(
    "stock",
    CONFIGS / "virtual_lab_stock_bench.yaml",
    CONFIGS / "bench_qcodes_stock.yaml",
    {"dmm": {"noise": 0.0, "resolution": 0.0}, "pots": _POTS_QUIET, "settling_tau": 0.0},
    meter="dmm34465a",
    reads_per_phase=29,
    level_rtol=5e-8,  # the N6705B driver sends 8 significant digits ({:.8G})
)
BENCHES = (VLAB, STOCK)
#: both benches as pytest parameters; the stock bench's runs take seconds: slow
BENCH_PARAMS = [
    pytest.param(VLAB, id="vlab"),
    pytest.param(STOCK, id="stock", marks=pytest.mark.slow),
]

# a level set-point in each dialect (not a limit, a protection or a query)
_VLAB_LEVEL = re.compile(r":?SOUR(\d+):(VOLT|CURR) (\S+)")
_N6705B_LEVEL = re.compile(r":?SOUR(?:CE)?:VOLT(?:AGE)? (\S+), ?\(@(\d+)\)", re.IGNORECASE)
_K2450_LEVEL = re.compile(r":?SOUR(?:CE)?:(VOLT|CURR)(?:ENT|AGE)? (\S+)", re.IGNORECASE)


def commands(received: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(instrument, command) of every received line, compound lines split at ``;``."""
    return [(inst, cmd.strip()) for inst, line in received for cmd in line.split(";")]


def bench_channels(lab: Any) -> dict[tuple[str, int], int]:
    """(instrument, its channel) -> bench source channel, for every source of the lab."""
    cfg = lab.config
    out = {(cfg.source.name, c): c for c in range(1, cfg.source.channels + 1)}
    if cfg.stock is not None:
        for psu in cfg.stock.n6705b:
            for k, c in enumerate(psu.channels, start=1):
                if c is not None:
                    out[(psu.name, k)] = c
        for smu in cfg.stock.k2450:
            out[(smu.name, 1)] = smu.channel
    return out


def level_writes(lab: Any, received: list[tuple[str, str]]) -> list[tuple[int, str, float, str]]:
    """(bench channel, ``VOLT``|``CURR``, value, command) of every level set-point received."""
    chans = bench_channels(lab)
    stock = lab.config.stock
    psus = {p.name for p in stock.n6705b} if stock is not None else set()
    smus = {s.name for s in stock.k2450} if stock is not None else set()
    out = []
    for inst, cmd in commands(received):
        if inst == lab.config.source.name and (m := _VLAB_LEVEL.fullmatch(cmd)):
            out.append((chans[(inst, int(m.group(1)))], m.group(2), float(m.group(3)), cmd))
        elif inst in psus and (m := _N6705B_LEVEL.fullmatch(cmd)):
            out.append((chans[(inst, int(m.group(2)))], "VOLT", float(m.group(1)), cmd))
        elif inst in smus and (m := _K2450_LEVEL.fullmatch(cmd)):
            out.append((chans[(inst, 1)], m.group(1).upper(), float(m.group(2)), cmd))
    return out


def check_ramps(
    lab: Any,
    received: list[tuple[str, str]],
    start: dict[str, Any],
    steps: dict[str, float],
    limits: dict[str, tuple[float, float]] | None = None,
    rtol: float = 0.0,
) -> int:
    """Assert that no level command moves a bench channel by more than ``steps[kind]`` (kind
    ``VOLT``/``CURR``) from the level before it -- the first from what the bench held at
    ``start`` (``lab.bench.summary()``) -- and, with ``limits``, that every value is finite
    and inside ``limits[kind]``. Returns the number of level commands checked.

    ``rtol``: the driver sends levels rounded to a relative ``rtol`` (the N6705B's ``{:.8G}``:
    5e-8); a jump may then exceed the step by the rounding of its two set-points
    (``test_station_phases`` checks the exact bound apart)."""
    last = {("VOLT", c): _exact(v) for c, v in enumerate(start["volt"], start=1)}
    last |= {("CURR", c): _exact(v) for c, v in enumerate(start["curr"], start=1)}
    writes = level_writes(lab, received)
    for ch, kind, v, cmd in writes:
        if limits is not None:
            lo, hi = limits[kind]
            assert np.isfinite(v) and lo <= v <= hi, f"{cmd}: outside [{lo}, {hi}]"
        # in decimal, as the instrument reads the number: a binary difference of two decimal
        # set-points exactly a step apart may exceed the step by an ulp
        sent = Decimal(cmd.split()[1].split(",")[0])
        before = last[(kind, ch)]
        jump = abs(sent - before)
        slack = _exact(rtol) * (abs(sent) + abs(before))
        assert jump <= _exact(steps[kind]) + slack, f"{cmd}: a jump of {jump} from {before}"
        last[(kind, ch)] = sent
    return len(writes)


def _exact(x: float) -> Decimal:
    """A float as the shortest decimal that reads back as it (how qcodes drivers format it)."""
    return Decimal(repr(float(x)))


def role_truth(lab: Any, system: Any, role: str) -> list[float]:
    """What the bench holds on each channel of a source role (V or A), port order: the inputs
    drive the input nodes, the nudge sources the output nodes (in the lab's wiring)."""
    wiring = lab.config.source_wiring()
    nodes = system.graph.input_nodes if role == "inputs" else system.graph.output_nodes
    unit = system.sources[role].env.unit
    held = lab.bench.summary()["volt" if unit == "V" else "curr"]
    return [float(held[wiring.index(int(n))]) for n in nodes]


def assert_caches_are_the_truth(system: Any, lab: Any, rtol: float = 0.0) -> None:
    """Every level the system drives is cached (valid) at what the bench holds, to ``rtol``
    (the resolution the driver sends levels with): the next ramp starts from the truth."""
    for role in ("inputs", "nudge.error"):
        levels = system.sources[role].levels
        cached = [p.cache.get(get_if_invalid=False) for p in levels]
        assert all(p.cache.valid for p in levels), role
        truth = role_truth(lab, system, role)
        np.testing.assert_allclose(cached, truth, rtol=rtol, atol=1e-15, err_msg=role)


def assert_safe(lab: Any) -> None:
    """Every source output off at level 0, every relay open (the VLAB nudge relays, and on the
    stock bench every crosspoint of the 34980A matrices)."""
    s = lab.bench.summary()
    assert not s["output"].any(), "a source output is still on"
    assert not s["volt"].any() and not s["curr"].any(), "a source level is not at 0"
    assert not s["closed"].any(), "a nudge relay is still closed"
    stock = lab.config.stock
    for mux in stock.k34980a if stock is not None else []:
        assert not lab.lab.instruments[mux.name].closed, f"{mux.name}: a crosspoint is closed"


@contextmanager
def opened(case: BenchCase, tmp: Path, record: bool = True, **system: Any) -> Iterator[Any]:
    """(lab, open system) on a fresh quiet lab of ``case``; everything closed afterwards."""
    tmp.mkdir(parents=True, exist_ok=True)
    with running_lab(case.lab, record=record, **case.quiet) as lab:
        raw = case.raw(write_station(lab, tmp / f"{case.name}.yaml", timeout=0.5), **system)
        try:
            sys_ = build_system(parse_config(raw))
            with sys_:
                yield lab, sys_
        finally:
            Instrument.close_all()


def fail_at(
    lab: Any,
    kind: str,
    select: Callable[[str, str], bool],
    nth: int | set[int] = 1,
    before: Callable[[], None] | None = None,
) -> list[tuple[str, str]]:
    """Make the lab inject fault ``kind`` (``drop``: close the connection on receiving the line,
    unexecuted; ``garble``: corrupt its reply) at the ``nth`` line (or each of a set of them)
    that ``select(instrument, line)`` selects, calling ``before()`` first; instead of its random
    draws. Returns the list of the (instrument, line) hit, filled as they happen. Calls add
    to the faults already set up."""
    hits: list[tuple[str, str]] = []
    wanted = {nth} if isinstance(nth, int) else set(nth)
    seen = [0]
    previous = None if inspect.ismethod(lab.faults.draw) else lab.faults.draw  # one of ours

    def draw(name: str, what: str) -> bool:
        hit = False
        if what == kind:
            line = lab.received(name)[-1][1]
            if select(name, line):
                seen[0] += 1
                hit = seen[0] in wanted
        if hit:
            if before is not None:
                before()
            hits.append((name, line))
        others = previous is not None and previous(name, what)
        return hit or others

    lab.faults.draw = draw
    return hits
