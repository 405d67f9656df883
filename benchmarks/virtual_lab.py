"""EP steps per second through the virtual lab against the direct simulator, and where the time
of a step goes.

The same task (iris, layered 10-16-3 resistor network, centred EP: 3 phases per pattern, batch
16) is trained for ``--steps`` steps twice:

* direct: :class:`~physlearn.simulators.resistor.LinearResistorNetwork` in-process (tap-grid
  quantisation, no exact-gradient diagnostic);
* virtual lab: ``configs/virtual_lab_resistor.yaml`` against ``physlearn lab serve`` running in
  its own process (as instruments are separate machines), through the qcodes drivers, pyvisa-py
  and SCPI over TCP on 127.0.0.1 -- one pattern at a time.

Evaluations, connecting and opening/closing the bench are excluded; what remains per EP step is
split into

* SCPI I/O: time inside pyvisa reads and writes (sockets, the lab's reply time);
* driver stack: the rest of the time inside qcodes parameter calls (validation, ramps, parsing);
* settling: waiting for the network to settle (``equilibrium.settle_time``);
* logging: committing measurements to the Zarr store;
* physlearn compute: everything else -- physlearn's own overhead: the station system's glue
  (envelope checks, tap mapping, conjugates, bookkeeping per pattern) and the orchestrator's
  share (batch splitting, estimator, optimiser, projection, recording).

The last line is physlearn's own overhead (compute + logging) as a fraction of the instrument
I/O time (SCPI I/O + driver stack); the goal is <= 10 %.

    python benchmarks/virtual_lab.py [--steps 40] [--batch 16] [--settle 3e-4] [--in-process]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

import physlearn.orchestrator as orch
from physlearn.config import parse_config
from physlearn.drivers.station_system import StationSystem
from physlearn.drivers.testing import bench_experiment, running_lab, write_station
from physlearn.orchestrator import Campaign, start_run
from physlearn.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


class Probe:
    """Wraps a few methods (benchmark only) to time evaluations, commits and the bench set-up,
    and to capture the system the run builds."""

    def __init__(self) -> None:
        self.system: Any = None
        self.eval_time = 0.0
        self.commit_time = 0.0
        self.setup_time = 0.0
        self.excluded = {"instrument": 0.0, "settle": 0.0, "visa": 0.0}
        self.system_time = 0.0  # inside StationSystem.equilibrate / set_parameters
        self.system_io = 0.0  # ... of which instrument calls and settling

    def counters(self) -> dict[str, float]:
        s = self.system
        if not isinstance(s, StationSystem):
            return {"instrument": 0.0, "settle": 0.0, "visa": 0.0}
        return {
            "instrument": s.timers.instrument,
            "settle": s.timers.settle,
            "visa": s.visa_seconds(),
        }

    def _excluding(self, fn: Callable[..., Any], bucket: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = self.counters()
            t0 = time.perf_counter()
            sys_before = (self.system_time, self.system_io)
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self, bucket, getattr(self, bucket) + time.perf_counter() - t0)
                after = self.counters()
                for k in self.excluded:
                    self.excluded[k] += max(0.0, after[k] - before[k])
                # system calls made by an evaluation or the set-up are not part of the steps
                self.system_time, self.system_io = sys_before

        return wrapper

    def _system_call(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = self.counters()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.system_time += time.perf_counter() - t0
                after = self.counters()
                self.system_io += (after["instrument"] - before["instrument"]) + (
                    after["settle"] - before["settle"]
                )

        return wrapper

    @contextmanager
    def installed(self) -> Iterator[Probe]:
        saved = {
            "build": orch.build_system,
            "evaluate": Campaign.evaluate,
            "commit": RunStore.commit,
            "open": StationSystem.open,
            "close": StationSystem.close,
            "connect": StationSystem.connect,
            "equilibrate": StationSystem.equilibrate,
            "set_parameters": StationSystem.set_parameters,
        }

        def build(config: Any) -> Any:
            self.system = saved["build"](config)
            return self.system

        def commit(store: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return saved["commit"](store, *args, **kwargs)
            finally:
                self.commit_time += time.perf_counter() - t0

        setattr(orch, "build_system", build)  # noqa: B010 - benchmark-only instrumentation
        setattr(Campaign, "evaluate", self._excluding(saved["evaluate"], "eval_time"))  # noqa: B010
        setattr(RunStore, "commit", commit)  # noqa: B010
        for name in ("open", "close", "connect"):
            setattr(StationSystem, name, self._excluding(saved[name], "setup_time"))
        for name in ("equilibrate", "set_parameters"):
            setattr(StationSystem, name, self._system_call(saved[name]))
        try:
            yield self
        finally:
            setattr(orch, "build_system", saved["build"])  # noqa: B010
            setattr(Campaign, "evaluate", saved["evaluate"])  # noqa: B010
            setattr(RunStore, "commit", saved["commit"])  # noqa: B010
            for name in ("open", "close", "connect", "equilibrate", "set_parameters"):
                setattr(StationSystem, name, saved[name])


def timed_run(raw: dict[str, Any], out: Path) -> tuple[float, Probe]:
    """Wall-clock seconds of the EP steps and the probe: the orchestrator's per-step wall time
    (``step_time``: measure, estimate, update, write back, record) plus the commits; evaluations
    and the bench's set-up are outside."""
    probe = Probe()
    with probe.installed():
        res = start_run(parse_config(raw), out)
    if res.status != "success":
        raise RuntimeError(f"benchmark run ended {res.status}")
    steps = float(RunStore.open(out).read("step_time").sum())
    return steps + probe.commit_time, probe


