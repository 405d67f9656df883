"""What the dashboard shows: the paths given on the command line, each a run or a sweep store.

Every run a page may show has a short key (``0``, ``1``, ... for the runs given; ``s0/<run_id>``
for a run of the first sweep given), used in the page's address (``/?run=KEY``). A page only
ever opens the runs these keys name: an address cannot make the server read another path.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``kind`` attribute of a sweep store (physlearn.sweep.spec.SWEEP_KIND, not imported here:
#: that module imports the config machinery).
SWEEP_KIND = "physlearn-sweep"


@dataclass(frozen=True)
class Target:
    """A path given on the command line: ``kind`` is ``run`` or ``sweep``."""

    kind: str
    path: Path
    index: int

    @property
    def label(self) -> str:
        """The store's file name without ``.zarr`` (what people call the run or sweep)."""
        return self.path.name.removesuffix(".zarr")


@dataclass(frozen=True)
class RunRef:
    """One run a page can show: its key, its path, and the label its lines carry."""

    key: str
    path: Path
    label: str


def group_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes of the Zarr group at ``path`` (None when it is not one)."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else None


def classify(paths: list[str]) -> list[Target]:
    """The targets for ``paths``; a path that is neither a run nor a sweep store is a
    :class:`ValueError` whose one-line message names it and says what to give instead."""
    targets = []
    for i, raw in enumerate(paths):
        path = Path(raw)
        attrs = group_attrs(path)
        if attrs is not None and attrs.get("kind") == SWEEP_KIND:
            targets.append(Target("sweep", path, i))
        elif attrs is not None and "committed_steps" in attrs and "config" in attrs:
            targets.append(Target("run", path, i))
        else:
            what = (
                "does not exist" if not path.exists() else "is not a physlearn run or sweep store"
            )
            raise ValueError(
                f"{path} {what}: give run stores (runs/<name>.zarr) or sweep stores "
                "(sweeps/<name>.zarr)"
            )
    return targets


def sweep_rows(target: Target) -> list[dict[str, Any]]:
    """The run table of a sweep store as its driver last wrote it (empty while it plans)."""
    attrs = group_attrs(target.path) or {}
    rows = attrs.get("runs") or []
    return [r for r in rows if isinstance(r, dict) and "run_id" in r]


def sweep_axes(target: Target) -> list[str]:
    """The swept config fields of a sweep store (``variant`` first when it has variants)."""
    attrs = group_attrs(target.path) or {}
    return [str(a) for a in attrs.get("axes") or []]


def all_runs(targets: list[Target]) -> list[RunRef]:
    """Every run the targets hold: the runs given, then each sweep's runs in table order."""
    refs = []
    for t in targets:
        if t.kind == "run":
            refs.append(RunRef(str(t.index), t.path, t.label))
        else:
            for row in sweep_rows(t):
                run_id = str(row["run_id"])
                refs.append(RunRef(f"s{t.index}/{run_id}", t.path / run_id, run_id))
    return refs


def resolve(targets: list[Target], key: str) -> RunRef | None:
    """The run a page address names, or None when no target holds it."""
    for ref in all_runs(targets):
        if ref.key == key:
            return ref
    return None


def run_status(attrs: dict[str, Any]) -> str:
    """A run's status from its attributes alone (no lock probe, so a reader never stands in a
    writer's way): its exit status once it ended; ``running`` while the process that wrote it
    lives on this host; ``interrupted`` when that process is gone; ``unfinished`` when it runs
    on another host (which cannot be checked from here)."""
    if attrs.get("exit_status"):
        return str(attrs["exit_status"])
    if attrs.get("host") != socket.gethostname():
        return "unfinished"
    try:
        pid = int(attrs.get("pid", 0))
    except (ValueError, TypeError):
        return "interrupted"
    if pid <= 0:  # os.kill(0 or -1, ...) would address process groups
        return "interrupted"
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return "interrupted"
    except PermissionError:  # a process of another user holds that pid: it exists
        return "running"
    return "running"
