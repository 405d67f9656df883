"""EP steps per second through the virtual lab against the direct simulator, and where the time
of a step goes.

The same task (iris, layered 10-16-3 resistor network, centred EP: 3 phases per pattern, batch
16) is trained for ``--steps`` steps twice:

* direct: :class:`~physlearn.simulators.resistor.linear.LinearResistorNetwork` in-process (tap-grid
  quantisation, no exact-gradient diagnostic);
* virtual lab: ``configs/virtual_lab_resistor.yaml`` against ``physlearn lab serve`` running in
  its own process (as instruments are separate machines), through the qcodes drivers, pyvisa-py
  and SCPI over TCP on 127.0.0.1 -- one pattern at a time; a step is the free phase of the
  batch, then both nudged phases in one sweep (``equilibrate_many``).

Both runs go as ``physlearn run`` goes (``handle_signals``: the run's own SIGINT handler is
installed). Evaluations, connecting and opening/closing the bench are excluded; what remains per
EP step is split into

* instrument I/O: blocked on the socket -- pyvisa-py's ``send`` and its ``select`` waiting for
  the lab's reply (the network and the lab's own time: parsing, solving the circuit);
* VISA library: the rest of the time inside the pyvisa calls (pyvisa / pyvisa-py Python; at a
  real bench the vendor's VISA) -- neither physlearn nor the instrument, counted on neither side;
* driver stack: the rest of the time inside the drivers' calls (qcodes parameters, physlearn's
  SCPI drivers: validation, ramps, building commands, parsing replies);
* settling: waiting for the network to settle (``equilibrium.settle_time``, from the arrival
  of the instruments' confirmation), the system's work inside that wait included up to its
  deadline (reading the confirmation, checking the scan before and putting it into the
  result, preparing the next phase's levels, in a batch's last phase computing the result's
  rows) -- what overruns it is overhead;
* station system: the rest of ``StationSystem.equilibrate`` / ``equilibrate_many`` /
  ``set_parameters`` (envelope checks, tap mapping, conjugates, bookkeeping per pattern);
* orchestrator, estimator: the rest of the step (estimator, optimiser, projection, recording);
* logging: the time the run's own thread is blocked on logging between steps -- inside the
  recorder's ``commit`` / ``wait`` (copying the checkpoint, waiting for the commit in flight).
  The background writer's Zarr commits themselves overlap the next steps (mostly the waits for
  instrument replies) and are not counted serially; they show up only as they slow the run's
  thread (GIL, CPU), spread over the other buckets. The recorder's ``drain`` at the end of the
  run (waiting for the last commit: with the default ``flush_seconds`` and a short run, every
  step's data) is a once-per-run cost like opening the bench: shown on its own line, outside
  the per-step figures.

The last line is physlearn's own overhead -- driver stack + station system + orchestrator +
logging, the run thread's time that is neither instrument I/O nor a deliberate wait -- as a
fraction of the instrument I/O time; the goal is <= 10 %.

    python benchmarks/virtual_lab.py [--steps 40] [--batch 16] [--settle 3e-4] [--in-process]
"""

from __future__ import annotations

import argparse
import os
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

import physlearn.run.start as orch
from physlearn.config import parse_config
from physlearn.drivers.station.system import StationSystem
from physlearn.drivers.virtual_lab.testing import bench_experiment, running_lab, write_station
from physlearn.run.campaign import Campaign
from physlearn.run.records import Recorder
from physlearn.run.start import start_run
from physlearn.store.run_store import RunStore

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


