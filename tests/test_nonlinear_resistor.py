"""Tests of the non-linear resistor networks (diodes, transistor edges) and their config.

Independent oracles: Kirchhoff's current law evaluated here from the element laws (Shockley
formula, series resistance, edge conductances), the KKT conditions of ideal diodes and a generic
bound-constrained minimiser (L-BFGS-B) of the energy, central finite differences of the
equilibrium energy and of the loss, and the EP estimators of :mod:`physlearn.estimators`.

Random networks: hypothesis draws sizes and a seed; numpy draws the continuous values from that
seed (conductances in [0.5, 2] S, inputs in [-1, 1] V), as in ``test_resistor.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.optimize
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from physlearn.config import parse_config
from physlearn.estimators import EquilibriumPropagation, centred, one_sided
from physlearn.losses import MSE
from physlearn.simulators.graphs.generators import Graph, from_edge_list
from physlearn.simulators.resistor.circuit import (
    Backend,
    Element,
    clipping_diodes,
    deep_diode_network,
)
from physlearn.simulators.resistor.config import DiodeResistorConfig
from physlearn.simulators.resistor.elements import (
    DiodeKind,
    DiodeModel,
    TransistorModel,
    thermal_voltage,
)
from physlearn.simulators.resistor.linear import LinearResistorNetwork
from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork
from physlearn.system import ExactGradient, Nudge

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers ---------------------------------------------------------------------------------
def random_graph(rng: np.random.Generator, n_free: int, n_in: int, n_out: int, extra: int) -> Graph:
    """Random connected graph: a spanning tree over the free nodes, one edge from every input to
    a free node, plus ``extra`` random edges."""
    n = n_in + n_free
    nodes = rng.permutation(n)
    inputs, free = nodes[:n_in], nodes[n_in:]
    parent = (rng.random(n_free - 1) * np.arange(1, n_free)).astype(np.int64)
    tree = np.stack([free[1:], free[parent]], axis=1)
    feed = np.stack([inputs, free[rng.integers(0, n_free, n_in)]], axis=1)
    more = rng.integers(0, n, size=(extra, 2))
    edges = np.sort(np.concatenate([tree, feed, more]), axis=1)
    edges = np.unique(edges[edges[:, 0] != edges[:, 1]], axis=0)
    return from_edge_list(n, edges[rng.permutation(len(edges))], inputs, free[:n_out])


def random_network(
    seed: int,
    kind: DiodeKind,
    *,
    n_free: int = 8,
    n_in: int = 3,
    n_out: int = 2,
    extra: int = 6,
    rails: tuple[float, float] = (-0.2, 0.2),
    free_pairs: int = 0,
    series: float = 0.0,
    saturation: float = 1e-9,
    element: Element = "resistor",
    backend: Backend = "auto",
    batch: int = 4,
    tol: float = 1e-13,
) -> tuple[NonlinearResistorNetwork, np.ndarray, np.ndarray]:
    """A random network with clipping diodes on some free nodes (and, for Shockley, diodes
    between random free nodes); returns (network, inputs, targets)."""
    rng = np.random.default_rng(seed)
    g = random_graph(rng, n_free, n_in, n_out, extra)
    hidden = np.setdiff1d(np.arange(g.n_nodes), g.input_nodes)
    chosen = hidden[rng.random(hidden.size) < 0.7]
    if chosen.size == 0:
        chosen = hidden[:1]
    an, ca, bias = clipping_diodes(g, [chosen], [rails])
    if free_pairs:
        pairs = rng.choice(hidden, size=(free_pairs, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        an = np.concatenate([an, pairs[:, 0]])
        ca = np.concatenate([ca, pairs[:, 1]])
    model = DiodeModel(kind=kind, saturation_current=saturation, series_resistance=series)
    bounds, init = ((0.1, 10.0), (0.5, 2.0)) if element == "resistor" else ((0.5, 3.0), (1.0, 2.0))
    net = NonlinearResistorNetwork(
        g,
        an,
        ca,
        model,
        bias,
        element=element,
        transistor=TransistorModel(k=1.0, v_th=0.7, smoothing=0.1),
        bounds=bounds,
        init=init,
        seed=seed,
        backend=backend,
        tol=tol,
    )
    x = rng.uniform(-1.0, 1.0, (batch, n_in))
    t = rng.uniform(-0.5, 0.5, (batch, n_out))
    return net, x, t


def current_leaving(net: NonlinearResistorNetwork, v: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Current (A) leaving every node (graph nodes, then bias sources) through the edges
    (g_e (V_a - V_b)) and the diodes (i from anode to cathode), per sample: KCL from the laws."""
    g = net.graph
    gc = net.edge_conductance()
    leave = np.zeros_like(v)
    a, b = g.edges.T
    cur = gc * (v[:, a] - v[:, b])
    np.add.at(leave.T, a, cur.T)
    np.subtract.at(leave.T, b, cur.T)
    an, ca = net.circuit()["diodes"].T
    np.add.at(leave.T, an, i.T)
    np.subtract.at(leave.T, ca, i.T)
    return leave


