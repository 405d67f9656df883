"""The black-box baselines and the estimator plumbing, on a real (simulated) resistor network."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.estimators import (
    SPSA,
    EquilibriumPropagation,
    FiniteDifference,
    centred,
    holomorphic,
    measure,
    measure_many,
)
from physlearn.losses import get_loss
from physlearn.run.campaign import gradient_fidelity
from physlearn.simulators.graphs.generators import layered
from physlearn.simulators.resistor.linear import LinearResistorNetwork
from physlearn.system import Nudge


@pytest.fixture
def net() -> LinearResistorNetwork:
    return LinearResistorNetwork(layered([4, 6, 2]), bounds=(1e-5, 1e-2), init=(1e-4, 1e-3), seed=3)


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(8, 4)), rng.uniform(-0.3, 0.3, size=(8, 2))


def test_finite_differences_match_the_exact_gradient_and_restore_parameters(net):
    x, t = _batch()
    loss = get_loss("mse")
    before = net.get_parameters()
    est = FiniteDifference(step=1e-7).estimate(net, x, t, loss, np.random.default_rng(0))
    exact = net.exact_gradient(x, t, loss)
    cos, rel = gradient_fidelity(est.gradient, exact)
    assert cos > 0.999999 and rel < 1e-4
    np.testing.assert_array_equal(net.get_parameters()["conductance"], before["conductance"])


def test_spsa_is_unbiased_on_average(net):
    x, t = _batch(1)
    loss = get_loss("mse")
    exact = net.exact_gradient(x, t, loss)
    spsa = SPSA(c=1e-6, n_samples=400)
    est = spsa.estimate(net, x, t, loss, np.random.default_rng(5))
    cos, _ = gradient_fidelity(est.gradient, exact)
    # 400 Rademacher draws over 32 parameters: the estimate's noise is ~sqrt(32/400) of |g|
    assert cos > 0.9
    one = SPSA(c=1e-6, n_samples=1).estimate(net, x, t, loss, np.random.default_rng(5))
    cos1, _ = gradient_fidelity(one.gradient, exact)
    assert cos1 < cos  # a single draw is a noisy estimate
    assert est.extras["spsa_loss_difference"].shape == (400,)


def test_batches_larger_than_max_batch_are_split_transparently(net):
    x, t = _batch(2)
    whole = measure(net, x)
    net.max_batch = 3
    split = measure(net, x)
    np.testing.assert_allclose(split.outputs, whole.outputs, rtol=1e-12)
    est = EquilibriumPropagation(centred(1e-6)).estimate(
        net, x, t, get_loss("mse"), np.random.default_rng(0)
    )
    net.max_batch = 1 << 30
    ref = EquilibriumPropagation(centred(1e-6)).estimate(
        net, x, t, get_loss("mse"), np.random.default_rng(0)
    )
    np.testing.assert_allclose(est.gradient["conductance"], ref.gradient["conductance"], rtol=1e-9)


@pytest.mark.parametrize("max_batch", [1 << 30, 3])
@pytest.mark.parametrize("per_sample", [True, False])
def test_several_phases_measured_at_once_are_those_measured_one_by_one(net, max_batch, per_sample):
    """``measure_many`` (a machine's ``equilibrate_many``; by default one call per nudge) gives
    each nudge what ``measure`` gives it, in order -- batches split by ``max_batch`` too."""
    x, t = _batch(4)
    eps = np.random.default_rng(4).uniform(-1, 1, (8, 2))
    nudges = [None, Nudge(beta=1e-3, error=eps), Nudge(beta=-1e-3, error=eps)]
    net.max_batch = max_batch
    many = measure_many(net, x, nudges, per_sample=per_sample)
    one = [measure(net, x, n, per_sample=per_sample) for n in nudges]
    assert len(many) == 3
    for a, b in zip(many, one, strict=True):
        np.testing.assert_array_equal(a.outputs, b.outputs)
        assert (
            a.conjugates.keys() == b.conjugates.keys() == ({"conductance"} if per_sample else set())
        )
        np.testing.assert_array_equal(
            a.conjugate_mean("conductance"), b.conjugate_mean("conductance")
        )
    assert not np.array_equal(many[1].outputs, many[2].outputs)


@pytest.mark.parametrize("pairs", [centred(1e-4), holomorphic(1e-3, 4)], ids=["centred", "holo"])
def test_ep_asks_for_every_nudged_phase_in_one_request(net, pairs):
    """EP measures the free phase, then every nudged phase in one ``equilibrate_many`` request
    (which an instrument bench answers in one sweep), in the order of its betas."""
    calls: list[list[complex]] = []
    many = type(net).equilibrate_many

    def spy(self, inputs, nudges, warm_start=None, rng=None):
        calls.append([complex(n.beta) for n in nudges])
        return many(self, inputs, nudges, warm_start, rng)

    x, t = _batch(5)
    ep = EquilibriumPropagation(pairs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(net), "equilibrate_many", spy)
        est = ep.estimate(net, x, t, get_loss("mse"), np.random.default_rng(0))
    assert calls == [[complex(p.beta) for p in est.phases[1:]]]
    assert len(calls[0]) == len(ep.phase_labels()) - 1


def test_a_machine_answering_the_wrong_number_of_phases_is_refused(net):
    x, _ = _batch(6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(net), "equilibrate_many", lambda self, *a, **k: [])
        with pytest.raises(RuntimeError, match="0 results for 2 nudges"):
            measure_many(net, x, [None, None])


def test_target_nudge_must_realise_the_loss(net):
    x, t = _batch()
    with pytest.raises(ValueError, match="realises 'mse'"):
        EquilibriumPropagation(centred(1e-6), nudge="target").estimate(
            net, x, t, get_loss("cross_entropy"), np.random.default_rng(0)
        )


def test_batch_mean_estimates_release_per_sample_conjugates_and_agree(net):
    """An estimator told to keep batch means only (a run logging batch means) drops every
    phase's per-sample conjugates once averaged, and estimates exactly what it estimates with
    them."""
    from physlearn.estimators import CoupledLearning

    x, t = _batch(3)
    loss = get_loss("mse")
    for make in (lambda: EquilibriumPropagation(centred(1e-4)), lambda: CoupledLearning(0.5)):
        full, lean = make(), make()
        lean.per_sample = False
        a = full.estimate(net, x, t, loss, np.random.default_rng(0))
        b = lean.estimate(net, x, t, loss, np.random.default_rng(0))
        np.testing.assert_array_equal(a.gradient["conductance"], b.gradient["conductance"])
        for pa, pb in zip(a.phases, b.phases, strict=True):
            assert pb.eq.conjugates == {}
            assert pa.eq.conjugates["conductance"].shape == (8, net.parameter_groups[0].size)
            np.testing.assert_array_equal(
                pa.eq.conjugate_mean("conductance"), pb.eq.conjugate_mean("conductance")
            )
            np.testing.assert_array_equal(pa.eq.outputs, pb.eq.outputs)
