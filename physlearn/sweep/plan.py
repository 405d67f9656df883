"""The sweep store and the plan: what each run needs (skip, start, resume), the run table, the
driver's lock, and removal of nothing but what this sweep provably made.

The same command finishes a sweep: ``success`` runs are skipped, ``interrupted`` and ``abort``
runs are resumed from their last commit (exactly, see :mod:`physlearn.run.start`), runs
without a store are started. A ``fail`` run (recorded with ``exit_status=fail`` and its
``error``) is reported and skipped, unless ``--retry-failed``: then it is resumed from its
committed steps, like ``physlearn resume``. A run whose stored config differs from the sweep's
expansion (the sweep file or its base was edited) is refused before anything runs.

One driver at a time writes a sweep store: it holds the store's writer lock
(:mod:`physlearn.store.lock`) for the whole sweep, and a second driver exits 2 naming the holder.
A sweep deletes nothing it cannot prove it made: every run store it creates records the sweep
store's ``guid`` and its run id (its ``sweep`` attribute); a directory under a run's name that
is not a run store is refused (exit 2), never replaced; and only an unlocked construction
leftover ``.<run_id>.creating-<hex>`` carrying this sweep's identity is removed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from physlearn.config import (
    ConfigError,
    parse_config,
)
from physlearn.run.result import last_metrics
from physlearn.store.lock import LOCK_DIR, StoreLock, StoreLockedError
from physlearn.store.run_store import RunStore, StoreError
from physlearn.sweep.expand import Sweep
from physlearn.sweep.spec import SWEEP_KIND, canonical


@dataclass
class RunRecord:
    """One row of the run table (the sweep store's ``runs`` attribute)."""

    run_id: str
    axes: dict[str, Any]
    seed: int | None
    status: str = "pending"
    action: str = "start"
    committed_steps: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    guid: str | None = None
    error: str | None = None
    traceback: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "axes": self.axes,
            "seed": self.seed,
            "status": self.status,
            "committed_steps": self.committed_steps,
            "total_steps": self.total_steps,
            "metrics": {k: v for k, v in self.metrics.items() if math.isfinite(v)},
            "guid": self.guid,
            "error": self.error,
            "traceback": self.traceback,
        }


def _open_root(path: Path) -> Any:
    import zarr

    return zarr.open_group(str(path), mode="r+", zarr_format=3)


def read_sweep_attrs(path: str | Path) -> dict[str, Any] | None:
    """The attributes of a sweep store, or None when ``path`` is not one."""
    p = Path(path)
    meta = p / "zarr.json"
    if not meta.is_file():
        return None
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    return attrs if attrs.get("kind") == SWEEP_KIND else None


def plan(sweep: Sweep, root: Path, retry_failed: bool = False) -> list[RunRecord]:
    """Decide what to do with every run; reads the store, writes nothing. Raises ConfigError
    when the store is not this sweep's or a stored run was made from a different config."""

    old_rows: dict[str, dict[str, Any]] = {}
    if check_root(root, locked=False):
        attrs = read_sweep_attrs(root) or {}
        old_rows = {r["run_id"]: r for r in attrs.get("runs", [])}
    records: list[RunRecord] = []
    for run in sweep.runs:
        rec = RunRecord(run.run_id, run.axes, run.seed, total_steps=run.config.total_steps())
        gpath = root / run.run_id
        try:
            store = RunStore.open(gpath) if gpath.exists() or gpath.is_symlink() else None
            if gpath.is_symlink():
                raise StoreError(f"{gpath} is a symbolic link")
        except StoreError:
            raise ConfigError(
                f"{gpath} exists and is not a run of this sweep; move it away (a sweep deletes "
                "nothing it cannot prove it made)"
            ) from None
        if store is not None:
            stored = parse_config(store.attrs["config"], f"{gpath} (stored config)")
            diff = _config_diff(stored.model_dump(mode="json"), run.config_dict())
            if diff:
                raise ConfigError(
                    f"run {run.run_id!r} in {root} was made from a different config "
                    f"({diff}); the sweep file or its base changed. Use another sweep name "
                    "or --out, or delete that run"
                )
            rec.status = store.status()
            rec.committed_steps = store.committed()
            rec.guid = store.attrs.get("guid")
            rec.error = store.attrs.get("error")
            rec.metrics = last_metrics(store)
            rec.action = {
                "success": "skip",
                "running": "skip",
                "fail": "resume" if retry_failed else "skip",
            }.get(rec.status, "resume")
        elif run.run_id in old_rows and old_rows[run.run_id].get("status") == "fail":
            # failed before its store existed (e.g. the system could not be built)
            rec.status, rec.error = "fail", old_rows[run.run_id].get("error")
            rec.action = "start" if retry_failed else "skip"
        records.append(rec)
    return records


