"""Reading one run store as an :class:`xarray.Dataset` of exactly its committed records.

``xarray.open_zarr`` on a run store sees whatever the arrays hold right now: while the run
writes, the records of a commit in flight (or the fill-value tail a crash left) and arrays of
different lengths along ``step``. :func:`open_run` instead reads the commit marker once (the run
attributes ``committed_steps`` / ``committed_evals``, written after the data of every commit, see
:mod:`physlearn.store.run_store`) and takes exactly that many records of every array, so any
open -- during a run, after a SIGKILL, after the run -- gives a prefix of the finished run.

It only reads: no writer lock (not even the shared probe ``physlearn inspect`` makes), no
metadata written. Arrays are read lazily (dask) when dask is installed, else at once.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.store.run_store import APPEND_DIMS, RunStore, StoreError

if TYPE_CHECKING:
    import xarray as xr

#: Groups and hidden entries of a run store that are not per-run records.
_NOT_RECORDS = frozenset({"checkpoint", "graph", "integrity"})

#: The arrays of the ``graph`` group (:mod:`physlearn.store.build`), in the order read.
GRAPH_ARRAYS = ("graph/positions", "graph/edges", "graph/node_roles")

#: Coordinates the reader makes, by dimension: (units, long_name).
_INDEX_COORDS: dict[str, tuple[str, str]] = {
    "step": ("1", "optimiser step (0-based): the parameters held during it, and what it measured"),
    "eval": ("1", "evaluation (0-based)"),
    "sample": ("1", "position of the pattern in the training batch"),
    "test_sample": ("1", "pattern of the test split"),
    "input": ("1", "input channel"),
    "node": ("1", "node of the system's graph"),
    "edge": ("1", "edge of the system's graph"),
}


def open_run(path: str | os.PathLike[str]) -> xr.Dataset:
    """The committed records of the run store at ``path`` as an :class:`xarray.Dataset`.

    * exactly the committed steps and evaluations (the commit marker read once at opening):
      never the records of a commit in flight nor a crash's fill-value tail; consistent while
      another process writes the run and after that process was killed;
    * a coordinate on every dimension: ``step``, ``eval`` (with ``eval_step``, the optimiser
      updates before the evaluation, on it), ``phase``, ``output``, ``sample``, ``input``,
      ``node`` (``node_role``, ``node_x``, ``node_y``, and ``node_layer`` in a layered graph),
      ``edge`` (its endpoints ``edge_source`` and ``edge_target``, and ``edge_layer``, the layer
      the edge leaves, in a layered graph), and an integer index on any other dimension;
    * ``units`` and ``long_name`` on every variable and coordinate. Timestamps stay numbers
      with CF units (``seconds since 1970-01-01``): ``xarray.decode_cf(ds)`` makes datetimes.

    The run's attributes (``config``, ``system_snapshot``, ``exit_status`` once it ended, ...)
    are the dataset's, as read at opening. Raises :class:`~physlearn.store.run_store.StoreError`
    when ``path`` is not a readable run store. Takes no lock and writes nothing.
    """
    import xarray as xr

    store = RunStore.open(Path(path))
    attrs = store.attrs  # the commit marker: one snapshot, read with the group's metadata
    counts = {d: int(attrs.get(f"committed_{d}s", 0)) for d in APPEND_DIMS}
    arrays = _open_arrays(store.path, [*_entries(store.path), *GRAPH_ARRAYS])
    variables: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for name, array in arrays.items():
        if name in GRAPH_ARRAYS:
            continue
        dims = tuple(array.metadata.dimension_names or ())
        dims = dims or tuple(f"{name}_{i}" for i in range(array.ndim))
        if not dims or dims[0] not in APPEND_DIMS:
            coords[name] = _coordinate(store.path, name, array, dims)
        else:
            variables[name] = _committed(store.path, name, array, dims, counts[dims[0]])
    ds = xr.Dataset(variables, coords=coords, attrs=attrs)
    ds = _add_index_coords(_add_graph(ds, store.path, arrays, attrs), counts)
    if "eval_step" in ds.data_vars:  # small: read now, so that it indexes like any coordinate
        ds = ds.assign_coords(eval_step=ds["eval_step"].compute())
    return ds


def _entries(path: Path) -> list[str]:
    """Names of the arrays and groups directly in the run group that may hold records: every
    directory with metadata but the checkpoint, graph and checksum groups and hidden entries
    (the lock group)."""
    try:
        names = sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError as exc:
        raise StoreError(f"{path}: cannot list the store ({exc.strerror})") from None
    # no metadata yet: an array a commit in flight is creating (zarr writes its zarr.json
    # whole, so one that exists is complete)
    return [
        n
        for n in names
        if not n.startswith(".") and n not in _NOT_RECORDS and (path / n / "zarr.json").is_file()
    ]


def _open_arrays(path: Path, names: list[str]) -> dict[str, Any]:
    """The zarr arrays ``names`` of the group at ``path``, their metadata read concurrently
    (one round trip instead of one per array). A name without metadata (the graph arrays of a
    run without a graph) or naming a group is left out; damaged metadata is a StoreError."""
    import zarr
    import zarr.api.asynchronous as za
    from zarr.core.sync import sync

    async def fetch() -> list[Any]:
        group = await za.open_group(store=str(path), mode="r", zarr_format=3)
        return await asyncio.gather(*(group.getitem(n) for n in names), return_exceptions=True)

    try:
        found = sync(fetch())
    except Exception as exc:  # zarr raises several types for damaged metadata
        raise StoreError(f"{path}: cannot open the Zarr group ({exc})") from None
    arrays: dict[str, Any] = {}
    for name, item in zip(names, found, strict=True):
        missing = isinstance(item, (KeyError, FileNotFoundError))
        if missing and not (path / name / "zarr.json").is_file():
            continue
        if isinstance(item, BaseException):
            raise StoreError(f"{path}: array {name!r} cannot be opened ({item})")
        if isinstance(item, za.AsyncArray):
            arrays[name] = zarr.Array(item)
    return arrays


def _coordinate(path: Path, name: str, array: Any, dims: tuple[str, ...]) -> Any:
    """A label coordinate written at creation (``phase``, ``output``): read whole, strings as
    fixed-width numpy strings (netCDF writes those, not numpy's variable-width ones)."""
    import xarray as xr

    values = np.asarray(_read(path, name, array, slice(None)))
    if values.dtype.kind not in "biuf":
        values = np.array([str(v) for v in values.ravel()]).reshape(values.shape)
    return xr.Variable(dims, values, attrs=_attrs(array, name))


def _read(path: Path, name: str, array: Any, rows: Any) -> Any:
    """``array[rows]``; a damaged chunk is a :class:`StoreError` naming the array."""
    try:
        return array[rows]
    except Exception as exc:  # zarr and numcodecs raise many types for a damaged chunk
        raise StoreError(
            f"{path}: array {name!r} cannot be read ({type(exc).__name__}: {exc}); "
            f"`physlearn inspect {path} --verify` checks the whole store"
        ) from None


class _Records:
    """An array's records for dask: reads through :func:`_read`, so that a damaged chunk met
    when the dataset is computed (a plot, an export) is a one-line StoreError too."""

    def __init__(self, path: Path, name: str, array: Any) -> None:
        self.path, self.name, self.array = path, name, array
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype: np.dtype[Any] = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> Any:
        return _read(self.path, self.name, self.array, key)


def _committed(path: Path, name: str, array: Any, dims: tuple[str, ...], n: int) -> Any:
    """The first ``n`` (committed) records of an appendable array, lazily when dask is there."""
    import xarray as xr

    if array.shape[0] < n:
        raise StoreError(
            f"{path}: array {name!r} holds {array.shape[0]} {dims[0]}s but {n} are "
            f"committed; `physlearn inspect {path} --verify` checks the whole store"
        )
    try:
        import dask.array as da
    except ImportError:
        data: Any = _read(path, name, array, slice(0, n))
    else:
        # named by what it reads: opens at other moments must not share dask keys
        key = f"physlearn-{path.resolve()}-{name}-{array.shape[0]}"
        meta = np.empty((0,) * array.ndim, dtype=array.dtype)
        records = _Records(path, name, array)
        data = da.from_array(records, chunks=array.chunks, name=key, meta=meta)[:n]
    return xr.Variable(dims, data, attrs=_attrs(array, name))


def _attrs(array: Any, name: str) -> dict[str, Any]:
    """An array's attributes with ``units`` and ``long_name`` always present."""
    attrs = dict(array.attrs)
    attrs.setdefault("units", "1")
    attrs.setdefault("long_name", name)
    return attrs


def _add_graph(
    ds: xr.Dataset, path: Path, arrays: dict[str, Any], attrs: dict[str, Any]
) -> xr.Dataset:
    """Node and edge coordinates from the run's ``graph`` group: roles and drawing positions
    of the nodes, endpoints of the edges, and layers in a layered graph. Skipped when the
    records' ``node`` / ``edge`` dimensions do not have the graph's sizes."""
    if any(name not in arrays for name in GRAPH_ARRAYS):
        return ds
    pos, edges, roles = (_read(path, n, arrays[n], slice(None)) for n in GRAPH_ARRAYS)
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 2)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    layered = _graph_type(attrs) == "layered" and np.array_equal(pos[:, 0], np.round(pos[:, 0]))
    node_layer = pos[:, 0].astype(np.int64)
    new: dict[str, tuple[tuple[str, ...], Any, dict[str, str]]] = {}
    if ds.sizes.get("node", len(pos)) == len(pos):
        new["node_role"] = (("node",), np.array([str(r) for r in roles], dtype=str), _u(ROLE))
        new["node_x"] = (("node",), pos[:, 0], _u("node position in the drawing plane, x"))
        new["node_y"] = (("node",), pos[:, 1], _u("node position in the drawing plane, y"))
        if layered:
            new["node_layer"] = (("node",), node_layer, _u("layer of the node (0: inputs)"))
    if ds.sizes.get("edge", len(edges)) == len(edges):
        new["edge_source"] = (("edge",), edges[:, 0], _u("node at the edge's first end"))
        new["edge_target"] = (("edge",), edges[:, 1], _u("node at the edge's second end"))
        if layered:
            src = node_layer[edges[:, 0]]
            new["edge_layer"] = (("edge",), src, _u("layer the edge leaves (its source's)"))
    return ds.assign_coords(new)


ROLE = "role of the node (input, output, hidden, ...)"


def _u(long_name: str) -> dict[str, str]:
    return {"units": "1", "long_name": long_name}


def _graph_type(attrs: dict[str, Any]) -> str | None:
    system = attrs.get("config", {}).get("system", {})
    graph = system.get("graph") if isinstance(system, dict) else None
    return graph.get("type") if isinstance(graph, dict) else None


def _add_index_coords(ds: xr.Dataset, counts: dict[str, int]) -> xr.Dataset:
    """An integer index coordinate on every dimension that has none (``step`` and ``eval``
    sized by the commit marker even where no array has the dimension yet)."""
    sizes = {str(d): n for d, n in ds.sizes.items()}
    for d in APPEND_DIMS:
        sizes.setdefault(d, counts[d])
    new = {}
    for dim, size in sizes.items():
        if dim in ds.coords:
            continue
        units, long_name = _INDEX_COORDS.get(dim, ("1", f"index along {dim}"))
        new[dim] = (
            (dim,),
            np.arange(size, dtype=np.int64),
            {"units": units, "long_name": long_name},
        )
    return ds.assign_coords(new)
