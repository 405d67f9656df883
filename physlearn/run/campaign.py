"""The campaign: clamp -> relax -> measure -> estimate -> update -> project -> write back -> log.

A :class:`Campaign` is one run's loop over its steps: each step draws its batch and random
generator from (seed, step), asks the estimator for a gradient, updates and projects the
parameters, writes them back to the system and hands every measurement to the recorder
(:mod:`physlearn.run.records`), which commits them to the run store in batches together with a
checkpoint. Starting, resuming and signal handling are in :mod:`physlearn.run.start`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from physlearn.config import ConfigError, ExperimentConfig
from physlearn.estimator_config import (
    CoupledConfig,
    EPConfig,
    EstimatorConfig,
    FiniteDifferenceConfig,
    SPSAConfig,
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
from physlearn.estimators.nonconverged import NonConvergedPolicy
from physlearn.losses import Loss, get_loss
from physlearn.optim import Optimizer, lr_factor, project
from physlearn.run.progress import Progress, ProgressSpec
from physlearn.run.records import Recorder, StepPlan, describe, step_plan
from physlearn.store.run_store import Checkpoint, RunStore
from physlearn.system import ExactGradient, Params, PhysicalSystem
from physlearn.task import Task, evaluate_loss, step_rng


def build_estimator(cfg: EstimatorConfig, per_sample: bool = True) -> Estimator:
    """The configured estimator; ``per_sample=False`` when only batch means of the conjugates
    are logged (each phase then releases its per-sample conjugates once averaged)."""
    est = _estimator(cfg)
    est.per_sample = per_sample
    est.nonconverged = NonConvergedPolicy(cfg.nonconverged.policy, cfg.nonconverged.retries)
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


class StopFlag:
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
        self.flag = StopFlag()
        self.shadow: Params = {}
        self.held: Params = {}
        self._sent: Params = {}  # what the last update asked the system to hold
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
        self._plan: StepPlan | None = None  # names and metadata of the step records

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
            meta = describe(name, dims, self.system.energy_unit, dim, units, long_name)
        self.recorder.record(name, value, meta)

    def _conjugates_logged(self) -> str:
        """How conjugates are logged: as configured, or ``none`` when the estimator needs none."""
        cfg = self.config.store
        if cfg.conjugates != "none" and self.estimator.needs_conjugates:
            return cfg.conjugates
        return "none"

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
            plan = self._plan = step_plan(self.system, self._conjugates_logged())
        m = plan.meta
        record = self.recorder.record
        phases = est.phases
        record("sample_index", idx, m["sample_index"])
        record("inputs", x, m["inputs"])
        record("targets", t, m["targets"])
        free_outputs = phases[0].eq.outputs.real
        record("outputs", [p.eq.outputs.real for p in phases], m["outputs"])
        self._record_groups(plan, est, params_used, proj)
        self._record_diagnostics(plan, est)
        # dropped samples (non-converged) have NaN losses and are left out of the mean
        record("loss", float(np.nanmean(est.loss) if est.dropped else np.mean(est.loss)), m["loss"])
        record("nonconverged_retried", est.retried, m["nonconverged_retried"])
        record("nonconverged_dropped", est.dropped, m["nonconverged_dropped"])
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

    def _record_groups(self, plan: StepPlan, est: Estimate, params_used: Params, proj: Any) -> None:
        """Per parameter group: conjugates (as logged), held values, gradient and projection."""
        m = plan.meta
        record = self.recorder.record
        phases = est.phases
        for n in plan.groups:
            if plan.conjugates == "per_sample":
                record(n.conj, [p.eq.conjugates[n.group].real for p in phases], m[n.conj])
            elif plan.conjugates == "batch_mean":
                record(n.conj, [p.eq.conjugate_mean(n.group).real for p in phases], m[n.conj])
            record(n.param, np.array(params_used[n.group]), m[n.param])
            record(n.grad, est.gradient[n.group], m[n.grad])
            record(n.clipped, proj.clipped[n.group], m[n.clipped])
            record(n.projection, proj.max_deviation[n.group], m[n.projection])
            if n.requested is not None and n.realised is not None:
                record(n.requested, np.array(self._sent[n.group]), m[n.requested])
                record(n.realised, np.array(self.held[n.group]), m[n.realised])

    def _record_diagnostics(self, plan: StepPlan, est: Estimate) -> None:
        """Per phase: the solver diagnostics (defaults where the system reports none),
        observables if configured, and the estimator's extras."""
        m = plan.meta
        record = self.recorder.record
        phases = est.phases
        b = phases[0].eq.batch
        nan, zeros, ones = plan.defaults(b)
        record("residual", [_or(p.eq.residual, nan) for p in phases], m["residual"])
        # one array per phase; the writer stacks them
        iterations = [np.asarray(_or(p.eq.iterations, zeros), np.int64) for p in phases]
        record("iterations", iterations, m["iterations"])
        converged = [np.asarray(_or(p.eq.converged, ones), np.bool_) for p in phases]
        record("converged", converged, m["converged"])
        record("energy", [_or(p.eq.energy, nan).real for p in phases], m["energy"])
        record("shots", np.array([p.eq.shots for p in phases], np.int64), m["shots"])
        record("settle_time", np.array([p.eq.settle_time for p in phases]), m["settle_time"])
        if self.config.store.observables:
            for name in phases[0].eq.observables:
                o = [p.eq.observables[name].real for p in phases]
                declared = self.system.observable_meta(name)
                dims = tuple(f"{name}_{i}" for i in range(o[0].ndim - 1))
                units, long_name = None, f"{name} per phase and sample"
                if declared is not None and len(declared[1]) == len(dims):
                    units, dims, long_name = declared[0], declared[1], declared[2]
                self._record(
                    f"obs_{name}", o, ("phase", "sample", *dims), units=units, long_name=long_name
                )
        for name, value in est.extras.items():
            v = np.asarray(value)
            self._record(name, v, tuple(f"{name}_{i}" for i in range(v.ndim)))
        for name, (count, unit, long_name) in self.system.counters().items():
            self._record(f"system_{name}", float(count), (), units=unit, long_name=long_name)

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
        self,
        start: int,
        progress: ProgressSpec | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> str:
        bar = Progress(progress or ProgressSpec(), self.config.name, self.total, start)
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
                bar.update(done, self._postfix())
                if on_step is not None:
                    on_step(done)
            self.flush()
            self.recorder.drain()
        except KeyboardInterrupt:
            status = "abort"
            self._safe_flush()
        except BaseException:
            self._safe_flush()
            bar.close("failed")
            raise
        bar.close(status)
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
        est = self.estimator.estimate_checked(self.system, x, t, self.loss, rng, warm, step)
        diag = (math.nan, math.nan)
        if cfg.diagnostics.exact_gradient and step % cfg.diagnostics.every == 0:
            assert self._exact is not None, "the system has no exact gradient"
            exact = self._exact.exact_gradient(x, t, est.objective)
            diag = gradient_fidelity(est.gradient, exact)
        lr = cfg.optimizer.lr * lr_factor(cfg.schedule.lr, step, self.total)
        used = self.held
        requested = self.optimizer.step(self.shadow, est.gradient, lr)
        self.shadow, held, proj = project(self.groups, requested)
        self._sent = held
        self.held = self.system.set_parameters(held)
        self.carry = self._export_carry(est)  # carried state
        self._record_step(step, idx, x, t, est, diag, lr, used, proj, t0)

    def _step_inputs(self, step: int) -> tuple[np.ndarray, np.random.Generator]:
        """The batch indices and the random generator of ``step``: pure functions of (seed,
        step), so a resumed run draws exactly what an uninterrupted one does."""
        b = self.config.schedule.batch_size
        return self.task.batch_indices(self.seed, step, b), step_rng(self.seed, step)

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
    nx, ne = float(np.linalg.norm(x)), float(np.linalg.norm(e))
    cos = float(e @ x / (ne * nx)) if ne > 0 and nx > 0 else math.nan
    rel = float(np.linalg.norm(e - x) / nx) if nx > 0 else math.nan
    return cos, rel


def _or(value: Any, default: np.ndarray) -> np.ndarray:
    """``value`` as an array, ``default`` when the system did not report it (None)."""
    return default if value is None else np.asarray(value)


def objective_loss(config: ExperimentConfig, system: PhysicalSystem) -> Loss:
    name = config.task.loss or system.native_cost
    if name is None:
        raise ConfigError(
            f"task.loss: the {config.system.kind!r} system has no native cost; name a loss"
        )
    return get_loss(name, config.task.temperature)
