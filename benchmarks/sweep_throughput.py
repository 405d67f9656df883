"""Sweep throughput: runs per minute on a 2-worker Dask LocalCluster vs one process.

The same sweep runs twice through :func:`physlearn.sweep.run_sweep`: once with ``workers=0`` (one
run after another in this process, no Dask) and once on a LocalCluster of ``--workers`` worker
processes with one thread each. By default the sweep is the quickstart resistor network on iris,
``--runs`` seeds of ``--steps`` steps; ``--sweep FILE`` takes a real sweep file instead (e.g.
``configs/sweep_architectures.yaml``, ``--seeds`` keeping its first seeds).

The headline ratio is end to end: the cluster's start (its own column: the start itself, and how
much of it the driver waited for after planning and setting up the store), the workers' imports,
the runs and the cluster's shutdown are all charged to the cluster. The one-process side runs
with this process's imports warm after the first round (it is not charged for them), and with
its BLAS threads as they are (``--serial-blas-threads`` pins them). A second ratio counts from
the first finished run to the last (steady state). The modes alternate over ``--repeat`` rounds
(the order flips every round) and the best time of each counts, which damps the noise of a
machine shared with other work; the load average is printed with every measurement, and the
median of the per-round ratios beside the best-of ratio. The last line printed is the headline
ratio.

    python benchmarks/sweep_throughput.py --runs 12 --steps 1000
    python benchmarks/sweep_throughput.py --sweep configs/sweep_architectures.yaml --seeds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from physlearn.sweep.execute import run_sweep
from physlearn.sweep.expand import load_sweep, parse_sweep
from physlearn.sweep.plan import RunRecord

ROOT = Path(__file__).resolve().parents[1]


def make_sweep(config: Path, runs: int, steps: int, batch: int) -> Any:
    spec = {
        "name": "throughput",
        "base": str(config.resolve()),
        "set": {
            "schedule": {"steps": steps, "batch_size": batch, "eval_every": max(1, steps // 4)},
        },
        "seeds": runs,
    }
    return parse_sweep(spec, source=None)


def sweep_file(path: Path, seeds: int | None) -> Any:
    """A sweep file as it is, or with only its first ``seeds`` seeds."""
    if seeds is None:
        return load_sweep(path)
    raw = yaml.safe_load(path.read_text())
    listed = raw.get("seeds")
    all_seeds = list(range(listed)) if isinstance(listed, int) else list(listed or [0])
    raw["seeds"] = all_seeds[:seeds]
    return parse_sweep(raw, source=path)


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the cluster's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Timing:
    wall: float  # seconds, run_sweep end to end
    first: float  # seconds to the first finished run
    steady: float  # seconds from the first finished run to the last
    runs: int
    cpu: float  # CPU seconds of the driver and its workers
    load: float  # 1-minute load average before the measurement
    cluster: dict[str, float] = field(default_factory=dict)


def timed(sweep: Any, out: Path, workers: int, blas_threads: int | None) -> Timing:
    done: list[float] = []

    def note(rec: RunRecord) -> None:
        done.append(time.perf_counter())

    limit: Any = nullcontext()
    if workers == 0 and blas_threads is not None:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=blas_threads, user_api="blas")
    load = os.getloadavg()[0]
    with limit:
        t0, c0 = time.perf_counter(), _cpu()
        result = run_sweep(sweep, out, workers=workers, on_result=note)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if not result.all_succeeded:
        bad = [r for r in result.records if r.status != "success"]
        raise SystemExit(f"{len(bad)} runs did not succeed, e.g. {bad[0].run_id}: {bad[0].error}")
    timings = getattr(result, "timings", {})  # absent before physlearn recorded them
    return Timing(wall, done[0] - t0, done[-1] - done[0], len(done), cpu, load, timings)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=12, help="runs in the sweep (seeds)")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps per run")
    p.add_argument("--batch-size", type=int, default=16, help="patterns per step")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds, the modes alternating; the best time of each mode counts",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=ROOT / "configs" / "quickstart.yaml",
        help="base experiment config (without --sweep)",
    )
    p.add_argument("--sweep", type=Path, help="benchmark this sweep file instead")
    p.add_argument("--seeds", type=int, help="with --sweep: keep only its first N seeds")
    p.add_argument(
        "--serial-blas-threads",
        type=int,
        help="pin the one-process side's BLAS threads (threadpoolctl); default: as they are",
    )
    args = p.parse_args(argv)
    if args.runs < 2 or args.repeat < 1:
        p.error("--runs must be at least 2 and --repeat at least 1")
    if args.sweep is not None:
        sweep = sweep_file(args.sweep, args.seeds)
        steps = sorted({r.config.total_steps() for r in sweep.runs})
        print(f"{len(sweep.runs)} runs of {args.sweep.name} ({'/'.join(map(str, steps))} steps)")
    else:
        sweep = make_sweep(args.config, args.runs, args.steps, args.batch_size)
        name = yaml.safe_load(args.config.read_text())["name"]
        print(f"{args.runs} runs x {args.steps} steps of {name}, batch {args.batch_size}")
    if len(sweep.runs) < 2:
        p.error("the sweep needs at least 2 runs")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    serial_mode, cluster_mode = "one process", f"LocalCluster, {args.workers} processes"
    modes = {serial_mode: 0, cluster_mode: args.workers}
    times: dict[str, list[Timing]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="physlearn-sweep-bench-") as tmp:
        for r in range(args.repeat):
            order = list(modes.items()) if r % 2 == 0 else list(modes.items())[::-1]
            for mode, workers in order:
                t = timed(
                    sweep, Path(tmp) / f"{workers}-{r}.zarr", workers, args.serial_blas_threads
                )
                times[mode].append(t)
                extra = "".join(f", {k} {v:.2f} s" for k, v in t.cluster.items())
                print(
                    f"  round {r + 1}: {mode}: {t.wall:.1f} s (load {t.load:.1f}; first run "
                    f"done at {t.first:.1f} s{extra})",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    n = len(sweep.runs)
    best = {m: min(ts, key=lambda t: t.wall) for m, ts in times.items()}
    print(
        f"{'mode (best of ' + str(args.repeat) + ')':<28} {'wall s':>7} {'runs/min':>9} "
        f"{'steady runs/min':>16} {'1st run s':>10} {'cluster start/wait/close s':>27} "
        f"{'CPU s/run':>10} {'CPUs busy':>10}"
    )
    for mode, t in best.items():
        steady_rate = 60 * (t.runs - 1) / t.steady if t.steady > 0 else float("nan")
        c = t.cluster
        cl = (
            f"{c.get('cluster_start', 0):.2f}/{c.get('cluster_wait', 0):.2f}/"
            f"{c.get('cluster_close', 0):.2f}"
            if c
            else "-"
        )
        print(
            f"{mode:<28} {t.wall:7.1f} {60 * n / t.wall:9.1f} {steady_rate:16.1f} "
            f"{t.first:10.1f} {cl:>27} {t.cpu / n:10.2f} {t.cpu / t.wall:10.2f}"
        )
    serial, cluster = best[serial_mode], best[cluster_mode]
    steady_ratio = (serial.steady / (serial.runs - 1)) / (cluster.steady / (cluster.runs - 1))
    paired = [s.wall / c.wall for s, c in zip(times[serial_mode], times[cluster_mode], strict=True)]
    print(f"steady-state ratio (first to last finished run): {steady_ratio:.2f}x")
    print(
        f"per-round ratios: {', '.join(f'{x:.2f}' for x in paired)} "
        f"(median {statistics.median(paired):.2f}x)"
    )
    ratio = serial.wall / cluster.wall
    print(f"ratio (runs/min, {args.workers}-worker LocalCluster / one process): {ratio:.2f}x")


if __name__ == "__main__":
    main()
