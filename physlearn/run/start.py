"""Starting and resuming a run: build the system, create (or reopen) its store, drive the
:class:`~physlearn.run.campaign.Campaign` and record how it ended.

:func:`start_run` and :func:`resume_run` drive one run against whichever system the config names.
A run killed at any moment resumes from its last commit and ends with exactly the parameters and
logged arrays of an uninterrupted run (timestamps and wall-clock durations aside).

Ctrl-C (SIGINT) or SIGTERM once: finish the current step, commit, close, ``exit_status=abort``.
Ctrl-C twice: stop inside the step, commit the steps already complete, leave the sources safe.

``retain_freed_memory=True`` (``physlearn run/resume/sweep --retain-freed-memory``) applies
:func:`physlearn.memory.retain_freed_memory` before driving: a process-wide allocator setting,
off by default so that a notebook or a host program is not changed behind its back.
"""

from __future__ import annotations

import errno
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from physlearn import memory
from physlearn.baselines import compute_baselines
from physlearn.config import ConfigError, ExperimentConfig, parse_config
from physlearn.optim import Optimizer
from physlearn.run.campaign import Campaign, StopFlag, build_estimator, objective_loss
from physlearn.run.progress import ProgressSpec
from physlearn.run.result import RunResult, last_metrics
from physlearn.store.run_store import DiskFullError, RunStore, to_jsonable
from physlearn.system import ExactGradient, Graph, PhysicalSystem