@contextmanager
def lab_process(lab_file: Path, workdir: Path) -> Iterator[Path]:
    """``physlearn lab serve`` in its own process; yields its station file."""
    station = workdir / "station.yaml"
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
        time.sleep(0.2)
        yield station
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="EP steps per run (default 40)")
    p.add_argument("--batch", type=int, default=16, help="patterns per step (default 16)")
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="system settle time per phase, s (default: config)",
    )
    p.add_argument("--tau", type=float, default=None, help="lab settling time constant, s")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="serve the lab in a thread of the benchmark process (shares the GIL)",
    )
    args = p.parse_args(argv)

    schedule = {"steps": args.steps, "batch_size": args.batch, "eval_every": args.steps + 1}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        store = {"root": str(tmp), "flush_every": 0}
        sim = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())
        sim.update(schedule=schedule, store=store, diagnostics={"exact_gradient": False})
        sim["system"]["conductance"]["resolution"] = (1e-2 - 1e-5) / 1023
        t_sim, sim_probe = timed_run(sim, tmp / "sim.zarr")

        lab_raw = yaml.safe_load((CONFIGS / "virtual_lab_bench.yaml").read_text())
        if args.tau is not None:
            lab_raw["settling_tau"] = args.tau
        lab_file = tmp / "lab.yaml"
        lab_file.write_text(yaml.safe_dump(lab_raw))
        exp = yaml.safe_load((CONFIGS / "virtual_lab_resistor.yaml").read_text())
        exp.update(schedule=schedule, store={**exp.get("store", {}), **store})
        serve = _thread_lab(lab_file, tmp) if args.in_process else lab_process(lab_file, tmp)
        with serve as station:
            eq = dict(exp["system"].get("equilibrium", {}))
            if args.settle is not None:
                eq["settle_time"] = args.settle
            raw = bench_experiment(exp, station, equilibrium=eq)
            t_lab, probe = timed_run(raw, tmp / "lab.zarr")

    n = args.steps
    c, x = probe.counters(), probe.excluded
    instrument = c["instrument"] - x["instrument"]
    visa = c["visa"] - x["visa"]
    settle = c["settle"] - x["settle"]
    logging = probe.commit_time
    driver = max(0.0, instrument - visa)
    compute = max(0.0, t_lab - instrument - settle - logging)
    glue = max(0.0, probe.system_time - probe.system_io)
    phases = 3 * args.batch
    where = "a thread of this process" if args.in_process else "its own process"
    print(
        f"virtual lab vs direct simulator: layered 10-16-3 network, iris, centred EP "
        f"({phases} phases of one pattern per step), {n} steps; lab served in {where}"
    )
    print(f"{'':34s}{'EP steps/s':>12s}{'ms/step':>10s}")
    print(f"{'direct simulator':34s}{n / t_sim:12.2f}{1e3 * t_sim / n:10.2f}")
    print(f"{'virtual lab (qcodes, SCPI over TCP)':34s}{n / t_lab:12.2f}{1e3 * t_lab / n:10.2f}")
    print(f"slowdown: {t_lab / t_sim:.0f}x; per phase {1e3 * t_lab / (n * phases):.2f} ms")
    print("time per EP step through the virtual lab:")
    for label, v in (
        ("SCPI I/O (pyvisa read/write)", visa),
        ("driver stack (qcodes)", driver),
        ("settling (waiting)", settle),
        ("physlearn compute", compute),
        ("  of which the station system", glue),
        ("  of which orchestrator, estimator", max(0.0, compute - glue)),
        ("logging (Zarr commits)", logging),
    ):
        print(f"  {label:32s}{1e3 * v / n:9.2f} ms {100 * v / t_lab:6.1f} %")
    io = visa + driver
    print(
        f"physlearn overhead (compute + logging) / instrument I/O (SCPI + driver): "
        f"{100 * (compute + logging) / io:.1f} % (goal <= 10 %)"
    )
    return 0


@contextmanager
def _thread_lab(lab_file: Path, tmp: Path) -> Iterator[Path]:
    with running_lab(lab_file) as lab:
        yield write_station(lab, tmp / "station.yaml")


if __name__ == "__main__":
    sys.exit(main())
