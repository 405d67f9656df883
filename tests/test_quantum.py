"""Quantum core: Pauli algebra, ground/thermal states, and quantum EP against exact gradients.

Random Hamiltonians on 3-6 qubits (hypothesis draws the seed and size) are kept only when their
gap exceeds 0.1 (EP's finite-beta error grows like 1/gap^3, so the gap sets the tolerances).
Exact references: Hellmann--Feynman and Onsager by central finite differences, the
linear-response gradient (``exact_gradient``) and finite differences of the loss.
``PHYSLEARN_QUANTUM_EXAMPLES`` raises the number of hypothesis examples (default 12).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import reduce

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from physlearn.estimators import EquilibriumPropagation, centred, one_sided
from physlearn.losses import get_loss
from physlearn.simulators.quantum.lanczos import DegenerateGroundStateError, SolverOptions
from physlearn.simulators.quantum.pauli import PauliBasis, parse_pauli, pauli_label
from physlearn.simulators.quantum.states import ground_state, thermal_state
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
from physlearn.system import ExactGradient, Nudge, ParameterGroup

PAULI = {
    "I": np.eye(2),
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1.0, -1.0]).astype(complex),
}
SETTINGS = settings(
    max_examples=int(os.environ.get("PHYSLEARN_QUANTUM_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def kron_matrix(label: str, n: int) -> np.ndarray:
    """Reference: the Kronecker product of single-qubit Paulis (qubit 0 leftmost)."""
    x, z = parse_pauli(label, n)
    letters = []
    for q in range(n):
        bit = 1 << (n - 1 - q)
        letters.append("Y" if x & bit and z & bit else "X" if x & bit else "Z" if z & bit else "I")
    return reduce(np.kron, [PAULI[a] for a in letters])


def random_labels(rng: np.random.Generator, n: int, k: int) -> list[str]:
    out: set[str] = set()
    while len(out) < k:
        lab = "".join(rng.choice(list("IXYZ"), size=n))
        if set(lab) != {"I"}:
            out.add(lab)
    return sorted(out)


def random_system(
    seed: int, n: int, *, temperature: float = 0.0, solver: SolverOptions | None = None
) -> QuantumSystem:
    """H = sum of 2n random strings + 1 input string + 4 trainable strings; 2 outputs."""
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, n, 2 * n + 7)
    h0_l, in_l, tr_l, out_l = labels[: 2 * n], labels[2 * n], labels[2 * n + 1 : -2], labels[-2:]
    basis = PauliBasis.from_labels(labels, n)
    h0 = basis.vector(
        [(float(c), lab) for c, lab in zip(rng.normal(size=2 * n), h0_l, strict=True)]
    )
    group = ParameterGroup("theta", (len(tr_l),), ("term",), -3.0, 3.0, "1")
    model = HamiltonianModel(
        basis,
        h0,
        basis.vector([(1.0, in_l)])[None, :],
        np.stack([basis.vector([(1.0, lab)]) for lab in out_l]),
        (group,),
        {"theta": np.stack([basis.vector([(1.0, lab)]) for lab in tr_l])},
    )
    theta = rng.uniform(-1, 1, len(tr_l))
    return QuantumSystem(model, {"theta": theta}, temperature=temperature, solver=solver)


def gap_of(system: QuantumSystem, x: np.ndarray) -> float:
    coeffs = system._coefficients(x, None)
    gaps = []
    for c in coeffs:
        e = np.linalg.eigvalsh(system.model.basis.operator(c).toarray())
        gaps.append(e[1] - e[0])
    return float(min(gaps))


def loss_fd(
    system: QuantumSystem, x: np.ndarray, t: np.ndarray, loss_name: str, h: float = 1e-5
) -> np.ndarray:
    loss = get_loss(loss_name)
    p0 = system.get_parameters()["theta"]
    out = np.zeros_like(p0)
    for j in range(p0.size):
        vals = []
        for s in (1.0, -1.0):
            p = p0.copy()
            p[j] += s * h
            system.set_parameters({"theta": p})
            vals.append(float(loss.value(system.equilibrate(x).outputs, t).mean()))
        out[j] = (vals[0] - vals[1]) / (2 * h)
    system.set_parameters({"theta": p0})
    return out


# -- Pauli strings ---------------------------------------------------------------------------


@given(seed=st.integers(0, 10_000), n=st.integers(1, 5))
@settings(max_examples=25, deadline=None)
def test_pauli_operator_matches_kronecker_products(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, n, min(6, 4**n - 1)) + ["I"]
    basis = PauliBasis.from_labels(labels, n)
    c = rng.normal(size=basis.size)
    ref = sum(ci * kron_matrix(basis.label(t), n) for t, ci in enumerate(c))
    h = basis.operator(c).toarray()
    np.testing.assert_allclose(h, ref, atol=1e-13)
    psi = rng.normal(size=2**n) + 1j * rng.normal(size=2**n)
    psi /= np.linalg.norm(psi)
    phi = rng.normal(size=2**n) + 0j
    mats = [kron_matrix(basis.label(t), n) for t in range(basis.size)]
    np.testing.assert_allclose(
        basis.expectations(psi), [np.vdot(psi, m @ psi).real for m in mats], atol=1e-13
    )
    np.testing.assert_allclose(
        basis.transition(phi, psi), [np.vdot(phi, m @ psi) for m in mats], atol=1e-12
    )
    rho = np.outer(phi, phi.conj()) + np.diag(rng.random(2**n))
    np.testing.assert_allclose(basis.traces(rho), [np.trace(rho @ m) for m in mats], atol=1e-12)


def test_pauli_labels_parse_both_forms_and_refuse_bad_ones() -> None:
    assert parse_pauli("X0 Z2", 3) == parse_pauli("XIZ", 3) == parse_pauli("Z2X0", 3)
    assert pauli_label(*parse_pauli("Y1 X3", 4), 4) == "Y1 X3"
    assert parse_pauli("I", 4) == (0, 0)
    with pytest.raises(ValueError, match="out of range"):
        parse_pauli("X5", 3)
    with pytest.raises(ValueError, match="appears twice"):
        parse_pauli("X1 Z1", 3)
    with pytest.raises(ValueError, match="one of I, X, Y, Z per qubit"):
        parse_pauli("XZ", 3)
    with pytest.raises(ValueError, match="bad Pauli label"):
        parse_pauli("Q0", 3)


def test_real_hamiltonians_stay_real_and_y_terms_make_them_complex() -> None:
    basis = PauliBasis.from_labels(["X0 X1", "Z0", "Y0 Y1", "Y0"], 2)
    assert basis.operator(np.array([1.0, 0.5, 0.3, 0.0])).dtype == np.float64
    assert basis.operator(np.array([1.0, 0.5, 0.3, 0.2])).dtype == np.complex128


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 7),
    block=st.sampled_from([1, 3, 16, 100, 1 << 19]),
)
@settings(max_examples=25, deadline=None)
def test_blocked_sign_conversion_matches_dense_references(seed: int, n: int, block: int) -> None:
    """Operators and expectation values are the same whatever the int8 -> float64 block size
    (one state per block up to the whole register), on random strings with Y's, shared z masks
    and complex coefficients (an odd number of Y's), against Kronecker products and gathers."""
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, n, min(12, 4**n - 1)) + ["I"]
    if n >= 2:  # strings sharing a z mask across and within x groups
        labels += [lab for lab in ("Y0 X1", "Z0 Y1", "Y0 Y1", "X0 Z1") if lab not in labels]
    blocked = PauliBasis.from_labels(labels, n, block_entries=block)
    whole = PauliBasis.from_labels(labels, n)
    c = rng.normal(size=blocked.size) * (rng.random(blocked.size) < 0.8)
    h = blocked.operator(c)
    assert h.dtype == (np.complex128 if blocked.is_complex(c) else np.float64)
    np.testing.assert_array_equal(h.indices, whole.operator(c).indices)
    np.testing.assert_allclose(h.toarray(), whole.operator(c).toarray(), rtol=0, atol=1e-13)
    ref = sum(ci * kron_matrix(blocked.label(t), n) for t, ci in enumerate(c))
    np.testing.assert_allclose(h.toarray(), ref, atol=1e-13)
    mats = [kron_matrix(blocked.label(t), n) for t in range(blocked.size)]
    psi = rng.normal(size=2**n) + 1j * rng.normal(size=2**n)
    psi /= np.linalg.norm(psi)
    phi = rng.normal(size=2**n)
    some = rng.choice(blocked.size, size=min(5, blocked.size), replace=False)
    for basis in (blocked, whole):
        np.testing.assert_allclose(
            basis.expectations(psi), [np.vdot(psi, m @ psi).real for m in mats], atol=1e-13
        )
        np.testing.assert_allclose(
            basis.expectations(psi.real.copy(), some),
            [np.vdot(psi.real, mats[t] @ psi.real).real for t in some],
            atol=1e-13,
        )
        np.testing.assert_allclose(
            basis.transition(phi, psi, some),
            [np.vdot(phi, mats[t] @ psi) for t in some],
            atol=1e-12,
        )
        vecs, w = rng.normal(size=(2**n, 3)) + 1j * rng.normal(size=(2**n, 3)), rng.random(3)
        rho = (vecs * w) @ vecs.conj().T
        np.testing.assert_allclose(
            basis.expectations_mixed(vecs, w), [np.trace(rho @ m).real for m in mats], atol=1e-12
        )
    # the strided view v[r ^ x] of every x group is the gather it replaces
    states = np.arange(2**n)
    for g, x in enumerate(blocked.group_x):
        np.testing.assert_array_equal(blocked.xor_view(psi, g).reshape(-1), psi[states ^ int(x)])


