"""Unit tests of the simulator-independent core: stencils, losses, optimisers, projection,
datasets and data order."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.config import LRSchedule, OptimizerConfig
from physlearn.datasets import DigitsConfig, IrisConfig, RegressionConfig, XORConfig
from physlearn.estimators import central_stencil, centred, holomorphic, one_sided
from physlearn.losses import LOSSES
from physlearn.optim import Optimizer, lr_factor, project
from physlearn.system import Nudge, ParameterGroup


def _apply(pairs, f):
    return sum(w * f(b) for b, w in pairs).real


@pytest.mark.parametrize(
    "pairs, order",
    [
        (one_sided(1e-2), 1),
        (centred(1e-2), 2),
        (central_stencil(1e-2, 4), 4),
        (holomorphic(1e-2, 4), 4),
    ],
)
def test_stencils_differentiate_with_their_order(pairs, order):
    # f(b) = exp(b) + b^2: f'(0) = 1; the error of an order-p stencil scales as beta^p
    f = lambda b: np.exp(b) + b**2  # noqa: E731
    err = abs(_apply(pairs, f) - 1.0)
    assert err < 10 * (1e-2) ** order
    # and it is not exact at lower cost: halving beta reduces the error by ~2^p
    beta = abs(pairs[0][0]) if pairs[0][0] != 0 else abs(pairs[1][0])
    ctor = {1: one_sided, 2: centred}.get(order)
    if ctor is not None:
        err2 = abs(_apply(ctor(beta / 2), f) - 1.0)
        assert 2 ** (order - 0.3) < err / err2 < 2 ** (order + 0.3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradients_match_finite_differences(name):
    loss = LOSSES[name]
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, size=(5, 3))
    t = rng.uniform(-1, 1, size=(5, 3))
    g = loss.grad(y, t)
    h = 1e-6
    for k in range(3):
        e = np.zeros_like(y)
        e[:, k] = h
        fd = (loss.value(y + e, t) - loss.value(y - e, t)) / (2 * h)
        np.testing.assert_allclose(g[:, k], fd, rtol=1e-5, atol=1e-7)


def test_nudge_needs_exactly_one_kind():
    with pytest.raises(ValueError, match="exactly one"):
        Nudge(beta=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        Nudge(beta=0.1, target=np.zeros((1, 1)), error=np.zeros((1, 1)))


GROUP = ParameterGroup("g", (50,), ("edge",), lower=0.1, upper=1.0, unit="S", resolution=0.05)
CONTINUOUS = ParameterGroup("g", (50,), ("edge",), lower=0.1, upper=1.0, unit="S")
ANGLE = ParameterGroup("psi", (20,), ("node",), -math.pi, math.pi, "rad", periodic=True)


@pytest.mark.parametrize("group", [GROUP, CONTINUOUS], ids=["grid", "continuous"])
@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=50, max_size=50))
def test_projection_never_leaves_the_bounds_and_is_recorded(group, values):
    # the values as given, and clipped into the bounds beforehand (nothing left to clip)
    for req in (np.asarray(values), np.clip(values, group.lower, group.upper)):
        shadow, held, rec = project((group,), {"g": req})
        h = held["g"]
        assert np.all(h >= group.lower - 1e-12) and np.all(h <= group.upper + 1e-12)
        if group.resolution:
            k = (h - group.lower) / group.resolution
            np.testing.assert_allclose(k, np.round(k), atol=1e-9)
        else:
            np.testing.assert_array_equal(h, np.clip(req, group.lower, group.upper))
        assert rec.clipped["g"] == int(np.count_nonzero((req < 0.1) | (req > 1.0)))
        assert rec.max_deviation["g"] == float(np.abs(h - req).max())
        assert np.all((shadow["g"] >= 0.1) & (shadow["g"] <= 1.0))


def test_periodic_projection_wraps_instead_of_clipping():
    req = np.linspace(-10, 10, 20)
    _, held, rec = project((ANGLE,), {"psi": req})
    np.testing.assert_allclose(np.cos(held["psi"]), np.cos(req), atol=1e-12)
    assert rec.clipped["psi"] == 0


def test_projection_refuses_non_finite():
    with pytest.raises(FloatingPointError, match="'g'"):
        project((GROUP,), {"g": np.full(50, np.nan)})


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
def test_optimisers_minimise_a_quadratic(kind):
    g = ParameterGroup("x", (3,), ("i",), -10, 10, "1")
    opt = Optimizer(OptimizerConfig(kind=kind, lr=0.05), (g,))
    p = {"x": np.array([3.0, -2.0, 1.0])}
    for _ in range(600):
        p = opt.step(p, {"x": 2 * p["x"]}, 0.05)
    assert np.linalg.norm(p["x"]) < 1e-2


def test_frozen_groups_do_not_move_and_unknown_groups_are_refused():
    g = ParameterGroup("x", (2,), ("i",), -1, 1, "1")
    opt = Optimizer(OptimizerConfig(kind="sgd", frozen=["x"]), (g,))
    p = {"x": np.array([0.5, 0.5])}
    assert np.array_equal(opt.step(p, {"x": np.ones(2)}, 1.0)["x"], p["x"])
    with pytest.raises(ValueError, match="unknown parameter groups"):
        Optimizer(OptimizerConfig(frozen=["nope"]), (g,))


def test_lr_schedules():
    assert lr_factor(LRSchedule(kind="constant"), 50, 100) == 1.0
    cos = LRSchedule(kind="cosine", min_factor=0.1)
    assert lr_factor(cos, 0, 100) == pytest.approx(1.0)
    assert lr_factor(cos, 99, 100) == pytest.approx(0.1)
    assert lr_factor(LRSchedule(kind="step", gamma=0.5, every=10), 25, 100) == 0.25
    assert lr_factor(LRSchedule(kind="constant", warmup=4), 1, 100) == 0.5


def test_datasets_are_deterministic_and_disjoint():
    for cfg in (IrisConfig(), DigitsConfig(train_per_class=20, test_size=100), RegressionConfig()):
        a, b = cfg.load(3), cfg.load(3)
        np.testing.assert_array_equal(a.x_train, b.x_train)
        assert a.x_train.shape[0] == cfg.n_train()
        assert a.n_features == cfg.n_features()
    iris = IrisConfig().load(0)
    assert np.bincount(iris.y_test).tolist() == [15, 15, 15]
    d = DigitsConfig().load(0)
    assert d.x_train.shape == (1000, 64) and d.x_test.shape == (700, 64)
    rows = {tuple(r) for r in d.x_train.tolist()}
    # digits has a few duplicate images; the split itself must be by index, so check sizes
    assert len(rows) > 900
    x = XORConfig().load(0)
    assert x.y_train.tolist() == [0, 1, 1, 0]


@pytest.mark.slow
def test_iris_and_digits_are_scikit_learns_tables():
    # physlearn reads the CSV files scikit-learn ships (no sklearn.datasets import per process)
    from sklearn.datasets import load_digits, load_iris

    from physlearn.datasets import _sklearn_table

    for file, skip, ref in (("iris.csv", 1, load_iris()), ("digits.csv.gz", 0, load_digits())):
        x, y = _sklearn_table(file, "", skip)
        np.testing.assert_array_equal(x, ref.data)
        np.testing.assert_array_equal(y, ref.target)


def test_batches_cover_each_epoch_once():
    from physlearn.config import TaskConfig
    from physlearn.task import Task

    cfg = TaskConfig(dataset=IrisConfig())
    task = Task(cfg, cfg.dataset.load(0), 3)
    n = task.data.x_train.shape[0]
    seen = np.concatenate([task.batch_indices(0, k, 7) for k in range(n // 7)])
    assert len(np.unique(seen)) == len(seen)
    np.testing.assert_array_equal(task.batch_indices(0, 5, 7), task.batch_indices(0, 5, 7))
    assert not np.array_equal(task.batch_indices(0, 0, 7), task.batch_indices(1, 0, 7))


@pytest.mark.parametrize("batch", [1, 16, 104, 105, 106, 250])
def test_batches_are_consecutive_slices_of_the_epochs_permutations(batch):
    """The data order resumes rely on: pattern k of the run (k = step * batch + i) is entry
    k mod n of the permutation of epoch k // n, also for batches spanning several epochs."""
    from physlearn.config import TaskConfig
    from physlearn.task import Task

    cfg = TaskConfig(dataset=IrisConfig())
    task = Task(cfg, cfg.dataset.load(0), 3)
    n = task.data.x_train.shape[0]
    perms: dict[int, np.ndarray] = {}
    for step in [0, 1, 2, 6, 7, 13, 50, 3, 0]:  # out of order too: the cache holds two epochs
        expected = []
        for k in range(step * batch, (step + 1) * batch):
            e = k // n
            if e not in perms:
                perms[e] = np.random.default_rng([3, 1, e]).permutation(n)
            expected.append(perms[e][k % n])
        got = task.batch_indices(3, step, batch)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


def test_campaign_prepares_each_steps_batch_and_generator_as_the_step_alone_would(
    quick_raw, tmp_path
):
    """Campaign._step_inputs makes the batches and generators of a block of steps at once: in
    any order (a resume starts in the middle; the overhead benchmark runs past the end), each
    step gets exactly task.batch_indices and an untouched step_rng, also when it runs again."""
    from physlearn.config import parse_config
    from physlearn.run.campaign import Campaign
    from physlearn.run.start import build_system, create_store
    from physlearn.task import step_rng

    cfg = parse_config(quick_raw)
    system = build_system(cfg)
    campaign = Campaign(cfg, system, create_store(cfg, system, tmp_path / "run.zarr"))
    b = cfg.schedule.batch_size
    for step in [5, 6, 6, 0, 1, 23, 24, 40, 7, 2]:  # total steps: 24
        idx, rng = campaign._step_inputs(step)
        np.testing.assert_array_equal(idx, campaign.task.batch_indices(cfg.seed, step, b))
        np.testing.assert_array_equal(rng.random(5), step_rng(cfg.seed, step).random(5))