def diode_voltage(net: NonlinearResistorNetwork, v: np.ndarray) -> np.ndarray:
    an, ca = net.circuit()["diodes"].T
    return v[:, an] - v[:, ca]


def slope(betas: np.ndarray, errors: np.ndarray) -> float:
    return float(np.polyfit(np.log(betas), np.log(errors), 1)[0])


# -- element laws ----------------------------------------------------------------------------
def test_element_laws_and_their_derivatives():
    d = DiodeModel(saturation_current=1e-12, emission=1.5)
    assert d.vte == pytest.approx(1.5 * thermal_voltage(300.15))
    assert thermal_voltage(300.15) == pytest.approx(0.02586492, rel=1e-6)
    v = np.linspace(-1.0, 0.7, 9)
    h = 1e-6
    assert np.allclose(d.current(v), 1e-12 * np.expm1(v / d.vte), rtol=1e-14)
    fd_phi = (d.cocontent(v + h) - d.cocontent(v - h)) / (2 * h)
    assert np.allclose(fd_phi, d.current(v), rtol=1e-5, atol=1e-15)
    fd_i = (d.current(v + h) - d.current(v - h)) / (2 * h)
    assert np.allclose(fd_i, d.conductance(v), rtol=1e-5, atol=1e-15)
    assert d.cocontent(np.zeros(1))[0] == 0.0 and np.all(d.cocontent(v) >= 0)
    t = TransistorModel(k=2e-3, v_th=0.7, smoothing=0.04)
    vg = np.linspace(0.0, 3.0, 13)
    fd_g = (t.conductance(vg + h) - t.conductance(vg - h)) / (2 * h)
    assert np.allclose(fd_g, t.dconductance(vg), rtol=1e-6)
    assert np.all(t.conductance(vg) > 0)
    # far above threshold: the triode conductance K (V_G - V_th); far below: exponential tail
    assert t.conductance(np.array([3.0]))[0] == pytest.approx(2e-3 * 2.3, rel=1e-9)
    assert t.conductance(np.array([0.0]))[0] < 1e-10
    assert "IS=1e-12 N=1.5" in d.spice_model()


# -- equilibria ------------------------------------------------------------------------------
@FAST
@given(
    seed=st.integers(0, 10_000),
    n_free=st.integers(3, 12),
    series=st.sampled_from([0.0, 0.3]),
    free_pairs=st.integers(0, 3),
    backend=st.sampled_from(["dense", "sparse"]),
)
# a clamp far from the free outputs once drove a warm-started junction 1.3 V beyond its knee
@example(seed=118, n_free=3, series=0.3, free_pairs=3, backend="sparse")
def test_shockley_equilibrium_satisfies_kcl_and_the_element_laws(
    seed: int, n_free: int, series: float, free_pairs: int, backend: Backend
):
    net, x, t = random_network(
        seed, "shockley", n_free=n_free, series=series, free_pairs=free_pairs, backend=backend
    )
    x = 3.0 * x  # drive diodes well into conduction
    for nudge in (None, Nudge(beta=0.5, target=t), Nudge(beta=0.3, error=t), Nudge(clamp=t)):
        free = net.equilibrate(x)
        eq = free if nudge is None else net.equilibrate(x, nudge, warm_start=free.state)
        assert eq.converged is not None and eq.converged.all()
        v = net.node_voltages(eq, x)
        i = eq.observables["diode_current"]
        vd = diode_voltage(net, v)
        m = net.model
        # element law: i = I_s (exp(v_j / n V_T) - 1) with the junction at v_j = v - i R_s
        law = m.saturation_current * np.expm1((vd - i * m.series_resistance) / m.vte)
        assert np.all(np.abs(law - i) <= 1e-8 * (np.abs(i) + m.saturation_current))
        g = net.graph
        o = g.output_nodes
        free_nodes = np.setdiff1d(np.arange(g.n_nodes), g.input_nodes)
        leave = current_leaving(net, v, i)
        inject = np.zeros_like(v)  # nudge currents into the outputs
        if nudge is not None and nudge.kind == "target":
            inject[:, o] = 0.5 * (t - v[:, o])
        elif nudge is not None and nudge.kind == "error":
            inject[:, o] = -0.3 * t
        elif nudge is not None:  # clamped outputs: held at the targets, KCL elsewhere
            assert np.allclose(v[:, o], t, atol=1e-14)
            free_nodes = np.setdiff1d(free_nodes, o)
        scale = float(np.abs(leave).max() + np.abs(i).max())
        assert np.abs(leave - inject)[:, free_nodes].max() <= 1e-9 * scale
        assert eq.residual is not None and eq.residual.max() <= 1e-9 * scale


