"""Finite-time preparation along a linear sweep (issue 24, item 3 groundwork):
:func:`physlearn.simulators.quantum.sweep.evolve_sweep`. Its agreement with pulser-simulation on
the same Pulser sequence is in ``tests/test_pulser.py``; here, what holds without Pulser."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.simulators.quantum import sweep
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.rydberg import C6_RAD_US_UM6, RydbergArray
from physlearn.simulators.quantum.sweep import evolve_sweep, fidelity, ground_state


def _array(n: int = 3) -> RydbergArray:
    """Atoms 7 um apart on a line (V ~ 46 rad/us between neighbours), driven near blockade."""
    pos = np.array([[7.0 * i, 0.0] for i in range(n)])
    det = np.linspace(3.0, 5.0, n)
    return RydbergArray(
        pos,
        c6=C6_RAD_US_UM6[70],
        output_atoms=[0],
        params={"detuning": det, "rabi": np.array(8.0)},
    )


def test_adiabatic_fidelity_tends_to_one_as_the_sweep_slows_down() -> None:
    arr = _array()
    start, end = arr.sweep_endpoints(np.zeros(0), start_detuning=-20.0)
    _, ground, gap = ground_state(arr.model.basis, end)
    assert gap > 4.0  # gapped at the end of the sweep (and, from Omega > 0, along it)
    psi0 = np.zeros(8, complex)
    psi0[0] = 1.0  # |ggg>: the ground state of the start (Omega = 0, Delta = -20 rad/us)
    assert fidelity(ground_state(arr.model.basis, start)[1], psi0) == pytest.approx(1.0)
    infidelity = [
        1 - fidelity(ground, evolve_sweep(arr.model.basis, start, end, psi0, t, samples=500))
        for t in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    ]
    assert all(a > b for a, b in zip(infidelity, infidelity[1:], strict=False))
    assert infidelity[0] > 0.5 and infidelity[-1] < 1e-4
    assert infidelity[-1] < infidelity[-2] / 5  # adiabatic regime: losses fall ~ 1/T^2


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    samples=st.integers(2, 30),
    duration=st.floats(0.01, 2.0),
)
def test_a_sweep_that_does_not_move_is_the_exact_propagator(
    seed: int, samples: int, duration: float
) -> None:
    rng = np.random.default_rng(seed)
    basis = PauliBasis.from_labels(["I", "X0", "Z0", "X1", "Z1", "Z0 Z1", "X0 X1"], 2)
    coeffs = rng.normal(0.0, 5.0, basis.size)
    psi0 = rng.normal(size=4) + 1j * rng.normal(size=4)
    psi0 /= np.linalg.norm(psi0)
    got = evolve_sweep(basis, coeffs, coeffs, psi0, duration, samples=samples)
    want = sla.expm(-1j * duration * basis.operator(coeffs).toarray()) @ psi0
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_sparse_steps_agree_with_dense_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    arr = _array(6)
    start, end = arr.sweep_endpoints(np.zeros(0), start_detuning=-20.0)
    psi0 = np.zeros(64, complex)
    psi0[0] = 1.0
    dense = evolve_sweep(arr.model.basis, start, end, psi0, 0.5, samples=25)
    monkeypatch.setattr(sweep, "DENSE_BELOW", 2)  # every register takes the sparse path
    sparse = evolve_sweep(arr.model.basis, start, end, psi0, 0.5, samples=25)
    np.testing.assert_allclose(sparse, dense, atol=1e-9)
    assert np.linalg.norm(sparse) == pytest.approx(1.0)
    assert fidelity(sparse, psi0) < 0.99  # the state did move


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"duration_us": 0.0}, "duration_us must be positive, got 0.0"),
        ({"samples": 1}, "samples must be at least 2, got 1"),
        ({"samples": 10, "stop": 11}, "stop must be in 0..10, got 11"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_argument(kw: dict[str, float], message: str) -> None:
    basis = PauliBasis.from_labels(["I", "X0"], 1)
    args = {"duration_us": 1.0} | kw
    with pytest.raises(ValueError, match=message):
        evolve_sweep(basis, np.zeros(2), np.ones(2), np.array([1.0, 0.0]), **args)  # type: ignore[arg-type]


def _chi2_pvalue(counts: dict[str, int], probs: np.ndarray) -> float:
    """Pearson's chi^2 p-value of ``counts`` against ``probs`` (bins expecting < 5 pooled)."""
    from scipy.stats import chisquare

    n = int(probs.size).bit_length() - 1
    shots = sum(counts.values())
    observed = np.array([counts.get(format(b, f"0{n}b"), 0) for b in range(probs.size)], float)
    expected = probs / probs.sum() * shots
    big = expected >= 5
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(chisquare(obs, exp).pvalue)


@functools.cache
def _prepared() -> tuple[RydbergArray, np.ndarray]:
    """A 3-atom array and the state a fast (0.6 us) sweep prepares (cached: read only)."""
    arr = _array()
    start, end = arr.sweep_endpoints(np.zeros(0), start_detuning=-20.0)
    psi0 = np.zeros(8, complex)
    psi0[0] = 1.0
    return arr, evolve_sweep(arr.model.basis, start, end, psi0, 0.6, samples=300)


def test_shots_from_the_prepared_state_have_the_born_statistics() -> None:
    arr, psi = _prepared()
    probs = np.abs(psi) ** 2
    assert (probs > 0.02).sum() >= 4  # a fast sweep: a spread-out distribution to test
    rng = np.random.default_rng(2024)
    counts = sweep.sample_bitstrings(psi, 4000, rng)
    assert sum(counts.values()) == 4000
    assert _chi2_pvalue(counts, probs) > 1e-3
    # the test has power: the atom order reversed is a different distribution
    reversed_probs = probs.reshape(2, 2, 2).transpose(2, 1, 0).reshape(-1)
    assert not np.allclose(reversed_probs, probs, atol=0.02)
    assert _chi2_pvalue(counts, reversed_probs) < 1e-6


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_outputs_from_shots_estimate_the_exact_populations(seed: int) -> None:
    arr, psi = _prepared()
    probs = np.abs(psi) ** 2
    counts = sweep.sample_bitstrings(psi, 2000, np.random.default_rng(seed))
    got = sweep.outputs_from_counts(counts, [0, 1, 2], [(0, 1), (0, 2)])
    b = np.arange(8)
    n = [((b >> (2 - a)) & 1).astype(float) for a in range(3)]  # atom 0 is the leading bit
    exact = np.array([probs @ n[0], probs @ n[1], probs @ n[2], probs @ (n[0] * n[1])])
    exact = np.append(exact, probs @ (n[0] * n[2]))
    sigma = np.sqrt(exact * (1 - exact) / 2000)
    assert np.all(np.abs(got - exact) <= 5 * sigma + 1e-12)


def test_outputs_from_counts_reads_atom_i_from_character_i() -> None:
    counts = {"100": 3, "110": 1}
    np.testing.assert_allclose(
        sweep.outputs_from_counts(counts, [0, 1, 2], [(0, 1)]), [1.0, 0.25, 0.0, 0.25]
    )
    with pytest.raises(ValueError, match="no shots to estimate the outputs from"):
        sweep.outputs_from_counts({}, [0])
    with pytest.raises(ValueError, match="shots must be at least 1, got 0"):
        sweep.sample_bitstrings(np.array([1.0, 0.0]), 0, np.random.default_rng(0))
