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
from physlearn.system import Equilibrium, Nudge, PhysicsError

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
