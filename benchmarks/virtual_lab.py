"""A bench campaign at realistic timing: the quickstart task on the stock-driver bench, where its
wall time goes, and what the instruments' own reading memory and bus triggers would save.

The lab is ``configs/virtual_lab_stock_bench.yaml`` (3 N6705B, 3 Keithley 2450, a 34980A with a
34934A matrix, a 34465A, digital potentiometers) served by ``physlearn lab serve`` in its own
process (instruments are other machines), with ``stock.timing`` set by ``--timing`` (default
``datasheet``: the figures of :class:`~physlearn.drivers.virtual_lab.dialects.specs.TimingSpec`,
each with its source). The experiment is ``configs/bench_qcodes_stock.yaml``, driven through
qcodes' stock drivers over TCP exactly as ``physlearn run`` drives it.

1. Campaign. A shortened campaign (``--steps`` EP steps of ``--batch`` patterns, the
   evaluation at step 0, then one more evaluation, timed on its own) runs through physlearn's
   own :class:`~physlearn.run.campaign.Campaign`; the full schedule of the config (its steps and
   evaluations) is EXTRAPOLATED from the measured set-up, time per step and time per
   evaluation. Buckets, per EP step, over the steps after the first (the time between the
   ends of consecutive steps, so commits and the loop are included):

   * instrument: the station system's ``Timers.instrument`` -- wall time inside driver calls:
     qcodes parameters and drivers, pyvisa / pyvisa-py, the sockets and the instruments' replies
     (the lab's data-sheet durations, its own Python, the loopback);
   * settling: ``Timers.settle`` -- the system's deliberate waits (``equilibrium.settle_time``);
   * physlearn itself: the rest -- estimator, optimiser, projection, the station system's own
     code (envelope checks, tap mapping, conjugates), recording and commits, the loop; split
     into the part inside the orchestrator's ``step_time`` and the part between steps.

   The run thread's CPU time over the same steps is shown too: physlearn's own time is CPU work
   (it blocks on nothing but the recorder), so CPU time minus physlearn's own time estimates the
   Python time of qcodes and pyvisa inside "instrument" (a lower bound on a loaded machine).

2. Reading loops, timed directly on the served lab (same timing), 29 nodes each:

   * READ? per node (what the station system does): close the node's relay, ``READ?``, open;
   * reading memory + bus triggers (``tests/test_stock_drivers.py::
     test_bus_triggers_fetch_one_reading_per_node``): ``INIT`` with ``TRIG:SOUR BUS``, then per
     node close, ``*TRG``, open; one ``FETCh?`` at the end. Not physically valid: ``*TRG`` is
     not acknowledged, so the relay opens while the meter still integrates (the virtual 34465A
     samples at the trigger, so here the readings come out right; on a bench they would not);
   * the same, waiting after each ``*TRG`` for the trigger delay + integration + one command
     latency before opening: valid as long as the meter starts within that latency.

   For each (the median of ``--repeat`` rounds, the three loops interleaved so they share the
   machine's load): wall time per node, the client's CPU time per node (qcodes + pyvisa Python:
   the calling thread's CPU time), command lines per node (counted on an in-process lab in fast
   mode) and their data-sheet time summed serially (per line the latency, per relay its
   close/open time, per reading the trigger delay + integration). Wall minus data-sheet minus
   client CPU is the virtual lab's own overhead (TCP loopback, the server's Python, its sleeps'
   overshoot), which a real bench replaces by its LAN (whose latency the data-sheet figures
   hold). The ratios are given for a real bench (data-sheet time + client CPU: the lab's
   overhead, large and load-dependent, left out) and as measured. The last lines project the
   campaign onto real instruments: every reading at loop 1's data-sheet time + client CPU,
   physlearn and the settling as measured (each phase's levels and syncs are not counted).

    python benchmarks/virtual_lab.py [--steps 3] [--batch 16] [--timing datasheet|fast]
    python benchmarks/virtual_lab.py --fast        # smoke run: fast timing, 2 steps of batch 2
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from physlearn.config import ExperimentConfig, parse_config
from physlearn.drivers.station.config import StationConfig
from physlearn.drivers.station.roles import SwitchedProbe
from physlearn.drivers.virtual_lab.dialects.keysight_34465a import auto_trigger_delay
from physlearn.drivers.virtual_lab.dialects.specs import TimingSpec
from physlearn.drivers.virtual_lab.testing import (
    bench_experiment,
    lab_config,
    running_lab,
    write_station,
)
from physlearn.run.campaign import Campaign
from physlearn.run.start import build_system, create_store

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "configs" / "virtual_lab_stock_bench.yaml"
EXPERIMENT = ROOT / "configs" / "bench_qcodes_stock.yaml"
DRIVER_KW: dict[str, Any] = {"visalib": "@py", "timeout": 5}


# -- the lab ---------------------------------------------------------------------------------
def lab_raw(timing: str) -> dict[str, Any]:
    """The stock bench's lab config with ``stock.timing`` set to ``timing`` (its defaults)."""
    raw: dict[str, Any] = yaml.safe_load(LAB.read_text())
    raw["stock"]["timing"] = {"mode": timing}
    return raw


