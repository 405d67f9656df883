"""Emulated quantum hardware (Rydberg array, ion chain), the quantum elastic network, configs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import reduce
from typing import Any, Literal

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError
from threadpoolctl import threadpool_limits

from physlearn.estimators import EquilibriumPropagation, centred, one_sided
from physlearn.losses import get_loss
from physlearn.simulators.harmonic.config import ElasticConfig
from physlearn.simulators.harmonic.elastic import ElasticNetwork
from physlearn.simulators.quantum.config import QuantumConfig
from physlearn.simulators.quantum.ions import IonChain, coupling_matrix
from physlearn.simulators.quantum.ions_config import IonsConfig
from physlearn.simulators.quantum.lanczos import DegenerateGroundStateError
from physlearn.simulators.quantum.rydberg import C6_RAD_US_UM6, RydbergArray, blockade_radius
from physlearn.simulators.quantum.rydberg_config import RydbergConfig

TWO_PI = 2 * math.pi


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


# -- Rydberg ---------------------------------------------------------------------------------


def test_rydberg_without_drive_is_diagonal() -> None:
    pos = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 7.0]])
    arr = RydbergArray(
        pos,
        output_atoms=[0, 1, 2],
        params={"detuning": np.array([1.0, -2.0, 3.0]), "rabi": np.array(0.0)},
    )
    h = arr.model.basis.operator(arr.model.coefficients(arr.get_parameters()))
    off = h - sp.diags(h.diagonal())
    assert off.count_nonzero() == 0
    # diagonal = -sum Delta_i n_i + sum V_ij n_i n_j on each bitstring (bit 1 = |r>)
    v = C6_RAD_US_UM6[70] / np.array([6.0, 7.0, math.hypot(6, 7)]) ** 6
    bits = (np.arange(8)[:, None] >> np.array([2, 1, 0])) & 1
    ref = (
        -bits @ np.array([1.0, -2.0, 3.0])
        + v[0] * bits[:, 0] * bits[:, 1]
        + (v[1] * bits[:, 0] * bits[:, 2] + v[2] * bits[:, 1] * bits[:, 2])
    )
    np.testing.assert_allclose(h.diagonal(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_rydberg_blockade_suppresses_double_excitation() -> None:
    rabi, delta = TWO_PI * 2.0, TWO_PI * 5.0
    params = {"detuning": np.full(2, delta), "rabi": np.array(rabi)}
    near_d = 5.0
    assert near_d < 0.6 * blockade_radius(C6_RAD_US_UM6[70], rabi)
    near = RydbergArray(
        np.array([[0, 0], [near_d, 0]]), output_atoms=[0, 1], correlators=[(0, 1)], params=params
    )
    far = RydbergArray(
        np.array([[0, 0], [500.0, 0]]), output_atoms=[0, 1], correlators=[(0, 1)], params=params
    )
    y_near = near.equilibrate(np.zeros((1, 0))).outputs[0]
    y_far = far.equilibrate(np.zeros((1, 0))).outputs[0]
    # far apart: independent atoms, <n0 n1> = <n0><n1>, mostly excited (Delta > 0)
    assert y_far[2] == pytest.approx(y_far[0] * y_far[1], rel=1e-6)
    assert y_far[2] > 0.9
    # blockaded: |rr> weight strongly suppressed, one shared excitation instead
    assert y_near[2] < 1e-2 * y_far[2]
    assert y_near[0] == pytest.approx(y_near[1], abs=1e-9)
    assert y_near[0] + y_near[1] > 0.9


def test_rydberg_ep_matches_linear_response_and_refuses_limits() -> None:
    pos = np.array([[0.0, 0.0], [6.0, 0.0], [12.0, 0.0], [6.0, 6.0]])
    arr = RydbergArray(
        pos,
        input_atoms=[0],
        output_atoms=[2, 3],
        correlators=[(1, 3)],
        params={"detuning": np.array([3.0, 8.0, 12.0, 5.0]), "rabi": np.array(TWO_PI * 1.5)},
    )
    x = np.array([[5.0], [-10.0]])
    t = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    loss = get_loss("mse")
    exact = arr.exact_gradient(x, t, loss)
    ep = (
        EquilibriumPropagation(centred(1e-2))
        .estimate(arr, x, t, loss, np.random.default_rng(0))
        .gradient
    )
    for k in exact:
        np.testing.assert_allclose(ep[k], exact[k], atol=1e-6 * max(1, np.abs(exact[k]).max()))
    assert ep["rabi"].shape == () == arr.group("rabi").shape  # 0-d groups stay 0-d
    assert arr.group("detuning").unit == "rad/us"
    with pytest.raises(ValueError, match="detuning_max"):
        arr.equilibrate(np.array([[TWO_PI * 20.0]]))
    with pytest.raises(ValueError, match="outside the bounds"):
        arr.set_parameters({"detuning": np.zeros(4), "rabi": np.array(TWO_PI * 3.0)})


def _ryd(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "rydberg",
        "positions": [[0, 0], [6, 0], [12, 0]],
        "input_atoms": [0],
        "output_atoms": [2],
    }
    return base | kw


@pytest.mark.parametrize(
    ("overrides", "limit"),
    [
        ({"positions": [[0, 0], [3.5, 0], [9, 0]]}, "min_distance"),
        ({"init_rabi": TWO_PI * 3.0}, "rabi_max"),
        ({"detuning_bound": TWO_PI * 25.0}, "detuning_max"),
        ({"init_detuning": TWO_PI * 21.0}, "detuning_max"),
        ({"positions": [[6.0 * i, 0] for i in range(21)]}, "max_atoms"),
    ],
)
def test_rydberg_config_refuses_device_limits_naming_them(
    overrides: dict[str, Any], limit: str
) -> None:
    with pytest.raises(ValidationError, match=limit):
        RydbergConfig.model_validate(_ryd(**overrides))


def test_rydberg_config_builds_within_limits() -> None:
    cfg = RydbergConfig.model_validate(_ryd(correlators=[[1, 2]], rydberg_level=60))
    arr = cfg.build(0)
    assert arr.c6 == C6_RAD_US_UM6[60]
    assert (cfg.input_size(), cfg.output_size()) == (arr.inputs.size, arr.outputs.size) == (1, 2)


# -- ions -------------------------------------------------------------------------------------


def test_ion_x_field_turns_a_parity_crossing_into_an_avoided_crossing() -> None:
    # two ions, J X0 X1 + B0 Z0 + B1 Z1: the parity sectors have ground energies
    # -sqrt((B0 +- B1)^2 + J^2), equal whenever B0 B1 = 0
    params = {"field": np.array([0.5, 0.0]), "coupling": np.array([1.0])}
    crossing = IonChain(2, output_ions=[0], couplings="individual", params=params)
    with pytest.raises(DegenerateGroundStateError):
        crossing.equilibrate(np.zeros((1, 0)))
    avoided = IonChain(2, output_ions=[0], couplings="individual", params=params, x_field=0.2)
    assert np.isfinite(avoided.equilibrate(np.zeros((1, 0))).outputs).all()


def test_ion_couplings_symmetric_zero_diagonal_and_uniform_at_alpha_zero() -> None:
    j = coupling_matrix(6, 0.8, 1.3)
    np.testing.assert_array_equal(j, j.T)
    np.testing.assert_array_equal(np.diag(j), 0.0)
    assert j[0, 1] == pytest.approx(0.8)
    assert j[0, 3] == pytest.approx(0.8 / 3**1.3)
    j0 = coupling_matrix(6, 0.8, 1e-9)
    off = j0[~np.eye(6, dtype=bool)]
    np.testing.assert_allclose(off, 0.8, rtol=1e-8)
    chain = IonChain(5, output_ions=[0], alpha=0.0)
    jm = chain.coupling_matrix()
    np.testing.assert_array_equal(jm, jm.T)
    np.testing.assert_allclose(jm[~np.eye(5, dtype=bool)], 1.0)


@pytest.mark.parametrize("couplings", ["power_law", "individual"])
def test_ion_chain_ep_matches_linear_response(
    couplings: Literal["power_law", "individual"],
) -> None:
    chain = IonChain(
        5,
        input_ions=[0, 1],
        output_ions=[4],
        correlators=[(2, 4)],
        couplings=couplings,
        train_alpha=couplings == "power_law",
    )
    x = np.array([[0.3, -0.2], [-0.5, 0.4]])
    t = np.array([[0.2, 0.1], [-0.3, 0.0]])
    loss = get_loss("mse")
    exact = chain.exact_gradient(x, t, loss)
    ep = (
        EquilibriumPropagation(centred(1e-3))
        .estimate(chain, x, t, loss, np.random.default_rng(0))
        .gradient
    )
    assert set(exact) == (
        {"field", "coupling", "alpha"} if couplings == "power_law" else {"field", "coupling"}
    )
    for k in exact:
        np.testing.assert_allclose(ep[k], exact[k], atol=1e-7)
    assert np.abs(exact["coupling"]).max() > 1e-3


# -- elastic network --------------------------------------------------------------------------


def _fock_ground(k: np.ndarray, f: np.ndarray, masses: np.ndarray, n_max: int) -> dict[str, Any]:
    """Ground state by diagonalising H in a truncated Fock basis of unit-frequency modes."""
    n = len(f)
    a = np.diag(np.sqrt(np.arange(1, n_max)), 1)
    eye = np.eye(n_max)
    xs: list[np.ndarray] = []
    ps: list[np.ndarray] = []

    def embed(op: np.ndarray, i: int) -> np.ndarray:
        return reduce(np.kron, [op if q == i else eye for q in range(n)])

    for i in range(n):
        xs.append(embed((a + a.T) / np.sqrt(2 * masses[i]), i))
        ps.append(embed(1j * np.sqrt(masses[i] / 2) * (a.T - a), i))
    h = sum(ps[i] @ ps[i] / (2 * masses[i]) for i in range(n))
    h = h + 0.5 * sum(k[i, j] * xs[i] @ xs[j] for i in range(n) for j in range(n))
    h = h - sum(f[i] * xs[i] for i in range(n))
    e, v = np.linalg.eigh(h)
    g = v[:, 0]
    return {
        "energy": e[0],
        "x": np.array([np.vdot(g, xi @ g).real for xi in xs]),
        "xx": np.array([[np.vdot(g, xs[i] @ xs[j] @ g).real for j in range(n)] for i in range(n)]),
    }


def test_elastic_gaussian_ground_state_matches_fock_diagonalisation() -> None:
    # one oscillator: anchor only
    one = ElasticNetwork(1, [], [0], [0], masses=[1.3], seed=0)
    one.set_parameters({"spring": np.zeros(0), "anchor": np.array([0.8])})
    eq = one.equilibrate(np.array([[0.4]]))
    ref = _fock_ground(np.array([[0.8]]), np.array([0.4]), np.array([1.3]), 60)
    assert eq.energy[0] == pytest.approx(ref["energy"], abs=1e-9)
    assert eq.outputs[0, 0] == pytest.approx(ref["x"][0], abs=1e-9)
    assert eq.conjugates["anchor"][0, 0] == pytest.approx(0.5 * ref["xx"][0, 0], abs=1e-8)
    # two coupled oscillators with different masses
    two = ElasticNetwork(2, [(0, 1)], [0], [1], masses=[1.0, 2.0], seed=0)
    two.set_parameters({"spring": np.array([0.7]), "anchor": np.array([0.5, 1.1])})
    eq2 = two.equilibrate(np.array([[0.3]]))
    ref2 = _fock_ground(two.stiffness(), np.array([0.3, 0.0]), np.array([1.0, 2.0]), 28)
    assert eq2.energy[0] == pytest.approx(ref2["energy"], abs=1e-6)
    assert eq2.outputs[0, 0] == pytest.approx(ref2["x"][1], abs=1e-6)
    xx = ref2["xx"]
    assert eq2.conjugates["spring"][0, 0] == pytest.approx(
        0.5 * (xx[0, 0] + xx[1, 1] - 2 * xx[0, 1]), abs=1e-6
    )
    np.testing.assert_allclose(eq2.conjugates["anchor"][0], 0.5 * np.diag(xx), atol=1e-6)


def test_elastic_mean_is_classical_equilibrium_and_ep_is_exact() -> None:
    net = ElasticNetwork(
        5, [(0, 1), (1, 2), (2, 3), (3, 4), (0, 2), (1, 4)], [0, 1], [3, 4], seed=3, temperature=0.0
    )
    x = np.array([[1.0, -0.5], [0.3, 0.8], [-0.2, 0.1]])
    t = np.array([[0.1, 0.2], [0.0, -0.1], [0.3, 0.3]])
    eq = net.equilibrate(x)
    f = np.zeros((3, 5))
    f[:, [0, 1]] = x
    np.testing.assert_allclose(
        eq.observables["position"], np.linalg.solve(net.stiffness(), f.T).T, atol=1e-12
    )
    loss = get_loss("mse")
    exact = net.exact_gradient(x, t, loss)
    rng = np.random.default_rng(0)
    # the nudge is a linear force: centred EP is exact, one-sided has an O(beta) error
    ep2 = EquilibriumPropagation(centred(0.1)).estimate(net, x, t, loss, rng).gradient
    e1 = [
        np.linalg.norm(
            EquilibriumPropagation(one_sided(b)).estimate(net, x, t, loss, rng).gradient["spring"]
            - exact["spring"]
        )
        for b in (1e-1, 1e-2)
    ]
    for k in exact:
        np.testing.assert_allclose(ep2[k], exact[k], atol=1e-12)
    assert e1[0] / e1[1] == pytest.approx(10.0, rel=1e-6)


def test_elastic_thermal_state_widens_fluctuations_not_the_mean() -> None:
    cold = ElasticNetwork(3, [(0, 1), (1, 2)], [0], [2], seed=1)
    hot = ElasticNetwork(3, [(0, 1), (1, 2)], [0], [2], seed=1, temperature=2.0)
    x = np.array([[0.5]])
    a, b = cold.equilibrate(x), hot.equilibrate(x)
    np.testing.assert_allclose(a.outputs, b.outputs)
    assert np.all(b.conjugates["anchor"] > a.conjugates["anchor"])
    # high-T limit: <x_i^2> -> T (K^-1)_ii (equipartition)
    c_hot, _ = ElasticNetwork(3, [(0, 1), (1, 2)], [0], [2], seed=1, temperature=200.0).covariance()
    np.testing.assert_allclose(
        np.diag(c_hot), 200.0 * np.diag(np.linalg.inv(hot.stiffness())), rtol=1e-3
    )


# -- generic configs -------------------------------------------------------------------------


def phase_exploration_system(theta: tuple[float, float]) -> dict[str, Any]:
    return {
        "kind": "quantum",
        "qubits": 10,
        "h0": [{"pauli": "Z{i} X{i+1} Z{i+2}", "coeff": -0.5, "range": [0, 8]}],
        "trainable": [
            {"terms": [{"pauli": "X{i}", "coeff": -1.0, "range": [0, 10]}], "init": theta[0]},
            {"terms": [{"pauli": "Z{i} Z{i+1}", "coeff": -1.0, "range": [0, 9]}], "init": theta[1]},
        ],
        "outputs": [{"label": "X0X4", "terms": [{"pauli": "X0 X4"}]}],
    }


def test_generic_config_expands_templates_and_builds_the_phase_explorer() -> None:
    cfg = QuantumConfig.model_validate(phase_exploration_system((1.0, 0.3)))
    system = cfg.build(0)
    assert system.group("theta").shape == (2,)
    assert system.inputs.size == 0 and system.outputs.labels == ("X0X4",)
    x = np.zeros((1, 0))
    eq = system.equilibrate(x)
    # conjugate of theta_1 is <-sum X_i> (Hellmann--Feynman sign)
    basis = system.model.basis
    psi = system.equilibrate(x).state.vectors[0]
    sum_x = sum(basis.expectations(psi, np.array([basis.index(f"X{i}")]))[0] for i in range(10))
    assert eq.conjugates["theta"][0, 0] == pytest.approx(-sum_x, abs=1e-9)
    loss = get_loss("neg_abs")
    t = np.zeros((1, 1))
    exact = system.exact_gradient(x, t, loss)["theta"]
    ep = (
        EquilibriumPropagation(centred(2e-3))
        .estimate(system, x, t, loss, np.random.default_rng(0))
        .gradient
    )
    np.testing.assert_allclose(ep["theta"], exact, atol=1e-6)
    assert exact[0] < 0  # a stronger transverse field increases |<X0 X4>|


def test_generic_config_expresses_the_51_term_cluster_ising_sensor() -> None:
    sys_sites = range(8)
    trainable = [
        {"terms": [{"pauli": f"{p}{s} {p}{{i}}", "range": [0, 8]}], "separate": True}
        for s in (8, 9)
        for p in "XYZ"
    ] + [{"terms": [{"pauli": f"{p}8 {p}9"}], "separate": True} for p in "XYZ"]
    raw = {
        "kind": "quantum",
        "qubits": 10,
        "h0": [{"pauli": "Z{i} X{i+1} Z{i+2}", "coeff": -1.0, "range": [0, 8], "period": 8}],
        "inputs": [
            [{"pauli": "X{i}", "coeff": -1.0, "range": [0, 8]}],
            [{"pauli": "X{i} X{i+1}", "coeff": -1.0, "range": [0, 8], "period": 8}],
        ],
        "trainable": trainable,
        "outputs": [{"terms": [{"pauli": "X8"}]}, {"terms": [{"pauli": "X9"}]}],
        "shots": 10,
    }
    cfg = QuantumConfig.model_validate(raw)
    assert len(cfg.trainable_operators()) == 51
    system = cfg.build(0)
    assert system.group("theta").size == 51 and len(list(sys_sites)) == 8
    eq = system.equilibrate(np.array([[0.2, 0.1]]), rng=np.random.default_rng(0))
    assert eq.shots == 10 and eq.observables["measurement_settings"][0] == 3


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"outputs": [{"terms": [{"pauli": "X12"}]}]}, "out of range"),
        ({"h0": [{"pauli": "Z{i} Z{i+1}"}]}, "needs a 'range"),
        ({"bounds": [1.0, -1.0]}, "lower must be < upper"),
        ({"trainable": [{"terms": [{"pauli": "X0"}], "init": 9.0}]}, "outside bounds"),
        ({"temperature": 0.1, "qubits": 14}, "at most 12 qubits"),
    ],
)
def test_generic_config_refuses_bad_input(patch: dict[str, Any], message: str) -> None:
    raw = phase_exploration_system((1.0, 0.3)) | patch
    with pytest.raises(ValidationError, match=message):
        QuantumConfig.model_validate(raw)


def test_ions_and_elastic_configs_build() -> None:
    ions = IonsConfig.model_validate(
        {
            "kind": "ions",
            "n_ions": 4,
            "input_ions": [0],
            "output_ions": [3],
            "correlators": [[1, 2]],
        }
    ).build(0)
    assert ions.outputs.size == 2 and ions.group("coupling").shape == ()
    with pytest.raises(ValidationError, match="outside 0..3"):
        IonsConfig.model_validate({"kind": "ions", "n_ions": 4, "output_ions": [4]})
    el = ElasticConfig.model_validate(
        {
            "kind": "elastic",
            "graph": {
                "type": "edges",
                "n_nodes": 4,
                "edges": [[0, 1], [1, 2], [2, 3]],
                "input_nodes": [0],
                "output_nodes": [3],
            },
        }
    ).build(0)
    assert el.group("spring").shape == (3,) and el.inputs.size == 1
