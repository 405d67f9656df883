"""Experiment configuration: YAML validated by pydantic.

A config names one system (``system.kind``: any installed kind, see :mod:`physlearn.registry`;
that kind's config class validates the rest of the section), the task (dataset -- any installed
``task.dataset.kind``, validated the same way --, encoding, loss),
the estimator, the optimiser, the schedule, the store and diagnostics. Unknown keys are refused;
every field documents itself (``physlearn schema`` exports the JSON schema).

:func:`load_config` turns every user mistake -- a missing file, a YAML syntax error, an unknown key,
a wrong type, an out-of-range value, an unknown system kind, inconsistent sizes -- into a
:class:`ConfigError` whose message names the field path and the problem.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from physlearn import registry
from physlearn.configbase import MAX_BATCH_VALUES, MAX_STEPS, StrictModel, SystemConfigBase
from physlearn.datasets import DatasetConfigBase
from physlearn.estimator_config import EPConfig, EstimatorConfig
from physlearn.losses import LOSSES, UNBOUNDED_COSTS
from physlearn.yamlload import YAMLInputError, load_yaml_file, load_yaml_text

M = TypeVar("M", bound=StrictModel)
C = TypeVar("C", bound=StrictModel)


class ConfigError(ValueError):
    """A config the user must fix; the message names the field and the problem."""


# --------------------------------------------------------------------------------------------
# System and dataset: the installed kinds (physlearn.registry), each validated by its own class


def _validate_kind(group: registry.Group[C], value: Any) -> C:
    """A ``system`` or ``task.dataset`` section as its kind's config class. Only that kind's
    entry point is loaded, so a broken plugin affects its own kind only; the kind's class
    reports the section's errors under their own field paths (``system.graph.sizes``)."""
    if isinstance(value, group.base):
        value = value.model_dump()  # re-checked by its kind's class, like any mapping
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "model_type",
            "expected a mapping with a 'kind', got {got}",
            {"got": type(value).__name__},
        )
    kind = value.get("kind")
    if not isinstance(kind, str):
        raise PydanticCustomError(
            "union_tag_not_found",
            "missing 'kind': name an installed {what} ({installed})",
            {"what": group.what, "installed": ", ".join(group.kinds())},
        )
    try:
        cls = group.config_class(kind)
    except registry.UnknownKind:
        expected = ", ".join(repr(k) for k in group.kinds())
        raise PydanticCustomError(
            "union_tag_invalid",
            "unknown kind {tag!r}; expected one of {expected_tags}",
            {"tag": kind, "expected_tags": expected},
        ) from None
    except registry.RegistryError as exc:
        raise PydanticCustomError("plugin", "{reason}", {"reason": str(exc)}) from None
    return cls.model_validate(value)


class _Installed:
    """Pydantic hooks of a field whose value is any installed kind of a registry group:
    validation by :func:`_validate_kind`, and as JSON schema the discriminated union (on
    ``kind``) of every installed kind's config."""

    def __init__(self, group: registry.Group[Any]) -> None:
        self.group = group

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            functools.partial(_validate_kind, self.group)
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        choices: dict[str | int, core_schema.CoreSchema] = {
            kind: cls.__pydantic_core_schema__ for kind, cls in self.group.config_classes().items()
        }
        return handler(core_schema.tagged_union_schema(choices, discriminator="kind"))


#: The ``system`` section: a :class:`SystemConfigBase`, of the concrete class the registry
#: holds for its ``kind``.
SystemConfig = Annotated[
    SystemConfigBase,
    _Installed(registry.SYSTEMS),
    Field(description="The machine; `kind` names an installed system (`physlearn systems`)."),
]

#: The ``task.dataset`` section: a :class:`~physlearn.datasets.DatasetConfigBase`, of the
#: concrete class the registry holds for its ``kind``.
DatasetConfig = Annotated[
    DatasetConfigBase,
    _Installed(registry.DATASETS),
    Field(description="The data; `kind` names an installed dataset (physlearn.datasets)."),
]


# --------------------------------------------------------------------------------------------
# Task: how data meets the machine


