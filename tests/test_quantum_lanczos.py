"""The certified Lanczos ground-state solver against dense diagonalisation, and its fallbacks.

Random Pauli Hamiltonians on 3-8 qubits (hypothesis draws the seed, the size and whether Y
strings make them complex) are solved with ``dense_below = 0``, so that every size runs the
sparse path; only instances with a gap above 0.05 are kept. Every returned pair must meet the
residual tolerance ``||H v - E v|| <= tol |E|`` recomputed here, and agree with ``numpy.eigh``.
The nudged phases of a Lanczos-sized machine (7 qubits) are checked against dense ground states
of ``H +- beta O_eps``, and the runs that must not certify (breakdown on a diagonal Hamiltonian,
memory budget, a forced duplicate) hand over to ARPACK with the same answer.
``PHYSLEARN_QUANTUM_EXAMPLES`` raises the number of hypothesis examples (default 12).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import physlearn.simulators.quantum.lanczos as qs
from physlearn.estimators import EquilibriumPropagation, centred
from physlearn.losses import get_loss
from physlearn.simulators.quantum.lanczos import DegenerateGroundStateError, SolverOptions
from physlearn.simulators.quantum.operators import SumOperator
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.states import ground_state
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
from physlearn.simulators.quantum.warm import QuantumState
from physlearn.simulators.quantum.warm import nudged_start as _nudged_start
from physlearn.system import ParameterGroup

from .test_quantum import gap_of

SETTINGS = settings(
    max_examples=int(os.environ.get("PHYSLEARN_QUANTUM_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)
SPARSE = SolverOptions(dense_below=0)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def random_hamiltonian(seed: int, n: int, complex_: bool) -> tuple[PauliBasis, np.ndarray]:
    """``3n`` random strings with normal coefficients (letters IXZ: real; IXYZ plus one odd-Y
    string: complex) and the basis; the last string is a one-site X nudge direction."""
    rng = np.random.default_rng([seed, n, int(complex_)])
    letters = list("IXYZ" if complex_ else "IXZ")
    labels: set[str] = {"Y" + "I" * (n - 1)} if complex_ else set()
    while len(labels) < 3 * n:
        lab = "".join(rng.choice(letters, size=n))
        if set(lab) != {"I"}:
            labels.add(lab)
    ordered = sorted(labels) + ["X" + "I" * (n - 1)]
    basis = PauliBasis.from_labels(ordered, n)
    c = np.r_[rng.normal(size=basis.size - 1), 0.0]
    return basis, c


def _residual(h: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    v = v / np.linalg.norm(v)
    e = float(np.vdot(v, h @ v).real)
    return e, float(np.linalg.norm(h @ v - e * v))


def _bound(tol: float, e: float) -> float:
    return 1.000001 * tol * max(abs(e), np.finfo(float).eps ** (2 / 3))


@given(seed=st.integers(0, 100_000), n=st.integers(3, 8), complex_=st.booleans())
@SETTINGS
def test_lanczos_cold_solve_matches_dense(seed: int, n: int, complex_: bool) -> None:
    basis, c = random_hamiltonian(seed, n, complex_)
    h = basis.operator(c)
    assert (h.dtype == np.complex128) == complex_
    dense = h.toarray()
    e, v = np.linalg.eigh(dense)
    assume(e[1] - e[0] > 0.05)
    gs = ground_state(h, None, SPARSE)
    scale = max(1.0, abs(e[0]))
    assert gs.energy == pytest.approx(e[0], abs=1e-9 * scale)
    assert gs.gap == pytest.approx(e[1] - e[0], abs=1e-8 * scale)
    assert abs(np.vdot(v[:, 0], gs.vector)) == pytest.approx(1.0, abs=1e-9)
    assert np.iscomplexobj(gs.vector) == complex_
    # the certificates, recomputed: both pairs meet the tolerance and are orthogonal
    e0, r0 = _residual(dense, gs.vector)
    assert r0 <= _bound(SPARSE.tol, e0)
    assert gs.residual == pytest.approx(r0, rel=1e-3, abs=1e-12 * scale)  # round-off
    assert gs.hvector is not None
    np.testing.assert_allclose(gs.hvector, dense @ gs.vector, atol=1e-12 * scale)
    assert gs.excited is not None
    e1, r1 = _residual(dense, gs.excited)
    assert r1 <= _bound(SPARSE.tol, e1)
    assert abs(np.vdot(gs.vector, gs.excited)) <= 1e-6
    if e[2] - e[1] > 1e-3:
        assert abs(np.vdot(v[:, 1], gs.excited)) == pytest.approx(1.0, abs=1e-6)
    ref = ground_state(h, None, SolverOptions(dense_below=0, method="arpack"))
    assert gs.energy == pytest.approx(ref.energy, abs=1e-9 * scale)
    assert gs.gap == pytest.approx(ref.gap, abs=1e-8 * scale)


@given(seed=st.integers(0, 100_000), n=st.integers(5, 8), complex_=st.booleans())
@SETTINGS
def test_warm_solve_starts_from_the_known_product(seed: int, n: int, complex_: bool) -> None:
    basis, c = random_hamiltonian(seed, n, complex_)
    h = basis.operator(c)
    e = np.linalg.eigvalsh(h.toarray())
    assume(e[1] - e[0] > 0.05)
    gs = ground_state(h, None, SPARSE)
    assert gs.hvector is not None
    for beta in (0.05, -0.05):
        d = basis.operator(np.r_[np.zeros(basis.size - 1), beta])  # beta X0
        op = SumOperator(h, d)
        dense = op.toarray()
        en, vn = np.linalg.eigh(dense)
        plain = ground_state(op, gs.vector, SPARSE)
        warm = ground_state(op, gs.vector, SPARSE, hv0=gs.hvector + d @ gs.vector)
        for got in (plain, warm):
            assert got.energy == pytest.approx(en[0], abs=1e-9 * max(1.0, abs(en[0])))
            assert abs(np.vdot(vn[:, 0], got.vector)) == pytest.approx(1.0, abs=1e-8)
            e_w, r_w = _residual(dense, got.vector)
            assert r_w <= _bound(SPARSE.tol, e_w)
        assert warm.matvecs <= plain.matvecs


def test_the_known_product_saves_one_product_on_a_chain() -> None:
    n = 9
    labels = [f"X{i}" for i in range(n)] + [f"Z{i} Z{i + 1}" for i in range(n - 1)] + ["X0 X4"]
    basis = PauliBasis.from_labels(labels, n)
    c = np.r_[np.full(n, -1.0), np.full(n - 1, -0.5), 0.0]
    h = basis.operator(c)
    gs = ground_state(h, None, SolverOptions())
    assert gs.hvector is not None
    d = basis.operator(np.r_[np.zeros(2 * n - 1), 0.05])
    plain = ground_state(SumOperator(h, d), gs.vector, SolverOptions())
    warm = ground_state(
        SumOperator(h, d), gs.vector, SolverOptions(), hv0=gs.hvector + d @ gs.vector
    )
    assert warm.matvecs == plain.matvecs - 1
    assert warm.energy == pytest.approx(plain.energy, abs=1e-12 * abs(plain.energy))


@pytest.mark.parametrize("complex_", [False, True])
def test_nudged_start_extrapolates_to_second_order(complex_: bool) -> None:
    for seed in range(50):
        basis, c = random_hamiltonian(seed, 6, complex_)
        h = basis.operator(c)
        e = np.linalg.eigvalsh(h.toarray())
        if e[1] - e[0] > 0.2:
            break
    dense = h.toarray()
    psi0 = np.linalg.eigh(dense)[1][:, 0]
    errors = []
    for beta in (0.04, 0.02):
        delta = np.r_[np.zeros(basis.size - 1), beta]
        d_plus, d_minus = basis.operator(delta), basis.operator(-delta)
        psi_plus = np.linalg.eigh(dense + d_plus.toarray())[1][:, 0]
        psi_minus = np.linalg.eigh(dense + d_minus.toarray())[1][:, 0]
        # an arbitrary phase on the stored nudged state: the start aligns it to psi0
        phase = np.exp(0.7j) if complex_ else -1.0
        stored = phase * psi_plus
        done = [(delta, stored, (dense + d_plus.toarray()) @ stored)]
        start, h_start = _nudged_start(done, -delta, d_minus, psi0, dense @ psi0)
        np.testing.assert_allclose(h_start, (dense + d_minus.toarray()) @ start, atol=1e-12)
        unit = start / np.linalg.norm(start)
        err_x = 1.0 - abs(np.vdot(psi_minus, unit))
        err_0 = 1.0 - abs(np.vdot(psi_minus, psi0))
        assert err_x < 0.1 * err_0
        errors.append(
            np.linalg.norm(unit * np.exp(-1j * np.angle(np.vdot(psi_minus, unit))) - psi_minus)
        )
        # another direction: the free state itself
        other = np.r_[0.01, np.zeros(basis.size - 1)]
        s2, h2 = _nudged_start(done, other, basis.operator(other), psi0, dense @ psi0)
        assert s2 is psi0
        np.testing.assert_allclose(h2, (dense + basis.operator(other).toarray()) @ psi0, atol=1e-12)
    # O(beta^2): halving beta divides the start's distance by about 4
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.3)


def _lanczos_machine(complex_: bool) -> QuantumSystem:
    """A 7-qubit machine (128 states: the sparse path) on the strings of
    :func:`random_hamiltonian`: the first 15 fixed, the next 4 trainable, then an input and two
    outputs; the first instance with a gap above 0.1."""
    for seed in range(100):
        basis, c = random_hamiltonian(seed, 7, complex_)
        unit = np.eye(basis.size)
        model = HamiltonianModel(
            basis,
            np.r_[c[:15], np.zeros(basis.size - 15)],
            unit[19:20],
            unit[20:22],
            (ParameterGroup("theta", (4,), ("term",), -3.0, 3.0, "1"),),
            {"theta": unit[15:19]},
        )
        system = QuantumSystem(model, {"theta": c[15:19]})
        if gap_of(system, np.array([[0.3]])) > 0.1:
            return system
    raise AssertionError("no gapped random machine")


@pytest.mark.parametrize("complex_", [False, True])
def test_nudged_phases_of_a_lanczos_machine_match_dense_ground_states(complex_: bool) -> None:
    system = _lanczos_machine(complex_)
    x, t = np.array([[0.3]]), np.array([[0.5, -0.5]])
    loss = get_loss("mse")
    beta = 0.05
    est = EquilibriumPropagation(centred(beta)).estimate(
        system, x, t, loss, np.random.default_rng(0)
    )
    free = est.phases[0].eq
    state = free.state
    assert isinstance(state, QuantumState) and state.products is not None
    eps = loss.grad(free.outputs, t)
    model, basis = system.model, system.model.basis
    base = system._coefficients(x, None)[0]
    assert (basis.operator(base).dtype == np.complex128) == complex_
    for phase in est.phases:
        coeffs = base + phase.beta.real * (eps[0] @ model.output_ops)
        dense = basis.operator(coeffs).toarray()
        e, v = np.linalg.eigh(dense)
        assert phase.eq.energy is not None
        assert phase.eq.energy[0] == pytest.approx(e[0], abs=1e-9 * max(1.0, abs(e[0])))
        ref = model.param_ops["theta"] @ basis.expectations(v[:, 0])
        np.testing.assert_allclose(phase.eq.conjugates["theta"][0], ref, atol=1e-8)
        assert phase.eq.converged is not None and phase.eq.converged.all()
    # both nudged phases ran from the free state; the second from the extrapolated start
    assert [len(v) for v in state.nudged.values()] == [2]
    assert all(p.warm_start == "free" for p in est.phases[1:])


def test_a_diagonal_hamiltonian_breaks_the_run_down_and_arpack_decides() -> None:
    # a classical chain: the Krylov space of a random vector is invariant after as many steps
    # as distinct energies; ARPACK restarts there and sees the degenerate partners
    n = 7
    basis = PauliBasis.from_labels([f"Z{i} Z{i + 1}" for i in range(n - 1)] + ["Z0"], n)
    arpack = SolverOptions(dense_below=0, method="arpack")
    h = basis.operator(np.r_[np.full(n - 1, -1.0), -0.3])
    got, ref = ground_state(h, None, SPARSE), ground_state(h, None, arpack)
    assert got.energy == pytest.approx(ref.energy, abs=1e-12)
    assert got.gap == pytest.approx(ref.gap, abs=1e-10) and got.gap == pytest.approx(0.6)
    assert got.matvecs > ref.matvecs  # the Lanczos products are counted on top
    h0 = basis.operator(np.r_[np.full(n - 1, -1.0), 0.0])  # |0..0>, |1..1>: exactly degenerate
    for opts in (SPARSE, arpack):
        with pytest.raises(DegenerateGroundStateError):
            ground_state(h0, None, opts)


def _chain(n: int) -> sp.csr_matrix:
    labels = [f"X{i}" for i in range(n)] + [f"Z{i} Z{i + 1}" for i in range(n - 1)] + ["Z0"]
    basis = PauliBasis.from_labels(labels, n)
    return basis.operator(np.r_[np.full(n, -1.0), np.full(n - 1, -1.0), -0.05])


def test_a_small_memory_budget_goes_straight_to_arpack() -> None:
    h = _chain(8)
    got = ground_state(h, None, SolverOptions(dense_below=0, lanczos_memory=1024))
    ref = ground_state(h, None, SolverOptions(dense_below=0, method="arpack"))
    assert got.matvecs == ref.matvecs
    assert got.energy == ref.energy and got.gap == ref.gap


def test_a_full_memory_budget_hands_over_to_arpack() -> None:
    h = _chain(9)  # 512 states; the two-pair run at tol 1e-13 needs about 67 products
    dense = h.toarray()
    e = np.linalg.eigvalsh(dense)
    budget = 65 * 512 * 8  # 64 Lanczos steps
    opts = SolverOptions(tol=1e-13, dense_below=0, lanczos_memory=budget)
    got = ground_state(h, None, opts)
    assert got.matvecs > 64
    assert got.energy == pytest.approx(e[0], abs=1e-11)
    assert got.gap == pytest.approx(e[1] - e[0], abs=1e-10)
    # a warm one-pair run (11 qubits, from |0...0>: about 71 products) hands its best Ritz
    # vector over to ARPACK
    h11 = _chain(11)
    start = np.r_[1.0, np.zeros(2047)]
    tight = SolverOptions(tol=1e-13, dense_below=0, lanczos_memory=65 * 2048 * 8)
    warm = ground_state(h11, start, tight, check_gap=False)
    ref = ground_state(h11, None, SolverOptions(tol=1e-13, dense_below=0, method="arpack"))
    assert warm.matvecs > 64
    assert warm.energy == pytest.approx(ref.energy, abs=1e-11)
    assert warm.residual <= _bound(1e-13, warm.energy)


def test_a_duplicate_ground_state_is_not_certified(monkeypatch: pytest.MonkeyPatch) -> None:
    h = _chain(8)
    ref = ground_state(h, None, SolverOptions(dense_below=0, method="arpack"))
    lanczos = ground_state(h, None, SPARSE)
    monkeypatch.setattr(qs, "_ORTHO_TOL", -1.0)  # no pair passes the orthogonality test
    got = ground_state(h, None, SPARSE)
    assert got.matvecs == lanczos.matvecs + ref.matvecs  # the whole run, then ARPACK's
    assert got.energy == ref.energy and got.gap == ref.gap


def test_a_tight_two_pair_run_certifies_without_arpack() -> None:
    # tol 1e-13: the ground pair converges to round-off long before the excited one; without
    # selective orthogonalisation a duplicate of it forms and the run falls back to ARPACK
    h = _chain(9)
    dense = h.toarray()
    e = np.linalg.eigvalsh(dense)
    opts = SolverOptions(tol=1e-13, dense_below=0)
    got = ground_state(h, None, opts)
    assert got.matvecs < 80
    assert got.energy == pytest.approx(e[0], abs=1e-11)
    assert got.gap == pytest.approx(e[1] - e[0], abs=1e-11)
    assert got.excited is not None
    for v in (got.vector, got.excited):
        en, r = _residual(dense, v)
        assert r <= _bound(opts.tol, en)


def test_unknown_solver_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown solver method"):
        SolverOptions(method="davidson")


# -- sparse products in row blocks (threads) ------------------------------------------------------


@given(
    seed=st.integers(0, 100_000),
    n=st.integers(3, 8),
    complex_=st.booleans(),
    k=st.integers(2, 5),
    nudged=st.booleans(),
)
@SETTINGS
def test_row_block_products_are_the_whole_products_bit_for_bit(
    seed: int, n: int, complex_: bool, k: int, nudged: bool
) -> None:
    """RowBlocks: ``k`` blocks of rows, ``k - 1`` of them on other threads, give exactly the
    serial product (each row the same sum in the same order), for a Hamiltonian or a lazy
    Hamiltonian + nudge, with real or complex vectors; several vectors go whole."""
    basis, c = random_hamiltonian(seed, n, complex_)
    h = basis.operator(c)
    mat = SumOperator(h, basis.operator(np.r_[np.zeros(basis.size - 1), 0.05])) if nudged else h
    rng = np.random.default_rng(seed)
    vectors = [rng.normal(size=basis.dim), rng.normal(size=basis.dim) * (1 + 0.5j)]
    with ThreadPoolExecutor(k - 1) as pool:
        blocks = qs.RowBlocks(mat, pool, k)
        assert len(blocks.blocks) == k
        for v in vectors:
            got, want = blocks @ v, mat @ v
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        several = np.stack(vectors[:1] * 2, axis=1)
        np.testing.assert_array_equal(blocks @ several, mat @ several)


@pytest.mark.parametrize("complex_", [False, True])
def test_a_solve_with_threaded_products_is_the_serial_solve(complex_: bool) -> None:
    """Cold, warm (nudged) and tracked solves with products on 1 and on 3 threads: the same
    energies, vectors and product counts exactly."""
    basis, c = random_hamiltonian(7, 9, complex_)
    h = basis.operator(c)
    d = basis.operator(np.r_[np.zeros(basis.size - 1), 0.05])
    serial = SolverOptions(dense_below=0, threads=1, parallel_from=0)
    threaded = SolverOptions(dense_below=0, threads=3, parallel_from=0)
    assert serial.product_threads(basis.dim) == 1 and threaded.product_threads(basis.dim) == 3
    results = []
    for opts in (serial, threaded):
        cold = ground_state(h, None, opts)
        warm = ground_state(SumOperator(h, d), cold.vector, opts, hv0=cold.hvector)
        tracked = ground_state(h + 0.01 * d, cold.vector, opts, excited=cold.excited)
        results.append((cold, warm, tracked))
    for a, b in zip(*results, strict=True):
        assert (a.energy, a.gap, a.matvecs, a.residual) == (b.energy, b.gap, b.matvecs, b.residual)
        np.testing.assert_array_equal(a.vector, b.vector)


def test_the_product_threads_follow_the_size_the_cpus_and_omp_num_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus = len(os.sched_getaffinity(0))
    opts = SolverOptions()
    assert opts.product_threads(opts.parallel_from - 1) == 1  # too small to split
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert opts.product_threads(opts.parallel_from) == cpus
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # e.g. a Dask worker of a sweep
    assert opts.product_threads(1 << 20) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert opts.product_threads(1 << 20) == cpus
    assert SolverOptions(threads=4).product_threads(1 << 20) == 4  # asked for: as asked
    with pytest.raises(ValueError, match="threads"):
        SolverOptions(threads=0)


def test_a_stalled_ratio_does_not_send_the_next_check_far_ahead() -> None:
    """Between two looks the residual ratio barely fell (Lanczos convergence stalls now and
    then): the next look is at most half the products so far ahead, not where the stalled rate
    extrapolates (hundreds of products past convergence)."""
    last = (10, np.array([6.877e6]))
    assert qs._next_check(11, np.array([6.854e6]), last, 0.0) == 11 + 5
    assert qs._next_check(11, np.array([1e9]), (10, np.array([1e12])), 0.0) == 11 + 1  # as due


def test_near_the_bound_the_looks_are_spaced_by_their_cost() -> None:
    """Within 1e4 of the bound: a look after every product when a look is cheap next to a
    product (large registers), every few products when it is not (small ones), never past the
    products the slowest pair still needs, and after the next product once a ratio rose."""
    now = np.exp([5.0, 9.0])  # one e-fold per product: the slower pair needs 9 more
    last = (20, np.exp([7.0, 11.0]))
    assert qs._next_check(22, now, last, 0.01) == 23
    assert qs._next_check(22, now, last, 2.0) == 22 + 6  # sqrt(2 * 9 * 2)
    assert qs._next_check(22, now, last, 100.0) == 22 + 9  # what the pairs need
    assert qs._next_check(12, now, (10, last[1]), 100.0) == 12 + 6  # m // 2
    assert qs._next_check(22, np.exp([5.0, 12.0]), last, 2.0) == 23  # a ratio rose
    assert qs._look_cost(11264, 1024, 60) > 1 > 0.05 > qs._look_cost(4980736, 1 << 18, 100)


def test_the_nudged_solves_of_a_training_step_cost_less_than_cold_solves() -> None:
    """The steady-state EP step of a 15-spin chain (the quantum benchmark's workload: one Adam
    step, the free phase tracked, both nudged phases warm): each warm nudged solve takes fewer
    products than a cold solve of its Hamiltonian. (Before the look-ahead was capped, the +beta
    solve stalled at a ratio of ~7e5 and next looked at the pairs 212 products later: 250
    products for a state a cold solve finds in 84.)"""
    from physlearn.config import OptimizerConfig
    from physlearn.optim import Optimizer
    from physlearn.simulators.quantum.config import QuantumConfig

    n = 15
    cfg = QuantumConfig.model_validate(
        {
            "kind": "quantum",
            "qubits": n,
            "h0": [{"pauli": "Z{i} X{i+1} Z{i+2}", "coeff": -0.5, "range": [0, n - 2]}],
            "trainable": [
                {"terms": [{"pauli": "X{i}", "coeff": -1.0, "range": [0, n]}], "init": 1.0},
                {
                    "terms": [{"pauli": "Z{i} Z{i+1}", "coeff": -1.0, "range": [0, n - 1]}],
                    "init": 0.5,
                },
            ],
            "outputs": [{"label": "X0X4", "terms": [{"pauli": "X0 X4"}]}],
        }
    )
    system = cfg.build(0)
    est = EquilibriumPropagation(centred(0.05), nudge="error")
    x, t, loss = np.zeros((1, 0)), np.zeros((1, 1)), get_loss("neg_abs")
    first = est.estimate(system, x, t, loss, np.random.default_rng(0))
    carried = system.export_state(first.free.state)
    adam = Optimizer(OptimizerConfig(kind="adam", lr=0.02), system.parameter_groups)
    steady = QuantumSystem(
        system.model, adam.step(system.get_parameters(), first.gradient, 0.02), solver=system.solver
    )
    step = est.estimate(steady, x, t, loss, np.random.default_rng(0), steady.import_state(carried))
    model, basis = steady.model, steady.model.basis
    free = step.phases[0].eq
    eps = -np.sign(free.outputs[0, 0])
    for phase, beta in zip(step.phases[1:], (0.05, -0.05), strict=True):
        nudged = model.coefficients(steady.get_parameters()) + beta * eps * model.output_ops[0]
        h = basis.operator(nudged)
        cold = ground_state(h, None, steady.solver, check_gap=False)
        assert phase.eq.energy[0] == pytest.approx(cold.energy, abs=1e-8)
        assert int(phase.eq.iterations[0]) < cold.matvecs
