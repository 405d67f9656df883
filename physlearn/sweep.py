"""Campaigns: many runs over config axes, executed on Dask distributed.

A sweep file names a base experiment config and the axes to vary::

    name: beta_study                      # file-safe; the store is sweeps/<name>.zarr
    base: quickstart.yaml                 # relative to this file, or an inline config mapping
    set:                                  # overrides applied to every run (same paths as --set)
      schedule.epochs: 20
    variants:                             # optional: named patches, each may bring its own base
      layered: {}
      skip: {set: {system.graph.skip: true}}
    grid:                                 # cartesian product of value lists
      estimator.beta: [1.0e-4, 1.0e-3]
      system.graph.sizes.1: [8, 16]
    random:                               # optional: random samples, drawn once per sweep
      samples: 4
      seed: 0
      axes:
        optimizer.lr: {dist: log_uniform, low: 1.0e-4, high: 1.0e-2}
    seeds: 5                              # a count (0..4) or a list; sets the config's `seed`

Runs are the product variants x grid points x random samples x seeds; random sample ``i`` has
the same values at every grid point. Overrides apply in the order base -> variant ``set`` ->
sweep ``set`` -> grid -> random -> seed, with the semantics of ``physlearn run --set``
(dotted paths, list indices as numbers, missing sections created). Every expanded config is
validated before anything runs or is written; a bad one is reported with its run id and field.

Run ids and the store
---------------------
A run's id is a pure function of its axis values, e.g. ``skip__beta-0.0001__sizes.1-16__seed-3``
(variant name, then ``<axis>-<value>`` per grid axis with the shortest unambiguous suffix of its
path, ``rand<i>-<hash>`` per random sample, ``seed-<s>``). Values that do not print losslessly as
a file-safe word (mappings, lists, long strings) appear as a short hash. A run id is one path
component of letters, digits and ``. _ + = -``, not starting with ``.`` (a variant name must be
one: ``..`` or ``a/b`` is refused when the file is validated). The config's ``name`` is set to
the run id. The sweep store (default ``sweeps/<name>.zarr``, relative to the working
directory like ``store.root``) is a Zarr group whose attributes hold the spec and the run
table; each run is a normal run store at ``<store>/<run_id>`` that ``physlearn inspect``,
``resume`` and ``report`` accept.

Running it again
----------------
The same command finishes a sweep: ``success`` runs are skipped, ``interrupted`` and ``abort``
runs are resumed from their last commit (exactly, see :mod:`physlearn.orchestrator`), runs
without a store are started. A ``fail`` run (recorded with ``exit_status=fail`` and its
``error``) is reported and skipped, unless ``--retry-failed``: then it is resumed from its
committed steps, like ``physlearn resume``. A run whose stored config differs from the sweep's
expansion (the sweep file or its base was edited) is refused before anything runs.

One driver at a time writes a sweep store: it holds the store's writer lock
(:mod:`physlearn.storelock`) for the whole sweep, and a second driver exits 2 naming the holder.
A sweep deletes nothing it cannot prove it made: every run store it creates records the sweep
store's ``guid`` and its run id (its ``sweep`` attribute); a directory under a run's name that
is not a run store is refused (exit 2), never replaced; and only an unlocked construction
leftover ``.<run_id>.creating-<hex>`` carrying this sweep's identity is removed.

Execution
---------
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

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from physlearn.config import (
    ConfigError,
    ExperimentConfig,
    parse_config,
    read_yaml,
    validate_model,
)
from physlearn.configbase import StrictModel

if TYPE_CHECKING:
    import numpy as np
    from distributed import Client, LocalCluster

SWEEP_KIND = "physlearn-sweep"
SAFE_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
MAX_ID_LENGTH = 150
#: A run id: one path component, never ``.``/``..`` nor hidden (inside a sweep store, hidden
#: entries are the lock file and run stores still being created), from a portable character set.
RUN_ID = re.compile(rf"^[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{{0,{MAX_ID_LENGTH - 1}}}$")
MAX_VARIANT_LENGTH = 64

DottedPath = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$"),
]
FileSafeName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*$", max_length=64)
]


# --------------------------------------------------------------------------------------------
# The sweep file


class UniformAxis(StrictModel):
    """A float drawn uniformly from [low, high] (rounded to 6 significant digits)."""

    dist: Literal["uniform"] = Field(description="distribution: uniform")
    low: float = Field(description="lower end")
    high: float = Field(description="upper end")

    @model_validator(mode="after")
    def _order(self) -> UniformAxis:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be < high ({self.high:g})")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        return _round6(float(rng.uniform(self.low, self.high)))


class LogUniformAxis(StrictModel):
    """A positive float whose logarithm is uniform on [log low, log high] (6 digits)."""

    dist: Literal["log_uniform"] = Field(description="distribution: log-uniform")
    low: float = Field(gt=0, description="lower end (> 0)")
    high: float = Field(gt=0, description="upper end")

    @model_validator(mode="after")
    def _order(self) -> LogUniformAxis:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be < high ({self.high:g})")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        lo, hi = math.log(self.low), math.log(self.high)
        return _round6(math.exp(float(rng.uniform(lo, hi))))


class IntAxis(StrictModel):
    """An integer drawn uniformly from low..high (both included)."""

    dist: Literal["int"] = Field(description="distribution: uniform integers")
    low: int = Field(description="smallest value")
    high: int = Field(description="largest value (included)")

    @model_validator(mode="after")
    def _order(self) -> IntAxis:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self

    def draw(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))


class ChoiceAxis(StrictModel):
    """One of the listed values, each equally likely."""

    dist: Literal["choice"] = Field(description="distribution: uniform choice")
    values: list[Any] = Field(min_length=1, description="the values to choose from")

    def draw(self, rng: np.random.Generator) -> Any:
        return copy.deepcopy(self.values[int(rng.integers(len(self.values)))])


RandomDist = Annotated[
    UniformAxis | LogUniformAxis | IntAxis | ChoiceAxis, Field(discriminator="dist")
]


class RandomAxes(StrictModel):
    """Random search: ``samples`` draws of every axis, from a generator seeded by ``seed``."""

    samples: int = Field(ge=1, le=100_000, description="number of random samples")
    seed: int = Field(0, ge=0, description="seed of the sampler (not of the runs)")
    axes: dict[DottedPath, RandomDist] = Field(
        min_length=1, description="config field (dotted path) -> distribution"
    )


class Variant(StrictModel):
    """A named patch: its own base config (optional) and overrides."""

    base: str | dict[str, Any] | None = Field(
        None, description="config path (relative to the sweep file) or inline mapping"
    )
    set: dict[DottedPath, Any] = Field(
        default_factory=dict, description="overrides: dotted path -> value"
    )


class SweepSpec(StrictModel):
    """A sweep: a base experiment config and the axes to vary (see :mod:`physlearn.sweep`)."""

    name: FileSafeName = Field(description="sweep name (file-safe); default store sweeps/<name>")
    description: str = Field("", description="free text")
    base: str | dict[str, Any] | None = Field(
        None,
        description="base experiment config: a path relative to the sweep file, or inline",
    )
    set: dict[DottedPath, Any] = Field(
        default_factory=dict, description="overrides applied to every run"
    )
    variants: dict[str, Variant] = Field(
        default_factory=dict,
        description="named patches (an axis of the sweep); a name is 1-64 letters, digits and "
        ". _ + = -, not starting with '.' (it begins the run ids, the runs' directory names)",
    )
    grid: dict[DottedPath, list[Any]] = Field(
        default_factory=dict, description="config field (dotted path) -> list of values"
    )
    random: RandomAxes | None = Field(None, description="random-search axes")
    seeds: Annotated[int, Field(ge=1, le=100_000)] | list[Annotated[int, Field(ge=0)]] | None = (
        Field(None, description="a count n (seeds 0..n-1) or a list of seeds")
    )
    store: str | None = Field(
        None, description="sweep store path (default sweeps/<name>.zarr, relative to the cwd)"
    )

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, variants: dict[str, Variant]) -> dict[str, Variant]:
        for vname in variants:
            if len(vname) > MAX_VARIANT_LENGTH or not RUN_ID.match(vname):
                raise ValueError(
                    f"{vname!r} is not a valid variant name: it names the runs' directories, so "
                    f"use 1-{MAX_VARIANT_LENGTH} letters, digits and . _ + = - (not starting "
                    "with '.')"
                )
        return variants

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.base is None and (
            not self.variants or any(v.base is None for v in self.variants.values())
        ):
            raise ValueError("give a 'base' config (or a base in every variant)")
        for path, values in self.grid.items():
            if not values:
                raise ValueError(f"grid axis {path!r} has no values")
            seen: set[str] = set()
            for v in values:
                key = _canonical(v)
                if key in seen:
                    raise ValueError(f"grid axis {path!r} lists {v!r} twice")
                seen.add(key)
        random_axes = list(self.random.axes) if self.random else []
        both = set(self.grid) & set(random_axes)
        if both:
            raise ValueError(f"{sorted(both)[0]!r} is both a grid and a random axis")
        for path in [*self.grid, *random_axes]:
            if path == "name" or path.startswith("name."):
                raise ValueError("'name' cannot be swept (each run is named by its run id)")
            if path == "seed" and self.seeds is not None:
                raise ValueError("'seed' is swept by 'seeds'; do not also list it as an axis")
        if isinstance(self.seeds, list):
            if not self.seeds:
                raise ValueError("seeds: give at least one seed")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError("seeds: a seed is listed twice")
        return self

    def seed_list(self) -> list[int] | None:
        if self.seeds is None:
            return None
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


# --------------------------------------------------------------------------------------------
# Expansion


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its id, the axis values that made it and its validated config."""

    run_id: str
    axes: dict[str, Any]
    seed: int | None
    config: ExperimentConfig

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")


