"""``physlearn inspect``: what a run store holds -- status, committed steps, last metrics,
baselines, non-converged samples, the error if it failed -- once, or as it grows (``--follow``:
one line per commit until the run ends). Reads only; never takes the writer lock.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any


def inspect_summary(path: str) -> dict[str, Any]:
    from physlearn.run.nonconverged_log import nonconverged_summary
    from physlearn.run.result import last_metrics
    from physlearn.store.run_store import RunStore

    store = RunStore.open(path)
    a = store.attrs
    cfg = a.get("config", {})
    return {
        "nonconverged": nonconverged_summary(store),
        "path": str(path),
        "name": cfg.get("name"),
        "system": cfg.get("system", {}).get("kind"),
        "status": store.status(),
        "committed_steps": store.committed("step"),
        "total_steps": a.get("total_steps"),
        "guid": a.get("guid"),
        "physlearn_version": a.get("physlearn_version"),
        "run_timestamp": a.get("run_timestamp"),
        "completed_timestamp": a.get("completed_timestamp"),
        "error": a.get("error"),
        "metrics": last_metrics(store),
        # reference models on the same split (physlearn.baselines); absent in older runs
        "baselines": a.get("baselines"),
        "baselines_note": a.get("baselines_note", "not computed (run created before baselines)"),
    }


def inspect_command(store: str, as_json: bool, verify: bool) -> int:
    """``physlearn inspect STORE [--json] [--verify]``: print the summary; 0."""
    from physlearn.run.nonconverged_log import nonconverged_text

    verdict = None
    if verify:  # first: a damaged store is reported as such, not by a failing read
        from physlearn.store.run_store import RunStore

        verdict = RunStore.open(store).verify(full=True)  # damage: StoreError, exit 2
    summary = inspect_summary(store)
    if verdict is not None:
        summary["verify"] = verdict
    if as_json:
        print(json.dumps(summary, allow_nan=False, default=str))
        return 0
    print(f"{summary['path']}: {summary['name']} on a {summary['system']} system")
    print(
        f"  status: {summary['status']}, {summary['committed_steps']}/{summary['total_steps']} "
        "steps committed"
    )
    print(f"  started {summary['run_timestamp']}, completed {summary['completed_timestamp']}")
    for k, v in summary["metrics"].items():
        print(f"  {k}: {v:.4g}" if not math.isnan(v) else f"  {k}: n/a")
    _print_baselines(summary)
    print(f"  non-converged samples: {nonconverged_text(summary['nonconverged'])}")
    if summary["error"]:
        print(f"  error: {summary['error']}")
    if verdict is not None:
        print(f"  {verdict}")
    return 0


def _print_baselines(summary: dict[str, Any]) -> None:
    """The baselines beside the machine's metrics: one line per model, or why there are none."""
    entries = summary.get("baselines") or {}
    print(f"  baselines: {summary['baselines_note']}")
    for name, entry in entries.items():
        shown = [
            f"{k} {v:.4g}" for k, v in entry.items() if isinstance(v, (int, float)) and k != "model"
        ]
        for k in ("error", "warning"):
            if k in entry:
                shown.append(f"{k}: {entry[k]}")
        print(f"    {name} ({entry.get('model', '?')}): {', '.join(shown) or 'n/a'}")


def follow_line(summary: dict[str, Any]) -> str:
    """One line of ``--follow``: steps, status and the last metrics."""
    metrics = " ".join(f"{k}={v:.4g}" for k, v in summary["metrics"].items() if not math.isnan(v))
    return (
        f"{time.strftime('%H:%M:%S')} {summary['name']}: step "
        f"{summary['committed_steps']}/{summary['total_steps']} {summary['status']} {metrics}"
    ).rstrip()


def follow(store: str, as_json: bool, interval: float) -> int:
    """``physlearn inspect STORE --follow``: a line (or a JSON object) whenever the committed
    steps or the status change, every ``interval`` seconds, until the run is no longer
    running; 0, or 130 on Ctrl-C."""
    last: tuple[Any, Any] | None = None
    try:
        while True:
            summary = inspect_summary(store)
            key = (summary["committed_steps"], summary["status"])
            if key != last:
                last = key
                text = json.dumps(summary, allow_nan=False, default=str) if as_json else None
                print(text or follow_line(summary), flush=True)
            if summary["status"] != "running":
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 130