class InputEncoding(StrictModel):
    """Physical inputs from data features x: ``u = scale * z + offset`` where z is x (or its
    z-score over the training split when ``standardize``); then, if ``differential``, the negated
    copy ``-u`` is appended (passive networks need both signs), then the constant ``bias``
    sources. Result width: ``n_features * (2 if differential else 1) + len(bias)``."""

    scale: float = Field(1.0, description="Multiplier from (standardised) feature to input unit.")
    offset: float = Field(0.0, description="Added after scaling, in the input unit.")
    standardize: bool = Field(False, description="z-score each feature with training stats.")
    differential: bool = Field(False, description="Append -u (a second, inverted source).")
    bias: list[float] = Field(
        default_factory=list, description="Constant inputs appended (e.g. bias voltages, V)."
    )

    def width(self, n_features: int) -> int:
        return n_features * (2 if self.differential else 1) + len(self.bias)


class TargetEncoding(StrictModel):
    """Physical targets: one-hot classes as ``high``/``low`` output values, or regression values
    as ``scale * y + offset``. XY oscillators use high = pi/2, low = -pi/2 (rad)."""

    kind: Literal["onehot", "value"] = Field("onehot", description="Classification or regression.")
    high: float = Field(1.0, description="Target of the true class's output (output unit).")
    low: float = Field(0.0, description="Target of the other outputs (output unit).")
    scale: float = Field(1.0, description="Regression: target = scale * y + offset.")
    offset: float = Field(0.0, description="Regression: target = scale * y + offset.")


class TaskConfig(StrictModel):
    dataset: DatasetConfig
    encoding: InputEncoding = Field(default_factory=InputEncoding)
    target: TargetEncoding = Field(default_factory=TargetEncoding)
    readout: Literal["identity", "sin"] = Field(
        "identity",
        description="Class scores from outputs: identity, or sin(phase) for oscillators; the "
        "prediction is the argmax.",
    )
    loss: str | None = Field(
        None,
        description="Training objective (see physlearn.losses); default: the system's native "
        "cost. EP with a 'target' nudge needs the native cost.",
    )
    report_loss: str | None = Field(
        None, description="An extra cost logged beside the objective (e.g. xy_cosine)."
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="cross_entropy: logits = outputs / temperature (output unit, e.g. V).",
    )
    baselines: list[Literal["majority", "mean", "linear"]] | None = Field(
        None,
        description="Reference models fitted at run start on the run's split and encoded inputs "
        "(physlearn.baselines): majority (classification) or mean (regression) predictor, and "
        "linear (logistic regression / least squares); shown beside the machine's metrics. "
        "Default (null): both for labelled datasets, none without labels; [] turns them off.",
    )

    @model_validator(mode="after")
    def _known_losses(self) -> TaskConfig:
        for name in (self.loss, self.report_loss):
            if name is not None and name not in LOSSES:
                raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
        if self.baselines is not None:
            from physlearn.reference_models import check_baselines

            check_baselines(self.baselines, self.dataset)
        return self


# --------------------------------------------------------------------------------------------
# Optimiser and schedule


class OptimizerConfig(StrictModel):
    """Gradient step on every trainable group, then projection onto what the hardware holds."""

    kind: Literal["sgd", "momentum", "adam"] = "adam"
    lr: float = Field(0.01, gt=0, description="Learning rate (parameter unit per gradient unit).")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum: velocity decay.")
    beta1: float = Field(0.9, ge=0, lt=1, description="adam: first-moment decay.")
    beta2: float = Field(0.999, ge=0, lt=1, description="adam: second-moment decay.")
    eps: float = Field(1e-8, gt=0, description="adam: denominator floor.")
    lr_scale: dict[str, float] = Field(
        default_factory=dict, description="Per-group learning-rate multipliers."
    )
    frozen: list[str] = Field(default_factory=list, description="Groups that are not trained.")


class LRSchedule(StrictModel):
    """lr(step) = lr * factor(step): constant; cosine to ``min_factor`` at the last step;
    step (``gamma`` every ``every`` steps); exponential (``gamma`` per step). Optional linear
    warm-up over ``warmup`` steps."""

    kind: Literal["constant", "cosine", "step", "exponential"] = "constant"
    min_factor: float = Field(0.0, ge=0, le=1)
    gamma: float = Field(0.5, gt=0, le=1)
    every: int = Field(100, ge=1)
    warmup: int = Field(0, ge=0)