@dataclass
class Sweep:
    """A validated sweep: the spec, where it came from, and every run it expands to."""

    spec: SweepSpec
    source: Path | None
    runs: list[PlannedRun]
    axis_names: list[str]

    def store_path(self, out: str | Path | None = None) -> Path:
        if out is not None:
            return Path(out)
        if self.spec.store is not None:
            return Path(self.spec.store)
        return Path("sweeps") / f"{self.spec.name}.zarr"


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path`` in a raw config (the semantics of ``--set``: missing
    sections are created, numeric parts index lists). Raises ValueError if the path crosses a
    value that is not a section or a list."""
    node: Any = raw
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"{where}: no item {part} in a list of {len(node)}")
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ValueError(f"{where}: {'.'.join(parts[:i]) or 'the config'} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ValueError(f"{path}: no item {last} in a list of {len(node)}")
        node[int(last)] = copy.deepcopy(value)
    elif isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    else:
        raise ValueError(f"{path}: {'.'.join(parts[:-1])} is not a section")


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and expand a sweep file. Every user mistake raises :class:`ConfigError`
    (naming the field, or the run and its field) before anything is written."""
    p = Path(path)
    raw = read_yaml(p)
    return parse_sweep(raw, source=p)


def parse_sweep(raw: Any, source: Path | None = None) -> Sweep:
    """Validate a sweep mapping and expand it; relative bases resolve against ``source``'s
    directory (or the working directory)."""
    label = str(source) if source is not None else "sweep"
    spec = validate_model(SweepSpec, raw, label, "sweep")
    folder = source.parent if source is not None else Path.cwd()
    return expand(spec, folder, source)