@FAST
@given(
    seed=st.integers(0, 10_000),
    n_free=st.integers(3, 14),
    backend=st.sampled_from(["dense", "sparse"]),
)
def test_ideal_diode_equilibrium_satisfies_kkt_and_minimises_the_energy(
    seed: int, n_free: int, backend: Backend
):
    net, x, t = random_network(seed, "ideal", n_free=n_free, backend=backend, rails=(-0.1, 0.1))
    for nudge in (None, Nudge(beta=0.5, target=t), Nudge(beta=0.2, error=t)):
        eq = net.equilibrate(x, nudge)
        assert eq.converged is not None and eq.converged.all()
        v = net.node_voltages(eq, x)
        i = eq.observables["diode_current"]
        vd = diode_voltage(net, v)
        # complementarity: i >= 0, v <= 0, i v = 0 (every diode touches a rail here)
        assert vd.max() <= 1e-12
        assert i.min() >= -1e-12
        assert np.abs(i * vd).max() <= 1e-12
        # KCL with the diode currents, nudge included
        g = net.graph
        o = g.output_nodes
        leave = current_leaving(net, v, i)
        if nudge is not None and nudge.kind == "target":
            leave[:, o] -= 0.5 * (t - v[:, o])
        elif nudge is not None:
            leave[:, o] += 0.2 * t
        free_nodes = np.setdiff1d(np.arange(g.n_nodes), g.input_nodes)
        assert np.abs(leave[:, free_nodes]).max() <= 1e-10
    # an independent minimiser of the energy under the diode bounds (free phase)
    eq = net.equilibrate(x)
    v = net.node_voltages(eq, x)
    for k in range(x.shape[0]):
        ref = lbfgsb_equilibrium(net, x[k])
        assert np.allclose(v[k, : g.n_nodes], ref, atol=1e-7)


def lbfgsb_equilibrium(net: NonlinearResistorNetwork, xin: np.ndarray) -> np.ndarray:
    """min 1/2 sum g (dV)^2 over the free nodes, with each clipped node inside its rails."""
    g = net.graph
    n = g.n_nodes
    gc = net.edge_conductance()
    free = np.setdiff1d(np.arange(n), g.input_nodes)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    an, ca = net.circuit()["diodes"].T
    for a, c in zip(an, ca, strict=True):
        if a < n <= c:
            hi[a] = min(hi[a], net.bias[c - n])
        elif c < n <= a:
            lo[c] = max(lo[c], net.bias[a - n])
    i, j = g.edges.T

    def full(vf: np.ndarray) -> np.ndarray:
        v = np.zeros(n)
        v[g.input_nodes] = xin
        v[free] = vf
        return v

    def fun(vf: np.ndarray) -> tuple[float, np.ndarray]:
        v = full(vf)
        d = v[i] - v[j]
        grad = np.zeros(n)
        np.add.at(grad, i, gc * d)
        np.subtract.at(grad, j, gc * d)
        return 0.5 * float(gc @ d**2), grad[free]

    x0 = np.clip(np.zeros(free.size), lo[free], hi[free])
    res = scipy.optimize.minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lo[free], hi[free], strict=True)),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    return full(res.x)


