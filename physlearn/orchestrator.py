"""The campaign: clamp -> relax -> measure -> estimate -> update -> project -> write back -> log.

:func:`start_run` and :func:`resume_run` drive one run against whichever system the config names.
Every measurement is buffered and committed to the run store in batches together with a checkpoint;
a run killed at any moment resumes from its last commit and ends with exactly the parameters and
logged arrays of an uninterrupted run (timestamps and wall-clock durations aside).

Ctrl-C (SIGINT) or SIGTERM once: finish the current step, commit, close, ``exit_status=abort``.
Ctrl-C twice: stop inside the step, commit the steps already complete, leave the sources safe.
"""

from __future__ import annotations

import errno
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.config import (
    ConfigError,
    CoupledConfig,
    EPConfig,
    EstimatorConfig,
    ExperimentConfig,
    FiniteDifferenceConfig,
    SPSAConfig,
    parse_config,
)
from physlearn.estimators import (
    SPSA,
    CoupledLearning,
    EquilibriumPropagation,
    Estimate,
    Estimator,
    FiniteDifference,
    ThermalCovariance,
    central_stencil,
    centred,
    holomorphic,
    measure,
    one_sided,
)
from physlearn.losses import Loss, get_loss
from physlearn.memory import retain_freed_memory
from physlearn.optim import Optimizer, lr_factor, project
from physlearn.recorder import ArrayMeta, Recorder
from physlearn.store import Checkpoint, DiskFullError, RunStore, to_jsonable
from physlearn.system import ExactGradient, Graph, Params, PhysicalSystem
from physlearn.task import Task, evaluate_loss, step_rng


def build_estimator(cfg: EstimatorConfig, per_sample: bool = True) -> Estimator:
    """The configured estimator; ``per_sample=False`` when only batch means of the conjugates
    are logged (each phase then releases its per-sample conjugates once averaged)."""
    est = _estimator(cfg)
    est.per_sample = per_sample
    return est


def _estimator(cfg: EstimatorConfig) -> Estimator:
    if isinstance(cfg, EPConfig):
        pairs = {
            "one_sided": lambda: one_sided(cfg.beta),
            "centred": lambda: centred(cfg.beta),
            "n_point": lambda: central_stencil(cfg.beta, cfg.n_points),
            "holomorphic": lambda: holomorphic(cfg.beta, cfg.n_points),
            "custom": lambda: [(complex(b), complex(w)) for b, w in cfg.pairs],
        }[cfg.nudging]()
        return EquilibriumPropagation(pairs, nudge=cfg.nudge)
    if isinstance(cfg, CoupledConfig):
        return CoupledLearning(cfg.eta)
    if isinstance(cfg, FiniteDifferenceConfig):
        return FiniteDifference(cfg.step)
    if isinstance(cfg, SPSAConfig):
        return SPSA(cfg.c, cfg.n_samples)
    return ThermalCovariance()


#: Steps whose batch indices and random generators :meth:`Campaign._step_inputs` makes at once.
_AHEAD = 32


@dataclass
class RunResult:
    path: Path
    status: str
    committed_steps: int
    metrics: dict[str, float] = field(default_factory=dict)


class _StopFlag:
    """Counts interrupts: the first asks for a clean stop, the second raises immediately."""

    def __init__(self) -> None:
        self.count = 0

    @property
    def requested(self) -> bool:
        return self.count > 0

    def handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            print(
                "\nphyslearn: stopping at the next step boundary (Ctrl-C again to stop now)",
                file=sys.stderr,
            )
            return
        raise KeyboardInterrupt


@contextmanager
def _signals(flag: _StopFlag, enabled: bool) -> Iterator[None]:
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