@contextmanager
def lab_process(raw: dict[str, Any], workdir: Path) -> Iterator[Path]:
    """``physlearn lab serve`` on ephemeral ports in its own process; yields its station file."""
    lab_file, station = workdir / "lab.yaml", workdir / "station.yaml"
    lab_file.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "physlearn.cli", "lab", "serve", str(lab_file), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--station-out", str(station)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        t0 = time.monotonic()
        while not station.exists():
            if proc.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"lab serve did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        time.sleep(0.2)  # the station file is written before the last port listens
        yield station
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the campaign ----------------------------------------------------------------------------
@dataclass
class Snap:
    """Clocks and the station system's timers at one moment."""

    wall: float
    cpu: float
    instrument: float
    settle: float
    readings: int

    @staticmethod
    def take(system: Any) -> Snap:
        t = system.timers
        return Snap(time.perf_counter(), time.thread_time(), t.instrument, t.settle, t.readings)

    def minus(self, other: Snap) -> Snap:
        return Snap(
            self.wall - other.wall,
            self.cpu - other.cpu,
            self.instrument - other.instrument,
            self.settle - other.settle,
            self.readings - other.readings,
        )


@dataclass
class CampaignTimes:
    """What the shortened campaign measured (seconds)."""

    setup: float  # build, create the store, connect, configure, write the initial weights
    steps: Snap  # the steps after the first, between the ends of consecutive steps
    n_steps: int
    in_steps: float  # the orchestrator's step_time over those steps
    evaluation: Snap  # one evaluation on the test split
    close: float  # closing the bench (safe state) and the store


def run_campaign(exp: dict[str, Any], steps: int, batch: int, out: Path) -> CampaignTimes:
    """The shortened campaign: an evaluation, ``steps`` EP steps, one timed evaluation."""
    raw = {**exp, "schedule": {"steps": steps + 1, "batch_size": batch, "eval_every": steps + 2}}
    raw["store"] = {**raw.get("store", {}), "root": str(out.parent)}
    t0 = time.perf_counter()
    config = parse_config(raw)
    system = build_system(config)
    store = create_store(config, system, out)
    try:
        campaign = Campaign(config, system, store)
        snaps: list[Snap] = []

        def on_step(done: int) -> None:
            snaps.append(Snap.take(system))
            if done == steps:  # stop before the schedule's last step and its evaluation
                campaign.flag.count = 1

        with system:
            start = campaign.initialise()
            setup = time.perf_counter() - t0
            campaign.run(start, None, on_step)
            before = Snap.take(system)
            campaign.evaluate(steps)
            evaluation = Snap.take(system).minus(before)
            t1 = time.perf_counter()
        step_time = store.read("step_time")
        in_steps = float(step_time[1:steps].sum())
        close = time.perf_counter() - t1
    finally:
        store.release()
    return CampaignTimes(setup, snaps[-1].minus(snaps[0]), steps - 1, in_steps, evaluation, close)


def n_evaluations(config: ExperimentConfig) -> int:
    """Evaluations of the full schedule: at step 0, every ``eval_every`` steps and at the end."""
    total, every = config.total_steps(), config.schedule.eval_every
    return 1 + len({d for d in range(1, total + 1) if d % every == 0 or d == total})


