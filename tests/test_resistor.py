"""Tests of the linear resistor-network simulator, its graphs and its config.

Independent oracles: a dense numpy solve of the full constrained problem (KCL), central finite
differences of the equilibrium energy and of the loss, and the EP / coupled-learning estimators
of :mod:`physlearn.estimators` against :meth:`LinearResistorNetwork.exact_gradient`.

Random networks: hypothesis draws the sizes and a seed; numpy draws the continuous values
(conductances in [0.5, 2] S, inputs and targets in [-1, 1] V) from that seed, so that examples
are generic (hypothesis' float shrinking would produce degenerate all-zero inputs, for which
every gradient vanishes).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from physlearn.estimators import (
    CoupledLearning,
    EquilibriumPropagation,
    FiniteDifference,
    centred,
    holomorphic,
    one_sided,
)
from physlearn.losses import MSE
from physlearn.simulators.graphs.generators import (
    Graph,
    all_to_all,
    from_edge_list,
    lattice,
    layered,
    with_extra_input,
)
from physlearn.simulators.resistor.config import ResistorConfig
from physlearn.simulators.resistor.linear import LinearResistorNetwork
from physlearn.system import ExactGradient, Nudge
from physlearn.system import Graph as GraphProtocol

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers ---------------------------------------------------------------------------------
def random_graph(rng: np.random.Generator, n_free: int, n_in: int, n_out: int, extra: int) -> Graph:
    """A random graph whose free nodes form one connected block touching every input.

    A random spanning tree over the free nodes, one edge from every input to a random free
    node, plus ``extra`` random edges (duplicates and self-loops dropped). With >= 2 inputs this
    keeps every output voltage dependent on the conductances (a free block hanging from a
    single source would sit at that source's voltage, with an identically zero gradient).
    """
    n = n_in + n_free
    nodes = rng.permutation(n)
    inputs, free = nodes[:n_in], nodes[n_in:]
    parent = (rng.random(n_free - 1) * np.arange(1, n_free)).astype(np.int64)
    tree = np.stack([free[1:], free[parent]], axis=1)
    feed = np.stack([inputs, free[rng.integers(0, n_free, n_in)]], axis=1)
    more = rng.integers(0, n, size=(extra, 2))
    edges = np.sort(np.concatenate([tree, feed, more]), axis=1)
    edges = np.unique(edges[edges[:, 0] != edges[:, 1]], axis=0)
    edges = edges[rng.permutation(len(edges))]
    return from_edge_list(n, edges, inputs, free[:n_out])


def random_setup(
    seed: int, n_free: int, n_in: int, n_out: int, extra: int, batch: int = 4
) -> tuple[LinearResistorNetwork, np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    net = LinearResistorNetwork(
        random_graph(rng, n_free, n_in, n_out, extra),
        bounds=(0.1, 10.0),
        init=(0.5, 2.0),
        seed=seed,
    )
    x = rng.uniform(-1.0, 1.0, (batch, net.inputs.size))
    t = rng.uniform(-1.0, 1.0, (batch, net.outputs.size))
    return net, x, t, rng


networks = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "n_free": st.integers(1, 20),
        "n_in": st.integers(2, 5),
        "n_out": st.integers(1, 3),
        "extra": st.integers(0, 30),
    }
).filter(lambda d: d["n_out"] <= d["n_free"])


def laplacian(net: LinearResistorNetwork) -> np.ndarray:
    g = net.get_parameters()["conductance"]
    n = net.graph.n_nodes
    i, j = net.graph.edges.T
    lap = np.zeros((n, n))
    np.add.at(lap, (i, i), g)
    np.add.at(lap, (j, j), g)
    np.add.at(lap, (i, j), -g)
    np.add.at(lap, (j, i), -g)
    return lap


def dense_equilibrium(net: LinearResistorNetwork, x: np.ndarray, nudge: Nudge | None) -> np.ndarray:
    """All node voltages (batch, n) by a dense solve of the full problem, node by node."""
    lap = laplacian(net)
    n = net.graph.n_nodes
    src, out = net.graph.input_nodes, net.graph.output_nodes
    fixed = np.zeros(n, dtype=bool)
    fixed[src] = True
    vfix = np.zeros((x.shape[0], n), dtype=complex)
    vfix[:, src[: x.shape[1]]] = x
    diag = np.zeros(n, dtype=complex)
    force = np.zeros((x.shape[0], n), dtype=complex)
    if nudge is not None:
        if nudge.kind == "clamp":
            fixed[out] = True
            vfix[:, out] = nudge.values
        elif nudge.kind == "target":
            diag[out] = nudge.beta
            force[:, out] = nudge.beta * nudge.values
        else:
            force[:, out] = -nudge.beta * nudge.values
    free = ~fixed
    a = lap[np.ix_(free, free)] + np.diag(diag[free])
    rhs = force[:, free] - vfix[:, fixed] @ lap[np.ix_(free, fixed)].T
    v = vfix.copy()
    v[:, free] = np.linalg.solve(a, rhs.T).T
    return v


def kcl_relative_residual(net: LinearResistorNetwork, v: np.ndarray, nudge: Nudge | None) -> float:
    """max |net current into a free node| / max total |current| through a node."""
    lap = laplacian(net)
    cur = v @ lap.T  # current leaving each node through the resistors, A
    out = net.graph.output_nodes
    inj = np.zeros_like(cur)
    free = np.ones(net.graph.n_nodes, dtype=bool)
    free[net.graph.input_nodes] = False
    if nudge is not None and nudge.kind == "target":
        inj[:, out] = nudge.beta * (nudge.values - v[:, out])
    elif nudge is not None and nudge.kind == "error":
        inj[:, out] = -nudge.beta * nudge.values
    elif nudge is not None:
        free[out] = False
    imbalance = np.abs(cur - inj)[:, free].max(initial=0.0)
    i, j = net.graph.edges.T
    g = net.get_parameters()["conductance"]
    through = np.zeros_like(cur, dtype=float)
    np.add.at(through.T, i, np.abs(g[:, None] * (v[:, i] - v[:, j]).T))
    np.add.at(through.T, j, np.abs(g[:, None] * (v[:, i] - v[:, j]).T))
    return float(imbalance / through.max())


def all_voltages(net: LinearResistorNetwork, eq: Any) -> np.ndarray:
    st_ = eq.state
    v = np.zeros((eq.batch, net.graph.n_nodes), dtype=st_.v.dtype)
    free = np.ones(net.graph.n_nodes, dtype=bool)
    free[net.graph.input_nodes] = False
    v[:, free] = st_.v.T
    v[:, net.graph.input_nodes[: st_.inputs.shape[1]]] = st_.inputs
    return v


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def loglog_slope(x: np.ndarray, y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def nudges(net: LinearResistorNetwork, t: np.ndarray, beta: complex) -> list[Nudge]:
    return [
        Nudge(beta=beta, target=t),
        Nudge(beta=-beta, target=t),
        Nudge(beta=beta, error=t - 0.3),
        Nudge(clamp=t),
    ]


# -- graphs ----------------------------------------------------------------------------------
def test_layered_graph_is_dense_between_layers():
    g = layered([3, 4, 2])
    assert g.n_nodes == 9 and g.n_edges == 3 * 4 + 4 * 2
    assert g.input_nodes.tolist() == [0, 1, 2] and g.output_nodes.tolist() == [7, 8]
    assert set(map(tuple, g.edges.tolist())) == {(a, b) for a in range(3) for b in range(3, 7)} | {
        (a, b) for a in range(3, 7) for b in range(7, 9)
    }
    assert layered([3, 4, 2], skip=True).n_edges == 20 + 3 * 2
    assert g.roles == ("input",) * 3 + ("hidden",) * 4 + ("output",) * 2


@pytest.mark.parametrize(
    "rows, cols, nb, skips",
    [(4, 5, 1, []), (4, 5, 2, []), (6, 7, 2, [2, 3]), (2, 9, 1, [4])],
)
def test_lattice_edge_counts_and_placement(rows, cols, nb, skips):
    g = lattice(rows, cols, neighbours=nb, skips=skips)
    expect = rows * (cols - 1) + (rows - 1) * cols
    if nb == 2:
        expect += 2 * (rows - 1) * (cols - 1)
    expect += sum(rows * max(cols - k, 0) + max(rows - k, 0) * cols for k in skips)
    assert g.n_edges == expect
    assert g.input_nodes.tolist() == list(range(cols))
    assert g.output_nodes.tolist() == list(range((rows - 1) * cols, rows * cols))
    d = np.abs(g.positions[g.edges[:, 0]] - g.positions[g.edges[:, 1]])
    steps = set(map(tuple, d.astype(int).tolist()))
    allowed = {(1, 0), (0, 1)} | ({(1, 1)} if nb == 2 else set())
    allowed |= {(k, 0) for k in skips if k < cols} | {(0, k) for k in skips if k < rows}
    assert steps == allowed


def test_lattice_spread_ports_and_speed():
    g = lattice(5, 9, n_inputs=3, n_outputs=2)
    assert g.input_nodes.tolist() == [0, 4, 8]
    assert g.output_nodes.tolist() == [36, 44]
    lattice(100, 100, neighbours=2, skips=[2])  # warm-up (imports, allocator)
    t0 = time.perf_counter()
    big = lattice(100, 100, neighbours=2, skips=[2, 4])
    elapsed = time.perf_counter() - t0
    assert big.n_nodes == 10_000
    assert elapsed < 0.25, f"100x100 lattice took {elapsed * 1e3:.1f} ms"


def test_all_to_all_joins_every_pair():
    g = all_to_all(6, [0, 1], [5])
    assert g.n_edges == 15 and np.all(g.edges[:, 0] < g.edges[:, 1])
    assert len({tuple(e) for e in g.edges.tolist()}) == 15


def test_extra_input_joins_the_inputs_neighbours():
    g = with_extra_input(layered([2, 3, 1]))
    assert g.n_nodes == 7 and g.input_nodes.tolist() == [0, 1, 6] and g.roles[-1] == "ground"
    assert g.edges[-3:].tolist() == [[2, 6], [3, 6], [4, 6]]
    assert np.array_equal(g.edges[:9], layered([2, 3, 1]).edges)


@pytest.mark.parametrize(
    "edges, inputs, outputs, message",
    [
        ([[0, 1], [1, 1]], [0], [1], "self-loop on node 1"),
        ([[0, 1], [1, 2], [2, 1]], [0], [2], "duplicate edge"),
        ([[0, 1], [2, 3]], [0], [1], r"node 2 \(hidden\) is not connected to any input"),
        ([[0, 1], [1, 2], [2, 3]], [0], [0], "both an input and an output"),
        ([[0, 1], [1, 5]], [0], [1], "node 5, outside 0..3"),
    ],
)
def test_bad_graphs_are_refused_naming_the_problem(edges, inputs, outputs, message):
    with pytest.raises(ValueError, match=message):
        from_edge_list(4, edges, inputs, outputs)


# -- physics ---------------------------------------------------------------------------------
@FAST
@given(networks)
def test_kcl_holds_at_every_equilibrium(p):
    net, x, t, _ = random_setup(**p)
    free = net.equilibrate(x)
    for nudge in [None, *nudges(net, t, 0.7)]:
        eq = net.equilibrate(x, nudge, free.state)
        v = all_voltages(net, eq)
        assert kcl_relative_residual(net, v, nudge) < 1e-10
        # same state as an independent dense solve of the whole constrained problem
        dense = dense_equilibrium(net, x, nudge)
        assert np.allclose(v, dense, rtol=1e-9, atol=1e-12)
        assert np.allclose(eq.outputs, dense[:, net.graph.output_nodes], rtol=1e-9, atol=1e-12)
        # the reported diagnostic agrees (in A), and the direct solve claims no iterations
        assert eq.residual is not None and eq.residual.max() < 1e-10 * (1 + np.abs(v).max())
        assert eq.iterations is not None and not eq.iterations.any()
        if nudge is not None and nudge.kind == "clamp":
            assert np.array_equal(eq.outputs, t)


@FAST
@given(networks)
def test_conjugate_is_the_envelope_derivative_of_the_equilibrium_energy(p):
    """d E*(g)/dg_e = 1/2 dV_e^2, free and target-nudged (F = E + beta C), by central FD."""
    net, x, t, _ = random_setup(**p, batch=3)
    g0 = net.get_parameters()["conductance"]
    beta = 0.4
    for nudge in (None, Nudge(beta=beta, target=t)):

        def total(eq: Any, nudge: Nudge | None = nudge) -> np.ndarray:
            if nudge is None:
                return eq.energy
            return eq.energy + beta * 0.5 * ((eq.outputs - t) ** 2).sum(axis=1)

        conj = net.equilibrate(x, nudge).conjugates["conductance"]
        assert np.allclose(
            net.equilibrate(x, nudge).energy, conj @ g0, rtol=1e-12
        )  # E = sum_e g_e dE/dg_e for a quadratic form
        h = 1e-5
        fd = np.empty_like(conj)
        for e in range(net.n_edges):
            gp, gm = g0.copy(), g0.copy()
            gp[e] += h
            gm[e] -= h
            net.set_parameters({"conductance": gp})
            fp = total(net.equilibrate(x, nudge))
            net.set_parameters({"conductance": gm})
            fm = total(net.equilibrate(x, nudge))
            fd[:, e] = (fp - fm) / (2 * h)
        net.set_parameters({"conductance": g0})
        assert np.allclose(fd, conj, rtol=1e-6, atol=1e-9 * np.abs(conj).max())


@FAST
@given(networks)
def test_exact_gradient_matches_finite_differences_of_the_loss(p):
    net, x, t, rng = random_setup(**p)
    exact = net.exact_gradient(x, t, MSE())["conductance"]
    before = net.get_parameters()["conductance"]
    fd = {
        h: FiniteDifference(step=h).estimate(net, x, t, MSE(), rng).gradient["conductance"]
        for h in (1e-6, 5e-7)
    }
    assert np.array_equal(net.get_parameters()["conductance"], before)
    # A centred difference is the derivative plus c h^2 (relative (h/g)^2 ~ 1e-6 at mS
    # conductances) plus round-off ~ 1e-16 L / h; both show in the change between h and h/2
    # (truncation: 3 c (h/2)^2; round-off: of the same size as its own), so the difference at
    # h/2 must lie within twice that change of the exact gradient. A wrong gradient fails by its
    # error, not by the difference's resolution (seed 3682 missed a fixed 1e-6 bound by 50 %).
    resolution = np.linalg.norm(fd[1e-6] - fd[5e-7])
    assert np.linalg.norm(fd[5e-7] - exact) <= 2 * resolution + 1e-9 * np.linalg.norm(exact)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks)
def test_ep_error_shrinks_as_beta_for_one_sided_and_beta_squared_for_centred(p):
    """Log-log slope of |g_EP - g_exact| / |g_exact| over beta from 1e-1 to 1e-4.

    beta (S) is normalised by the largest output resistance K (ohms): beta * max eig K is the
    dimensionless nudge strength, so 1e-1 .. 1e-4 is the asymptotic regime for every random
    network, and a negative nudge of that size never makes the nudged energy non-convex. With
    conjugates ~ dV^2 = O(1) V^2 and gradients O(1), the centred round-off floor is about
    1e-16 / beta ~ 1e-12 at the smallest beta, four orders below its O(beta^2) ~ 1e-8 error, so
    the fit is not bent by round-off. The target nudge is used: with an error (current) nudge
    the state is exactly linear in beta and the centred estimate would be exact.
    """
    net, x, t, rng = random_setup(**p)
    exact = net.exact_gradient(x, t, MSE())["conductance"]
    assert np.linalg.norm(exact) > 0
    scale = float(np.linalg.eigvalsh(net.output_resistance())[-1])
    betas = np.logspace(-1, -4, 7)
    slopes = {}
    for name, stencil in (("one_sided", one_sided), ("centred", centred)):
        errs = [
            rel_err(
                EquilibriumPropagation(stencil(b / scale), nudge="target")
                .estimate(net, x, t, MSE(), rng)
                .gradient["conductance"],
                exact,
            )
            for b in betas
        ]
        slopes[name] = loglog_slope(betas, errs)
    assert 0.8 <= slopes["one_sided"] <= 1.2, slopes
    assert 1.7 <= slopes["centred"] <= 2.3, slopes
    # holomorphic N = 4 (complex nudges) beats centred at the same beta by orders of magnitude
    b = 0.03 / scale
    holo = EquilibriumPropagation(holomorphic(b, 4)).estimate(net, x, t, MSE(), rng)
    cent = EquilibriumPropagation(centred(b)).estimate(net, x, t, MSE(), rng)
    e_holo = rel_err(holo.gradient["conductance"], exact)
    e_cent = rel_err(cent.gradient["conductance"], exact)
    assert e_holo < 0.02 * e_cent, (e_holo, e_cent)


def test_error_nudge_is_exactly_quadratic_so_centred_ep_is_exact():
    net, x, t, rng = random_setup(seed=3, n_free=8, n_in=3, n_out=2, extra=6)
    exact = net.exact_gradient(x, t, MSE())["conductance"]
    g = EquilibriumPropagation(centred(0.3), nudge="error").estimate(net, x, t, MSE(), rng)
    assert rel_err(g.gradient["conductance"], exact) < 1e-10


@FAST
@given(networks.map(lambda d: {**d, "n_out": 1}))
def test_coupled_learning_agrees_in_sign_with_the_gradient(p):
    """One output: the clamped phase injects c = -eta eps / K, so coupled learning estimates
    dL/dg / K (K > 0 the output resistance) -- the descent direction, up to O(eta)."""
    net, x, t, rng = random_setup(**p)
    exact = net.exact_gradient(x, t, MSE())["conductance"]
    k = net.output_resistance()[0, 0]
    errs = []
    for eta in (1e-3, 1e-5):
        cl = CoupledLearning(eta=eta).estimate(net, x, t, MSE(), rng).gradient["conductance"]
        cosine = cl @ exact / (np.linalg.norm(cl) * np.linalg.norm(exact))
        assert cosine > 0, (eta, cosine)
        errs.append(rel_err(cl * k, exact))
    assert errs[1] < 1e-2 and errs[1] < 0.05 * errs[0], errs  # O(eta) convergence


def test_coupled_learning_descends_on_a_multi_output_network():
    # With several outputs the clamp injects -eta K^-1 eps: sign agreement is typical, not
    # guaranteed (J^T K^-1 eps vs J^T eps). A fixed, generic network:
    net, x, t, rng = random_setup(seed=11, n_free=12, n_in=4, n_out=3, extra=15, batch=8)
    exact = net.exact_gradient(x, t, MSE())["conductance"]
    cl = CoupledLearning(eta=1e-3).estimate(net, x, t, MSE(), rng).gradient["conductance"]
    assert cl @ exact > 0


def test_complex_nudge_is_the_holomorphic_continuation():
    """conj(beta) gives the complex-conjugate state (real analytic physics), and the first
    derivative in beta along the imaginary axis equals the real one."""
    net, x, t, _ = random_setup(seed=5, n_free=10, n_in=3, n_out=2, extra=10)
    b = 1e-3
    up = net.equilibrate(x, Nudge(beta=1j * b, target=t)).conjugates["conductance"]
    dn = net.equilibrate(x, Nudge(beta=-1j * b, target=t)).conjugates["conductance"]
    assert np.allclose(dn, np.conj(up), rtol=1e-12, atol=0)
    free = net.equilibrate(x).conjugates["conductance"]
    d_imag = (up - free).imag / b
    d_real = (net.equilibrate(x, Nudge(beta=b, target=t)).conjugates["conductance"] - free) / b
    assert np.allclose(d_imag, d_real, rtol=1e-2, atol=1e-3 * np.abs(d_real).max())


def test_ground_source_and_saddle_flag():
    net = LinearResistorNetwork(layered([2, 4, 2]), bounds=(0.1, 10), init=(0.5, 2), ground=True)
    assert net.graph.n_nodes == 9 and net.n_edges == 8 + 8 + 4 and net.inputs.size == 2
    eq = net.equilibrate(np.zeros((3, 2)))
    assert np.allclose(eq.outputs, 0) and np.allclose(eq.conjugates["conductance"], 0)
    x = np.array([[1.0, 1.0]])
    v = net.equilibrate(x).outputs
    assert np.all((v > 0) & (v < 1))  # the ground pulls every node below the inputs
    kmax = float(np.linalg.eigvalsh(net.output_resistance())[-1])
    ok = net.equilibrate(x, Nudge(beta=-0.5 / kmax, target=np.zeros((1, 2))))
    bad = net.equilibrate(x, Nudge(beta=-2.0 / kmax, target=np.zeros((1, 2))))
    assert ok.converged is not None and ok.converged.all()
    assert bad.converged is not None and not bad.converged.any()


# -- speed -----------------------------------------------------------------------------------
def test_one_factorisation_per_parameter_update():
    net, x, t, rng = random_setup(seed=7, n_free=30, n_in=4, n_out=3, extra=40, batch=16)
    assert net.factorizations == 0  # lazy: nothing factorised before the first solve
    est = EquilibriumPropagation(centred(0.05)).estimate(net, x, t, MSE(), rng)
    assert len(est.phases) == 3 and net.factorizations == 1
    net.exact_gradient(x, t, MSE())
    CoupledLearning(0.1).estimate(net, x, t, MSE(), rng)
    EquilibriumPropagation(holomorphic(0.05, 4)).estimate(net, x, t, MSE(), rng)
    for nudge in nudges(net, t, 0.2):
        net.equilibrate(x, nudge)  # cold (no warm start): still no new factorisation
    assert net.factorizations == 1
    net.set_parameters({"conductance": net.get_parameters()["conductance"] * 1.01})
    EquilibriumPropagation(one_sided(0.05)).estimate(net, x, t, MSE(), rng)
    assert net.factorizations == 2


def test_warm_start_reuses_only_matching_free_states():
    net, x, t, _ = random_setup(seed=2, n_free=10, n_in=3, n_out=2, extra=10)
    free = net.equilibrate(x)
    nudge = Nudge(beta=0.3, target=t)
    warm = net.equilibrate(x, nudge, free.state).outputs
    assert np.allclose(warm, net.equilibrate(x, nudge).outputs, rtol=1e-13)
    # a stale warm start (other inputs) must not be used
    other = net.equilibrate(x + 0.5)
    assert np.allclose(net.equilibrate(x, nudge, other.state).outputs, warm, rtol=1e-13)
    # nor one measured with other conductances (non-uniform: a uniform scale keeps V_free)
    g = net.get_parameters()["conductance"]
    net.set_parameters({"conductance": g * np.linspace(0.6, 1.6, g.size)})
    cold = net.equilibrate(x, nudge).outputs
    assert not np.allclose(cold, warm)
    assert np.allclose(net.equilibrate(x, nudge, free.state).outputs, cold, rtol=1e-13)


# -- contract and bad input --------------------------------------------------------------------
def test_contract_description():
    net = LinearResistorNetwork(layered([3, 5, 2]), bounds=(1e-4, 1e-2), init=(1e-3, 2e-3))
    (grp,) = net.parameter_groups
    assert (grp.name, grp.shape, grp.dims, grp.unit) == ("conductance", (25,), ("edge",), "S")
    assert (grp.lower, grp.upper) == (1e-4, 1e-2)
    assert net.inputs.size == 3 and net.outputs.size == 2 and net.inputs.unit == "V"
    assert net.native_cost == "mse" and net.supports_complex_nudge
    assert net.supported_nudges == {"target", "error", "clamp"}
    assert all(isinstance(net, proto) for proto in (ExactGradient, GraphProtocol))
    layout = net.graph_layout()
    assert layout["positions"].shape == (10, 2) and layout["edges"].shape == (25, 2)
    assert layout["edge_group"] == "conductance" and len(layout["node_roles"]) == 10
    g = net.get_parameters()["conductance"]
    assert np.all((g >= 1e-3) & (g <= 2e-3))
    g[0] = 0.5  # get_parameters returns a copy
    assert net.get_parameters()["conductance"][0] != 0.5
    eq = net.equilibrate(np.ones((4, 3)))
    assert eq.conjugates["conductance"].shape == (4, 25) and eq.energy is not None
    with net:
        pass  # context manager: open / close / safe_state are harmless


def test_resolution_holds_values_on_the_grid():
    net = LinearResistorNetwork(layered([2, 2, 1]), bounds=(0.1, 1.0), resolution=0.1, seed=4)
    held = net.set_parameters({"conductance": np.array([0.1, 0.26, 0.34, 0.5, 0.99, 1.0])})
    assert np.allclose(held["conductance"], [0.1, 0.3, 0.3, 0.5, 1.0, 1.0])
    init = net.get_parameters()["conductance"]
    assert np.allclose(np.round((init - 0.1) / 0.1) * 0.1 + 0.1, init)


@pytest.mark.parametrize(
    "values, message",
    [
        (lambda g: np.where(np.arange(g.size) == 2, 20.0, g), r"'conductance'.*edge 2 = 20"),
        (lambda g: np.where(np.arange(g.size) == 0, 0.01, g), r"'conductance'.*outside the bounds"),
        (lambda g: np.where(np.arange(g.size) == 1, np.nan, g), r"'conductance'.*finite"),
        (lambda g: g[:-1], r"'conductance'.*shape"),
    ],
)
def test_out_of_bounds_or_malformed_conductances_are_refused(values, message):
    net = LinearResistorNetwork(layered([2, 3, 1]), bounds=(0.1, 10.0), init=(0.5, 2.0))
    before = net.get_parameters()["conductance"]
    with pytest.raises(ValueError, match=message):
        net.set_parameters({"conductance": values(before)})
    assert np.array_equal(net.get_parameters()["conductance"], before)  # nothing was written
    with pytest.raises(ValueError, match="unknown parameter groups"):
        net.set_parameters({"conductance": before, "gain": before})


def test_bad_inputs_and_nudges_are_refused():
    net = LinearResistorNetwork(layered([3, 4, 2]), bounds=(0.1, 10.0), init=(0.5, 2.0))
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, 3\)"):
        net.equilibrate(np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, 3\)"):
        net.equilibrate(np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        net.equilibrate(np.full((2, 3), np.inf))
    with pytest.raises(ValueError, match=r"target values must have shape \(2, 2\)"):
        net.equilibrate(np.ones((2, 3)), Nudge(beta=0.1, target=np.ones((2, 3))))
    with pytest.raises(ValueError, match="targets must have shape"):
        net.exact_gradient(np.ones((2, 3)), np.ones((3, 2)), MSE())
    with pytest.raises(ValueError, match="single source node"):
        LinearResistorNetwork(from_edge_list(3, [[0, 1], [1, 2]], [0], [2]))
    with pytest.raises(ValueError, match="bounds"):
        LinearResistorNetwork(layered([2, 2, 1]), bounds=(0.0, 1.0))


# -- config ----------------------------------------------------------------------------------
IRIS_YAML = """
kind: resistor
graph: {type: layered, sizes: [10, 16, 3]}
ground: false
conductance: {min: 1.0e-5, max: 1.0e-2, init_low: 1.0e-4, init_high: 1.0e-3}
"""


def test_config_builds_the_described_network():
    import yaml

    cfg = ResistorConfig.model_validate(yaml.safe_load(IRIS_YAML))
    net = cfg.build(seed=3)
    assert cfg.input_size() == net.inputs.size == 10
    assert cfg.output_size() == net.outputs.size == 3
    assert net.n_edges == 10 * 16 + 16 * 3
    g = net.get_parameters()["conductance"]
    assert np.all((g >= 1e-4) & (g <= 1e-3))
    assert np.array_equal(cfg.build(seed=3).get_parameters()["conductance"], g)
    assert not np.array_equal(cfg.build(seed=4).get_parameters()["conductance"], g)

    lat = ResistorConfig.model_validate(
        {
            "kind": "resistor",
            "graph": {
                "type": "lattice",
                "rows": 6,
                "cols": 5,
                "neighbours": 2,
                "skips": [2],
                "inputs": 3,
                "outputs": [27, 29],
            },
            "ground": True,
        }
    )
    net = lat.build(seed=0)
    assert lat.input_size() == net.inputs.size == 3 and lat.output_size() == 2
    assert net.graph.output_nodes.tolist() == [27, 29]
    edges = ResistorConfig.model_validate(
        {
            "kind": "resistor",
            "graph": {
                "type": "edges",
                "n_nodes": 4,
                "edges": [[0, 2], [1, 2], [2, 3]],
                "input_nodes": [0, 1],
                "output_nodes": [3],
            },
        }
    )
    assert edges.build(seed=0).n_edges == 3


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"conductance": {"min": 1e-2, "max": 1e-3}}, "min .* must be < max"),
        ({"conductance": {"min": 1e-4, "max": 1e-3, "init_low": 1e-5}}, "init range"),
        ({"conductance": {"min": -1.0}}, "greater than 0"),
        ({"graph": {"type": "ring", "n": 3}}, "ring"),
        ({"graph": {"type": "layered", "sizes": [3]}}, "at least 2"),
        ({"graph": {"type": "lattice", "rows": 3, "cols": 4, "inputs": 6}}, "inputs = 6"),
        ({"graph": {"type": "lattice", "rows": 3, "cols": 4, "neighbours": 3}}, "neighbours"),
        (
            {
                "graph": {
                    "type": "edges",
                    "n_nodes": 4,
                    "edges": [[0, 1], [2, 3]],
                    "input_nodes": [0],
                    "output_nodes": [1],
                }
            },
            "node 2 is not connected to any input",
        ),
        (
            {
                "graph": {
                    "type": "edges",
                    "n_nodes": 3,
                    "edges": [[0, 1], [1, 0]],
                    "input_nodes": [0],
                    "output_nodes": [1],
                }
            },
            "both join nodes 0 and 1",
        ),
        ({"graph": {"type": "layered", "sizes": [1, 3, 2]}}, "single source node"),
        ({"wires": 3}, "wires"),
    ],
)
def test_bad_configs_are_refused_naming_the_problem(patch, message):
    raw: dict[str, Any] = {"kind": "resistor", "graph": {"type": "layered", "sizes": [4, 3, 2]}}
    raw.update(patch)
    with pytest.raises(ValidationError, match=message):
        ResistorConfig.model_validate(raw)


def test_config_fields_document_themselves():
    schema = ResistorConfig.model_json_schema()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"field {name!r} has no description"
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