@contextmanager
def _signals(flag: StopFlag, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    old_int = signal.signal(signal.SIGINT, flag.handler)
    old_term = signal.signal(signal.SIGTERM, flag.handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def build_system(config: ExperimentConfig) -> PhysicalSystem:
    """Build the system; an impossible description is the user's to fix (ConfigError)."""
    try:
        system = config.system.build(config.seed)
    except ValueError as exc:
        raise ConfigError(f"system: {exc}") from None
    if config.diagnostics.exact_gradient and not isinstance(system, ExactGradient):
        raise ConfigError(
            f"diagnostics.exact_gradient: the {config.system.kind!r} system has no exact "
            "gradient (simulators only)"
        )
    objective_loss(config, system)
    return system


def default_run_path(config: ExperimentConfig) -> Path:
    root = Path(config.store.root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{config.name}-{stamp}.zarr"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{config.name}-{stamp}-{n}.zarr"
    return path


def create_store(
    config: ExperimentConfig,
    system: PhysicalSystem,
    path: Path,
    extra_attrs: dict[str, Any] | None = None,
) -> RunStore:
    """A new run store for ``config`` on ``system`` (coordinates, checkpoint slots, attributes;
    ``extra_attrs`` are stored too, e.g. the sweep that owns the run)."""
    from physlearn import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer_shapes = Optimizer(config.optimizer, system.parameter_groups).state
    ck_shapes = {
        f"{k}/{g.name}": g.shape for g in system.parameter_groups for k in ("shadow", "held")
    }
    ck_shapes |= {f"opt/{k}": v.shape for k, v in optimizer_shapes.items()}
    carried = system.carried_shapes(config.schedule.batch_size)  # carried state
    if "valid" in carried:
        raise ValueError(f"{type(system).__name__}.carried_shapes: 'valid' is reserved")
    if carried:
        ck_shapes |= {f"carry/{k}": v for k, v in carried.items()} | {"carry/valid": ()}
    coords: dict[str, tuple[np.ndarray, str]] = {
        "phase": (np.array(build_estimator(config.estimator).phase_labels()), "1"),
    }
    if system.outputs.labels:
        coords["output"] = (np.array(system.outputs.labels), "1")
    attrs: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "physlearn_version": __version__,
        "system_snapshot": to_jsonable(system.snapshot()),
        "total_steps": config.total_steps(),
        # reference models on the run's split (physlearn.baselines): written once, at creation
        **compute_baselines(config, system.outputs.size, objective_loss(config, system)),
        **(extra_attrs or {}),
    }
    # positions, edges, node roles: for plots on the graph
    graph = system.graph_layout() if isinstance(system, Graph) else None
    return RunStore.create(path, coords, ck_shapes, attrs, graph)


def start_run(
    config: ExperimentConfig,
    out: str | Path | None = None,
    progress: ProgressSpec | None = None,
    handle_signals: bool = False,
    on_step: Callable[[int], None] | None = None,
    extra_attrs: dict[str, Any] | None = None,
    retain_freed_memory: bool = False,
) -> RunResult:
    """Create a store and train. Raises ConfigError (before creating anything) for bad input.
    ``extra_attrs`` are stored with the run's attributes (a sweep records itself there).
    The store appears under its name complete or not at all, and this process holds its
    writer lock until the run ends. ``retain_freed_memory``: see the module docstring."""
    system = build_system(config)
    path = Path(out) if out is not None else default_run_path(config)
    try:
        store = create_store(config, system, path, extra_attrs)
    except BaseException as exc:
        system.close()  # snapshot() may have connected to instruments
        if _disk_full(exc) is not None:
            raise DiskFullError(_disk_full_message(exc, path, None)) from None
        raise
    return _drive(config, system, store, progress, handle_signals, on_step, retain_freed_memory)


def resume_run(
    path: str | Path,
    progress: ProgressSpec | None = None,
    handle_signals: bool = False,
    on_step: Callable[[int], None] | None = None,
    retain_freed_memory: bool = False,
) -> RunResult:
    """Continue a run from its last commit. Takes the store's writer lock first (another
    writer: StoreLockedError naming it) and verifies the checkpoint and the last commit against
    their checksums (damage: StoreError naming the array and steps) before anything is used."""
    store = RunStore.open(path, mode="r+", writer="physlearn resume")
    try:
        config = parse_config(store.attrs["config"], f"{path} (stored config)")
        if store.attrs.get("exit_status") == "success":
            return RunResult(Path(path), "success", store.committed(), last_metrics(store))
        store.verify(full=False)
        system = build_system(config)
        try:
            store.truncate_to_committed()
            store.reopen_for_resume()
        except BaseException as exc:
            system.close()
            if _disk_full(exc) is not None:
                raise DiskFullError(_disk_full_message(exc, store.path, store)) from None
            raise
        return _drive(config, system, store, progress, handle_signals, on_step, retain_freed_memory)
    finally:
        store.release()


def _drive(
    config: ExperimentConfig,
    system: PhysicalSystem,
    store: RunStore,
    progress: ProgressSpec | None,
    handle_signals: bool,
    on_step: Callable[[int], None] | None,
    retain_freed_memory: bool,
) -> RunResult:
    try:
        if retain_freed_memory:
            memory.retain_freed_memory()
        status = "fail"
        try:
            try:
                campaign = Campaign(config, system, store)
            except BaseException:
                system.close()  # the with block below never opened it
                raise
            with _signals(campaign.flag, handle_signals), system:
                start = campaign.initialise()
                status = campaign.run(start, progress, on_step)
            store.finish(status)
        except BaseException as exc:
            _record_failure(store, exc)
            if _disk_full(exc) is not None:
                raise DiskFullError(_disk_full_message(exc, store.path, store)) from None
            raise
        return RunResult(store.path, status, store.committed(), last_metrics(store))
    finally:
        store.release()


def _record_failure(store: RunStore, exc: BaseException) -> None:
    """Mark the run failed (or aborted) with its error; on a full disk this write may fail too,
    and then the store stays as its last commit left it (status ``interrupted``)."""
    try:
        store.finish(
            "fail" if not isinstance(exc, KeyboardInterrupt) else "abort",
            error=f"{type(exc).__name__}: {exc}",
        )
    except OSError as again:
        if _disk_full(again) is None:
            raise


def _disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space (or quota) error behind ``exc``, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _disk_full_message(exc: BaseException, path: Path, store: RunStore | None) -> str:
    """One line: what filled up, how many steps are committed, how to continue."""
    err = _disk_full(exc)
    what = "disk quota exceeded" if err is not None and err.errno == errno.EDQUOT else "disk full"
    if store is None:
        return f"{what}: no room to create {path}; free space and run again"
    return (
        f"{what}: no room left on the filesystem holding {path}; {store.committed()} steps are "
        f"committed and intact: free space, then `physlearn resume {path}` continues"
    )
