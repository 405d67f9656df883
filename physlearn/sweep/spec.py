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

Runs are expanded by :mod:`physlearn.sweep.expand`, planned against the sweep store by
:mod:`physlearn.sweep.plan`, executed by :mod:`physlearn.sweep.execute`; ``physlearn sweep`` is
:mod:`physlearn.sweep.command`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from physlearn.configbase import StrictModel

if TYPE_CHECKING:
    import numpy as np


SWEEP_KIND = "physlearn-sweep"
SAFE_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
MAX_ID_LENGTH = 150
#: A run id: one path component, never ``.``/``..`` nor hidden (inside a sweep store, hidden
#: entries are the lock file and run stores still being created), from a portable character set.
RUN_ID = re.compile(rf"^[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_ID_LENGTH - 1}}}$")
MAX_VARIANT_LENGTH = 64

DottedPath = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$"),
]
FileSafeName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$", max_length=64)
]


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
    """A sweep: a base experiment config and the axes to vary (see :mod:`physlearn.sweep.spec`)."""

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
        ". _ -, not starting with '.' (it begins the run ids, the runs' directory names, and "
        "each run's name)",
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
                    f"use 1-{MAX_VARIANT_LENGTH} letters, digits and . _ - (not starting "
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
                key = canonical(v)
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


def _round6(x: float) -> float:
    return float(f"{x:.6g}")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
