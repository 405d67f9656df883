"""``physlearn sweep``: validate, plan and run a sweep file; print a summary."""

from __future__ import annotations

import sys

from physlearn.store.lock import holder, is_locked
from physlearn.sweep.execute import run_sweep
from physlearn.sweep.expand import load_sweep
from physlearn.sweep.plan import plan


def sweep_command(
    sweep_file: str,
    out: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    progress: bool = False,
    retain_freed_memory: bool = False,
) -> int:
    """``physlearn sweep``: validate, plan, run; print a summary. Returns the exit code (0 all
    runs succeeded, 1 some failed or are unfinished, 130 interrupted); user mistakes raise
    ConfigError (exit 2, nothing written)."""
    sweep = load_sweep(sweep_file)
    root = sweep.store_path(out)
    if dry_run:
        records = plan(sweep, root, retry_failed)
        print(f"sweep {sweep.spec.name}: {len(records)} valid runs -> {root}")
        for rec in records:
            print(f"  {rec.action:6s} {rec.run_id}  [{rec.status}]")
        if is_locked(root):
            print(f"  note: the store is being run now ({holder(root)})")
        return 0
    n = len(sweep.runs)
    print(f"sweep {sweep.spec.name}: {n} runs -> {root}", flush=True)
    try:
        result = run_sweep(
            sweep,
            root,
            scheduler,
            workers,
            retry_failed,
            progress,
            retain_freed_memory=retain_freed_memory,
        )
    except KeyboardInterrupt:
        print(
            f"physlearn: sweep interrupted; run the same command again to finish it ({root})",
            file=sys.stderr,
        )
        return 130
    counts = ", ".join(
        f"{result.count(s)} {s}"
        for s in ("success", "fail", "abort", "interrupted", "running")
        if result.count(s)
    )
    print(f"sweep {sweep.spec.name}: {counts} ({result.ran} run now)")
    for rec in result.records:
        if rec.status == "fail":
            print(f"  fail  {rec.run_id}: {rec.error}")
        elif rec.status != "success":
            print(f"  {rec.status}  {rec.run_id}")
    if result.count("fail") and not retry_failed:
        print("  failed runs are skipped when the sweep is run again; add --retry-failed")
    print(f"  report: physlearn report {root}")
    return 0 if result.all_succeeded else 1