# -- ground and thermal states ---------------------------------------------------------------


def test_lanczos_matches_dense_and_warm_start_needs_fewer_products() -> None:
    n = 9
    labels = [f"X{i}" for i in range(n)] + [f"Z{i} Z{i + 1}" for i in range(n - 1)] + ["Z0"]
    basis = PauliBasis.from_labels(labels, n)
    c = np.r_[np.full(n, -1.0), np.full(n - 1, -1.0), -0.2]
    h = basis.operator(c)
    e = np.linalg.eigvalsh(h.toarray())
    gs = ground_state(h, None, SolverOptions(tol=1e-12))
    assert gs.energy == pytest.approx(e[0], abs=1e-10)
    assert gs.gap == pytest.approx(e[1] - e[0], abs=1e-8)
    assert gs.residual < 1e-8
    c2 = c.copy()
    c2[-1] -= 0.05  # a small nudge on Z0
    h2 = basis.operator(c2)
    cold = ground_state(h2, None, SolverOptions(tol=1e-12), check_gap=False)
    warm = ground_state(h2, gs.vector, SolverOptions(tol=1e-12))
    assert abs(np.vdot(cold.vector, warm.vector)) == pytest.approx(1.0, abs=1e-10)
    assert warm.matvecs < cold.matvecs