class SocketProbe:
    """Seconds blocked on instrument sockets (benchmark only): pyvisa-py's TCP socket session
    writes (``select`` for writability, ``send``) and, in its reads, the ``select`` that waits
    for the reply. Installed by patching pyvisa-py; ``available`` is False if its layout is not
    the expected one (the benchmark then counts every VISA second as I/O, and says so)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        try:
            from pyvisa_py import tcpip

            self._tcpip: Any = tcpip
            self.available = hasattr(tcpip, "TCPIPSocketSession") and hasattr(tcpip, "select")
        except ImportError:  # pragma: no cover - pyvisa-py is a dependency
            self.available = False

    @contextmanager
    def installed(self) -> Iterator[SocketProbe]:
        if not self.available:
            yield self
            return
        tcpip = self._tcpip
        session = tcpip.TCPIPSocketSession
        write, real_select = session.write, tcpip.select
        probe = self
        depth = [0]  # inside a session write: its select is already counted

        class TimedSelect:
            def __getattr__(self, name: str) -> Any:
                return getattr(real_select, name)

            @staticmethod
            def select(*args: Any, **kwargs: Any) -> Any:
                if depth[0]:
                    return real_select.select(*args, **kwargs)
                t0 = time.perf_counter()
                try:
                    return real_select.select(*args, **kwargs)
                finally:
                    probe.seconds += time.perf_counter() - t0

        def timed_write(self: Any, data: bytes) -> Any:
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return write(self, data)
            finally:
                depth[0] -= 1
                probe.seconds += time.perf_counter() - t0

        setattr(tcpip, "select", TimedSelect())  # noqa: B010 - benchmark-only instrumentation
        setattr(session, "write", timed_write)  # noqa: B010
        try:
            yield self
        finally:
            setattr(tcpip, "select", real_select)  # noqa: B010
            setattr(session, "write", write)  # noqa: B010


class Probe:
    """Wraps a few methods (benchmark only) to time evaluations, the run thread's blocking
    logging calls and the bench set-up, and to capture the system the run builds."""

    def __init__(self) -> None:
        self.system: Any = None
        self.eval_time = 0.0
        self.commit_time = 0.0  # the run's thread inside Recorder.commit / wait (per step)
        self.close_time = 0.0  # ... inside Recorder.drain (once, at the end of the run)
        self.setup_time = 0.0
        self.sockets = SocketProbe()
        self.excluded = {"instrument": 0.0, "settle": 0.0, "visa": 0.0, "socket": 0.0}
        self.system_time = 0.0  # inside StationSystem.equilibrate(_many) / set_parameters
        self.system_io = 0.0  # ... of which instrument calls and settling
        self._inside = 0  # depth of system calls (equilibrate_many may call equilibrate)

    def counters(self) -> dict[str, float]:
        s = self.system
        if not isinstance(s, StationSystem):
            return {"instrument": 0.0, "settle": 0.0, "visa": 0.0, "socket": 0.0}
        visa = s.visa_seconds()
        return {
            "instrument": s.timers.instrument,
            "settle": s.timers.settle,
            "visa": visa,
            "socket": self.sockets.seconds if self.sockets.available else visa,
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
            if self._inside:
                return fn(*args, **kwargs)
            self._inside += 1
            before = self.counters()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._inside -= 1
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
            "rec_commit": Recorder.commit,
            "rec_wait": Recorder.wait,
            "rec_drain": Recorder.drain,
            "open": StationSystem.open,
            "close": StationSystem.close,
            "connect": StationSystem.connect,
            "equilibrate": StationSystem.equilibrate,
            "equilibrate_many": StationSystem.equilibrate_many,
            "set_parameters": StationSystem.set_parameters,
        }

        def build(config: Any) -> Any:
            self.system = saved["build"](config)
            return self.system

        depth = [0]  # commit and drain call wait: count the outermost call only

        def blocking(fn: Callable[..., Any], bucket: str) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if depth[0]:
                    return fn(*args, **kwargs)
                depth[0] += 1
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    depth[0] -= 1
                    setattr(self, bucket, getattr(self, bucket) + time.perf_counter() - t0)

            return wrapper

        setattr(orch, "build_system", build)  # noqa: B010 - benchmark-only instrumentation
        setattr(Campaign, "evaluate", self._excluding(saved["evaluate"], "eval_time"))  # noqa: B010
        for name in ("commit", "wait"):
            setattr(Recorder, name, blocking(saved[f"rec_{name}"], "commit_time"))
        setattr(Recorder, "drain", blocking(saved["rec_drain"], "close_time"))  # noqa: B010
        for name in ("open", "close", "connect"):
            setattr(StationSystem, name, self._excluding(saved[name], "setup_time"))
        system_calls = ("equilibrate", "equilibrate_many", "set_parameters")
        for name in system_calls:
            setattr(StationSystem, name, self._system_call(saved[name]))
        try:
            with self.sockets.installed():
                yield self
        finally:
            setattr(orch, "build_system", saved["build"])  # noqa: B010
            setattr(Campaign, "evaluate", saved["evaluate"])  # noqa: B010
            for name in ("commit", "wait", "drain"):
                setattr(Recorder, name, saved[f"rec_{name}"])
            for name in ("open", "close", "connect", *system_calls):
                setattr(StationSystem, name, saved[name])


def timed_run(raw: dict[str, Any], out: Path) -> tuple[float, Probe]:
    """Wall-clock seconds of the EP steps and the probe: the orchestrator's per-step wall time
    (``step_time``: measure, estimate, update, write back, record) plus the time the run's thread
    is blocked on logging between steps (recorder commit / wait, outside ``step_time``);
    evaluations, the bench's set-up, the final drain and the writer thread's own work are
    outside."""
    probe = Probe()
    with probe.installed():
        res = start_run(parse_config(raw), out, handle_signals=True)  # as `physlearn run`
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
    sock = min(visa, c["socket"] - x["socket"])
    settle = c["settle"] - x["settle"]
    logging = probe.commit_time
    library = visa - sock
    driver = max(0.0, instrument - visa)
    compute = max(0.0, t_lab - instrument - settle - logging)
    glue = max(0.0, probe.system_time - probe.system_io)
    orchestrator = max(0.0, compute - glue)
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
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs (timings are wall-clock: a busy machine")
    print("  stretches every bucket; compare runs at similar load)")
    print("time per EP step through the virtual lab:")
    io_label = "instrument I/O (socket, lab)" if probe.sockets.available else "SCPI I/O (all VISA)"
    for label, v in (
        (io_label, sock),
        ("VISA library (pyvisa Python)", library),
        ("settling (waiting)", settle),
        ("physlearn overhead", driver + glue + orchestrator + logging),
        ("  driver stack (qcodes, drivers)", driver),
        ("  station system", glue),
        ("  orchestrator, estimator", orchestrator),
        ("  logging (blocked on commits)", logging),
    ):
        print(f"  {label:32s}{1e3 * v / n:9.2f} ms {100 * v / t_lab:6.1f} %")
    overhead = driver + glue + orchestrator + logging
    print(
        f"per phase: I/O {1e6 * sock / (n * phases):.0f} us, physlearn overhead "
        f"{1e6 * overhead / (n * phases):.0f} us (driver stack + station system "
        f"{1e6 * (driver + glue) / (n * phases):.0f} us)"
    )
    old = (glue + orchestrator + logging) / (visa + driver)
    print(
        f"(accounting before issue 5: (station system + orchestrator + logging) / (VISA + driver "
        f"stack) = {100 * old:.1f} %)"
    )
    print(
        f"end of run, once (not per step): waiting for the last commit {1e3 * probe.close_time:.1f}"
        " ms"
    )
    print(f"physlearn overhead / instrument I/O: {100 * overhead / sock:.1f} % (goal <= 10 %)")
    return 0


@contextmanager
def _thread_lab(lab_file: Path, tmp: Path) -> Iterator[Path]:
    with running_lab(lab_file) as lab:
        yield write_station(lab, tmp / "station.yaml")


if __name__ == "__main__":
    sys.exit(main())
