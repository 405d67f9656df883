"""The records of one run a page has not shown yet, read with :func:`physlearn.open_run`.

A :class:`RunFeed` remembers how many steps and evaluations it has handed out; each
:meth:`RunFeed.poll` opens the run again (exactly its committed records, safe while another
process writes it) and returns only the rows committed since, reduced to what the panels draw:
one number per step or evaluation (a step's largest residual, its mean iteration count, ...).
numpy and xarray only: the page turns these rows into Bokeh data sources.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.dashboard.targets import run_status

if TYPE_CHECKING:
    import xarray as xr

#: Per-step columns every run's step source has (NaN where the run does not record it), so that
#: runs of different systems overlay in the same figures.
STEP_COLUMNS = (
    "loss",
    "batch_accuracy",
    "one_minus_cos",
    "grad_rel_error",
    "step_time",
    "throughput",
    "instrument_time",
    "settle_wait",
    "residual_max",
    "iterations_mean",
    "nonconverged",
    "retries",
    "reconnects",
)

#: Smallest 1 - cos drawn: a cosine that rounds to exactly 1 would vanish from a log axis.
COS_FLOOR = 1e-16

#: Steps over which the throughput (steps per second between commits) is averaged.
THROUGHPUT_WINDOW = 10

#: Cumulative bench counters (``system_<name>``) drawn as per-step increments.
PER_STEP_COUNTERS = {
    "instrument_time": "system_instrument_time",
    "settle_wait": "system_settle_wait",
}
#: Cumulative bench counters drawn as they are.
CUMULATIVE_COUNTERS = {"retries": "system_retries", "reconnects": "system_reconnects"}


@dataclass
class Graph:
    """The system's graph as the store holds it: node positions and roles, edge endpoints."""

    node_x: np.ndarray
    node_y: np.ndarray
    node_role: list[str]
    edge_source: np.ndarray
    edge_target: np.ndarray


@dataclass
class Params:
    """The parameters held during the last committed step: one value per edge."""

    name: str
    long_name: str
    units: str
    step: int
    values: np.ndarray


@dataclass
class RunUpdate:
    """What a poll found: the run's state and the rows committed since the previous poll."""

    status: str
    committed_steps: int
    committed_evals: int
    total_steps: int | None
    steps: dict[str, np.ndarray]
    evals: dict[str, np.ndarray]
    last: dict[str, float]
    counters: dict[str, float]
    params: Params | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> str:
        """``N of T steps committed (status)``: the line a page shows for the run."""
        total = f" of {self.total_steps}" if self.total_steps else ""
        return f"{self.committed_steps}{total} steps committed ({self.status})"


