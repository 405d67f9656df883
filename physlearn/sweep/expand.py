"""Expanding a sweep spec into its runs: every override applied, every config validated, every
run named by its id.

A run's id is a pure function of its axis values, e.g. ``skip__beta-0.0001__sizes.1-16__seed-3``
(variant name, then ``<axis>-<value>`` per grid axis with the shortest unambiguous suffix of its
path, ``rand<i>-<hash>`` per random sample, ``seed-<s>``). Values that do not print losslessly as
a file-safe word (mappings, lists, long strings) appear as a short hash. A run id is one path
component of letters, digits and ``. _ -``, not starting with ``.`` (a variant name must be
one: ``..`` or ``a/b`` is refused when the file is validated). The config's ``name`` is set to
the run id. The sweep store (default ``sweeps/<name>.zarr``, relative to the working
directory like ``store.root``) is a Zarr group whose attributes hold the spec and the run
table; each run is a normal run store at ``<store>/<run_id>`` that ``physlearn inspect``,
``resume`` and ``report`` accept.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from physlearn.config import (
    ConfigError,
    ExperimentConfig,
    parse_config,
    read_yaml,
    validate_model,
)
from physlearn.sweep.spec import (
    MAX_ID_LENGTH,
    RUN_ID,
    SAFE_WORD,
    SweepSpec,
    Variant,
    canonical,
)


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
    variants: list[tuple[str | None, Variant]] = list(spec.variants.items()) or [(None, Variant())]
    bases = _bases(spec, variants, folder)
    grid_paths = list(spec.grid)
    random_paths = list(spec.random.axes) if spec.random else []
    labels = axis_labels([*grid_paths, *random_paths])
    samples = _samples(spec)
    seed_list = spec.seed_list()
    seeds: list[int | None] = [None] if seed_list is None else list(seed_list)

    axis_names = (["variant"] if spec.variants else []) + grid_paths + random_paths
    runs: list[PlannedRun] = []
    errors: list[str] = []
    ids: dict[str, str] = {}
    for (vname, variant), point, (ri, sample), seed in itertools.product(
        variants, itertools.product(*spec.grid.values()), enumerate(samples), seeds
    ):
        axes, run_id = _run_id(vname, zip(grid_paths, point, strict=True), labels, ri, sample, seed)
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
        overrides = [
            *variant.set.items(),
            *spec.set.items(),
            *zip(grid_paths, point, strict=True),
            *(sample or {}).items(),
        ]
        cfg = _run_config(bases[vname], overrides, seed, run_id, described, errors)
        if cfg is not None:
            runs.append(PlannedRun(run_id, axes, seed, cfg))
    if errors:
        _refuse(errors, len(runs) + len(errors), source)
    return Sweep(spec, source, runs, axis_names)


def _bases(
    spec: SweepSpec, variants: list[tuple[str | None, Variant]], folder: Path
) -> dict[str | None, dict[str, Any]]:
    """The base config of every variant (its own, or the sweep's, read once)."""
    bases: dict[str | None, dict[str, Any]] = {}
    for vname, v in variants:
        if v.base is not None:
            bases[vname] = _load_base(v.base, folder, f"variants.{vname}.base")
        else:
            assert spec.base is not None  # the spec validator guarantees it
            if None not in bases:
                bases[None] = _load_base(spec.base, folder, "base")
            bases[vname] = bases[None]
    return bases


def _samples(spec: SweepSpec) -> list[dict[str, Any] | None]:
    """The random axes' samples, drawn from the spec's seed (``[None]`` without random axes)."""
    import numpy as np

    samples: list[dict[str, Any] | None] = [None]
    if spec.random is not None:
        rng = np.random.default_rng(spec.random.seed)
        samples = [
            {k: d.draw(rng) for k, d in spec.random.axes.items()}
            for _ in range(spec.random.samples)
        ]
    return samples


def _run_id(
    vname: str | None,
    grid: Iterable[tuple[str, Any]],
    labels: dict[str, str],
    ri: int,
    sample: dict[str, Any] | None,
    seed: int | None,
) -> tuple[dict[str, Any], str]:
    """The axis values of one run and its id: the variant, ``label-value`` of every grid axis,
    the random sample's index and digest and the seed, joined by ``__`` (hashed when long)."""
    axes: dict[str, Any] = {}
    parts: list[str] = []
    if vname is not None:
        axes["variant"] = vname
        parts.append(vname)
    for path, value in grid:
        axes[path] = value
        parts.append(f"{labels[path]}-{id_value(value)}")
    if sample is not None:
        axes.update(sample)
        parts.append(f"rand{ri}-{_digest(sample, 6)}")
    if seed is not None:
        parts.append(f"seed-{seed}")
    run_id = "__".join(parts) or "run"
    if len(run_id) > MAX_ID_LENGTH:
        run_id = f"{run_id[: MAX_ID_LENGTH - 10]}-{_digest(parts, 8)}"
    return axes, run_id


def _run_config(
    base: dict[str, Any],
    overrides: list[tuple[str, Any]],
    seed: int | None,
    run_id: str,
    described: str,
    errors: list[str],
) -> ExperimentConfig | None:
    """The validated config of one run: ``base`` with the overrides, seed and name applied;
    None (the reason appended to ``errors``) when it is not a valid experiment."""
    raw = copy.deepcopy(base)
    try:
        for path, value in overrides:
            set_path(raw, path, value)
        if seed is not None:
            raw["seed"] = seed
        raw["name"] = run_id
    except ValueError as exc:
        errors.append(f"run {run_id!r} ({described}): cannot apply override {exc}")
        return None
    try:
        return parse_config(raw, f"run {run_id!r} ({described})")
    except ConfigError as exc:
        errors.append(str(exc))
        return None


def _refuse(errors: list[str], n: int, source: Path | None) -> NoReturn:
    """Raise one :class:`ConfigError` naming the first few of the ``n`` runs' invalid ones."""
    shown = "\n".join(errors[:5])
    more = f"\n... and {len(errors) - 5} more invalid runs" if len(errors) > 5 else ""
    raise ConfigError(
        f"{source or 'sweep'}: {len(errors)} of {n} runs are not valid; nothing was run\n"
        f"{shown}{more}"
    )


def _digest(value: Any, n: int) -> str:
    return hashlib.sha1(canonical(value).encode()).hexdigest()[:n]


def id_value(value: Any) -> str:
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


def axis_labels(paths: Sequence[str]) -> dict[str, str]:
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
    items = [f"{k}={canonical(v)}" for k, v in axes.items()]
    if seed is not None:
        items.append(f"seed={seed}")
    return ", ".join(items) or "no axes"