def test_degenerate_ground_state_is_refused_with_a_clear_error() -> None:
    # classical Ising chain without fields: |00..0> and |11..1> are exactly degenerate (dense)
    basis = PauliBasis.from_labels(["Z0 Z1", "Z1 Z2", "Z0"], 3)
    with pytest.raises(DegenerateGroundStateError, match="degenerate ground state: E1 - E0"):
        ground_state(basis.operator(np.array([-1.0, -1.0, 0.0])))
    # Lanczos path (7 qubits): splitting 2e-9 below gap_tol = 1e-6
    n = 7
    labels = [f"Z{i} Z{i + 1}" for i in range(n - 1)] + ["Z0", "X3"]
    basis = PauliBasis.from_labels(labels, n)
    c = np.r_[np.full(n - 1, -1.0), -1e-9, 1e-6]
    with pytest.raises(DegenerateGroundStateError, match="break the symmetry"):
        ground_state(basis.operator(c), None, SolverOptions(dense_below=0))
    # a clear gap passes
    c[-2] = -0.1
    assert ground_state(basis.operator(c), None, SolverOptions(dense_below=0)).gap > 0.1


def test_thermal_state_is_the_gibbs_state() -> None:
    basis = PauliBasis.from_labels(["X0", "Z0 Z1", "Y1"], 2)
    h = basis.operator(np.array([0.7, -1.0, 0.3])).toarray()
    th = thermal_state(h, 0.5)
    e, v = np.linalg.eigh(h)
    w = np.exp(-e / 0.5)
    rho = (v * (w / w.sum())) @ v.conj().T
    rho_th = (th.vectors * th.weights) @ th.vectors.conj().T
    np.testing.assert_allclose(rho_th, rho, atol=1e-13)
    assert th.free_energy == pytest.approx(-0.5 * np.log(w.sum()), abs=1e-12)