def _load_base(base: str | dict[str, Any], folder: Path, field_name: str) -> dict[str, Any]:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    p = Path(base)
    p = p if p.is_absolute() else folder / p
    try:
        raw = read_yaml(p)
    except ConfigError as exc:
        raise ConfigError(f"{field_name}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{field_name}: {p} is not a mapping of config sections")
    return raw


def expand(spec: SweepSpec, folder: Path, source: Path | None = None) -> Sweep:
    """Every run of ``spec``, validated. Raises one :class:`ConfigError` listing the runs that
    are not valid experiments (run id, axis values, field, reason)."""
    import numpy as np

    variants: list[tuple[str | None, Variant]] = list(spec.variants.items()) or [(None, Variant())]
    bases: dict[str | None, dict[str, Any]] = {}
    for vname, v in variants:
        if v.base is not None:
            bases[vname] = _load_base(v.base, folder, f"variants.{vname}.base")
        else:
            assert spec.base is not None  # the spec validator guarantees it
            if None not in bases:
                bases[None] = _load_base(spec.base, folder, "base")
            bases[vname] = bases[None]

    grid_paths = list(spec.grid)
    random_paths = list(spec.random.axes) if spec.random else []
    labels = _axis_labels([*grid_paths, *random_paths])
    samples: list[dict[str, Any] | None] = [None]
    if spec.random is not None:
        rng = np.random.default_rng(spec.random.seed)
        samples = [
            {k: d.draw(rng) for k, d in spec.random.axes.items()}
            for _ in range(spec.random.samples)
        ]
    seed_list = spec.seed_list()
    seeds: list[int | None] = [None] if seed_list is None else list(seed_list)

    axis_names = (["variant"] if spec.variants else []) + grid_paths + random_paths
    runs: list[PlannedRun] = []
    errors: list[str] = []
    ids: dict[str, str] = {}
    for (vname, variant), point, (ri, sample), seed in itertools.product(
        variants, itertools.product(*spec.grid.values()), enumerate(samples), seeds
    ):
        axes: dict[str, Any] = {}
        parts: list[str] = []
        if vname is not None:
            axes["variant"] = vname
            parts.append(vname)
        for path, value in zip(grid_paths, point, strict=True):
            axes[path] = value
            parts.append(f"{labels[path]}-{_id_value(value)}")
        if sample is not None:
            axes.update(sample)
            parts.append(f"rand{ri}-{_digest(sample, 6)}")
        if seed is not None:
            parts.append(f"seed-{seed}")
        run_id = "__".join(parts) or "run"
        if len(run_id) > MAX_ID_LENGTH:
            run_id = f"{run_id[: MAX_ID_LENGTH - 10]}-{_digest(parts, 8)}"
        described = _describe(axes, seed)
        if not RUN_ID.match(run_id):  # the spec's checks make every id safe; never build a path
            errors.append(f"run {run_id!r} ({described}): not a safe directory name")
            continue
        if run_id in ids:
            errors.append(
                f"run {run_id!r}: the axis values {described} and {ids[run_id]} give the same "
                "run id; make the values distinct"
            )
            continue
        ids[run_id] = described

        raw = copy.deepcopy(bases[vname])
        try:
            for path, value in [
                *variant.set.items(),
                *spec.set.items(),
                *zip(grid_paths, point, strict=True),
                *(sample or {}).items(),
            ]:
                set_path(raw, path, value)
            if seed is not None:
                raw["seed"] = seed
            raw["name"] = run_id
        except ValueError as exc:
            errors.append(f"run {run_id!r} ({described}): cannot apply override {exc}")
            continue
        try:
            cfg = parse_config(raw, f"run {run_id!r} ({described})")
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        runs.append(PlannedRun(run_id, axes, seed, cfg))
    if errors:
        shown = "\n".join(errors[:5])
        more = f"\n... and {len(errors) - 5} more invalid runs" if len(errors) > 5 else ""
        n = len(runs) + len(errors)
        raise ConfigError(
            f"{source or 'sweep'}: {len(errors)} of {n} runs are not valid; nothing was run\n"
            f"{shown}{more}"
        )
    return Sweep(spec, source, runs, axis_names)


