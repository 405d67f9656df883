"""Executing a sweep: every unfinished run, in this process or on Dask distributed.

:func:`run_task` -- a pure function of (config mapping, path) -- runs one experiment; Dask ships
it to worker processes of a :class:`distributed.LocalCluster` (one thread each) or of an
existing scheduler. ``workers=0`` runs everything one after another in this process, no Dask.
Dask is imported only when a sweep executes. A new sweep store's LocalCluster starts in a
background thread while the driver plans and sets up the store; runs are submitted longest
first (by steps x batch size), so that no worker idles at the end behind one long run. Worker
processes are spawned: a script that calls :func:`run_sweep` with workers needs the
``if __name__ == "__main__":`` guard. With a remote scheduler the store path must be on a
filesystem the workers share.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from physlearn.config import (
    ConfigError,
    parse_config,
)
from physlearn.sweep.expand import PlannedRun, Sweep
from physlearn.sweep.plan import (
    RunRecord,
    create_or_claim,
    driver_lock,
    plan,
    read_sweep_attrs,
    release_store,
    store_facts,
    write_table,
)

if TYPE_CHECKING:
    from distributed import Client, LocalCluster


def run_task(
    config: dict[str, Any],
    path: str,
    owner: dict[str, str] | None = None,
    retain_freed_memory: bool = False,
) -> dict[str, Any]:
    """Run (or resume) one experiment at ``path``: a pure function of its arguments, so Dask can
    ship it to any worker. Never raises for a failing run: returns its outcome
    (``status``, ``action``, ``committed_steps``, ``metrics``, ``guid``, ``error``,
    ``traceback``); the run store records ``exit_status=fail`` and ``error`` itself. A new run
    store records ``owner`` (the sweep's guid and the run id) as its ``sweep`` attribute: what
    proves that the sweep made it (see :mod:`physlearn.sweep.plan`). ``retain_freed_memory``: the
    allocator setting of :func:`physlearn.run.start.start_run`, applied in the worker process."""
    from physlearn.run.start import resume_run, start_run

    p = Path(path)
    action = "resumed" if (p / "zarr.json").is_file() else "started"
    out: dict[str, Any] = {"action": action, "error": None, "traceback": None, "metrics": {}}
    try:
        if action == "resumed":
            res = resume_run(p, retain_freed_memory=retain_freed_memory)
        else:
            extra = {"sweep": owner} if owner is not None else None
            cfg = parse_config(config, f"run {p.name!r}")
            res = start_run(cfg, p, extra_attrs=extra, retain_freed_memory=retain_freed_memory)
        out.update(status=res.status, metrics=res.metrics)
    except Exception as exc:
        out.update(
            status="fail",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
    out.update(store_facts(p))
    return out


@dataclass
class SweepResult:
    """What a call of :func:`run_sweep` did."""

    path: Path
    records: list[RunRecord]
    ran: int = 0
    interrupted: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent on the LocalCluster: ``cluster_start`` (starting it), ``cluster_wait`` (of
    which the driver waited, after planning and setting up the store), ``cluster_close``."""

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def all_succeeded(self) -> bool:
        return all(r.status == "success" for r in self.records)


def _n_workers(workers: int | None, max_workers: int | None) -> int:
    n = workers if workers is not None else (os.cpu_count() or 1)
    return max(1, min(n, max_workers or n))


#: Dask settings of physlearn's LocalCluster (see :func:`_local_cluster`).
_QUIET_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def _local_cluster(n: int, timings: dict[str, float] | None = None) -> tuple[LocalCluster, Client]:
    """A LocalCluster of ``n`` worker processes with one thread each, listening on 127.0.0.1
    only, and its client. The nannies start every worker with one BLAS/OpenMP thread (Dask's
    ``distributed.nanny.pre-spawn-environ``), so ``n`` workers do not oversubscribe ``n``
    cores.

    Dask's own bookkeeping is turned down (:data:`_QUIET_DASK`): the workers' statistical profiler
    and the system monitors only feed the dashboard (off here), and the event-loop tick only
    warns about blocked loops. At their defaults, an idle 2-worker cluster burnt 9 % of a core
    and sampling the run's thread every 10 ms slowed runs by about 9 %; turned down, 2 %."""
    t0 = time.perf_counter()
    import dask.config
    from distributed import Client, LocalCluster

    with dask.config.set(_QUIET_DASK):  # read by the scheduler (in this process) as it starts
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # no dashboard; the scheduler's HTTP server (health, metrics) still starts, on a
            # free loopback port instead of 8787, which a second cluster would find taken
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
            config=dask.config.config,  # each nanny hands this config to its worker
        )
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    if timings is not None:
        timings["cluster_start"] = time.perf_counter() - t0
    return cluster, client