class ScheduleConfig(StrictModel):
    steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description=f"Optimiser steps (or give epochs; <= {MAX_STEPS:,})."
    )
    epochs: float | None = Field(
        None,
        gt=0,
        description=f"Passes over the training split (finite; at most {MAX_STEPS:,} steps).",
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="Patterns per step; batch_size x the system's values per pattern is at most "
        f"{MAX_BATCH_VALUES:,} (800 MB of float64 per phase).",
    )
    eval_every: int = Field(50, ge=1, description="Evaluate on the test split every N steps.")
    eval_train: bool = Field(False, description="Also evaluate the whole training split.")
    lr: LRSchedule = Field(default_factory=LRSchedule)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> ScheduleConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'steps' and 'epochs'")
        return self


class StoreConfig(StrictModel):
    root: str = Field("runs", description="Directory that receives <name>-<time>.zarr runs.")
    flush_every: int = Field(
        0, ge=0, description="Also commit every N steps (0: only by time and size)."
    )
    flush_seconds: float = Field(
        5.0,
        gt=0,
        description="Commit at least this often (s). A crash loses no committed step; the "
        "uncommitted ones are measured again on resume.",
    )
    flush_megabytes: float = Field(
        256.0, gt=0, description="Commit when this many MiB of measurements are buffered."
    )
    conjugates: Literal["per_sample", "batch_mean", "none"] = Field(
        "per_sample", description="How conjugate observables are logged."
    )
    observables: bool = Field(True, description="Log extra per-node responses (e.g. phases).")
    compress: bool = Field(False, description="zstd-compress arrays (smaller, slower).")


class DiagnosticsConfig(StrictModel):
    exact_gradient: bool = Field(
        False,
        description="Simulators only: compute the exact gradient and log its cosine similarity "
        "and relative error against the estimate.",
    )
    every: int = Field(1, ge=1, description="Exact-gradient diagnostic every N steps.")


