"""The records of a run: what every step logs, and their buffered, batched writing into the store.

:func:`step_plan` names every per-step record and its metadata (:data:`DESCRIPTIONS`, units,
dims) once per run. The campaign hands each record to :meth:`Recorder.record` by reference (no
copy on the hot path; a per-phase value may be a list of arrays, stacked later).
:meth:`Recorder.commit` passes the buffered records, a checkpoint and extra attributes to one
background writer thread, which assembles the arrays (one copy, GIL released by numpy), creates
missing Zarr arrays and commits them -- so disk I/O overlaps the physics of the next steps.
Commits stay strictly ordered and each one writes its data before its commit marker (see
:mod:`physlearn.store.run_store`), so crash safety is that of a synchronous writer. At most one
commit is in flight; a writer error surfaces at the next commit or at :meth:`Recorder.drain`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from physlearn.store.run_store import Checkpoint, RunStore
from physlearn.system import ParameterGroup, PhysicalSystem


@dataclass(frozen=True)
class ArrayMeta:
    dims: tuple[str, ...]
    units: str
    long_name: str
    append_dim: str


class Recorder:
    def __init__(self, store: RunStore, compress: bool = False) -> None:
        self.store = store
        self.compress = compress
        self.meta: dict[str, ArrayMeta] = {}
        self.rows: dict[str, list[Any]] = {}
        self.counts = {"step": 0, "eval": 0}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="physlearn-writer")
        self._pending: Future[None] | None = None
        self._committed_steps = store.committed("step")
        self.buffered_bytes = 0
        self._existing: set[str] | None = None  # the store's arrays (listed on the first write)
        #: the error of a commit that failed; nothing is committed after it (its records are
        #: lost, so later records would be appended at the wrong steps)
        self.failed: BaseException | None = None

    @property
    def committed_steps(self) -> int:
        """Steps committed or handed to the writer (the next commit's base)."""
        return self._committed_steps

    def record(self, name: str, value: Any, meta: ArrayMeta) -> None:
        """Buffer one record of ``name``: an array, a scalar, or a sequence of equally shaped
        arrays (stacked along a new first axis, e.g. one per phase)."""
        rows = self.rows.get(name)
        if rows is None:
            if name not in self.meta:
                self.meta[name] = meta
            rows = self.rows[name] = []
        if isinstance(value, (list, tuple)):
            nbytes = 0
            for v in value:
                nbytes += (v if isinstance(v, np.ndarray) else np.asarray(v)).nbytes
            self.buffered_bytes += nbytes
        else:
            value = np.asarray(value)
            self.buffered_bytes += value.nbytes
        rows.append(value)

    def last(self, name: str) -> Any:
        rows = self.rows.get(name)
        return rows[-1] if rows else None

    def end_record(self, dim: str) -> None:
        self.counts[dim] += 1

    def commit(self, checkpoint: Checkpoint, attrs: dict[str, Any] | None = None) -> None:
        """Hand the buffer to the writer with ``checkpoint`` (of ``committed_steps + buffered``
        steps); returns once the previous commit is complete."""
        if not self.counts["step"] and not self.counts["eval"]:
            return
        if self.failed is not None:
            raise RuntimeError("an earlier commit failed; nothing more is committed")
        rows, counts, self.rows = self.rows, dict(self.counts), {}
        self.counts = {"step": 0, "eval": 0}
        self.buffered_bytes = 0
        self._committed_steps += counts["step"]
        ck = Checkpoint(
            checkpoint.step,
            {k: np.array(v) for k, v in checkpoint.shadow.items()},
            {k: np.array(v) for k, v in checkpoint.held.items()},
            {k: np.array(v) for k, v in checkpoint.optimizer.items()},
            {k: np.array(v) for k, v in checkpoint.carry.items()},
        )
        self.wait()
        self._pending = self._pool.submit(self._write, rows, counts, ck, dict(attrs or {}))

    def wait(self) -> None:
        """Block until the commit in flight is on disk; re-raise its error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                pending.result()
            except BaseException as exc:
                self.failed = exc
                raise

    def drain(self) -> None:
        """Finish the commit in flight and stop the writer thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def _write(
        self,
        rows: dict[str, list[Any]],
        counts: dict[str, int],
        ck: Checkpoint,
        attrs: dict[str, Any],
    ) -> None:
        records = {name: _assemble(values) for name, values in rows.items()}
        if self._existing is None:
            self._existing = set(self.store.array_names())
        existing = self._existing
        for name, data in records.items():
            if name not in existing:
                m = self.meta[name]
                self.store.create_array(
                    name,
                    data.shape[1:],
                    data.dtype,
                    m.append_dim,
                    m.dims,
                    m.units,
                    m.long_name,
                    self.compress,
                )
                existing.add(name)
        self.store.commit(records, counts, ck, attrs)


def _assemble(values: Sequence[Any]) -> np.ndarray:
    first = values[0]
    if isinstance(first, (list, tuple)):
        inner = np.asarray(first[0])
        out = np.empty((len(values), len(first), *inner.shape), dtype=inner.dtype)
        for i, parts in enumerate(values):
            for j, part in enumerate(parts):
                _copy(out[i, j, ...], part)
        return out
    first = np.asarray(first)
    out = np.empty((len(values), *first.shape), dtype=first.dtype)
    for i, v in enumerate(values):
        _copy(out[i, ...], v)
    return out


def _copy(dst: np.ndarray, src: Any) -> None:
    """``dst[...] = src``; a transposed matrix (e.g. per-sample conjugates kept edge-major by a
    simulator) is copied in column tiles that stay in cache, about ten times faster than numpy's
    strided copy of a large transpose."""
    src = np.asarray(src)
    if (
        src.ndim == 2
        and src.size >= 1 << 15
        and src.flags.f_contiguous
        and not src.flags.c_contiguous
    ):
        for j in range(0, src.shape[1], 128):
            dst[:, j : j + 128] = src[:, j : j + 128]
    else:
        dst[...] = src


# --------------------------------------------------------------------------------------------
# What every step records


#: Units and long names of the run's standard records (dims come with the data); ``system``
#: stands for the system's energy unit.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    # name: (units, long_name); dims come with the data
    "sample_index": ("1", "training-set index of each pattern"),
    "loss": ("1", "objective at the free equilibrium, batch mean"),
    "report_loss": ("1", "reported cost at the free equilibrium, batch mean"),
    "batch_accuracy": ("1", "training-batch accuracy at the free equilibrium"),
    "lr": ("1", "learning rate"),
    "timestamp": ("seconds since 1970-01-01 00:00:00", "time the step was committed to memory"),
    "step_time": ("s", "wall-clock duration of the step"),
    "grad_cosine": ("1", "cosine similarity of estimate and exact gradient"),
    "grad_rel_error": ("1", "|estimate - exact| / |exact|"),
    "residual": ("system", "largest residual force at equilibrium"),
    "iterations": ("1", "relaxation iterations"),
    "converged": ("1", "relaxation met its tolerance"),
    "nonconverged_retried": ("1", "samples measured again because they did not converge"),
    "nonconverged_dropped": ("1", "samples left out of the gradient and loss (not converged)"),
    "energy": ("system", "energy at equilibrium"),
    "shots": ("1", "projective measurements (or samples) per estimate; 0 = exact"),
    "settle_time": ("s", "time waited for the physics to settle"),
    "eval_step": ("1", "optimiser updates applied before this evaluation"),
    "eval_timestamp": ("seconds since 1970-01-01 00:00:00", "time of the evaluation"),
    "test_loss": ("1", "objective on the test split"),
    "test_report_loss": ("1", "reported cost on the test split"),
    "test_accuracy": ("1", "accuracy on the test split"),
    "train_loss": ("1", "objective on the whole training split"),
    "train_accuracy": ("1", "accuracy on the whole training split"),
}


