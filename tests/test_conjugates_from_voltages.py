"""``conjugates_from_voltages``: the resistor simulators' conjugates and energy from node voltages
alone (what a station mirroring them measures) equal those of their own equilibria -- linear,
ideal diodes, Shockley diodes with and without series resistance, transistor edges -- and bad
voltages or parameters are refused naming what is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.simulators.graphs.generators import layered
from physlearn.simulators.resistor.circuit import clipping_diodes
from physlearn.simulators.resistor.elements import DiodeModel
from physlearn.simulators.resistor.linear import LinearResistorNetwork
from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork

MODELS = {
    "ideal": DiodeModel(kind="ideal"),
    "shockley": DiodeModel(kind="shockley"),
    "shockley_rs": DiodeModel(kind="shockley", series_resistance=200.0),
}


def _diode_net(sizes: list[int], model: str, seed: int, **kw: Any) -> NonlinearResistorNetwork:
    graph = layered(sizes)
    hidden = [np.arange(sizes[0], sizes[0] + sizes[1], dtype=np.int64)]
    an, ca, bias = clipping_diodes(graph, hidden, [(-0.3, 0.4)])
    return NonlinearResistorNetwork(graph, an, ca, MODELS[model], bias, seed=seed, **kw)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_in=st.integers(2, 5),
    n_hid=st.integers(1, 6),
    n_out=st.integers(1, 3),
    model=st.sampled_from(sorted(MODELS)),
    element=st.sampled_from(["resistor", "transistor"]),
    seed=st.integers(0, 2**16),
)
def test_diode_network_from_its_own_voltages(
    n_in: int, n_hid: int, n_out: int, model: str, element: str, seed: int
) -> None:
    bounds = (1e-5, 1e-3) if element == "resistor" else (0.5, 3.0)
    net = _diode_net([n_in, n_hid, n_out], model, seed, element=element, bounds=bounds)
    x = np.random.default_rng(seed).uniform(-1.5, 1.5, (3, n_in))
    eq = net.equilibrate(x)
    v = net.node_voltages(eq, x)[:, : net.graph.n_nodes]
    conj, energy = net.conjugates_from_voltages(v)
    name = net.parameter_groups[0].name
    np.testing.assert_allclose(conj[name], eq.conjugates[name], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(energy, eq.energy, rtol=1e-6, atol=1e-15)


@settings(max_examples=20, deadline=None)
@given(n_in=st.integers(2, 5), n_hid=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_linear_network_from_voltages_and_given_params(n_in: int, n_hid: int, seed: int) -> None:
    """Voltages from the diode-free non-linear network (the same circuit); energy at other
    conductances than the held ones, outside the network's bounds, is sum g_e conj_e."""
    rng = np.random.default_rng(seed)
    graph = layered([n_in, n_hid, 2])
    g = rng.uniform(1e-5, 1e-3, graph.n_edges)
    lin = LinearResistorNetwork(graph, g)
    ref = NonlinearResistorNetwork(graph, params=g)
    x = rng.uniform(-1, 1, (4, n_in))
    v = ref.node_voltages(ref.equilibrate(x), x)
    eq = lin.equilibrate(x)
    conj, energy = lin.conjugates_from_voltages(v)
    np.testing.assert_allclose(
        conj["conductance"], eq.conjugates["conductance"], rtol=1e-8, atol=1e-15
    )
    np.testing.assert_allclose(energy, eq.energy, rtol=1e-8, atol=1e-15)
    other = rng.uniform(1.0, 2.0, graph.n_edges)  # outside (1e-5, 1e-2): a bench's truth
    _, e2 = lin.conjugates_from_voltages(v, {"conductance": other})
    np.testing.assert_allclose(e2, conj["conductance"] @ other, rtol=1e-12)


@pytest.mark.parametrize(
    ("voltages", "params", "match"),
    [
        (np.zeros((2, 5)), None, r"voltages must have shape \(batch, 6\)"),
        (np.full((1, 6), np.nan), None, "voltages must be real and finite"),
        (np.zeros((1, 6)), {"gate": np.ones(8)}, "conductance must be 8 finite values"),
        (np.zeros((1, 6)), {"conductance": np.ones(3)}, "conductance must be 8 finite values"),
    ],
)
def test_bad_voltages_or_params_are_refused(
    voltages: np.ndarray, params: dict[str, Any] | None, match: str
) -> None:
    for net in (
        _diode_net([2, 2, 2], "ideal", 0),
        LinearResistorNetwork(layered([2, 2, 2]), seed=0),
    ):
        with pytest.raises(ValueError, match=match):
            net.conjugates_from_voltages(voltages, params)
