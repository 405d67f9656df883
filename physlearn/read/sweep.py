"""Reading a sweep store as one :class:`xarray.Dataset`: its runs stacked along the sweep's axes.

A sweep store (:mod:`physlearn.sweep.plan`) is a Zarr group whose attributes hold the spec and
the run table (run id, axis values, seed of every planned run); each run is a run store at
``<sweep>/<run_id>``. :func:`open_sweep` reads every run that exists with
:func:`~physlearn.read.run.open_run` and stacks them, one dimension per axis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.read.run import open_run
from physlearn.store.run_store import StoreError

if TYPE_CHECKING:
    import xarray as xr

#: The dimension of the random-search samples (its coordinates: each random axis's values).
RANDOM_DIM = "random_sample"


def open_sweep(path: str | os.PathLike[str]) -> xr.Dataset:
    """The runs of the sweep store at ``path`` stacked along the sweep's axes.

    One dimension per axis, named as the sweep file names it: ``variant`` (the variants'
    names), each grid axis by its dotted path (``system.graph.sizes.1``, values as given;
    mappings and lists as JSON text), :data:`RANDOM_DIM` for random-search samples (each random
    axis's values a coordinate on it) and ``seed``. So
    ``ds.test_accuracy.sel(variant="skip").mean("seed")`` averages the ``skip`` runs over seeds.

    Every run is read as :func:`~physlearn.read.run.open_run` reads it -- its committed records
    only, so a sweep that is running (or was killed) reads consistently -- and *then* the runs
    are padded with NaN to the longest along ``step`` and ``eval`` (and along any other
    dimension whose size differs between runs, e.g. ``edge`` across architectures); integer and
    boolean records of padded runs therefore become floats. Coordinates that differ between
    runs (``edge_source`` of different graphs, ``eval_step`` of runs of different lengths) gain
    the axes' dimensions. A run whose store does not exist yet is all NaN.

    Per run: ``run_status`` (``success``, ``abort``, ``fail``; ``unfinished`` while it runs or
    after its writer died; ``pending`` before its store exists; ``unreadable`` when its store
    cannot be read, the reason in the attribute ``unreadable``), ``run_id`` and
    ``committed_steps``. The dataset's attributes are the sweep store's (spec, run table).
    Raises :class:`~physlearn.store.run_store.StoreError` when ``path`` is not a sweep store.
    """
    import xarray as xr

    root = Path(path)
    attrs = _sweep_attrs(root)
    rows = attrs.get("runs") or []
    if not rows:
        raise StoreError(
            f"{root}: the sweep has no run table yet (its driver is starting); open it again "
            "in a moment"
        )
    axes = _axes(attrs, rows)
    labels = _number_samples([_labels(row, axes) for row in rows], axes)
    runs: list[xr.Dataset] = []
    placed: list[dict[str, Any]] = []
    table: dict[str, list[Any]] = {"run_status": [], "run_id": [], "committed_steps": []}
    unreadable: dict[str, str] = {}
    for row, label in zip(rows, labels, strict=True):
        ds, state = _read_run(root, str(row["run_id"]), unreadable)
        table["run_status"].append(_table_status(row) if state == "pending" else state)
        table["run_id"].append(str(row["run_id"]))
        table["committed_steps"].append(
            int((row if ds is None else ds.attrs).get("committed_steps") or 0)
        )
        if ds is not None:
            runs.append(ds)
            placed.append(label)
    out = _stack(_table(table), labels, axes)
    if runs:
        data = _stack(_concat(_positional_labels(runs)), placed, axes)
        out = xr.merge([data, out], join="outer", combine_attrs="override")
    out = out.reindex({a: _values([lab[a] for lab in labels]) for a in axes})
    for a in axes:
        out[a].attrs.update(_axis_attrs(a))
    out = out.assign_coords(_random_coords(rows, labels, axes)).transpose(*axes, ...)
    out.attrs = {**attrs, "unreadable": unreadable} if unreadable else dict(attrs)
    return out


def _table(columns: dict[str, list[Any]]) -> xr.Dataset:
    """The per-run variables along ``run``: status, id, committed steps."""
    import xarray as xr

    return xr.Dataset(
        {
            "run_status": ("run", np.array(columns["run_status"], dtype=str), _u("run status")),
            "run_id": ("run", np.array(columns["run_id"], dtype=str), _u("run id")),
            "committed_steps": (
                "run",
                np.array(columns["committed_steps"], dtype=np.int64),
                _u("steps the run committed (read from its store; the run table's before)"),
            ),
        }
    )


def _concat(runs: list[xr.Dataset]) -> xr.Dataset:
    """The runs along a new dimension ``run``, padded with NaN where they are shorter or lack a
    variable (a run without commits has no arrays yet). A non-index coordinate stays one
    coordinate when every run that has it agrees on it, else it gains the ``run`` dimension."""
    import xarray as xr

    names = sorted({str(c) for ds in runs for c in ds.coords if c not in ds.indexes})
    flat = [ds.reset_coords([n for n in names if n in ds.coords]) for ds in runs]
    data = xr.concat(
        flat, dim="run", join="outer", coords="minimal", data_vars="all", combine_attrs="override"
    )
    shared = {}
    for n in names:
        values = [ds[n] for ds in runs if n in ds.coords]
        if all(v.dims == values[0].dims and v.equals(values[0]) for v in values[1:]):
            longest = max(values, key=lambda v: v.size)
            shared[n] = longest.variable
    return (
        data.drop_vars(list(shared))
        .assign_coords(shared)
        .set_coords([n for n in names if n not in shared])
    )


def _positional_labels(runs: list[xr.Dataset]) -> list[xr.Dataset]:
    """Runs whose label coordinates differ (``output`` names of different graphs, ``phase``
    labels of different betas) are aligned by position: the dimension gets an integer index
    and the labels become the coordinate ``<dim>_label``, per run."""
    dims = {d for ds in runs for d in ds.indexes}
    differing = []
    for d in sorted(dims):
        indexes = [ds.indexes[d] for ds in runs if d in ds.indexes]
        if any(i.dtype.kind not in "iu" for i in indexes) and not all(
            i.equals(indexes[0]) for i in indexes
        ):
            differing.append(d)
    if not differing:
        return runs
    out = []
    for ds in runs:
        present = [d for d in differing if d in ds.indexes]
        new: dict[str, Any] = {}
        for d in present:
            new[f"{d}_label"] = ((d,), ds[d].values, dict(ds[d].attrs))
            new[d] = ((d,), np.arange(ds.sizes[d]), _u(f"position along {d}"))
        out.append(ds.drop_vars(present).assign_coords(new))
    return out


def _sweep_attrs(root: Path) -> dict[str, Any]:
    """The sweep store's attributes (read as :func:`physlearn.sweep.plan.read_sweep_attrs`
    does; that module is not imported, as it imports :mod:`physlearn` itself)."""
    from physlearn.sweep.spec import SWEEP_KIND

    try:
        meta = json.loads((root / "zarr.json").read_text())
    except (OSError, ValueError):
        meta = None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict) or attrs.get("kind") != SWEEP_KIND:
        what = "does not exist" if not root.exists() else "is not a physlearn sweep store"
        raise StoreError(f"{root} {what} (open a single run with physlearn.open_run)")
    return attrs


def _axes(attrs: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The stacking dimensions: the spec's axes (random ones folded into one), then seed."""
    spec = attrs.get("spec") or {}
    random = list((spec.get("random") or {}).get("axes") or {})
    axes = [a for a in attrs.get("axes", []) if a not in random]
    if random:
        axes.append(RANDOM_DIM)
    if any(r.get("seed") is not None for r in rows):
        axes.append("seed")
    return axes