_DESCRIPTIONS: dict[str, tuple[str, str]] = {
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


class Campaign:
    """One run: a system, a task, an estimator and an optimiser, logging into a store."""

    def __init__(self, config: ExperimentConfig, system: PhysicalSystem, store: RunStore) -> None:
        self.config = config
        self.system = system
        self.store = store
        self.seed = config.seed
        self.task = Task(config.task, config.task.dataset.load(config.seed), system.outputs.size)
        self.estimator = build_estimator(
            config.estimator, per_sample=config.store.conjugates == "per_sample"
        )
        self.loss = objective_loss(config, system)
        self.report_loss = (
            get_loss(config.task.report_loss, config.task.temperature)
            if config.task.report_loss
            else None
        )
        self.optimizer = Optimizer(config.optimizer, system.parameter_groups)
        self.total = config.total_steps()
        self.groups = system.parameter_groups
        self.x_test = self.task.encode_inputs(self.task.data.x_test)
        self.t_test = self.task.encode_targets(self.task.data.y_test)
        self.x_train_all = self.task.encode_inputs(self.task.data.x_train)
        self.t_train_all = self.task.encode_targets(self.task.data.y_train)
        self.flag = _StopFlag()
        self.shadow: Params = {}
        self.held: Params = {}
        self.metrics: dict[str, float] = {}
        self.recorder = Recorder(store, config.store.compress)
        self._last_flush = time.monotonic()
        self._phases_attr: dict[str, Any] = {}
        self._phases_recorded = "phases" in store.attrs
        # -- carried free state (PhysicalSystem.carried_shapes): the last step's free state as
        # exported arrays; checkpointed with every commit, so a resume continues from it
        self.carry_shapes = system.carried_shapes(config.schedule.batch_size)
        if self.carry_shapes and "carry/valid" not in store.checkpoint_entries():
            self.carry_shapes = {}  # a run created before carried states: keep it as it began
        self.carry: dict[str, np.ndarray] | None = None
        # the exact-gradient diagnostic's system (a runtime protocol check costs microseconds,
        # so it is made once); None when the diagnostic is off
        self._exact: ExactGradient | None = None
        if config.diagnostics.exact_gradient and isinstance(system, ExactGradient):
            self._exact = system
        self._plan: _StepPlan | None = None  # names and metadata of the step records
        # the batch indices and random generators of the next steps (see _step_inputs)
        self._ahead: dict[int, tuple[np.ndarray, np.random.Generator]] = {}

    # -- parameters --------------------------------------------------------------------------
    def initialise(self) -> int:
        """Load the checkpoint (or the system's initial values); return the first step to run."""
        ck = self.store.read_checkpoint()
        if ck is None:
            shadow, held, _ = project(self.groups, self.system.get_parameters())
            start = 0
        else:
            self.optimizer.load_state(ck.optimizer)
            shadow, held, start = ck.shadow, ck.held, ck.step
            if self.carry_shapes and float(ck.carry.get("valid", 0.0)) == 1.0:  # carried state
                self.carry = {k: ck.carry[k] for k in self.carry_shapes}
        self.shadow = shadow
        self.held = self.system.set_parameters(held)
        return start

    # -- recording ---------------------------------------------------------------------------
    def _record(
        self,
        name: str,
        value: Any,
        dims: tuple[str, ...],
        dim: str = "step",
        units: str | None = None,
        long_name: str | None = None,
    ) -> None:
        meta = self.recorder.meta.get(name)
        if meta is None:
            meta = self._meta(name, dims, dim, units, long_name)
        self.recorder.record(name, value, meta)

    def _meta(
        self,
        name: str,
        dims: tuple[str, ...],
        dim: str = "step",
        units: str | None = None,
        long_name: str | None = None,
    ) -> ArrayMeta:
        u, ln = _DESCRIPTIONS.get(name, ("1", name))
        if u == "system":
            u = self.system.energy_unit
        return ArrayMeta(dims, units or u, long_name or ln, dim)

    def _step_plan(self) -> _StepPlan:
        """The names and metadata of the records every step makes (built at the first step
        recorded, then reused: they depend only on the system, estimator and config)."""
        sys_, cfg = self.system, self.config.store
        meta = self._meta
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
        conjugates = "none"
        if cfg.conjugates != "none" and self.estimator.needs_conjugates:
            conjugates = cfg.conjugates
        groups = []
        for g in self.groups:
            unit = f"{g.energy_unit}/{g.unit}"
            names = _GroupRecords(
                g.name,
                f"conj_{g.name}",
                f"param_{g.name}",
                f"grad_{g.name}",
                f"clipped_{g.name}",
                f"projection_{g.name}",
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
            groups.append(names)
        for name in ("residual", "iterations", "converged", "energy"):
            m[name] = meta(name, ("phase", "sample"))
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
        ):
            m[name] = meta(name, ())
        return _StepPlan(m, tuple(groups), conjugates)

    def _record_step(
        self,
        step: int,
        idx: np.ndarray,
        x: np.ndarray,
        t: np.ndarray,
        est: Estimate,
        grad_diag: tuple[float, float],
        lr: float,
        params_used: Params,
        proj: Any,
        t0: float,
    ) -> None:
        plan = self._plan
        if plan is None:
            plan = self._plan = self._step_plan()
        m = plan.meta
        record = self.recorder.record
        phases = est.phases
        record("sample_index", idx, m["sample_index"])
        record("inputs", x, m["inputs"])
        record("targets", t, m["targets"])
        free_outputs = phases[0].eq.outputs.real
        record("outputs", [p.eq.outputs.real for p in phases], m["outputs"])
        for n in plan.groups:
            if plan.conjugates == "per_sample":
                record(n.conj, [p.eq.conjugates[n.group].real for p in phases], m[n.conj])
            elif plan.conjugates == "batch_mean":
                record(n.conj, [p.eq.conjugate_mean(n.group).real for p in phases], m[n.conj])
            record(n.param, np.array(params_used[n.group]), m[n.param])
            record(n.grad, est.gradient[n.group], m[n.grad])
            record(n.clipped, proj.clipped[n.group], m[n.clipped])
            record(n.projection, proj.max_deviation[n.group], m[n.projection])
        b = phases[0].eq.batch
        nan, zeros, ones = plan.defaults(b)
        record("residual", [_or(p.eq.residual, nan) for p in phases], m["residual"])
        # one int64 / bool array per phase, assembled by the writer (exactly the values of the
        # stacked and converted array, without stacking on the hot path)
        record(
            "iterations",
            [_as(p.eq.iterations, zeros, np.int64) for p in phases],
            m["iterations"],
        )
        record("converged", [_as(p.eq.converged, ones, np.bool_) for p in phases], m["converged"])
        record("energy", [_or(p.eq.energy, nan).real for p in phases], m["energy"])
        record("shots", np.array([p.eq.shots for p in phases], np.int64), m["shots"])
        record("settle_time", np.array([p.eq.settle_time for p in phases]), m["settle_time"])
        if self.config.store.observables:
            for name in phases[0].eq.observables:
                o = [p.eq.observables[name].real for p in phases]
                self._record(
                    f"obs_{name}",
                    o,
                    ("phase", "sample", *[f"{name}_{i}" for i in range(o[0].ndim - 1)]),
                    long_name=f"{name} per phase and sample",
                )
        for name, value in est.extras.items():
            v = np.asarray(value)
            self._record(name, v, tuple(f"{name}_{i}" for i in range(v.ndim)))
        record("loss", _mean(est.loss), m["loss"])
        if self.report_loss is not None:
            record(
                "report_loss", evaluate_loss(self.report_loss, free_outputs, t), m["report_loss"]
            )
        accuracy = math.nan  # regression
        if self.task.classification:
            accuracy = self.task.accuracy(free_outputs, self.task.data.y_train[idx])
        record("batch_accuracy", accuracy, m["batch_accuracy"])
        record("lr", lr, m["lr"])
        record("grad_cosine", grad_diag[0], m["grad_cosine"])
        record("grad_rel_error", grad_diag[1], m["grad_rel_error"])
        record("timestamp", time.time(), m["timestamp"])
        record("step_time", time.perf_counter() - t0, m["step_time"])
        self.recorder.end_record("step")
        if not self._phases_recorded:
            self._phases_attr["phases"] = [
                {
                    "label": p.label,
                    "beta": [complex(p.beta).real, complex(p.beta).imag],
                    "kind": p.kind,
                    "warm_start": p.warm_start,
                }
                for p in phases
            ]
            self._phases_recorded = True

    def evaluate(self, updates: int) -> None:
        rng = step_rng(self.seed, updates, stream=3)
        eq = measure(self.system, self.x_test, None, None, rng)
        y = eq.outputs.real
        self.metrics["test_loss"] = evaluate_loss(self.loss, y, self.t_test)
        self.metrics["test_accuracy"] = self.task.accuracy(y, self.task.data.y_test)
        self._record("eval_step", updates, (), dim="eval")
        self._record("eval_timestamp", time.time(), (), dim="eval")
        self._record("test_loss", self.metrics["test_loss"], (), dim="eval")
        self._record("test_accuracy", self.metrics["test_accuracy"], (), dim="eval")
        self._record(
            "test_outputs",
            y,
            ("test_sample", "output"),
            dim="eval",
            units=self.system.outputs.unit,
            long_name="free outputs on the test split",
        )
        if self.report_loss is not None:
            self._record(
                "test_report_loss", evaluate_loss(self.report_loss, y, self.t_test), (), dim="eval"
            )
        if self.config.schedule.eval_train:
            eqt = measure(self.system, self.x_train_all, None, None, rng)
            self.metrics["train_loss"] = evaluate_loss(
                self.loss, eqt.outputs.real, self.t_train_all
            )
            self.metrics["train_accuracy"] = self.task.accuracy(
                eqt.outputs.real, self.task.data.y_train
            )
            self._record("train_loss", self.metrics["train_loss"], (), dim="eval")
            self._record("train_accuracy", self.metrics["train_accuracy"], (), dim="eval")
        self.recorder.end_record("eval")

    def _evaluation_due(self, updates: int) -> bool:
        every = self.config.schedule.eval_every
        return updates == 0 or updates % every == 0 or updates == self.total

    def _evaluation_missing(self, start: int) -> bool:
        """An evaluation due at ``start`` that no commit holds (a fresh run, or a run stopped
        between a step's commit and its evaluation)."""
        if not self._evaluation_due(start):
            return False
        if self.store.committed("eval") == 0:
            return True
        return int(self.store.read("eval_step")[-1]) != start

    def maybe_flush(self) -> None:
        """Commit when the policy says so: every ``flush_every`` steps (if set), every
        ``flush_seconds``, or when ``flush_megabytes`` of measurements are buffered."""
        st = self.config.store
        rec = self.recorder
        if (
            (st.flush_every and rec.counts["step"] >= st.flush_every)
            or time.monotonic() - self._last_flush >= st.flush_seconds
            or rec.buffered_bytes >= st.flush_megabytes * 2**20
        ):
            self.flush()

    def flush(self) -> None:
        """Commit buffered records with the checkpoint after the buffered steps."""
        rec = self.recorder
        step_done = rec.committed_steps + rec.counts["step"]
        ck = Checkpoint(step_done, self.shadow, self.held, dict(self.optimizer.state))
        if self.carry_shapes:  # carried state: written with the checkpoint, valid flag last
            ck.carry = {**(self.carry or {}), "valid": np.asarray(float(self.carry is not None))}
        rec.commit(ck, self._phases_attr)
        self._phases_attr = {}
        self._last_flush = time.monotonic()

    # -- the loop ----------------------------------------------------------------------------
    def run(
        self, start: int, progress: bool = False, on_step: Callable[[int], None] | None = None
    ) -> str:
        from tqdm import tqdm

        cfg = self.config
        bar = tqdm(
            total=self.total,
            initial=start,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            desc=cfg.name,
        )
        status = "success"
        try:
            if self._evaluation_missing(start):
                self.evaluate(start)
            for step in range(start, self.total):
                if self.flag.requested:
                    status = "abort"
                    break
                self._one_step(step)
                done = step + 1
                if self._evaluation_due(done):
                    self.evaluate(done)
                self.maybe_flush()
                bar.update(1)
                bar.set_postfix(self._postfix(), refresh=False)
                if on_step is not None:
                    on_step(done)
            self.flush()
            self.recorder.drain()
        except KeyboardInterrupt:
            status = "abort"
            self._safe_flush()
        except BaseException:
            self._safe_flush()
            raise
        finally:
            bar.close()
        return status

    def _safe_flush(self) -> None:
        """Commit the steps already complete; never let a second failure hide the first.
        Nothing is committed after a commit failed (the recorder refuses): its records are lost,
        so later ones would land at the wrong steps."""
        if self.recorder.failed is not None:
            return
        try:
            self.flush()
            self.recorder.drain()
        except Exception as exc:  # the original error matters more
            print(f"physlearn: could not commit buffered steps ({exc})", file=sys.stderr)

    def _postfix(self) -> dict[str, str]:
        out = {}
        loss = self.recorder.last("loss")
        if loss is not None:
            out["loss"] = f"{float(loss):.4g}"
        if "test_accuracy" in self.metrics:
            out["test_acc"] = f"{self.metrics['test_accuracy']:.3f}"
        return out

    def _one_step(self, step: int) -> None:
        t0 = time.perf_counter()
        cfg = self.config
        idx, rng = self._step_inputs(step)
        # rows of the encoded training split: the encodings are elementwise, so these are
        # exactly the encodings of the batch's patterns
        x = self.x_train_all[idx]
        t = self.t_train_all[idx]
        warm = None if self.carry is None else self.system.import_state(self.carry)  # carried
        est = self.estimator.estimate(self.system, x, t, self.loss, rng, warm_start=warm)
        diag = (math.nan, math.nan)
        if cfg.diagnostics.exact_gradient and step % cfg.diagnostics.every == 0:
            assert self._exact is not None, "the system has no exact gradient"
            exact = self._exact.exact_gradient(x, t, est.objective)
            diag = gradient_fidelity(est.gradient, exact)
        lr = cfg.optimizer.lr * lr_factor(cfg.schedule.lr, step, self.total)
        used = self.held
        requested = self.optimizer.step(self.shadow, est.gradient, lr)
        self.shadow, held, proj = project(self.groups, requested)
        self.held = self.system.set_parameters(held)
        self.carry = self._export_carry(est)  # carried state
        self._record_step(step, idx, x, t, est, diag, lr, used, proj, t0)

    def _step_inputs(self, step: int) -> tuple[np.ndarray, np.random.Generator]:
        """The batch indices and the random generator (``step_rng``) of ``step``, made for a
        block of ``_AHEAD`` steps at a time.

        Both are pure functions of (seed, step), and a generator is untouched until its step,
        so making them early changes no result. It is cheaper: seeding a generator costs about
        9 us while numpy's seeding code is in the CPU caches, three to four times that after a
        step's physics has evicted it, as it has at the start of every step."""
        ahead = self._ahead.pop(step, None)
        if ahead is None:
            b = self.config.schedule.batch_size
            stop = max(step + 1, min(step + _AHEAD, self.total))
            self._ahead = {
                k: (self.task.batch_indices(self.seed, k, b), step_rng(self.seed, k))
                for k in range(step, stop)
            }
            ahead = self._ahead.pop(step)
        return ahead

    def _export_carry(self, est: Estimate) -> dict[str, np.ndarray] | None:
        """This step's free state as the arrays the next step (or a resume) starts from; None
        when the system carries nothing or the arrays do not have the declared shapes."""
        if not self.carry_shapes:
            return None
        arrays = self.system.export_state(est.free.state)
        if arrays is None or set(arrays) != set(self.carry_shapes):
            return None
        out = {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}
        if any(out[k].shape != shape for k, shape in self.carry_shapes.items()):
            return None
        return out


def gradient_fidelity(estimate: Params, exact: Params) -> tuple[float, float]:
    """(cosine similarity, relative error) of two gradients over all groups."""
    keys = sorted(exact)
    e = np.concatenate([np.ravel(estimate[k]) for k in keys])
    x = np.concatenate([np.ravel(exact[k]) for k in keys])
    nx, ne = _norm(x), _norm(e)
    cos = float(e @ x / (ne * nx)) if ne > 0 and nx > 0 else math.nan
    rel = float(_norm(e - x) / nx) if nx > 0 else math.nan
    return cos, rel


def _norm(v: np.ndarray) -> float:
    """``np.linalg.norm`` of a vector: for float64 its own computation, sqrt(v . v), without
    its dispatch."""
    if v.dtype != np.float64 or v.ndim != 1:
        return float(np.linalg.norm(v))
    return math.sqrt(float(v.dot(v)))


def _or(value: Any, default: np.ndarray) -> np.ndarray:
    return default if value is None else np.asarray(value)


def _mean(values: Any) -> float:
    """``float(values.mean())``; for float64, numpy's own computation (the sum by
    ``np.add.reduce``, then one division by the count) without its reduction wrappers."""
    a = np.asarray(values)
    if a.dtype != np.float64 or not a.size:
        return float(a.mean())
    return float(np.add.reduce(a, axis=None)) / a.size


def _as(value: Any, default: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``value`` (``default`` when None) as an array of ``dtype``, converted only if needed."""
    a = default if value is None else np.asarray(value)
    return a if a.dtype == dtype else a.astype(dtype)


@dataclass(frozen=True)
class _GroupRecords:
    """The per-step record names of one parameter group."""

    group: str
    conj: str
    param: str
    grad: str
    clipped: str
    projection: str


@dataclass
class _StepPlan:
    """What every step records: metadata by record name, the groups' record names, and how
    conjugates are logged (``per_sample``, ``batch_mean`` or ``none``)."""

    meta: dict[str, ArrayMeta]
    groups: tuple[_GroupRecords, ...]
    conjugates: str
    _defaults: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def defaults(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logged in place of a diagnostic a system does not report: NaN (residual, energy),
        0 iterations, converged. Shared by the steps (the recorder only reads them)."""
        if self._defaults is None or self._defaults[0] != batch:
            arrays = (np.full(batch, np.nan), np.zeros(batch, np.int64), np.ones(batch, bool))
            self._defaults = (batch, arrays)
        return self._defaults[1]


def objective_loss(config: ExperimentConfig, system: PhysicalSystem) -> Loss:
    name = config.task.loss or system.native_cost
    if name is None:
        raise ConfigError(
            f"task.loss: the {config.system.kind!r} system has no native cost; name a loss"
        )
    return get_loss(name, config.task.temperature)


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
        **(extra_attrs or {}),
    }
    # positions, edges, node roles: for plots on the graph
    graph = system.graph_layout() if isinstance(system, Graph) else None
    return RunStore.create(path, coords, ck_shapes, attrs, graph)


def start_run(
    config: ExperimentConfig,
    out: str | Path | None = None,
    progress: bool = False,
    handle_signals: bool = False,
    on_step: Callable[[int], None] | None = None,
    extra_attrs: dict[str, Any] | None = None,
) -> RunResult:
    """Create a store and train. Raises ConfigError (before creating anything) for bad input.
    ``extra_attrs`` are stored with the run's attributes (a sweep records itself there).
    The store appears under its name complete or not at all, and this process holds its
    writer lock until the run ends."""
    system = build_system(config)
    path = Path(out) if out is not None else default_run_path(config)
    try:
        store = create_store(config, system, path, extra_attrs)
    except BaseException as exc:
        system.close()  # snapshot() may have connected to instruments
        if _disk_full(exc) is not None:
            raise DiskFullError(_disk_full_message(exc, path, None)) from None
        raise
    return _drive(config, system, store, progress, handle_signals, on_step)


def resume_run(
    path: str | Path,
    progress: bool = False,
    handle_signals: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> RunResult:
    """Continue a run from its last commit. Takes the store's writer lock first (another
    writer: StoreLockedError naming it) and verifies the checkpoint and the last commit against
    their checksums (damage: StoreError naming the array and steps) before anything is used."""
    store = RunStore.open(path, mode="r+", writer="physlearn resume")
    try:
        config = parse_config(store.attrs["config"], f"{path} (stored config)")
        if store.attrs.get("exit_status") == "success":
            return RunResult(Path(path), "success", store.committed(), _last_metrics(store))
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
        return _drive(config, system, store, progress, handle_signals, on_step)
    finally:
        store.release()


def _drive(
    config: ExperimentConfig,
    system: PhysicalSystem,
    store: RunStore,
    progress: bool,
    handle_signals: bool,
    on_step: Callable[[int], None] | None,
) -> RunResult:
    try:
        retain_freed_memory()
        campaign = Campaign(config, system, store)
        status = "fail"
        try:
            with _signals(campaign.flag, handle_signals), system:
                start = campaign.initialise()
                status = campaign.run(start, progress, on_step)
            store.finish(status)
        except BaseException as exc:
            _record_failure(store, exc)
            if _disk_full(exc) is not None:
                raise DiskFullError(_disk_full_message(exc, store.path, store)) from None
            raise
        return RunResult(store.path, status, store.committed(), _last_metrics(store))
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


def _last_metrics(store: RunStore) -> dict[str, float]:
    out: dict[str, float] = {}
    names = set(store.array_names())
    if store.committed("step") and "loss" in names:
        out["loss"] = float(store.read("loss")[-1])
    if store.committed("eval"):
        for name in ("test_accuracy", "test_loss", "train_accuracy", "train_loss"):
            if name in names:
                v = float(store.read(name)[-1])
                if not math.isnan(v):
                    out[name] = v
    return out