def test_backends_agree_and_warm_starts_cut_iterations():
    net_d, x, t = random_network(3, "shockley", n_free=30, extra=40, backend="dense", batch=8)
    net_s, _, _ = random_network(3, "shockley", n_free=30, extra=40, backend="sparse", batch=8)
    x = 4.0 * x
    for nudge in (None, Nudge(beta=0.5, target=t), Nudge(beta=0.2, error=t), Nudge(clamp=t)):
        ed, es = net_d.equilibrate(x, nudge), net_s.equilibrate(x, nudge)
        assert np.allclose(net_d.node_voltages(ed, x), net_s.node_voltages(es, x), atol=1e-11)
        # the diodes conduct: up to tens of mA, far beyond I_s
        assert np.abs(ed.observables["diode_current"]).max() > 1e-2
    free = net_d.equilibrate(x)
    cold = net_d.equilibrate(x, Nudge(beta=1e-3, target=t))
    warm = net_d.equilibrate(x, Nudge(beta=1e-3, target=t), warm_start=free.state)
    assert np.allclose(cold.outputs, warm.outputs, atol=1e-12)
    assert warm.iterations is not None and cold.iterations is not None
    assert warm.iterations.sum() < cold.iterations.sum()


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_a_negative_target_nudge_past_the_saddle_is_flagged(backend: Backend):
    g, an, ca, bias = deep_diode_network([4, 5, 2], [(-0.2, 0.2)])
    net = NonlinearResistorNetwork(
        g, an, ca, DiodeModel(), bias, bounds=(0.1, 10.0), seed=0, backend=backend
    )
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4))
    small = net.equilibrate(x, Nudge(beta=-0.1, target=np.zeros((3, 2))))
    huge = net.equilibrate(x, Nudge(beta=-100.0, target=np.zeros((3, 2))))
    assert small.converged is not None and small.converged.all()
    assert huge.converged is not None and not huge.converged.any()


def test_without_diodes_it_is_the_linear_network():
    rng = np.random.default_rng(5)
    g = random_graph(rng, 10, 3, 2, 8)
    lin = LinearResistorNetwork(g, bounds=(0.1, 10.0), init=(0.5, 2.0), seed=5)
    net = NonlinearResistorNetwork(
        g, bounds=(0.1, 10.0), params=lin.get_parameters()["conductance"]
    )
    x = rng.uniform(-1, 1, (5, 3))
    t = rng.uniform(-1, 1, (5, 2))
    for nudge in (None, Nudge(beta=0.3, target=t), Nudge(beta=0.3, error=t), Nudge(clamp=t)):
        a, b = lin.equilibrate(x, nudge), net.equilibrate(x, nudge)
        assert np.allclose(a.outputs, b.outputs, atol=1e-12)
        assert np.allclose(a.conjugates["conductance"], b.conjugates["conductance"], atol=1e-12)
        assert a.energy is not None and b.energy is not None
        assert np.allclose(a.energy, b.energy, atol=1e-12)


def test_ideal_diodes_clip_a_deep_network_to_its_rails():
    g, an, ca, bias = deep_diode_network([6, 8, 8, 3], [(-0.05, 0.05), (-0.02, 0.02)])
    assert bias.tolist() == [-0.05, 0.05, -0.02, 0.02]
    assert an.size == ca.size == 2 * 16
    net = NonlinearResistorNetwork(g, an, ca, DiodeModel(kind="ideal"), bias, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (7, 6))
    eq = net.equilibrate(x)
    v = net.node_voltages(eq, x)
    assert v[:, 6:14].min() >= -0.05 - 1e-15 and v[:, 6:14].max() <= 0.05 + 1e-15
    assert v[:, 14:22].min() >= -0.02 - 1e-15 and v[:, 14:22].max() <= 0.02 + 1e-15
    assert np.isclose(np.abs(v[:, 6:22]), 0.05).any() or np.isclose(np.abs(v[:, 14:22]), 0.02).any()