class ExperimentConfig(StrictModel):
    """A training campaign: one system, one task, one estimator, one optimiser."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (file-safe).")
    description: str = ""
    seed: int = Field(0, ge=0, description="Seeds data order, initialisation and every RNG.")
    system: SystemConfig
    task: TaskConfig
    estimator: EstimatorConfig = Field(default_factory=EPConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig
    store: StoreConfig = Field(default_factory=StoreConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)

    @model_validator(mode="after")
    def _sizes_agree(self) -> ExperimentConfig:
        ds = self.task.dataset
        width = self.task.encoding.width(ds.n_features())
        if width != self.system.input_size():
            raise ValueError(
                f"task.encoding gives {width} inputs ({ds.n_features()} features of "
                f"{ds.kind!r}) but the system has {self.system.input_size()} input channels"
            )
        n_out = self.system.output_size()
        n_cls = ds.n_classes()
        if n_cls is not None and self.task.target.kind == "onehot" and n_cls != n_out:
            raise ValueError(
                f"dataset {ds.kind!r} has {n_cls} classes but the system has {n_out} outputs"
            )
        n_tgt = ds.n_targets()
        if n_cls is None and n_tgt is not None and n_tgt != n_out:
            raise ValueError(
                f"dataset {ds.kind!r} has {n_tgt} targets but the system has {n_out} outputs"
            )
        if self.schedule.batch_size > ds.n_train():
            raise ValueError(
                f"schedule.batch_size {self.schedule.batch_size} exceeds the "
                f"{ds.n_train()} training patterns"
            )
        self._budget()
        self._nudge_has_a_minimum()
        return self

    def _nudge_has_a_minimum(self) -> None:
        """A target nudge with beta < 0 adds -|beta| C: with a cost that is +inf somewhere
        (``xy_log`` at the antipode of the target) the nudged energy has no minimum there, and
        relaxations run into the divergence instead of converging (docs/physics.md, XY)."""
        est = self.estimator
        if not isinstance(est, EPConfig) or not est.has_negative_beta():
            return
        native = self.system.native_cost
        loss = self.task.loss or native
        target = est.nudge == "target" or (est.nudge == "auto" and loss == native)
        if target and loss in UNBOUNDED_COSTS:
            raise ValueError(
                f"estimator.nudging {est.nudging!r} nudges with -beta, and -beta x {loss} "
                f"(+inf where an output is antipodal to its target) has no minimum: use "
                f"nudging 'one_sided', or task.loss 'xy_cosine' (bounded)"
            )

    def _budget(self) -> None:
        """Memory and length bounds, checked before anything is built or allocated."""
        batch = self.schedule.batch_size
        per_pattern = self.system.values_per_pattern()
        if batch * per_pattern > MAX_BATCH_VALUES:
            raise ValueError(
                f"schedule.batch_size {batch} x {per_pattern:,} values per pattern of this "
                f"{self.system.kind} system = {batch * per_pattern:,} values per phase, more "
                f"than {MAX_BATCH_VALUES:,} (800 MB): use a smaller batch or system"
            )
        if self.schedule.epochs is not None:
            per_epoch = -(-self.task.dataset.n_train() // batch)
            if self.schedule.epochs * per_epoch > MAX_STEPS:
                raise ValueError(
                    f"schedule.epochs {self.schedule.epochs:g} x {per_epoch} steps per epoch "
                    f"is more than {MAX_STEPS:,} steps"
                )

    def total_steps(self) -> int:
        if self.schedule.steps is not None:
            return self.schedule.steps
        assert self.schedule.epochs is not None
        per_epoch = -(-self.task.dataset.n_train() // self.schedule.batch_size)
        return max(1, round(self.schedule.epochs * per_epoch))


# --------------------------------------------------------------------------------------------
# Loading


def _user_path(raw: Any, loc: tuple[int | str, ...]) -> str:
    """``loc`` as the dotted path the user writes: pydantic puts a tagged union's tag into the
    path (``estimator.ep.beta`` for ``estimator: {kind: ep, beta: ...}``); the tag is dropped
    where it is not a key of the input but the value of its ``kind``/``type``/``dist``, or a
    default tag (``probes.scan.channels`` for ``probes`` written without a ``kind``)."""
    parts: list[str] = []
    node = raw
    for i, part in enumerate(loc):
        if isinstance(node, dict):
            tags = {node.get(k) for k in ("kind", "type", "dist")} - {None}
            after = loc[i + 1] if i + 1 < len(loc) else None
            # a tag given by its value, or a default tag (no kind written) before a real key
            if part not in node and (part in tags or (after is not None and after in node)):
                continue
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        parts.append(str(part))
    return ".".join(parts)


def _format_validation(err: ValidationError, raw: Any) -> str:
    """Every problem as ``field.path: reason``, joined on one line (the CLI prints one line)."""
    lines = []
    for e in err.errors():
        loc = _user_path(raw, e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section)"
        elif e["type"] == "union_tag_invalid":
            ctx = e.get("ctx") or {}
            msg = f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        lines.append(f"{loc}: {' '.join(str(msg).split())}")
    return "; ".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a raw config dict.

    A list element is addressed by its index (``system.graph.sizes.1=32``); an index outside
    the list is a :class:`ConfigError` naming the path and the list's length."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = load_yaml_text(text)
        except YAMLInputError as exc:
            raise ConfigError(f"--set {key}: value is not valid YAML ({exc})") from None
        parts = key.split(".")
        node: Any = raw
        for depth, part in enumerate(parts):
            path = ".".join(parts[: depth + 1])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"--set {key}: {path}: {part!r} is not an index of "
                        f"{'.'.join(parts[:depth])}, a list of {len(node)} elements"
                    )
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                where = ".".join(parts[:depth])
                raise ConfigError(f"--set {key}: {where} is a value, not a section")
    return raw


def validate_model(model: type[M], raw: Any, source: str, what: str) -> M:
    """Validate a raw mapping against a config model; every problem becomes one ConfigError that
    names each field path and its reason (``source`` names the file, ``what`` the kind)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            f"{source} is not a valid {what}: {_format_validation(err, raw)}"
        ) from None


def parse_config(raw: Any, source: str = "config") -> ExperimentConfig:
    return validate_model(ExperimentConfig, raw, source, "experiment")


def read_yaml(path: str | Path) -> Any:
    """Read a user's YAML file with the hardened loader (:mod:`physlearn.yamlload`): bounded
    size, depth and alias expansion, strict UTF-8, no duplicate keys. Every problem is a
    one-line :class:`ConfigError` naming the file and where."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        return load_yaml_file(p)
    except YAMLInputError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot be read ({exc.strerror or exc})") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    raw = read_yaml(path)
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
        raw = apply_overrides(raw, overrides)
    return parse_config(raw, str(path))


def json_schema() -> dict[str, Any]:
    """The JSON schema of experiment configs, ``system`` and ``task.dataset`` being the unions
    of every installed kind; a broken entry point is a :class:`ConfigError` naming it."""
    try:
        return ExperimentConfig.model_json_schema()
    except registry.RegistryError as exc:
        raise ConfigError(str(exc)) from None