class _ClusterStart:
    """A LocalCluster being started in a background thread: its worker processes spawn and
    import while the driver plans and sets up the store. :meth:`client` waits for it;
    :meth:`close` (always call it) waits for the start to end and closes the cluster."""

    def __init__(self, n: int, timings: dict[str, float]) -> None:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="physlearn-cluster-start")
        self._future: Future[tuple[LocalCluster, Client]]
        self._future = pool.submit(_local_cluster, n, timings)
        pool.shutdown(wait=False)
        self.timings = timings

    def client(self) -> Client:
        t0 = time.perf_counter()
        try:
            return self._future.result()[1]
        finally:
            self.timings["cluster_wait"] = time.perf_counter() - t0

    def close(self) -> None:
        t0 = time.perf_counter()
        try:
            self._close()
        finally:
            self.timings["cluster_close"] = time.perf_counter() - t0

    def _close(self) -> None:
        try:
            cluster, client = self._future.result()
        except Exception:  # the start failed: nothing to close (the error surfaced in client())
            return
        try:
            client.close()
        finally:
            cluster.close()


@contextmanager
def dask_client(
    scheduler: str | None, workers: int | None, max_workers: int | None = None
) -> Iterator[Client]:
    """A client of an existing scheduler, or of a LocalCluster of ``workers`` processes (default
    one per CPU, at most ``max_workers``) with one thread each, listening on 127.0.0.1 only. Both
    are closed on exit."""
    from distributed import Client

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        with client:
            yield client
        return
    cluster, client = _local_cluster(_n_workers(workers, max_workers))
    with cluster, client:
        yield client


def run_sweep(
    sweep: Sweep,
    out: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: bool = False,
    on_result: Callable[[RunRecord], None] | None = None,
    retain_freed_memory: bool = False,
) -> SweepResult:
    """Run every unfinished run of ``sweep`` (see the module docstring) and return the table.

    ``workers=0`` runs in this process without Dask; otherwise a LocalCluster of ``workers``
    processes (default: one per CPU) or the scheduler at ``scheduler``. Raises ConfigError
    before writing anything when the store cannot hold this sweep. KeyboardInterrupt cancels
    the remaining runs (the store keeps every committed step) and propagates.
    ``retain_freed_memory`` applies the allocator setting in every run's process (see
    :mod:`physlearn.memory`; off by default).

    The driver holds the sweep store's writer lock (:mod:`physlearn.store.lock`) throughout: a
    second driver of the same store raises ConfigError naming the holder, before it writes."""
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers {workers}: give a number >= 0")
    if scheduler is not None and workers is not None:
        raise ConfigError(
            "--workers sizes the local cluster; it cannot be combined with --scheduler"
        )
    root = sweep.store_path(out)
    timings: dict[str, float] = {}
    with ExitStack() as stack:
        stack.enter_context(driver_lock(root))
        local: _ClusterStart | None = None
        new_store = read_sweep_attrs(root) is None
        if scheduler is None and workers != 0 and sweep.runs and new_store:
            # a new store: every run is to start, so the cluster's size is known before planning
            local = _ClusterStart(_n_workers(workers, len(sweep.runs)), timings)
            stack.callback(local.close)
        records = plan(sweep, root, retry_failed)
        todo = [
            (run, rec) for run, rec in zip(sweep.runs, records, strict=True) if rec.action != "skip"
        ]
        result = SweepResult(root, records, timings=timings)
        client: Client | None = None
        if todo and workers != 0 and local is None:
            if scheduler is None:  # it starts while the store is set up
                local = _ClusterStart(_n_workers(workers, len(todo)), timings)
                stack.callback(local.close)
            else:
                client = stack.enter_context(dask_client(scheduler, None))
        group = create_or_claim(root, sweep)
        try:
            write_table(group, records)
            if todo and local is not None:
                client = local.client()
            guid = str(group.attrs["guid"])
            _execute(
                group,
                root,
                todo,
                records,
                client,
                progress,
                on_result,
                result,
                guid,
                retain_freed_memory,
            )
        finally:
            release_store(group, records)
    return result