# -- conjugates and gradients ----------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,element", [("shockley", "resistor"), ("ideal", "resistor"), ("shockley", "transistor")]
)
def test_conjugates_are_finite_differences_of_the_equilibrium_energy(
    kind: DiodeKind, element: Element
):
    net, x, _ = random_network(
        11, kind, n_free=9, element=element, series=0.2 * (kind == "shockley")
    )
    x = 2.0 * x
    name = net.parameter_groups[0].name
    theta = net.get_parameters()[name]
    eq = net.equilibrate(x)
    conj = eq.conjugates[name]
    h = 1e-6
    for e in range(theta.size):
        up, dn = theta.copy(), theta.copy()
        up[e] += h
        dn[e] -= h
        net.set_parameters({name: up})
        ep = net.equilibrate(x).energy
        net.set_parameters({name: dn})
        em = net.equilibrate(x).energy
        assert ep is not None and em is not None
        fd = (ep - em) / (2 * h)
        assert np.allclose(fd, conj[:, e], rtol=1e-5, atol=1e-9), (e, fd, conj[:, e])
    net.set_parameters({name: theta})
    # transistor: dE/dV_G = 1/2 dV^2 g'(V_G)
    if element == "transistor":
        eq = net.equilibrate(x)
        v = net.node_voltages(eq, x)
        i, j = net.graph.edges.T
        expect = 0.5 * (v[:, i] - v[:, j]) ** 2 * net.transistor.dconductance(theta)
        assert np.allclose(conj, expect, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "kind,element", [("shockley", "resistor"), ("ideal", "resistor"), ("shockley", "transistor")]
)
def test_exact_gradient_matches_finite_differences_of_the_loss(kind: DiodeKind, element: Element):
    net, x, t = random_network(21, kind, n_free=8, element=element)
    x = 2.0 * x
    provider: ExactGradient = net  # the simulator offers the implicit gradient
    assert isinstance(provider, ExactGradient)
    loss = MSE()
    name = net.parameter_groups[0].name
    theta = net.get_parameters()[name]
    grad = net.exact_gradient(x, t, loss)[name]
    h = 1e-6
    fd = np.zeros_like(theta)
    for e in range(theta.size):
        vals = []
        for s in (h, -h):
            th = theta.copy()
            th[e] += s
            net.set_parameters({name: th})
            vals.append(float(loss.value(net.equilibrate(x).outputs, t).mean()))
        fd[e] = (vals[0] - vals[1]) / (2 * h)
    net.set_parameters({name: theta})
    assert np.allclose(grad, fd, rtol=1e-5, atol=1e-9 * np.abs(fd).max())
    assert np.abs(grad).max() > 0


def deep_network(
    seed: int, kind: DiodeKind, element: Element = "resistor"
) -> tuple[NonlinearResistorNetwork, np.ndarray, np.ndarray]:
    """A small deep diode-resistor network (4 -> 6 -> 6 -> 2) with clipping diodes; conductances
    in [0.5, 2] S (gates in [1, 2] V), inputs in [-2, 2] V, targets in [-0.3, 0.3] V."""
    g, an, ca, bias = deep_diode_network([4, 6, 6, 2], [(-0.3, 0.3), (-0.15, 0.15)])
    bounds, init = ((0.1, 10.0), (0.5, 2.0)) if element == "resistor" else ((0.5, 3.0), (1.0, 2.0))
    net = NonlinearResistorNetwork(
        g,
        an,
        ca,
        DiodeModel(kind=kind, saturation_current=1e-9),
        bias,
        element=element,
        transistor=TransistorModel(k=1.0, v_th=0.7, smoothing=0.1),
        bounds=bounds,
        init=init,
        seed=seed,
        tol=1e-13,
    )
    rng = np.random.default_rng(seed)
    return net, rng.uniform(-2, 2, (6, 4)), rng.uniform(-0.3, 0.3, (6, 2))


