"""Sweep throughput: runs per minute on a 2-worker Dask LocalCluster vs one process.

The same sweep (the quickstart resistor network on iris, ``--runs`` seeds of ``--steps`` steps
each) runs twice through :func:`physlearn.sweep.run_sweep`: once with ``workers=0`` (one run after
another in this process, no Dask) and once on a LocalCluster of ``--workers`` worker processes
with one thread each. The headline ratio is end to end: cluster start-up, worker imports and
shutdown are charged to the cluster. A second ratio counts from the first finished run to the last
(steady state). The modes alternate over ``--repeat`` rounds and the best time of each counts,
which damps the noise of a machine shared with other work (the load average is printed). The last
line printed is the headline ratio.

    python benchmarks/sweep_throughput.py --runs 12 --steps 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from physlearn.sweep import RunRecord, parse_sweep, run_sweep

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


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the cluster's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(sweep: Any, out: Path, workers: int) -> tuple[float, float, int, float]:
    """(wall seconds, seconds from the first finished run to the last, runs finished, CPU
    seconds of the driver and its workers)."""
    done: list[float] = []

    def note(rec: RunRecord) -> None:
        done.append(time.perf_counter())

    t0, c0 = time.perf_counter(), _cpu()
    result = run_sweep(sweep, out, workers=workers, on_result=note)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if not result.all_succeeded:
        bad = [r for r in result.records if r.status != "success"]
        raise SystemExit(f"{len(bad)} runs did not succeed, e.g. {bad[0].run_id}: {bad[0].error}")
    return wall, done[-1] - done[0], len(done), cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=12, help="runs in the sweep (seeds)")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps per run")
    p.add_argument("--batch-size", type=int, default=16, help="patterns per step")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="rounds, the modes alternating; the best time of each mode counts",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=ROOT / "configs" / "quickstart.yaml",
        help="base experiment config",
    )
    args = p.parse_args(argv)
    if args.runs < 2 or args.repeat < 1:
        p.error("--runs must be at least 2 and --repeat at least 1")
    sweep = make_sweep(args.config, args.runs, args.steps, args.batch_size)
    name = yaml.safe_load(args.config.read_text())["name"]
    print(f"{args.runs} runs x {args.steps} steps of {name}, batch {args.batch_size}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    modes = {"one process": 0, f"LocalCluster, {args.workers} processes": args.workers}
    best: dict[str, tuple[float, float, int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="physlearn-sweep-bench-") as tmp:
        for r in range(args.repeat):
            order = list(modes.items()) if r % 2 == 0 else list(modes.items())[::-1]
            for mode, workers in order:
                t = timed(sweep, Path(tmp) / f"{workers}-{r}.zarr", workers=workers)
                print(f"  round {r + 1}: {mode}: {t[0]:.1f} s")
                if mode not in best or t[0] < best[mode][0]:
                    best[mode] = t
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    n = args.runs
    print(
        f"{'mode (best of ' + str(args.repeat) + ')':<28} {'wall s':>8} {'runs/min':>9} "
        f"{'steady runs/min':>16} {'CPU s/run':>10} {'CPUs busy':>10}"
    )
    for mode, (wall, steady, k, cpu) in best.items():
        steady_rate = 60 * (k - 1) / steady if steady > 0 else float("nan")
        print(
            f"{mode:<28} {wall:8.1f} {60 * n / wall:9.1f} {steady_rate:16.1f} {cpu / n:10.2f} "
            f"{cpu / wall:10.2f}"
        )
    serial, cluster = best.values()
    steady_ratio = (serial[1] / (serial[2] - 1)) / (cluster[1] / (cluster[2] - 1))
    print(f"steady-state ratio (first to last finished run): {steady_ratio:.2f}x")
    ratio = serial[0] / cluster[0]
    print(f"ratio (runs/min, {args.workers}-worker LocalCluster / one process): {ratio:.2f}x")


if __name__ == "__main__":
    main()