# -- the reading loops -------------------------------------------------------------------------
@dataclass
class Meter:
    """The 34465A and the 34934A matrix card as the station system drives them."""

    dmm: Any
    card: Any
    row: int
    columns: list[int]
    wait: float  # the buffered loop's wait after *TRG: trigger delay + integration + latency

    def read_per_node(self) -> list[float]:
        out = []
        for col in self.columns:
            self.card.connect(self.row, col)
            out.append(float(self.dmm.volt()))
            self.card.disconnect(self.row, col)
        return out

    def buffered(self, wait: bool = False) -> list[float]:
        d = self.dmm
        d.trigger.source("BUS")
        d.trigger.count(len(self.columns))
        d.sample.count(1)
        d.init_measurement()
        for col in self.columns:
            self.card.connect(self.row, col)
            d.trigger.force()
            if wait:
                time.sleep(self.wait)
            self.card.disconnect(self.row, col)
        out = [float(x) for x in d.fetch()]
        d.trigger.source("IMM")
        d.trigger.count(1)
        return out

    def buffered_wait(self) -> list[float]:
        return self.buffered(wait=True)


LOOPS: list[tuple[str, str, str]] = [
    ("read_per_node", "READ? per node (the station)", "yes"),
    ("buffered", "memory + *TRG, no wait", "no: relay opens mid-reading"),
    ("buffered_wait", "memory + *TRG + wait", "yes, if latency bounds it"),
]


def switched_probes(exp: ExperimentConfig) -> SwitchedProbe:
    """The experiment's switch-matrix probes section (the stock bench reads nodes so)."""
    system = exp.system
    if not (isinstance(system, StationConfig) and isinstance(system.probes, SwitchedProbe)):
        raise ValueError(f"{EXPERIMENT.name}: expected a station system with switched probes")
    return system.probes


@contextmanager
def meter(station: Path, exp: ExperimentConfig, timing: TimingSpec) -> Iterator[Meter]:
    """The stock drivers of the station's 34465A and 34980A, set as the probes section says."""
    from qcodes.instrument_drivers.Keysight import Keysight34465A, Keysight34980A

    insts = yaml.safe_load(station.read_text())["instruments"]
    probes = switched_probes(exp)
    dmm = Keysight34465A("bench_dmm", insts["dmm34465a"]["address"], **DRIVER_KW)
    mux = Keysight34980A("bench_mux", insts["mux"]["address"], **DRIVER_KW)
    try:
        for name, value in probes.settings.items():
            getattr(dmm, name)(value)
        nplc = float(dmm.NPLC())
        wait = timing.get("latency") + auto_trigger_delay(timing, nplc)
        wait += reading_time(timing, nplc, dmm.autozero())
        yield Meter(dmm, mux.module[probes.row], probes.row, probes.column_list(), wait)
    finally:
        dmm.close()
        mux.close()


def reading_time(timing: TimingSpec, nplc: float, autozero: Any) -> float:
    """Integration time of one reading: NPLC / f_line, x ``autozero_factor`` with autozero on."""
    zero = str(autozero).upper() in ("ON", "1", "TRUE")
    t = nplc / timing.line_frequency * (timing.autozero_factor if zero else 1.0)
    return t if timing.mode == "datasheet" else 0.0


def line_counts(exp: ExperimentConfig, timing: TimingSpec) -> dict[str, list[str]]:
    """The command lines each loop sends (one pass on an in-process lab in fast mode)."""
    out: dict[str, list[str]] = {}
    with running_lab(lab_raw("fast"), record=True) as lab, tempfile.TemporaryDirectory() as tmp:
        station = write_station(lab, Path(tmp) / "station.yaml", timeout=5)
        with meter(station, exp, timing) as m:
            for name, _, _ in LOOPS:
                lab.clear_received()
                getattr(m, name)()
                out[name] = [line for _, line in lab.received()]
    return out


def datasheet_path(lines: list[str], timing: TimingSpec, per_reading: float, wait: float) -> float:
    """The data-sheet time the client waits through ``lines``: per line the latency, per relay
    its close or open time, per ``READ?`` the trigger delay + integration. A ``*TRG`` is not
    acknowledged (the meter works while the client switches relays): it costs the client only
    ``wait``, its own wait for the reading (0 in the loop that does not wait)."""
    total = 0.0
    for line in lines:
        head = line.split(" ")[0].upper()
        if head == "*TRG":
            total += wait
            continue
        total += timing.get("latency")
        if head.startswith("ROUT:CLOS") and not head.endswith("?"):
            total += timing.get("relay_close")
        elif head.startswith("ROUT:OPEN") and not head.endswith("?"):
            total += timing.get("relay_open")
        elif head == "READ?":
            total += per_reading
    return total