def _execute(
    group: Any,
    root: Path,
    todo: list[tuple[PlannedRun, RunRecord]],
    records: list[RunRecord],
    client: Client | None,
    progress: bool,
    on_result: Callable[[RunRecord], None] | None,
    result: SweepResult,
    guid: str,
    retain_freed_memory: bool,
) -> None:
    from tqdm import tqdm

    done = len(records) - len(todo)
    bar = tqdm(
        total=len(records),
        initial=done,
        disable=not progress,
        unit="run",
        desc=str(group.attrs.get("name", "sweep")),
        dynamic_ncols=True,
    )

    def finish(rec: RunRecord, out: dict[str, Any]) -> None:
        rec.status = out["status"]
        rec.metrics = out.get("metrics") or {}
        rec.error = out.get("error")
        rec.committed_steps = int(out.get("committed_steps") or 0)
        rec.guid = out.get("guid")
        rec.action = out.get("action", rec.action)
        result.ran += 1
        write_table(group, records)
        bar.update(1)
        bar.set_postfix(failed=sum(r.status == "fail" for r in records), refresh=False)
        rec.traceback = out.get("traceback")
        if rec.status == "fail":
            bar.write(f"run {rec.run_id} failed: {rec.error}", file=sys.stderr)
        if on_result is not None:
            on_result(rec)

    try:
        if client is None:
            for run, rec in todo:
                rec.status = "running"
                owner = {"guid": guid, "run_id": run.run_id}
                out = run_task(
                    run.config_dict(), str(root / run.run_id), owner, retain_freed_memory
                )
                finish(rec, out)
                if out["status"] == "abort":
                    raise KeyboardInterrupt
        else:
            _execute_dask(client, root, todo, finish, guid, retain_freed_memory)
    except KeyboardInterrupt:
        result.interrupted = True
        for _, rec in todo:
            if rec.status in ("pending", "running"):
                rec.status = "interrupted"
        raise
    finally:
        bar.close()


def _execute_dask(
    client: Client,
    root: Path,
    todo: list[tuple[PlannedRun, RunRecord]],
    finish: Callable[[RunRecord, dict[str, Any]], None],
    guid: str,
    retain_freed_memory: bool,
) -> None:
    import uuid

    from distributed import as_completed

    futures = {}
    # longest first (a stable sort: equal runs keep the sweep's order), so that the last runs
    # to finish are short ones and no worker idles behind a long run at the end
    for run, rec in sorted(todo, key=lambda t: -_cost(t[0])):
        fut = client.submit(
            run_task,
            run.config_dict(),
            str((root / run.run_id).resolve()),
            {"guid": guid, "run_id": run.run_id},
            retain_freed_memory,
            key=f"physlearn-run-{run.run_id}-{uuid.uuid4().hex[:8]}",
            pure=False,
            retries=0,
        )
        futures[fut] = rec
        rec.status = "running"
    try:
        for fut in as_completed(list(futures)):
            rec = futures[fut]
            try:
                out = fut.result()
            except Exception as exc:  # the worker died or the task could not be shipped
                out = {
                    "status": "fail",
                    "action": rec.action,
                    "error": f"{type(exc).__name__}: {exc} (worker lost or task not run)",
                    **store_facts(root / rec.run_id),
                }
            finish(rec, out)
    except BaseException:
        client.cancel(list(futures))
        raise


def _cost(run: PlannedRun) -> int:
    """A run's predicted cost, for ordering only: patterns processed (steps x batch size)."""
    return run.config.total_steps() * run.config.schedule.batch_size
