"""Non-converged equilibria: the estimator's policy (fail, drop, retry), the logged counts and
the refusal of centred nudging with the XY log cost (issue 23 item 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.estimators import EquilibriumPropagation, centred
from physlearn.estimators.nonconverged import NonConvergedPolicy
from physlearn.losses import get_loss
from physlearn.simulators.graphs.generators import layered
from physlearn.simulators.resistor.linear import LinearResistorNetwork
from physlearn.system import (
    Equilibrium,
    Nudge,
    ParameterGroup,
    Params,
    PhysicalSystem,
    PhysicsError,
    Port,
)

ROOT = Path(__file__).resolve().parents[1]


class Flaky(LinearResistorNetwork):
    """A real linear resistor network whose nudged phases report the samples whose first input
    equals one of ``bad_inputs`` as not converged (``fails`` times per sample, then converged)."""

    def __init__(self, bad_inputs: list[float], fails: int = 1_000) -> None:
        super().__init__(layered([4, 6, 2]), bounds=(1e-5, 1e-2), init=(1e-4, 1e-3), seed=3)
        self.bad_inputs = bad_inputs
        self.left = {b: fails for b in bad_inputs}

    def equilibrate(
        self, inputs: Any, nudge: Nudge | None = None, warm_start: Any = None, rng: Any = None
    ) -> Equilibrium:
        eq = super().equilibrate(inputs, nudge, warm_start, rng)
        if nudge is not None and np.real(nudge.beta) < 0:
            conv = np.ones(inputs.shape[0], dtype=bool)
            for i, x0 in enumerate(inputs[:, 0]):
                if x0 in self.left and self.left[x0] > 0:
                    conv[i] = False
            eq.converged = conv
            for x0 in inputs[~conv, 0]:
                self.left[x0] -= 1
        return eq


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(8, 4)), rng.uniform(-0.3, 0.3, size=(8, 2))


def _ep(policy: str, retries: int = 1) -> EquilibriumPropagation:
    est = EquilibriumPropagation(centred(1e-3))
    est.nonconverged = NonConvergedPolicy(policy, retries)  # type: ignore[arg-type]
    return est


def test_fail_names_the_step_phase_and_samples() -> None:
    x, t = _batch()
    sys_ = Flaky([x[2, 0], x[5, 0]])
    with pytest.raises(PhysicsError, match=r"step 7: .*phase 'beta-0.001' samples \[2, 5\]"):
        _ep("fail").estimate_checked(sys_, x, t, get_loss("mse"), np.random.default_rng(0), None, 7)


def test_drop_is_the_estimate_over_the_other_samples() -> None:
    x, t = _batch()
    loss = get_loss("mse")
    sys_ = Flaky([x[2, 0], x[5, 0]])
    est = _ep("drop").estimate_checked(sys_, x, t, loss, np.random.default_rng(0), None, 0)
    keep = np.array([0, 1, 3, 4, 6, 7])
    ref = _ep("fail").estimate(Flaky([]), x[keep], t[keep], loss, np.random.default_rng(0))
    assert est.dropped == 2 and est.retried == 0
    np.testing.assert_allclose(est.gradient["conductance"], ref.gradient["conductance"])
    assert np.isnan(est.loss[[2, 5]]).all()
    np.testing.assert_allclose(est.loss[keep], ref.loss)
    # the whole-batch gradient differs: the dropped samples did change it
    full = _ep("fail").estimate(Flaky([]), x, t, loss, np.random.default_rng(0))
    assert not np.allclose(full.gradient["conductance"], est.gradient["conductance"])


def test_retry_remeasures_and_counts() -> None:
    x, t = _batch()
    loss = get_loss("mse")
    sys_ = Flaky([x[2, 0], x[5, 0]], fails=1)  # converge when measured again
    est = _ep("retry").estimate_checked(sys_, x, t, loss, np.random.default_rng(0), None, 0)
    full = _ep("fail").estimate(Flaky([]), x, t, loss, np.random.default_rng(0))
    assert est.retried == 2 and est.dropped == 0
    np.testing.assert_allclose(est.gradient["conductance"], full.gradient["conductance"])
    stubborn = Flaky([x[2, 0]])  # never converges: retried, then dropped
    est = _ep("retry", 2).estimate_checked(stubborn, x, t, loss, np.random.default_rng(0), None, 0)
    assert (est.retried, est.dropped) == (1, 1)


def test_all_converged_is_untouched() -> None:
    x, t = _batch()
    loss = get_loss("mse")
    a = _ep("drop").estimate_checked(Flaky([]), x, t, loss, np.random.default_rng(0))
    b = _ep("drop").estimate(Flaky([]), x, t, loss, np.random.default_rng(0))
    np.testing.assert_array_equal(a.gradient["conductance"], b.gradient["conductance"])
    assert (a.retried, a.dropped) == (0, 0)


def test_centred_nudging_with_the_xy_log_cost_is_refused_in_one_line(tmp_path: Path) -> None:
    text = (ROOT / "configs/xy_digits_layered.yaml").read_text()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.replace("nudging: one_sided", "nudging: centred"))
    r = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "validate", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "xy_log" in lines[0] and "one_sided" in lines[0]


class MarkNonConverged(PhysicalSystem):
    """A real system (delegated to) whose negative-beta phases report the samples whose input
    row is one of ``bad_rows`` as not converged."""

    def __init__(self, inner: PhysicalSystem, bad_rows: np.ndarray) -> None:
        self.inner = inner
        self.bad_rows = bad_rows
        self.supported_nudges = inner.supported_nudges
        self.native_cost = inner.native_cost
        self.max_batch = inner.max_batch

    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return self.inner.parameter_groups

    @property
    def inputs(self) -> Port:
        return self.inner.inputs

    @property
    def outputs(self) -> Port:
        return self.inner.outputs

    def set_parameters(self, params: Params) -> Params:
        return self.inner.set_parameters(params)

    def get_parameters(self) -> Params:
        return self.inner.get_parameters()

    def equilibrate(
        self, inputs: Any, nudge: Nudge | None = None, warm_start: Any = None, rng: Any = None
    ) -> Equilibrium:
        eq = self.inner.equilibrate(inputs, nudge, warm_start, rng)
        if nudge is not None and np.real(nudge.beta) < 0:
            hit = (inputs[:, None, :] == self.bad_rows[None, :, :]).all(axis=2).any(axis=1)
            eq.converged = ~hit
        return eq


def test_counts_are_logged_per_step_and_shown_by_inspect_and_the_report(tmp_path: Path) -> None:
    from physlearn.cli import main
    from physlearn.config import parse_config
    from physlearn.report.command import make_report
    from physlearn.run.campaign import Campaign
    from physlearn.run.inspect import inspect_summary
    from physlearn.run.start import build_system, create_store
    from physlearn.store.run_store import RunStore
    from tests.conftest import load_yaml

    raw = load_yaml("quickstart.yaml")
    raw["schedule"] = {"steps": 6, "batch_size": 16, "eval_every": 3}
    raw["estimator"]["nonconverged"] = {"policy": "drop"}
    raw["diagnostics"] = {"exact_gradient": False}
    cfg = parse_config(raw)
    inner = build_system(cfg)
    path = tmp_path / "run.zarr"
    probe = Campaign(cfg, inner, create_store(cfg, inner, tmp_path / "probe.zarr"))
    bad = np.arange(0, probe.x_train_all.shape[0], 7)  # every 7th training pattern
    system = MarkNonConverged(inner, probe.x_train_all[bad])
    campaign = Campaign(cfg, system, create_store(cfg, system, path))
    with system:
        status = campaign.run(campaign.initialise())
    campaign.store.finish(status)
    assert status == "success"
    store = RunStore.open(path)
    idx = store.read("sample_index")
    expected = np.isin(idx, bad).sum(axis=1)
    assert expected.sum() > 0
    np.testing.assert_array_equal(store.read("nonconverged_dropped"), expected)
    np.testing.assert_array_equal(store.read("nonconverged_retried"), 0)
    meta = store.array("nonconverged_dropped")
    assert meta.metadata.dimension_names == ("step",) and meta.attrs["units"] == "1"
    summary = inspect_summary(str(path))["nonconverged"]
    assert summary["dropped"] == expected.sum()
    assert summary["steps_affected"] == int((expected > 0).sum())
    assert main(["inspect", str(path)]) == 0
    page = make_report(path, tmp_path / "rep").html.read_text()
    assert f"0 samples retried, {expected.sum()} dropped" in page