def _labels(row: dict[str, Any], axes: list[str]) -> dict[str, Any]:
    """A run's position on each axis: its value (JSON text for mappings and lists)."""
    values = row.get("axes") or {}
    label: dict[str, Any] = {}
    for a in axes:
        if a == "seed":
            label[a] = row.get("seed")
        elif a == RANDOM_DIM:  # the sample's values; numbered by _number_samples
            label[a] = json.dumps(
                {k: v for k, v in values.items() if k not in axes}, sort_keys=True
            )
        else:
            v = values.get(a)
            label[a] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
    return label


def _number_samples(labels: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """Number the random samples 0, 1, ... in the order the run table first lists them (the
    order they were drawn in)."""
    if RANDOM_DIM not in axes:
        return labels
    order = {s: i for i, s in enumerate(dict.fromkeys(lab[RANDOM_DIM] for lab in labels))}
    return [{**lab, RANDOM_DIM: order[lab[RANDOM_DIM]]} for lab in labels]


def _random_coords(
    rows: list[dict[str, Any]], labels: list[dict[str, Any]], axes: list[str]
) -> dict[str, Any]:
    """Each random axis's value per sample, as coordinates on :data:`RANDOM_DIM`."""
    if RANDOM_DIM not in axes:
        return {}
    per_sample: dict[int, dict[str, Any]] = {}
    for row, lab in zip(rows, labels, strict=True):
        values = row.get("axes") or {}
        per_sample.setdefault(lab[RANDOM_DIM], {k: v for k, v in values.items() if k not in axes})
    paths = list(dict.fromkeys(k for v in per_sample.values() for k in v))
    order = sorted(per_sample)
    return {
        p: (
            RANDOM_DIM,
            _as_coordinate([per_sample[i].get(p) for i in order]),
            {"long_name": f"config field {p} (random search)"},
        )
        for p in paths
    }


def _values(seen: list[Any]) -> np.ndarray:
    """The distinct values of one axis in the order of the run table (the sweep file's order);
    strings when they are not all numbers."""
    distinct = list(dict.fromkeys(seen))
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
    return np.array(distinct) if numbers else np.array([str(v) for v in distinct])


def _stack(ds: xr.Dataset, labels: list[dict[str, Any]], axes: list[str]) -> xr.Dataset:
    """Turn the ``run`` dimension of ``ds`` into one dimension per axis."""
    coords = {a: ("run", _as_coordinate([lab[a] for lab in labels])) for a in axes}
    ds = ds.assign_coords(coords)
    if len(axes) == 1:
        return ds.swap_dims({"run": axes[0]})
    return ds.set_index(run=axes).unstack("run")


def _as_coordinate(values: list[Any]) -> np.ndarray:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return np.array(values) if numbers else np.array([str(v) for v in values])


def _read_run(root: Path, run_id: str, unreadable: dict[str, str]) -> tuple[xr.Dataset | None, str]:
    """One run's dataset (None when there is no store yet or it cannot be read) and status."""
    path = root / run_id
    if not path.exists():
        return None, "pending"
    try:
        ds = open_run(path)
    except StoreError as exc:
        unreadable[run_id] = str(exc)
        return None, "unreadable"
    return ds, str(ds.attrs.get("exit_status", "unfinished"))


def _table_status(row: dict[str, Any]) -> str:
    """A run without a store: ``fail`` when it failed before its store existed, else pending."""
    return "fail" if row.get("status") == "fail" else "pending"


def _axis_attrs(axis: str) -> dict[str, str]:
    if axis == "seed":
        return _u("seed of the run (config field seed)")
    if axis == "variant":
        return _u("variant of the sweep (its name in the sweep file)")
    if axis == RANDOM_DIM:
        return _u("random-search sample (JSON of its values)")
    return {"long_name": f"config field {axis} (swept)"}


def _u(long_name: str) -> dict[str, str]:
    return {"units": "1", "long_name": long_name}