def describe(
    name: str,
    dims: tuple[str, ...],
    energy_unit: str,
    dim: str = "step",
    units: str | None = None,
    long_name: str | None = None,
) -> ArrayMeta:
    """The metadata of record ``name``: :data:`DESCRIPTIONS`' units and long name unless given
    (``system`` units become ``energy_unit``), appended along ``dim``."""
    u, ln = DESCRIPTIONS.get(name, ("1", name))
    if u == "system":
        u = energy_unit
    return ArrayMeta(dims, units or u, long_name or ln, dim)


@dataclass(frozen=True)
class GroupRecords:
    """The per-step record names of one parameter group."""

    group: str
    conj: str
    param: str
    grad: str
    clipped: str
    projection: str
    #: per element, what the update requested and what the system then held (S, ...); only
    #: for systems that realise parameters (``PhysicalSystem.realises_parameters``)
    requested: str | None = None
    realised: str | None = None


@dataclass
class StepPlan:
    """What every step records: metadata by record name, the groups' record names, and how
    conjugates are logged (``per_sample``, ``batch_mean`` or ``none``)."""

    meta: dict[str, ArrayMeta]
    groups: tuple[GroupRecords, ...]
    conjugates: str
    _defaults: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def defaults(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logged in place of a diagnostic a system does not report: NaN (residual, energy),
        0 iterations, converged. Shared by the steps (the recorder only reads them)."""
        if self._defaults is None or self._defaults[0] != batch:
            arrays = (np.full(batch, np.nan), np.zeros(batch, np.int64), np.ones(batch, bool))
            self._defaults = (batch, arrays)
        return self._defaults[1]


def step_plan(system: PhysicalSystem, conjugates: str) -> StepPlan:
    """The names and metadata of the records every step of a run on ``system`` makes; the
    campaign builds it at the first step recorded and reuses it. ``conjugates``: how conjugate
    observables are logged (``per_sample``, ``batch_mean`` or ``none``)."""
    sys_ = system

    def meta(
        name: str, dims: tuple[str, ...], units: str | None = None, long_name: str | None = None
    ) -> ArrayMeta:
        return describe(name, dims, system.energy_unit, units=units, long_name=long_name)

    m = {
        "sample_index": meta("sample_index", ("sample",)),
        "inputs": meta(
            "inputs",
            ("sample", "input"),
            units=sys_.inputs.unit,
            long_name="physical inputs (clamped)",
        ),
        "targets": meta(
            "targets",
            ("sample", "output"),
            units=sys_.outputs.unit,
            long_name="physical targets",
        ),
        "outputs": meta(
            "outputs",
            ("phase", "sample", "output"),
            units=sys_.outputs.unit,
            long_name="measured outputs per phase",
        ),
    }
    groups = [
        _group_records(g, conjugates, meta, m, system.realises_parameters)
        for g in system.parameter_groups
    ]
    for name in ("residual", "iterations", "converged", "energy"):
        m[name] = meta(name, ("phase", "sample"))
    if system.residual_unit is not None:
        m["residual"] = meta("residual", ("phase", "sample"), units=system.residual_unit)
    for name in ("shots", "settle_time"):
        m[name] = meta(name, ("phase",))
    for name in (
        "loss",
        "report_loss",
        "batch_accuracy",
        "lr",
        "grad_cosine",
        "grad_rel_error",
        "timestamp",
        "step_time",
        "nonconverged_retried",
        "nonconverged_dropped",
    ):
        m[name] = meta(name, ())
    return StepPlan(m, tuple(groups), conjugates)


def _group_records(
    g: ParameterGroup,
    conjugates: str,
    meta: Callable[..., ArrayMeta],
    m: dict[str, ArrayMeta],
    realises: bool = False,
) -> GroupRecords:
    """The record names of group ``g``; their metadata (made by ``meta``) go into ``m``."""
    unit = f"{g.energy_unit}/{g.unit}"
    names = GroupRecords(
        g.name,
        f"conj_{g.name}",
        f"param_{g.name}",
        f"grad_{g.name}",
        f"clipped_{g.name}",
        f"projection_{g.name}",
        f"requested_{g.name}" if realises else None,
        f"realised_{g.name}" if realises else None,
    )
    if names.requested is not None and names.realised is not None:
        m[names.requested] = meta(
            names.requested,
            g.dims,
            units=g.unit,
            long_name=f"{g.long_name or g.name} requested by this step's update",
        )
        m[names.realised] = meta(
            names.realised,
            g.dims,
            units=g.unit,
            long_name=f"{g.long_name or g.name} realised by the device for that request",
        )
    if conjugates == "per_sample":
        m[names.conj] = meta(
            names.conj,
            ("phase", "sample", *g.dims),
            units=unit,
            long_name=f"dE/d{g.name} at equilibrium",
        )
    elif conjugates == "batch_mean":
        m[names.conj] = meta(
            names.conj,
            ("phase", *g.dims),
            units=unit,
            long_name=f"batch-mean dE/d{g.name}",
        )
    m[names.param] = meta(
        names.param,
        g.dims,
        units=g.unit,
        long_name=f"{g.long_name or g.name} held during the step",
    )
    m[names.grad] = meta(
        names.grad, g.dims, units=unit, long_name=f"gradient estimate dL/d{g.name}"
    )
    m[names.clipped] = meta(
        names.clipped,
        (),
        long_name=f"elements of {g.name} stopped at a bound by the projection",
    )
    m[names.projection] = meta(
        names.projection,
        (),
        units=g.unit,
        long_name=f"max |requested - held| {g.name} after the update",
    )
    return names