class RunFeed:
    """Hands out a run's committed rows once each, poll after poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps_read = 0
        self.evals_read = 0
        self.eval_metrics: list[str] = []
        self._timestamps: list[float] = []
        self._counter_last: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._params_step = -1

    def poll(self) -> RunUpdate:
        """Open the run and return the rows committed since the last poll. Raises
        :class:`~physlearn.store.run_store.StoreError` when the store cannot be read."""
        from physlearn.read.run import open_run

        ds = open_run(self.path)
        n_steps, n_evals = int(ds.sizes["step"]), int(ds.sizes["eval"])
        if not self.eval_metrics:
            self.eval_metrics = eval_metric_names(ds)
        steps = self._step_rows(ds, self.steps_read, n_steps)
        evals = self._eval_rows(ds, self.evals_read, n_evals)
        params = self._params(ds, n_steps)
        self.steps_read, self.evals_read = n_steps, n_evals
        counters = {
            str(name)[len("system_") :]: float(ds[name][-1].values)
            for name in ds.data_vars
            if str(name).startswith("system_") and ds[name].dims == ("step",) and n_steps
        }
        attrs = dict(ds.attrs)
        return RunUpdate(
            status=run_status(attrs),
            committed_steps=n_steps,
            committed_evals=n_evals,
            total_steps=attrs.get("total_steps"),
            steps=steps,
            evals=evals,
            last=dict(self._last),
            counters=counters,
            params=params,
            attrs=attrs,
        )

    def _step_rows(self, ds: xr.Dataset, start: int, stop: int) -> dict[str, np.ndarray]:
        """The per-step columns of steps ``start`` to ``stop``."""
        rows = slice(start, stop)
        k = stop - start
        out: dict[str, np.ndarray] = {"step": np.arange(start, stop, dtype=np.int64)}
        for name in ("loss", "batch_accuracy", "grad_rel_error", "step_time"):
            out[name] = _column(ds, name, rows, k)
        cos = _column(ds, "grad_cosine", rows, k)
        out["one_minus_cos"] = np.maximum(1.0 - cos, COS_FLOOR)  # NaN stays NaN
        out["throughput"] = self._throughput(_column(ds, "timestamp", rows, k))
        out["residual_max"] = _reduced(ds, "residual", rows, k, np.nanmax, absolute=True)
        out["iterations_mean"] = _reduced(ds, "iterations", rows, k, np.nanmean)
        converged = _reduced(ds, "converged", rows, k, np.mean)
        size = _per_step_size(ds, "converged")
        out["nonconverged"] = np.round((1.0 - converged) * size)
        for col, name in PER_STEP_COUNTERS.items():
            out[col] = self._increments(name, _column(ds, name, rows, k))
        for col, name in CUMULATIVE_COUNTERS.items():
            out[col] = _column(ds, name, rows, k)
        if k and np.isfinite(out["loss"][-1]):
            self._last["loss"] = float(out["loss"][-1])
        return out

    def _eval_rows(self, ds: xr.Dataset, start: int, stop: int) -> dict[str, np.ndarray]:
        """``eval_step`` and every evaluation metric of evaluations ``start`` to ``stop``."""
        rows = slice(start, stop)
        k = stop - start
        step = ds["eval_step"].values[rows] if "eval_step" in ds.coords else np.arange(start, stop)
        out: dict[str, np.ndarray] = {"eval_step": np.asarray(step, dtype=np.int64)}
        for name in self.eval_metrics:
            out[name] = _column(ds, name, rows, k)
            if k and np.isfinite(out[name][-1]):
                self._last[name] = float(out[name][-1])
        return out

    def _throughput(self, stamps: np.ndarray) -> np.ndarray:
        """Steps per second over the last :data:`THROUGHPUT_WINDOW` commits, per step."""
        out = np.full(stamps.shape, np.nan)
        for i, t in enumerate(stamps):
            self._timestamps.append(float(t))
            j = max(0, len(self._timestamps) - 1 - THROUGHPUT_WINDOW)
            dt = self._timestamps[-1] - self._timestamps[j]
            n = len(self._timestamps) - 1 - j
            if n and dt > 0:
                out[i] = n / dt
        return out

    def _increments(self, name: str, cumulative: np.ndarray) -> np.ndarray:
        """Per-step increments of a cumulative counter. The first step's is unknown (NaN): its
        cumulative value also holds what came before the first step (connecting, setting up)."""
        if not cumulative.size:
            return cumulative
        previous = self._counter_last.get(name, np.nan)
        out = np.diff(cumulative, prepend=previous)
        self._counter_last[name] = float(cumulative[-1])
        with np.errstate(invalid="ignore"):  # a restarted counter (resume) is no increment
            return np.where(out >= 0, out, np.nan)

    def _params(self, ds: xr.Dataset, n_steps: int) -> Params | None:
        """The edge parameters of the last committed step, when that step is new."""
        name = edge_param_name(ds)
        if name is None or n_steps == 0 or n_steps - 1 == self._params_step:
            return None
        self._params_step = n_steps - 1
        var = ds[name]
        values = np.asarray(var.isel(step=n_steps - 1).values, dtype=np.float64)
        return Params(
            name=name,
            long_name=str(var.attrs.get("long_name", name)),
            units=str(var.attrs.get("units", "1")),
            step=n_steps - 1,
            values=values,
        )


#: The record each step column is computed from.
COLUMN_SOURCES = {
    "loss": "loss",
    "batch_accuracy": "batch_accuracy",
    "one_minus_cos": "grad_cosine",
    "grad_rel_error": "grad_rel_error",
    "step_time": "step_time",
    "throughput": "timestamp",
    "residual_max": "residual",
    "iterations_mean": "iterations",
    "nonconverged": "converged",
    **PER_STEP_COUNTERS,
    **CUMULATIVE_COUNTERS,
}


def recorded_columns(ds: xr.Dataset) -> set[str]:
    """The step and evaluation columns a run records: its record exists and, once a step (an
    evaluation) is committed, holds a number there (a bench records no residual: all NaN)."""
    out = set()
    for col, name in [*COLUMN_SOURCES.items(), *((m, m) for m in eval_metric_names(ds))]:
        if name not in ds.data_vars:
            continue
        var = ds[name]
        if var.sizes[var.dims[0]] == 0:
            out.add(col)
            continue
        first = np.asarray(var[0].values, dtype=np.float64)
        if np.isfinite(first).any():
            out.add(col)
    return out


def eval_metric_names(ds: xr.Dataset) -> list[str]:
    """Evaluation metrics: every record with one number per evaluation but its timestamp."""
    return [
        str(n)
        for n, v in ds.data_vars.items()
        if v.dims == ("eval",) and n != "eval_timestamp" and v.dtype.kind in "biuf"
    ]


def edge_param_name(ds: xr.Dataset) -> str | None:
    """The record of the parameters on the graph's edges (``param_conductance``, ...)."""
    for n, v in ds.data_vars.items():
        if str(n).startswith("param_") and v.dims == ("step", "edge"):
            return str(n)
    return None