@pytest.mark.parametrize(
    "kind,element", [("shockley", "resistor"), ("ideal", "resistor"), ("shockley", "transistor")]
)
def test_ep_error_shrinks_as_beta_one_sided_and_beta_squared_centred(
    kind: DiodeKind, element: Element
):
    """log-log slopes of the relative error of EP against the implicit gradient, beta from 1e-1
    to 1e-4 S (target nudge): about 1 one-sided and 2 centred. The fit over the whole range
    includes beta = 0.1 S, a nudge of ~5 % of the output conductance, not yet asymptotic: its
    tolerance is wider than that of the local slope over the last decade."""
    net, x, t = deep_network(4, kind, element)
    loss = MSE()
    name = net.parameter_groups[0].name
    free = net.equilibrate(x)
    if kind == "ideal":  # the implicit gradient needs a point away from kinks: check it is
        st_ = free.state
        i = free.observables["diode_current"]
        v = net.node_voltages(free, x)
        vd = diode_voltage(net, v)
        assert (st_.act_hi | st_.act_lo).sum() >= 3  # the diodes do clip
        assert np.all((np.abs(i) > 1e-4) | (vd < -1e-4))  # strict complementarity
    exact = net.exact_gradient(x, t, loss)[name]
    rng = np.random.default_rng(0)
    betas = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    err1: list[float] = []
    err2: list[float] = []
    for b in betas:
        for pairs, errs in ((one_sided(b), err1), (centred(b), err2)):
            est = EquilibriumPropagation(pairs, nudge="target").estimate(net, x, t, loss, rng)
            errs.append(float(np.linalg.norm(est.gradient[name] - exact) / np.linalg.norm(exact)))
            assert all(p.eq.converged is not None and p.eq.converged.all() for p in est.phases)
    e1, e2 = np.array(err1), np.array(err2)
    s1, s2 = slope(betas, e1), slope(betas, e2)
    assert 0.85 <= s1 <= 1.15, (err1, s1)
    assert 1.75 <= s2 <= 2.25, (err2, s2)
    assert 0.95 <= slope(betas[-2:], e1[-2:]) <= 1.05, err1
    assert 1.9 <= slope(betas[-2:], e2[-2:]) <= 2.1, err2
    assert e2[-1] < 1e-6


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"saturation_current": -1e-14}, "saturation_current must be a finite positive"),
        ({"saturation_current": math.nan}, "saturation_current must be a finite positive"),
        ({"emission": 0.0}, "emission coefficient must be a finite positive"),
        ({"temperature": -3.0}, "temperature must be a finite positive"),
        ({"series_resistance": -1.0}, "series_resistance must be finite and >= 0"),
        ({"kind": "ideal", "series_resistance": 1.0}, "ideal diode takes no series_resistance"),
        ({"kind": "zener"}, "diode kind must be 'ideal' or 'shockley'"),
    ],
)
def test_non_physical_diodes_are_refused(kwargs: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        DiodeModel(**kwargs)


def test_non_physical_networks_are_refused_with_a_clear_message():
    g = from_edge_list(4, [[0, 2], [1, 2], [2, 3], [1, 3]], [0, 1], [3])
    with pytest.raises(ValueError, match="k .* must be a finite positive"):
        TransistorModel(k=0.0)
    with pytest.raises(ValueError, match="0 < lower"):
        NonlinearResistorNetwork(g, bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match="joins two free nodes"):
        NonlinearResistorNetwork(g, [2], [3], DiodeModel(kind="ideal"))
    with pytest.raises(ValueError, match="joins two sources"):
        NonlinearResistorNetwork(g, [0], [1], DiodeModel())
    with pytest.raises(ValueError, match="is not a node"):
        NonlinearResistorNetwork(g, [2], [7], DiodeModel(), [0.1])
    with pytest.raises(ValueError, match="to itself"):
        NonlinearResistorNetwork(g, [2], [2], DiodeModel())
    with pytest.raises(ValueError, match="bias source voltages must be finite"):
        NonlinearResistorNetwork(g, [2], [4], DiodeModel(), [math.inf])
    # ideal diodes that would short two sources through a node
    net = NonlinearResistorNetwork(g, [2, 5], [4, 2], DiodeModel(kind="ideal"), [0.0, 0.5])
    with pytest.raises(ValueError, match="short-circuit sources at node 2"):
        net.equilibrate(np.zeros((1, 2)))
    ok = NonlinearResistorNetwork(g, [2], [4], DiodeModel(), [0.1], bounds=(0.1, 1.0))
    with pytest.raises(ValueError, match="outside the bounds"):
        ok.set_parameters({"conductance": np.full(4, 2.0)})
    with pytest.raises(ValueError, match="real and finite"):
        ok.set_parameters({"conductance": np.array([0.5, 0.5, math.nan, 0.5])})
    with pytest.raises(ValueError, match="inputs must have shape"):
        ok.equilibrate(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="complex"):
        ok.equilibrate(np.zeros((1, 2)), Nudge(beta=1j, target=np.zeros((1, 1))))


def deep_config(**diodes: Any) -> dict[str, Any]:
    return {
        "kind": "diode_resistor",
        "graph": {"type": "layered", "sizes": [6, 5, 4, 2]},
        "diodes": {"rails": [{"low": -0.1, "high": 0.1}], **diodes},
    }


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"rails": [{"low": 0.1, "high": -0.1}]}, "rails need finite low < high"),
        ({"model": {"kind": "ideal", "series_resistance": 5.0}}, "no series_resistance"),
        ({"model": {"kind": "shockley", "saturation_current": -1.0}}, "greater than 0"),
        ({"model": {"kind": "shockley", "emission": 0.0}}, "greater than 0"),
        ({"rails": []}, "needs 'rails'"),
        ({"rails": [{"low": -1, "high": 1}] * 3}, "one rail pair or one per hidden layer"),
        ({"placement": [[0, 99]], "rails": [], "sources": [0.1]}, "refers to node 99"),
        ({"placement": [[3, 3]], "rails": [], "sources": [0.1]}, "joins node 3 to itself"),
    ],
)
def test_bad_configs_are_refused_naming_the_problem(patch: dict[str, Any], message: str):
    raw = deep_config()
    raw["diodes"].update(patch)
    with pytest.raises(ValidationError, match=message):
        DiodeResistorConfig.model_validate(raw)