# -- quantum EP: Hellmann--Feynman, Onsager, gradients ----------------------------------------


@given(seed=st.integers(0, 100_000), n=st.integers(3, 6))
@SETTINGS
def test_hellmann_feynman_and_onsager_on_random_hamiltonians(seed: int, n: int) -> None:
    system = random_system(seed, n)
    x = np.array([[0.4]])
    assume(gap_of(system, x) > 0.1)
    eq = system.equilibrate(x)
    p0 = system.get_parameters()["theta"]
    h = 1e-5
    hf, d_out = np.zeros(p0.size), np.zeros((2, p0.size))
    for j in range(p0.size):
        res = []
        for s in (1.0, -1.0):
            p = p0.copy()
            p[j] += s * h
            system.set_parameters({"theta": p})
            res.append(system.equilibrate(x))
        hf[j] = (res[0].energy[0] - res[1].energy[0]) / (2 * h)
        d_out[:, j] = (res[0].outputs[0] - res[1].outputs[0]) / (2 * h)
    system.set_parameters({"theta": p0})
    # Hellmann--Feynman: dE0/dtheta_j = <A_j>
    np.testing.assert_allclose(eq.conjugates["theta"][0], hf, atol=1e-7)
    # Onsager: d<O_k>/dtheta_j = d<A_j>/dnu_k (nu_k: coefficient of O_k, a unit error nudge)
    for k in range(2):
        e_k = np.zeros((1, 2))
        e_k[0, k] = 1.0
        plus = system.equilibrate(x, Nudge(beta=h, error=e_k))
        minus = system.equilibrate(x, Nudge(beta=-h, error=e_k))
        d_conj = (plus.conjugates["theta"][0] - minus.conjugates["theta"][0]) / (2 * h)
        np.testing.assert_allclose(d_conj, d_out[k], atol=1e-6)


@given(seed=st.integers(0, 100_000), n=st.integers(3, 6))
@SETTINGS
def test_ep_linear_response_and_finite_differences_agree(seed: int, n: int) -> None:
    system = random_system(seed, n)
    x = np.array([[0.4], [-0.3]])
    t = np.array([[0.5, -0.5], [0.2, 0.1]])
    assume(gap_of(system, x) > 0.1)
    as_protocol: object = system
    assert isinstance(as_protocol, ExactGradient)
    loss = get_loss("mse")
    exact = system.exact_gradient(x, t, loss)["theta"]
    fd = loss_fd(system, x, t, "mse")
    scale = max(1.0, float(np.abs(exact).max()))
    np.testing.assert_allclose(exact, fd, atol=2e-7 * scale)
    rng = np.random.default_rng(0)
    ep = EquilibriumPropagation(centred(1e-4)).estimate(system, x, t, loss, rng).gradient["theta"]
    np.testing.assert_allclose(ep, exact, atol=1e-5 * scale)


def _slope(betas: np.ndarray, errors: np.ndarray) -> float:
    return float(np.polyfit(np.log(betas), np.log(errors), 1)[0])


