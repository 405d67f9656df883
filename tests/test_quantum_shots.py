"""Finite-shot measurement: grouping, unbiasedness, reproducibility and 1/(beta sqrt M) noise."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from physlearn.estimators import EquilibriumPropagation, centred, one_sided
from physlearn.losses import get_loss
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.shots import MeasurementPlan
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
from physlearn.system import ParameterGroup


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def sensor_like(shots: int) -> QuantumSystem:
    """3 qubits: H = -Z0 Z1 - Z1 Z2 - 0.8 sum X + trainable X0, Z2, X1 X2; output <Z0 Z1>."""
    labels = ["Z0 Z1", "Z1 Z2", "X0", "X1", "X2", "Z2", "X1 X2", "Z0"]
    basis = PauliBasis.from_labels(labels, 3)
    h0 = basis.vector([(-1.0, "Z0 Z1"), (-1.0, "Z1 Z2"), (-0.8, "X1"), (-0.8, "X2"), (-0.3, "Z0")])
    trainable = ["X0", "Z2", "X1 X2"]
    group = ParameterGroup("theta", (3,), ("term",), -3.0, 3.0, "1")
    model = HamiltonianModel(
        basis,
        h0,
        np.zeros((0, basis.size)),
        basis.vector([(1.0, "Z0 Z1")])[None, :],
        (group,),
        {"theta": np.stack([basis.vector([(1.0, lab)]) for lab in trainable])},
    )
    return QuantumSystem(model, {"theta": np.array([-0.8, 0.2, 0.3])}, shots=shots)


def test_grouping_covers_every_string_with_qubitwise_commuting_settings() -> None:
    basis = PauliBasis.from_labels(["I", "X0 X1", "X0", "Z1", "Z0 Z1", "Y2", "X1 Y2", "Z2"], 3)
    plan = MeasurementPlan(basis, np.arange(basis.size))
    covered = np.concatenate([s.members for s in plan.settings])
    assert sorted(covered) == [k for k in range(basis.size) if basis.label(k) != "I"]
    for s in plan.settings:
        for k in s.members:
            lab = basis.label(int(plan.strings[k]))
            for tok in lab.split():
                assert s.bases[int(tok[1:])] == tok[0]
    # X0 X1, X0, X1 Y2 share one setting; Z1, Z0 Z1, Z2 another; Y2 joins the first
    assert plan.n_settings == 2


def test_shot_estimates_are_unbiased_with_binomial_variance() -> None:
    rng = np.random.default_rng(1)
    n = 3
    psi = rng.normal(size=8) + 1j * rng.normal(size=8)
    psi /= np.linalg.norm(psi)
    basis = PauliBasis.from_labels(["X0 X1", "Y0", "Z1 Z2", "Y1 X2", "I"], n)
    exact = basis.expectations(psi)
    plan = MeasurementPlan(basis, np.arange(basis.size))
    m, reps = 200, 400
    est = np.array([plan.sample(psi[:, None], np.ones(1), m, rng) for _ in range(reps)])
    se = np.sqrt(np.clip(1 - exact**2, 0, None) / m / reps)
    assert np.all(np.abs(est.mean(0) - exact) < 5 * se + 1e-12)
    var = est.var(0, ddof=1)
    expected = np.clip(1 - exact**2, 0, None) / m
    nz = expected > 1e-3
    np.testing.assert_allclose(var[nz], expected[nz], rtol=0.25)
    assert np.all(est[:, basis.index("I")] == 1.0)  # the identity costs no shots


def test_shots_draw_from_the_given_rng_and_are_logged() -> None:
    system = sensor_like(shots=50)
    x = np.zeros((1, 0))
    a = system.equilibrate(x, rng=np.random.default_rng(5))
    b = system.equilibrate(x, rng=np.random.default_rng(5))
    c = system.equilibrate(x, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a.outputs, b.outputs)
    np.testing.assert_array_equal(a.conjugates["theta"], b.conjugates["theta"])
    assert not np.array_equal(a.conjugates["theta"], c.conjugates["theta"])
    assert a.shots == 50
    n_set = a.observables["measurement_settings"][0]
    assert n_set == 2  # {Z0 Z1, Z2} and {X0, X1 X2}
    assert a.observables["total_shots"][0] == 50 * n_set
    with pytest.raises(ValueError, match="needs the rng"):
        system.equilibrate(x)


def _gradient_std(beta: float, shots: int, reps: int, seed: int) -> tuple[float, np.ndarray]:
    system = sensor_like(shots)
    est = EquilibriumPropagation(one_sided(beta), nudge="error")
    loss = get_loss("neg_abs")  # eps = -sign<Z0 Z1>: independent of the shot noise here
    x, t = np.zeros((1, 0)), np.zeros((1, 1))
    rng = np.random.default_rng(seed)
    g = np.array([est.estimate(system, x, t, loss, rng).gradient["theta"] for _ in range(reps)])
    return float(np.mean(g.std(axis=0, ddof=1))), g.mean(axis=0)


def test_shot_noise_of_the_gradient_scales_as_one_over_beta_sqrt_m() -> None:
    reps = 150
    ms = np.array([16, 64, 256, 1024])
    stds_m = np.array([_gradient_std(0.2, int(m), reps, 10 + i)[0] for i, m in enumerate(ms)])
    slope_m = np.polyfit(np.log(ms), np.log(stds_m), 1)[0]
    betas = np.array([0.05, 0.1, 0.2, 0.4])
    stds_b = np.array([_gradient_std(float(b), 256, reps, 20 + i)[0] for i, b in enumerate(betas)])
    slope_b = np.polyfit(np.log(betas), np.log(stds_b), 1)[0]
    # std of a std estimate over 150 repeats is ~6 %; the fitted exponents are -1/2 and -1
    assert slope_m == pytest.approx(-0.5, abs=0.06)
    assert slope_b == pytest.approx(-1.0, abs=0.08)


def test_centred_shot_gradient_is_unbiased_to_order_beta_squared() -> None:
    system = sensor_like(400)
    exact_sys = sensor_like(0)
    loss = get_loss("neg_abs")
    x, t = np.zeros((1, 0)), np.zeros((1, 1))
    exact = exact_sys.exact_gradient(x, t, loss)["theta"]
    beta = 0.05
    noiseless = (
        EquilibriumPropagation(centred(beta))
        .estimate(exact_sys, x, t, loss, np.random.default_rng(0))
        .gradient["theta"]
    )
    assert np.abs(noiseless - exact).max() < 0.05 * np.abs(exact).max()  # O(beta^2) bias
    rng = np.random.default_rng(3)
    est = EquilibriumPropagation(centred(beta))
    g = np.array([est.estimate(system, x, t, loss, rng).gradient["theta"] for _ in range(300)])
    se = g.std(axis=0, ddof=1) / np.sqrt(len(g))
    assert np.all(np.abs(g.mean(axis=0) - noiseless) < 4.5 * se)


def test_thermal_shots_are_unbiased_estimates_of_gibbs_expectations() -> None:
    exact_sys, noisy = sensor_like(0), sensor_like(100)
    exact_sys.temperature = noisy.temperature = 0.7
    x = np.zeros((1, 0))
    exact = exact_sys.equilibrate(x)
    rng = np.random.default_rng(8)
    runs = [noisy.equilibrate(x, rng=rng) for _ in range(300)]
    conj = np.array([r.conjugates["theta"][0] for r in runs])
    se = conj.std(axis=0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(conj.mean(axis=0) - exact.conjugates["theta"][0]) < 4.5 * se)
    assert np.all(se > 0)


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_the_basis_rotation_is_the_kronecker_product_of_the_qubit_rotations(n):
    """MeasurementPlan._rotate (a butterfly per rotated qubit) against the dense Kronecker
    product of the per-qubit rotations (qubit 0 the leftmost factor), on random states."""
    from physlearn.simulators.quantum.shots import ROTATION

    rng = np.random.default_rng(n)
    plan = MeasurementPlan(PauliBasis.from_labels(["Z0"], n), np.array([0]))
    vectors = rng.normal(size=(1 << n, 3)) + 1j * rng.normal(size=(1 << n, 3))
    vectors = np.asfortranarray(vectors)  # as eigh returns them (thermal states)
    for _ in range(6):
        bases = {q: str(rng.choice(list("XYZ"))) for q in range(n) if rng.random() < 0.8}
        dense = np.eye(1)
        for q in range(n):
            dense = np.kron(dense, ROTATION.get(bases.get(q, "Z"), np.eye(2)))
        np.testing.assert_allclose(plan._rotate(vectors, bases), dense @ vectors, atol=1e-12)
        assert plan._rotate(vectors[:, :1].real, bases).shape == (1 << n, 1)