@dataclass
class LoopTimes:
    label: str
    valid: str
    wall: float  # seconds per node
    cpu: float  # client CPU seconds per node
    lines: float  # command lines per node
    datasheet: float  # data-sheet seconds per node the client waits through


def time_loops(
    station: Path, exp: ExperimentConfig, timing: TimingSpec, repeat: int
) -> list[LoopTimes]:
    """The loops on the served lab, ``repeat`` rounds of all three in turn (so they share the
    machine's load); per loop the median round, per node."""
    counts = line_counts(exp, timing)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in LOOPS}
    with meter(station, exp, timing) as m:
        n = len(m.columns)
        per_reading = m.wait - timing.get("latency")
        for _ in range(repeat):
            for name, _, _ in LOOPS:
                w0, c0 = time.perf_counter(), time.thread_time()
                getattr(m, name)()
                rounds[name].append((time.perf_counter() - w0, time.thread_time() - c0))
    out = []
    for name, label, valid in LOOPS:
        lines = counts[name]
        ds = datasheet_path(lines, timing, per_reading, m.wait if name == "buffered_wait" else 0)
        wall = statistics.median(w for w, _ in rounds[name])
        cpu = statistics.median(c for _, c in rounds[name])
        out.append(LoopTimes(label, valid, wall / n, cpu / n, len(lines) / n, ds / n))
    return out


# -- the report --------------------------------------------------------------------------------
def print_header(args: argparse.Namespace, exp: ExperimentConfig, n: int) -> float:
    """What was measured and what is extrapolated; returns the batch scale of the steps."""
    total, n_eval = exp.total_steps(), n_evaluations(exp)
    scale = exp.schedule.batch_size / args.batch  # a step's time grows with its patterns
    print(f"bench campaign: {exp.name} (quickstart task on the stock-driver bench), stock.timing ="
          f" {args.timing}; lab served by `physlearn lab serve` in its own process")  # fmt: skip
    print(f"measured: {args.steps} EP steps of batch {args.batch} (buckets over the last {n}) + 1"
          f" evaluation; EXTRAPOLATED to the full schedule of {EXPERIMENT.name}: {total} steps of"
          f" batch {exp.schedule.batch_size}, {n_eval} evaluations"
          + (f" (steps scaled x{scale:g} for the batch)" if scale != 1 else ""))  # fmt: skip
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs (wall-clock figures stretch with load)")
    return scale


def print_campaign(c: CampaignTimes) -> None:
    """The buckets per EP step (and of one evaluation)."""
    n, s, e = c.n_steps, c.steps, c.evaluation
    own = s.wall - s.instrument - s.settle
    print(f"  {'':50s}{'per step':>10s}{'share':>9s}{'evaluation':>12s}")
    rows = [
        ("wall", s.wall, e.wall),
        ("instrument (driver calls: qcodes, pyvisa, replies)", s.instrument, e.instrument),
        ("settling waits", s.settle, e.settle),
        ("physlearn itself (wall - instrument - settling)", own, e.wall - e.instrument - e.settle),
        ("  inside step_time", c.in_steps - s.instrument - s.settle, None),
        ("  between steps (commits, loop)", s.wall - c.in_steps, None),
        ("run thread CPU (physlearn + qcodes + pyvisa)", s.cpu, e.cpu),
        ("  qcodes + pyvisa estimate (CPU - physlearn)", max(0.0, s.cpu - own), None),
    ]
    for label, v, ev in rows:
        ev_s = "" if ev is None else f"{ev:10.3f} s"
        print(f"  {label:50s}{v / n:8.3f} s{100 * v / s.wall:7.2f} %{ev_s}")
    print(f"  node readings per step {s.readings / n:.0f}, wall per reading "
          f"{1e3 * s.wall / max(1, s.readings):.2f} ms")  # fmt: skip