def _config_diff(a: Any, b: Any, prefix: str = "") -> str:
    """The first dotted path where two config mappings differ (empty when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return ""
    if a != b:
        return f"{prefix.rstrip('.')}: stored {canonical(a)}, sweep {canonical(b)}"
    return ""


# --------------------------------------------------------------------------------------------


@contextmanager
def driver_lock(root: Path) -> Iterator[None]:
    """Hold the writer lock of the sweep store at ``root`` (creating its directory when there is
    none) for the ``with`` block. Raises ConfigError when another driver holds it (naming it), or
    when ``root`` is something else: nothing is written into a directory that is not a sweep
    store, or one being created."""

    check_root(root, locked=False)
    lock = StoreLock(root, "sweep driver")
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except StoreLockedError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{root}: cannot create or lock the sweep store ({exc})") from None
    try:
        check_root(root, locked=True)  # what it is now that no other driver can change it
        yield
    finally:
        lock.release()


def check_root(root: Path, locked: bool) -> bool:
    """Whether ``root`` is a sweep store (False: there is none yet -- no directory, or one that
    holds only the lock group of a driver that stopped before creating the store). Raises
    ConfigError for anything else. Unlocked, a directory with a lock group and no readable
    metadata passes: another driver may be creating the store right now, and its lock decides."""

    if not root.exists() and not root.is_symlink():
        return False
    if root.is_dir():
        if read_sweep_attrs(root) is not None:
            return True
        entries = {e.name for e in root.iterdir()}
        if entries <= {LOCK_DIR}:
            return False
        if not locked and LOCK_DIR in entries and _metadata(root) is None:
            return False
    raise ConfigError(f"{root} exists and is not a physlearn sweep store; choose another --out")


def _metadata(root: Path) -> dict[str, Any] | None:
    """The parsed ``zarr.json`` of ``root``, or None when it is missing or unreadable."""
    try:
        meta = json.loads((root / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def create_or_claim(root: Path, sweep: Sweep) -> Any:
    """The sweep store's group, created when new (with a ``guid``: the sweep's identity, which
    every run store it creates records). Call with the driver lock held."""
    import uuid

    import zarr

    from physlearn import __version__

    if read_sweep_attrs(root) is None:  # the driver lock made the (empty) directory
        attrs: dict[str, Any] = {"kind": SWEEP_KIND, "created": _now(), "guid": uuid.uuid4().hex}
        group = zarr.open_group(str(root), mode="a", zarr_format=3, attributes=attrs)
    else:
        group = _open_root(root)
        if "guid" not in group.attrs:  # a store made before sweeps had an identity
            group.update_attributes({"guid": uuid.uuid4().hex})
    guid = str(group.attrs["guid"])
    ids = {run.run_id for run in sweep.runs}
    for entry in root.iterdir():  # run stores whose creation a crash interrupted
        rid, sep, _ = entry.name[1:].partition(".creating-")
        if entry.name.startswith(".") and sep and rid in ids:
            _remove_own_run(root, entry.name, rid, guid)
    group.update_attributes(
        {
            "name": sweep.spec.name,
            "spec": sweep.spec.model_dump(mode="json"),
            "sweep_file": str(sweep.source) if sweep.source else None,
            "axes": sweep.axis_names,
            "seeds": sweep.spec.seed_list(),
            "physlearn_version": __version__,
            "driver": {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()},
        }
    )
    return group


def _owned(path: Path, run_id: str, guid: str) -> bool:
    """Whether ``path`` is a run store that this sweep (``guid``) created as ``run_id``."""

    try:
        attrs = RunStore.open(path).attrs
    except StoreError:
        return False
    return attrs.get("sweep") == {"guid": guid, "run_id": run_id}


def _remove_own_run(root: Path, name: str, run_id: str, guid: str) -> bool:
    """Remove ``root/name`` only when it is provably a run group this sweep created: a real
    directory (no link) directly inside ``root``, a run store whose ``sweep`` attribute names
    this sweep's ``guid`` and ``run_id``, and not locked by a writer (its lock is taken before
    removing). Returns whether it was removed; anything else is left as it is."""

    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        return False
    path = root / name
    if path.is_symlink() or not path.is_dir():
        return False
    if path.resolve().parent != root.resolve() or not _owned(path, run_id, guid):
        return False
    lock = StoreLock(path, "sweep driver removing an unfinished run")
    try:
        lock.acquire()
    except (StoreLockedError, OSError):
        return False
    try:
        if not _owned(path, run_id, guid):  # changed before the lock was ours
            return False
        shutil.rmtree(path)
    finally:
        lock.release()
    return True


def write_table(group: Any, records: list[RunRecord]) -> None:
    group.update_attributes({"runs": [r.row() for r in records], "updated": _now()})


def release_store(group: Any, records: list[RunRecord]) -> None:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    group.update_attributes(
        {"runs": [r.row() for r in records], "updated": _now(), "driver": None, "counts": counts}
    )


def store_facts(path: Path) -> dict[str, Any]:
    """guid, committed steps and (if recorded) the stored status of a run group."""

    try:
        store = RunStore.open(path)
    except StoreError:
        return {"committed_steps": 0, "guid": None}
    a = store.attrs
    return {"committed_steps": store.committed(), "guid": a.get("guid")}


# --------------------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
