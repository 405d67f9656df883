"""Quasi-degenerate ground manifolds (``solver.degenerate = "manifold"``): the equal mixture over
the lowest levels, EP on it, and level crossings still reported.

The random machines have an exactly doubly-degenerate ground level (``H_sym`` acts on all qubits
but the last) split by tiny trainable and fixed terms that do act on the last qubit, so an EP
nudge (beta >> splitting) mixes the doublet at O(1): the pure-state rule is ill-defined there,
the manifold rule is smooth.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from physlearn.estimators import EquilibriumPropagation, centred
from physlearn.losses import get_loss
from physlearn.simulators.quantum.lanczos import DegenerateGroundStateError, SolverOptions
from physlearn.simulators.quantum.manifold import ground_manifold
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
from physlearn.system import Nudge, ParameterGroup
from tests.test_quantum import random_labels

MANIFOLD = SolverOptions(degenerate="manifold", manifold_tol=1e-3)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def doublet_system(seed: int, n: int, solver: SolverOptions = MANIFOLD) -> QuantumSystem:
    """``H = H_sym (x) 1 + 1e-6 P_split + sum_j theta_j A_j`` with ``theta ~ 1e-5``: the lowest
    level of ``H_sym`` (on qubits 0..n-2) is doubled by the free last qubit and split only by
    the tiny terms. Outputs: two random strings over all qubits."""
    rng = np.random.default_rng(seed)
    sym = [lab + "I" for lab in random_labels(rng, n - 1, 2 * n)]
    full = [lab for lab in random_labels(rng, n, 12) if lab[-1] != "I" and lab not in sym]
    split, train, out = full[0], full[1:4], full[4:6]
    basis = PauliBasis.from_labels(sym + full[:6], n)
    h0 = basis.vector(
        [(float(c), lab) for c, lab in zip(rng.normal(size=len(sym)), sym, strict=True)]
    )
    h0 = h0 + basis.vector([(1e-6, split)])
    group = ParameterGroup("theta", (len(train),), ("term",), -3.0, 3.0, "1")
    model = HamiltonianModel(
        basis,
        h0,
        np.zeros((0, basis.size)),
        np.stack([basis.vector([(1.0, lab)]) for lab in out]),
        (group,),
        {"theta": np.stack([basis.vector([(1.0, lab)]) for lab in train])},
    )
    theta = rng.normal(scale=1e-5, size=len(train))
    return QuantumSystem(model, {"theta": theta}, solver=solver)


def spectrum(system: QuantumSystem) -> np.ndarray:
    c = system._coefficients(np.zeros((1, 0)), None)[0]
    return np.linalg.eigvalsh(system.model.basis.operator(c).toarray())


def manifold_loss_fd(system: QuantumSystem, t: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Centred finite differences of ``mse(Tr(P O)/2)`` over the 2 lowest levels (fixed size)."""
    loss, basis = get_loss("mse"), system.model.basis
    p0 = system.get_parameters()["theta"]
    out = np.zeros_like(p0)
    for j in range(p0.size):
        vals = []
        for s in (1.0, -1.0):
            p = p0.copy()
            p[j] += s * h
            system.set_parameters({"theta": p})
            c = system._coefficients(np.zeros((1, 0)), None)[0]
            gm = ground_manifold(basis.operator(c), system.solver, size=2)
            y = [
                basis.expectations_mixed(gm.vectors, gm.weights) @ o
                for o in system.model.output_ops
            ]
            vals.append(float(loss.value(np.array([y]), t).mean()))
        out[j] = (vals[0] - vals[1]) / (2 * h)
    system.set_parameters({"theta": p0})
    return out


@given(seed=st.integers(0, 100_000), n=st.integers(3, 5))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_manifold_ep_gradient_matches_finite_differences_of_the_mixed_state_loss(
    seed: int, n: int
) -> None:
    system = doublet_system(seed, n)
    e = spectrum(system)
    assume(e[1] - e[0] < 1e-4 and e[2] - e[1] > 0.2)
    x, t = np.zeros((1, 0)), np.array([[0.7, -0.4]])
    free = system.equilibrate(x)
    assert free.state.manifolds is not None and free.state.manifolds[0].shape[1] == 2
    loss = get_loss("mse")
    fd = manifold_loss_fd(system, t)
    exact = system.exact_gradient(x, t, loss)["theta"]
    scale = max(1.0, float(np.abs(fd).max()))
    np.testing.assert_allclose(exact, fd, atol=1e-6 * scale)
    rng = np.random.default_rng(0)
    ep = EquilibriumPropagation(centred(1e-3)).estimate(system, x, t, loss, rng).gradient["theta"]
    np.testing.assert_allclose(ep, fd, atol=1e-4 * scale)


