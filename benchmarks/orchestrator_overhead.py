"""Orchestrator overhead: a full EP step (estimator, optimiser, projection, write-back, logging of
every measurement to Zarr, commits with checkpoints) against the bare simulator calls of the same
step (set_parameters + free + two nudged equilibrate calls), side by side in one run.

Networks: square resistor lattices (inputs on the first row, outputs on the last), batch 64,
centred EP, conjugates logged per sample or as batch means. Overhead = (full - bare) / bare, per
step in steady state: commits (with checkpoints) by the run's own policy happen inside the timed
steps; the final commit, paid once per run when the loop ends, is timed on its own ("tail").
Bare and full runs alternate in every round, so a load spike or a slower spell of a shared
machine hits both alike: each round gives one paired overhead (full / bare - 1), and the headline
is the median over rounds. The fastest round of each side is shown too. Both sides run with the
campaign process's allocator policy (:func:`physlearn.memory.retain_freed_memory`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from physlearn.config import parse_config
from physlearn.estimators import measure
from physlearn.memory import retain_freed_memory
from physlearn.run.campaign import Campaign
from physlearn.run.start import build_system, create_store
from physlearn.system import Nudge


def make_config(side: int, steps: int, batch: int, conjugates: str, flush_every: int = 0) -> dict:
    n_io = min(side, 8)
    return {
        "name": f"overhead{side}",
        "seed": 0,
        "system": {
            "kind": "resistor",
            "graph": {
                "type": "lattice",
                "rows": side,
                "cols": side,
                "inputs": n_io,
                "outputs": n_io,
            },
            "conductance": {"min": 1e-5, "max": 1e-2, "init_low": 1e-4, "init_high": 1e-3},
        },
        "task": {
            "dataset": {
                "kind": "regression",
                "features": n_io,
                "targets": n_io,
                "train_size": 512,
                "test_size": 64,
            },
            "target": {"kind": "value", "scale": 0.3},
            "loss": "mse",
        },
        "estimator": {"kind": "ep", "nudging": "centred", "beta": 1e-4},
        "optimizer": {"kind": "adam", "lr": 1e-4},
        "schedule": {"steps": steps, "batch_size": batch, "eval_every": 10**6},
        "store": {"conjugates": conjugates, "flush_every": flush_every},
    }


def bare_seconds(raw: dict, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the simulator calls of ``steps`` EP steps, and nothing else."""
    cfg = parse_config(raw)
    system = build_system(cfg)
    data = cfg.task.dataset.load(0)
    b = cfg.schedule.batch_size
    rng = np.random.default_rng(0)
    params = system.get_parameters()
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(steps):
        x = data.x_train[(k * b) % 448 : (k * b) % 448 + b]
        t = 0.3 * data.y_train[(k * b) % 448 : (k * b) % 448 + b]
        free = measure(system, x, None, None, rng)
        for beta in (1e-4, -1e-4):
            measure(system, x, Nudge(beta=beta, target=t), free.state, rng)
        params = {kk: v * (1 + 1e-6) for kk, v in params.items()}
        system.set_parameters(params)
    return time.perf_counter() - t0, time.process_time() - c0


def full_seconds(raw: dict, steps: int, out: Path) -> tuple[float, float, float]:
    """(wall, CPU) seconds of ``steps`` full campaign steps, and wall seconds of the final commit.
    CPU seconds are the process's, the background writer's included.

    The steps are what Campaign.run does per step, minus evaluation and the progress bar,
    committing with checkpoints by the run's own policy; the run's arrays already exist (created
    by a first step and commit: a one-time cost per run)."""
    cfg = parse_config(raw)
    system = build_system(cfg)
    store = create_store(cfg, system, out)
    campaign = Campaign(cfg, system, store)
    campaign.initialise()
    # one step and a commit first: creating the Zarr arrays is a one-time cost per run
    campaign._one_step(0)
    campaign.flush()
    campaign.recorder.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(1, steps + 1):
        campaign._one_step(k)
        campaign.maybe_flush()
    t1, c1 = time.perf_counter(), time.process_time()
    campaign.flush()
    campaign.recorder.drain()
    return t1 - t0, c1 - c0, time.perf_counter() - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--sides", type=int, nargs="+", default=[10, 32, 100], help="lattice sides (N = side^2)"
    )
    p.add_argument("--steps", type=int, default=100, help="EP steps per measurement")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="rounds (bare and full alternate)")
    p.add_argument(
        "--conjugates",
        nargs="+",
        default=["batch_mean", "per_sample"],
        choices=["per_sample", "batch_mean"],
        help="store.conjugates modes to measure",
    )
    args = p.parse_args()
    retain_freed_memory()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sides:
            for mode in args.conjugates:
                raw = make_config(side, args.steps, args.batch, mode)
                bare_seconds(raw, 2)  # warm caches / imports
                bares, fulls, tails = [], [], []
                for i in range(args.repeats):
                    bares.append(bare_seconds(raw, args.steps))
                    fw, fc, t = full_seconds(
                        raw, args.steps, Path(tmp) / f"run{side}-{mode}-{i}.zarr"
                    )
                    fulls.append((fw, fc))
                    tails.append(t)
                b, f = np.array(bares), np.array(fulls)
                paired = np.median(f / b - 1, axis=0)  # (wall, CPU)
                ms = 1e3 / args.steps
                rows.append(
                    (
                        side * side,
                        mode,
                        *(b.min(0) * ms),
                        *(f.min(0) * ms),
                        *paired,
                        min(tails) * 1e3,
                    )
                )
    print(
        f"batch {args.batch}, centred EP, {args.steps} steps, commits with checkpoints included, "
        f"{args.repeats} alternating rounds"
    )
    print(
        "wall: elapsed time per step; CPU: the process's CPU time per step (all threads); "
        "ms columns: fastest round; overhead: median over rounds of full / bare - 1"
    )
    print(
        f"{'nodes':>8} {'conjugates':>11} {'bare wall ms':>13} {'bare CPU ms':>12} "
        f"{'full wall ms':>13} {'full CPU ms':>12} {'wall overhead':>14} {'CPU overhead':>13} "
        f"{'final commit ms':>16}"
    )
    for n, mode, bw, bc, fw, fc, ow, oc, t in rows:
        print(
            f"{n:>8} {mode:>11} {bw:>13.2f} {bc:>12.2f} {fw:>13.2f} {fc:>12.2f} "
            f"{100 * ow:>13.1f}% {100 * oc:>12.1f}% {t:>16.1f}"
        )
    n, mode, bw, bc, fw, fc, ow, oc, t = max(rows, key=lambda r: (r[0], r[1] == "batch_mean"))
    print(
        f"headline: orchestrator overhead at {n} nodes, batch {args.batch}, logging every "
        f"measurement ({mode} conjugates): {100 * ow:.1f}% wall-clock, {100 * oc:.1f}% CPU "
        f"(median of {args.repeats} paired rounds), of the bare simulator step in steady state, "
        f"plus {t:.0f} ms once per run for the final commit (goal <= 5%)"
    )


if __name__ == "__main__":
    main()