def print_loops(loops: list[LoopTimes], readings_per_step: float) -> None:
    """The reading loops' table and ratios."""
    print("reading loops on the served lab (ms per node, median round; data-sheet: the time the"
          " client waits through at the instruments' data-sheet timing):")  # fmt: skip
    print(f"  {'loop':30s}{'wall':>7s}{'client CPU':>11s}{'lines':>7s}{'data-sheet':>11s}"
          f"{'lab overhead':>13s}  physically valid")  # fmt: skip
    for lp in loops:
        rest = lp.wall - lp.datasheet - lp.cpu
        print(f"  {lp.label:30s}{1e3 * lp.wall:7.2f}{1e3 * lp.cpu:11.2f}{lp.lines:7.1f}"
              f"{1e3 * lp.datasheet:11.2f}{1e3 * rest:13.2f}  {lp.valid}")  # fmt: skip
    a, b, w = loops
    real = [lp.datasheet + lp.cpu for lp in loops]  # what a real bench would take
    print(f"ratio READ?-per-node / buffered, at data-sheet timing + client CPU (a real bench): "
          f"{real[0] / real[1]:.2f}x without the wait (not valid), {real[0] / real[2]:.2f}x "
          f"with it; virtual lab: {a.wall / b.wall:.2f}x, {a.wall / w.wall:.2f}x")  # fmt: skip
    print(f"  a step's {readings_per_step:.0f} readings through the valid buffered loop instead: "
          f"{readings_per_step * (real[2] - real[0]):+.2f} s per step on a real bench")  # fmt: skip


def print_report(
    args: argparse.Namespace, exp: ExperimentConfig, c: CampaignTimes, loops: list[LoopTimes]
) -> float:
    """Print the table and the ratios; return physlearn's own share of the measured steps."""
    n, s, e = c.n_steps, c.steps, c.evaluation
    scale = print_header(args, exp, n)
    print_campaign(c)
    steps, evals = exp.total_steps() * scale / n, n_evaluations(exp)
    full = c.setup + steps * s.wall + evals * e.wall + c.close
    print(f"set-up {c.setup:.1f} s, close {c.close:.1f} s; full campaign ~ {full:.0f} s = "
          f"{full / 3600:.2f} h (EXTRAPOLATED)")  # fmt: skip
    print_loops(loops, s.readings / n)
    # a real bench: every reading takes loop 1's data-sheet time + client CPU (the lab's own
    # overhead gone; the LAN's latency is in the data-sheet figures), physlearn and the
    # settling as measured; the levels and syncs of each phase are not counted (a lower bound)
    per = loops[0].datasheet + loops[0].cpu
    own = s.wall - s.instrument - s.settle
    bench = s.readings * per + own + s.settle
    bench_eval = e.readings * per + e.wall - e.instrument
    bench_full = c.setup + steps * bench + evals * bench_eval + c.close
    print(f"projected on real instruments ({1e3 * per:.2f} ms per reading; levels and syncs not "
          f"counted): {bench / n:.2f} s per step, full campaign ~ {bench_full / 3600:.2f} h, "
          f"physlearn's share {100 * own / bench:.2f} %")  # fmt: skip
    share = own / s.wall
    print(f"physlearn's own share of a step, measured: {100 * share:.2f} % (goal <= 1 %)")
    return share


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="EP steps measured (>= 2; default 3)")
    p.add_argument("--batch", type=int, default=16, help="patterns per step (default 16)")
    p.add_argument(
        "--timing", choices=("datasheet", "fast"), default="datasheet", help="stock.timing mode"
    )
    p.add_argument("--repeat", type=int, default=7, help="rounds of the reading loops (median)")
    p.add_argument("--fast", action="store_true", help="smoke run: fast timing, 2 steps, batch 2")
    args = p.parse_args(argv)
    if args.fast:
        args.timing, args.steps, args.batch, args.repeat = "fast", 2, 2, 1
    if args.steps < 2:
        p.error("--steps: at least 2 (the buckets are taken over the steps after the first)")
    raw_lab = lab_raw(args.timing)
    timing = lab_config(raw_lab).stock.timing
    exp_raw = yaml.safe_load(EXPERIMENT.read_text())
    exp = parse_config(exp_raw)
    with tempfile.TemporaryDirectory() as tmpdir, lab_process(raw_lab, Path(tmpdir)) as station:
        bench = bench_experiment(exp_raw, station)
        times = run_campaign(bench, args.steps, args.batch, Path(tmpdir) / "run.zarr")
        loops = time_loops(station, exp, timing, args.repeat)
    print_report(args, exp, times, loops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