def test_manifold_mixture_is_the_zero_temperature_limit_of_the_thermal_state() -> None:
    """Tr(rho O) over the doublet equals the Gibbs state's at T = 1e-3 >> splitting, up to the
    doublet's Boltzmann imbalance (splitting/T, |<O>| <= 1) and exp(-gap/T)."""
    system = doublet_system(7, 4)
    e = spectrum(system)
    assert e[1] - e[0] < 1e-4 and e[2] - e[1] > 0.05
    mixed = system.equilibrate(np.zeros((1, 0))).outputs
    thermal = QuantumSystem(system.model, system.get_parameters(), temperature=1e-3)
    gibbs = thermal.equilibrate(np.zeros((1, 0))).outputs
    np.testing.assert_allclose(mixed, gibbs, atol=(e[1] - e[0]) / 1e-3)


def test_the_default_policy_still_refuses_the_doublet() -> None:
    system = doublet_system(7, 4, SolverOptions())
    with pytest.raises(DegenerateGroundStateError, match="degenerate ground state"):
        system.equilibrate(np.zeros((1, 0)))


def test_a_level_crossing_under_the_nudge_is_reported() -> None:
    """A nudge that brings a third level below the doublet: the nudged 2-level manifold no
    longer overlaps the free one (or touches the next level), which is a level crossing."""
    system = doublet_system(7, 4)
    x = np.zeros((1, 0))
    free = system.equilibrate(x)
    e = spectrum(system)
    beta = 50.0 * float(e[2] - e[0])  # far beyond the gap: the levels reorder
    with pytest.raises(DegenerateGroundStateError, match="level crossing"):
        for sign in (1.0, -1.0):
            for err in ([1.0, 0.0], [0.0, 1.0]):
                system.equilibrate(x, Nudge(beta=sign * beta, error=np.array([err])), free.state)


def test_a_level_at_the_edge_of_the_manifold_is_a_crossing() -> None:
    """Levels 0, 1e-8 (manifold) and 1e-8 + 5e-7 (outside a 1e-7 window, within gap_tol)."""
    basis = PauliBasis.from_labels(["Z0", "Z1", "Z0 Z1"], 2)
    opts = SolverOptions(degenerate="manifold", manifold_tol=1e-7)
    e = np.array([0.0, 1e-8, 1e-8 + 5e-7, 1.0])  # on |00>, |01>, |10>, |11>
    signs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1.0]])  # Z0, Z1, Z0 Z1
    h = basis.operator(np.linalg.lstsq(signs, e - e.mean(), rcond=None)[0])
    with pytest.raises(DegenerateGroundStateError, match="level crossing"):
        ground_manifold(h, opts)
    assert ground_manifold(h, SolverOptions(degenerate="manifold", manifold_tol=1e-6)).size == 3


def test_sparse_and_dense_manifolds_agree_on_the_phase_exploration_doublet() -> None:
    """The 10-site chain at theta = (0.2, 0.9): an edge doublet split by ~2e-7; ARPACK (k = 3)
    and a dense eigh give the same manifold and mixed expectations."""
    n = 10
    labels = [f"X{i}" for i in range(n)] + [f"Z{i} Z{i + 1}" for i in range(n - 1)]
    labels += [f"Z{i} X{i + 1} Z{i + 2}" for i in range(n - 2)]
    basis = PauliBasis.from_labels(labels, n)
    h = basis.operator(np.r_[np.full(n, -0.2), np.full(n - 1, -0.9), np.full(n - 2, -0.5)])
    sparse = ground_manifold(h, SolverOptions(degenerate="manifold"))
    dense = ground_manifold(h, SolverOptions(degenerate="manifold", dense_below=1 << n))
    assert sparse.size == dense.size == 2
    assert 1e-8 < sparse.energies[1] - sparse.energies[0] < 1e-6
    np.testing.assert_allclose(sparse.energies, dense.energies, rtol=1e-10)
    np.testing.assert_allclose(
        basis.expectations_mixed(sparse.vectors, sparse.weights),
        basis.expectations_mixed(dense.vectors, dense.weights),
        atol=1e-8,
    )