def test_shipped_digits_config_builds_the_deep_network_it_describes():
    from pathlib import Path

    import yaml

    raw = yaml.safe_load(
        (Path(__file__).parents[1] / "configs/resistor_digits_deep.yaml").read_text()
    )
    cfg = parse_config(raw)
    net = cfg.system.build(0)
    assert isinstance(net, NonlinearResistorNetwork)
    assert net.inputs.size == 130 and net.outputs.size == 10
    assert net.n_diodes == 200 and net.bias.tolist() == [-0.08, 0.08]
    assert net.parameter_groups[0].shape == (130 * 100 + 100 * 10,)
    assert net.backend == "dense" and net.n_ports == 110


def test_config_builds_explicit_and_transistor_networks():
    raw = {
        "kind": "diode_resistor",
        "graph": {
            "type": "edges",
            "n_nodes": 4,
            "edges": [[0, 2], [1, 2], [2, 3]],
            "input_nodes": [0, 1],
            "output_nodes": [3],
        },
        "diodes": {
            "model": {"kind": "shockley", "series_resistance": 10.0},
            "placement": [[2, 4], [5, 3]],
            "sources": [0.3, -0.3],
        },
        "weights": {"element": "transistor", "gate": {"min": 1.0, "max": 2.0}},
    }
    net = DiodeResistorConfig.model_validate(raw).build(3)
    assert net.parameter_groups[0].name == "gate" and net.parameter_groups[0].unit == "V"
    assert net.n_diodes == 2 and net.bias.tolist() == [0.3, -0.3]
    eq = net.equilibrate(np.array([[1.0, -1.0]]))
    assert eq.converged is not None and eq.converged.all()
    assert set(eq.conjugates) == {"gate"}


def test_a_few_ep_steps_train_the_deep_network():
    g, an, ca, bias = deep_diode_network([6, 10, 2], [(-0.1, 0.1)])
    net = NonlinearResistorNetwork(
        g, an, ca, DiodeModel(kind="ideal"), bias, bounds=(1e-5, 1e-2), init=(1e-4, 1e-3), seed=2
    )
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (16, 6))
    t = np.where(x[:, :2] * x[:, 2:4] > 0, 0.05, -0.05)  # a non-linear target
    loss = MSE()
    est = EquilibriumPropagation(centred(1e-5), nudge="target")
    before = float(loss.value(net.equilibrate(x).outputs, t).mean())
    theta = net.get_parameters()["conductance"]
    for _ in range(30):
        grad = est.estimate(net, x, t, loss, rng).gradient["conductance"]
        theta = np.clip(theta - 2e-4 * np.sign(grad), 1e-5, 1e-2)
        net.set_parameters({"conductance": theta})
    after = float(loss.value(net.equilibrate(x).outputs, t).mean())
    assert after < 0.9 * before