def _round6(x: float) -> float:
    return float(f"{x:.6g}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _digest(value: Any, n: int) -> str:
    return hashlib.sha1(_canonical(value).encode()).hexdigest()[:n]


def _id_value(value: Any) -> str:
    """A file-safe word that names ``value`` losslessly, or a short hash of it."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value).replace("e+", "e")
    if isinstance(value, str) and SAFE_WORD.match(value):
        return value
    return f"h{_digest(value, 8)}"


def _axis_labels(paths: Sequence[str]) -> dict[str, str]:
    """The shortest suffix of each dotted path that is unique among ``paths`` and not a bare
    list index (``system.graph.sizes.1`` -> ``sizes.1``)."""
    out: dict[str, str] = {}
    for path in paths:
        parts = path.split(".")
        for k in range(1, len(parts) + 1):
            label = ".".join(parts[-k:])
            if parts[-k].isdigit():
                continue
            if not any(o != path and (o == label or o.endswith("." + label)) for o in paths):
                break
        out[path] = label
    return out


def _describe(axes: dict[str, Any], seed: int | None) -> str:
    items = [f"{k}={_canonical(v)}" for k, v in axes.items()]
    if seed is not None:
        items.append(f"seed={seed}")
    return ", ".join(items) or "no axes"


# --------------------------------------------------------------------------------------------
# The worker task


def run_task(
    config: dict[str, Any], path: str, owner: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run (or resume) one experiment at ``path``: a pure function of its arguments, so Dask can
    ship it to any worker. Never raises for a failing run: returns its outcome
    (``status``, ``action``, ``committed_steps``, ``metrics``, ``guid``, ``error``,
    ``traceback``); the run store records ``exit_status=fail`` and ``error`` itself. A new run
    store records ``owner`` (the sweep's guid and the run id) as its ``sweep`` attribute: what
    proves that the sweep made it (see :func:`_remove_own_run`)."""
    from physlearn.orchestrator import resume_run, start_run

    p = Path(path)
    action = "resumed" if (p / "zarr.json").is_file() else "started"
    out: dict[str, Any] = {"action": action, "error": None, "traceback": None, "metrics": {}}
    try:
        if action == "resumed":
            res = resume_run(p)
        else:
            extra = {"sweep": owner} if owner is not None else None
            res = start_run(parse_config(config, f"run {p.name!r}"), p, extra_attrs=extra)
        out.update(status=res.status, metrics=res.metrics)
    except Exception as exc:
        out.update(
            status="fail",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
    out.update(_store_facts(p))
    return out


def _store_facts(path: Path) -> dict[str, Any]:
    """guid, committed steps and (if recorded) the stored status of a run group."""
    from physlearn.store import RunStore, StoreError

    try:
        store = RunStore.open(path)
    except StoreError:
        return {"committed_steps": 0, "guid": None}
    a = store.attrs
    return {"committed_steps": store.committed(), "guid": a.get("guid")}


# --------------------------------------------------------------------------------------------
# The sweep store and the plan


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
    from physlearn.orchestrator import _last_metrics
    from physlearn.store import RunStore, StoreError

    old_rows: dict[str, dict[str, Any]] = {}
    if _check_root(root, locked=False):
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
            rec.metrics = _last_metrics(store)
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
        return f"{prefix.rstrip('.')}: stored {_canonical(a)}, sweep {_canonical(b)}"
    return ""


# --------------------------------------------------------------------------------------------
# Execution


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
) -> SweepResult:
    """Run every unfinished run of ``sweep`` (see the module docstring) and return the table.

    ``workers=0`` runs in this process without Dask; otherwise a LocalCluster of ``workers``
    processes (default: one per CPU) or the scheduler at ``scheduler``. Raises ConfigError
    before writing anything when the store cannot hold this sweep. KeyboardInterrupt cancels
    the remaining runs (the store keeps every committed step) and propagates.

    The driver holds the sweep store's writer lock (:mod:`physlearn.storelock`) throughout: a
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
        stack.enter_context(_driver_lock(root))
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
        group = _create_or_claim(root, sweep)
        try:
            _write_table(group, records)
            if todo and local is not None:
                client = local.client()
            guid = str(group.attrs["guid"])
            _execute(group, root, todo, records, client, progress, on_result, result, guid)
        finally:
            _release(group, records)
    return result


@contextmanager
def _driver_lock(root: Path) -> Iterator[None]:
    """Hold the writer lock of the sweep store at ``root`` (creating its directory when there is
    none) for the ``with`` block. Raises ConfigError when another driver holds it (naming it), or
    when ``root`` is something else: nothing is written into a directory that is not a sweep
    store, or one being created."""
    from physlearn.storelock import StoreLock, StoreLockedError

    _check_root(root, locked=False)
    lock = StoreLock(root, "sweep driver")
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except StoreLockedError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{root}: cannot create or lock the sweep store ({exc})") from None
    try:
        _check_root(root, locked=True)  # what it is now that no other driver can change it
        yield
    finally:
        lock.release()


def _check_root(root: Path, locked: bool) -> bool:
    """Whether ``root`` is a sweep store (False: there is none yet -- no directory, or one that
    holds only the lock group of a driver that stopped before creating the store). Raises
    ConfigError for anything else. Unlocked, a directory with a lock group and no readable
    metadata passes: another driver may be creating the store right now, and its lock decides."""
    from physlearn.storelock import LOCK_DIR

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


def _create_or_claim(root: Path, sweep: Sweep) -> Any:
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
    from physlearn.store import RunStore, StoreError

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
    from physlearn.storelock import StoreLock, StoreLockedError

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


def _write_table(group: Any, records: list[RunRecord]) -> None:
    group.update_attributes({"runs": [r.row() for r in records], "updated": _now()})


def _release(group: Any, records: list[RunRecord]) -> None:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    group.update_attributes(
        {"runs": [r.row() for r in records], "updated": _now(), "driver": None, "counts": counts}
    )


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
        _write_table(group, records)
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
                out = run_task(run.config_dict(), str(root / run.run_id), owner)
                finish(rec, out)
                if out["status"] == "abort":
                    raise KeyboardInterrupt
        else:
            _execute_dask(client, root, todo, finish, guid)
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
                    **_store_facts(root / rec.run_id),
                }
            finish(rec, out)
    except BaseException:
        client.cancel(list(futures))
        raise


def _cost(run: PlannedRun) -> int:
    """A run's predicted cost, for ordering only: patterns processed (steps x batch size)."""
    return run.config.total_steps() * run.config.schedule.batch_size


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------------------------
# Command line


def sweep_command(
    sweep_file: str,
    out: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    progress: bool = False,
) -> int:
    """``physlearn sweep``: validate, plan, run; print a summary. Returns the exit code (0 all
    runs succeeded, 1 some failed or are unfinished, 130 interrupted); user mistakes raise
    ConfigError (exit 2, nothing written)."""
    sweep = load_sweep(sweep_file)
    root = sweep.store_path(out)
    if dry_run:
        from physlearn.storelock import holder, is_locked

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
        result = run_sweep(sweep, root, scheduler, workers, retry_failed, progress)
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