@given(seed=st.integers(0, 100_000), n=st.integers(3, 6))
@SETTINGS
def test_ep_error_slopes_one_sided_1_centred_2(seed: int, n: int) -> None:
    system = random_system(seed, n)
    x = np.array([[0.4]])
    t = np.array([[0.5, -0.5]])
    assume(gap_of(system, x) > 0.1)
    loss = get_loss("mse")
    exact = system.exact_gradient(x, t, loss)["theta"]
    rng = np.random.default_rng(0)
    betas = np.array([1e-2, 3e-3, 1e-3, 3e-4, 1e-4])
    err1 = np.array(
        [
            np.linalg.norm(
                EquilibriumPropagation(one_sided(b))
                .estimate(system, x, t, loss, rng)
                .gradient["theta"]
                - exact
            )
            for b in betas
        ]
    )
    betas2 = np.array([1e-2, 3e-3, 1e-3, 3e-4])
    err2 = np.array(
        [
            np.linalg.norm(
                EquilibriumPropagation(centred(b))
                .estimate(system, x, t, loss, rng)
                .gradient["theta"]
                - exact
            )
            for b in betas2
        ]
    )
    assume(err1[-1] > 1e-9 and err2[-1] > 1e-10)  # leading error above round-off
    assert _slope(betas, err1) == pytest.approx(1.0, abs=0.1)
    assert _slope(betas2, err2) == pytest.approx(2.0, abs=0.15)


def test_lanczos_path_gives_the_same_gradients_and_slopes() -> None:
    """The same checks through sparse Lanczos (dense_below = 0) on a fixed 6-qubit instance."""
    for seed in range(20):
        system = random_system(seed, 6, solver=SolverOptions(tol=1e-14, dense_below=0))
        x = np.array([[0.4]])
        if gap_of(system, x) > 0.1:
            break
    t = np.array([[0.5, -0.5]])
    loss = get_loss("mse")
    exact = system.exact_gradient(x, t, loss)["theta"]
    np.testing.assert_allclose(exact, loss_fd(system, x, t, "mse"), atol=1e-6)
    rng = np.random.default_rng(0)
    betas = np.array([1e-1, 3e-2, 1e-2, 3e-3])
    e1 = [
        np.linalg.norm(
            EquilibriumPropagation(one_sided(b)).estimate(system, x, t, loss, rng).gradient["theta"]
            - exact
        )
        for b in betas
    ]
    e2 = [
        np.linalg.norm(
            EquilibriumPropagation(centred(b)).estimate(system, x, t, loss, rng).gradient["theta"]
            - exact
        )
        for b in betas
    ]
    assert _slope(betas, np.array(e1)) == pytest.approx(1.0, abs=0.15)
    assert _slope(betas, np.array(e2)) == pytest.approx(2.0, abs=0.2)


@pytest.mark.parametrize("temperature", [0.3, 1.5])
def test_thermal_ep_and_kubo_mori_gradient_equal_finite_differences(temperature: float) -> None:
    system = random_system(7, 4, temperature=temperature)
    x = np.array([[0.4], [-0.2]])
    t = np.array([[0.5, -0.5], [0.1, 0.2]])
    loss = get_loss("mse")
    fd = loss_fd(system, x, t, "mse")
    exact = system.exact_gradient(x, t, loss)["theta"]
    np.testing.assert_allclose(exact, fd, atol=1e-7)
    rng = np.random.default_rng(0)
    ep = EquilibriumPropagation(centred(1e-3)).estimate(system, x, t, loss, rng).gradient["theta"]
    np.testing.assert_allclose(ep, fd, atol=1e-6)
    # the classical covariance formula is not the quantum gradient here ([A, H] != 0)
    assert system.thermal is False


def test_quantum_systems_refuse_target_and_complex_nudges() -> None:
    system = random_system(3, 3)
    x = np.array([[0.1]])
    with pytest.raises(ValueError, match="only 'error' nudges"):
        system.equilibrate(x, Nudge(beta=0.1, target=np.zeros((1, 2))))
    with pytest.raises(ValueError, match="real beta"):
        system.equilibrate(x, Nudge(beta=0.1j, error=np.zeros((1, 2))))
    with pytest.raises(ValueError, match="outside the bounds"):
        system.set_parameters({"theta": np.full(4, 10.0)})