def read_graph(ds: xr.Dataset) -> Graph | None:
    """The graph from the dataset's node and edge coordinates (None without them)."""
    needed = ("node_x", "node_y", "edge_source", "edge_target")
    if any(c not in ds.coords for c in needed):
        return None
    roles = ds["node_role"].values if "node_role" in ds.coords else ["node"] * ds.sizes["node"]
    return Graph(
        node_x=np.asarray(ds["node_x"].values, dtype=np.float64),
        node_y=np.asarray(ds["node_y"].values, dtype=np.float64),
        node_role=[str(r) for r in roles],
        edge_source=np.asarray(ds["edge_source"].values, dtype=np.int64),
        edge_target=np.asarray(ds["edge_target"].values, dtype=np.int64),
    )


def _column(ds: xr.Dataset, name: str, rows: slice, k: int) -> np.ndarray:
    """A per-step (or per-evaluation) record's rows as floats; NaN when the run lacks it."""
    if name not in ds.data_vars or ds[name].ndim != 1:
        return np.full(k, np.nan)
    return np.asarray(ds[name][rows].values, dtype=np.float64)


def _reduced(
    ds: xr.Dataset, name: str, rows: slice, k: int, how: Any, absolute: bool = False
) -> np.ndarray:
    """One number per step of a record with more dimensions (over phases, samples, ...)."""
    if k == 0 or name not in ds.data_vars or ds[name].dims[:1] != ("step",):
        return np.full(k, np.nan)
    values = np.asarray(ds[name][rows].values, dtype=np.float64).reshape(k, -1)
    if absolute:
        values = np.abs(values)
    if not values.size:
        return np.full(k, np.nan)
    with warnings.catch_warnings():  # a step whose values are all NaN reduces to NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(how(values, axis=1), dtype=np.float64)


def _per_step_size(ds: xr.Dataset, name: str) -> int:
    """Number of values per step of a record (relaxations per step for ``converged``)."""
    if name not in ds.data_vars:
        return 0
    return int(np.prod(ds[name].shape[1:]))
