"""Quantum sensors: the sensitivity d<O>/d(lambda) as an EP-trainable output (two replicas).

References are independent of the wrapper: dense diagonalisation of the machine's Hamiltonian
plus ``lambda * B`` (Kronecker products), the sum-over-states linear response for d<O>/d(lambda),
and central finite differences of the loss in theta by re-solving both replicas' ground states.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from physlearn.config import ConfigError, parse_config
from physlearn.estimators import EquilibriumPropagation, centred
from physlearn.losses import get_loss
from physlearn.simulators.quantum.config import QuantumConfig
from physlearn.simulators.quantum.ions_config import IonsConfig
from physlearn.simulators.quantum.rydberg_config import RydbergConfig
from physlearn.simulators.quantum.sensitivity import SensitivitySystem
from physlearn.simulators.quantum.system import QuantumSystem
from physlearn.system import ExactGradient, Nudge
from tests.test_quantum import gap_of, kron_matrix, random_labels, random_system

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quantum_sensitivity.yaml"
SETTINGS = settings(
    max_examples=int(os.environ.get("PHYSLEARN_QUANTUM_EXAMPLES", "6")),
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def dense_hamiltonian(machine: QuantumSystem, x: np.ndarray) -> np.ndarray:
    """``(batch, 2^n, 2^n)`` dense H(x, theta) of an unwrapped machine, by Kronecker products."""
    m = machine.model
    n = m.basis.n_qubits
    mats = np.stack([kron_matrix(m.basis.label(t), n) for t in range(m.basis.size)])
    coeffs = m.coefficients(machine.get_parameters())[None, :] + x @ m.input_ops
    return np.einsum("bt,tij->bij", coeffs, mats)


def sensor(seed: int, n: int, delta: float, point: float = 0.15) -> tuple[SensitivitySystem, str]:
    """A random machine (1 input, 4 trainable strings, 2 outputs) sensing a random string B
    (usually outside the machine's basis) through both outputs."""
    machine = random_system(seed, n)
    b_label = random_labels(np.random.default_rng([seed, 7]), n, 1)[0]
    return SensitivitySystem(machine, [(0.7, b_label)], point=point, delta=delta), b_label


def reference_outputs(
    system: SensitivitySystem, b_label: str, x: np.ndarray, delta: float
) -> np.ndarray:
    """y = (<O>(lambda0 + delta) - <O>(lambda0 - delta)) / 2 delta from dense ground states."""
    machine = system.replicas[0]
    inner = machine.model
    assert hasattr(inner, "inner")
    orig = inner.inner
    n = orig.basis.n_qubits
    b = 0.7 * kron_matrix(b_label, n)
    h = np.einsum(
        "bt,tij->bij",
        orig.coefficients(machine.get_parameters())[None, :] + x @ orig.input_ops,
        np.stack([kron_matrix(orig.basis.label(t), n) for t in range(orig.basis.size)]),
    )
    outs = np.stack(
        [
            sum(c * kron_matrix(orig.basis.label(t), n) for t, c in enumerate(o) if c)
            for o in orig.output_ops
        ]
    )
    ys = []
    for sign in (1.0, -1.0):
        lam = system.point + sign * delta
        _, v = np.linalg.eigh(h + lam * b)
        psi = v[:, :, 0]
        ys.append(np.einsum("bi,kij,bj->bk", psi.conj(), outs, psi).real)
    return (ys[0] - ys[1]) / (2 * delta)


def loss_fd(
    system: SensitivitySystem,
    b_label: str,
    x: np.ndarray,
    t: np.ndarray,
    loss_name: str,
    h: float = 1e-5,
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
            y = reference_outputs(system, b_label, x, system.delta)
            vals.append(float(loss.value(y, t).mean()))
        out[j] = (vals[0] - vals[1]) / (2 * h)
    system.set_parameters({"theta": p0})
    return out


def min_gap(system: SensitivitySystem, x: np.ndarray) -> float:
    return min(gap_of(rep, x) for rep in system.replicas)


@given(seed=st.integers(0, 100_000), n=st.integers(3, 5))
@SETTINGS
def test_ep_gradient_of_the_sensitivity_loss_equals_finite_differences_and_linear_response(
    seed: int, n: int
) -> None:
    system, b_label = sensor(seed, n, delta=0.05)
    x = np.array([[0.4], [-0.3]])
    assume(min_gap(system, x) > 0.1)
    as_protocol: object = system
    assert isinstance(as_protocol, ExactGradient)
    y = system.equilibrate(x).outputs
    np.testing.assert_allclose(y, reference_outputs(system, b_label, x, 0.05), atol=1e-8)
    t = np.zeros_like(y)
    rng = np.random.default_rng(0)
    for name in ("neg_abs", "neg_sq"):
        loss = get_loss(name)
        fd = loss_fd(system, b_label, x, t, name)
        exact = system.exact_gradient(x, t, loss)["theta"]
        scale = max(1.0, float(np.abs(fd).max()))
        np.testing.assert_allclose(exact, fd, atol=1e-6 * scale)
        # Centred EP is the gradient plus c beta^2 + O(beta^4); c grows as the replicas' gap
        # closes (seed 12592, n 3, gap 0.107: 1.5e-4 at beta 1e-5). Richardson's combination of
        # beta and beta/2 cancels the beta^2 term, and the bias itself must halve twice over.
        grads = {}
        for beta in (2e-5, 1e-5):
            ep = EquilibriumPropagation(centred(beta)).estimate(system, x, t, loss, rng)
            grads[beta] = ep.gradient["theta"]
            # every nudged phase of each replica started from that replica's free state
            assert [p.warm_start for p in ep.phases] == ["", "free", "free"]
        richardson = (4 * grads[1e-5] - grads[2e-5]) / 3
        np.testing.assert_allclose(richardson, fd, atol=1e-5 * scale)
        bias = {b: float(np.abs(g - exact).max()) for b, g in grads.items()}
        if bias[2e-5] > 1e-6 * scale:  # above the solvers' noise: second order in beta
            assert 3.0 < bias[2e-5] / bias[1e-5] < 5.0, bias


@given(seed=st.integers(0, 100_000), n=st.integers(3, 5))
@SETTINGS
def test_sensitivity_converges_to_the_linear_response_derivative(seed: int, n: int) -> None:
    machine = random_system(seed, n)
    b_label = random_labels(np.random.default_rng([seed, 7]), n, 1)[0]
    x = np.array([[0.25]])
    point = 0.15
    h = dense_hamiltonian(machine, x)[0] + point * 0.7 * kron_matrix(b_label, n)
    e, v = np.linalg.eigh(h)
    assume(e[1] - e[0] > 0.2)
    # d<O>/dlambda = sum_{m>0} 2 Re <0|O|m><m|B|0> / (E0 - Em)
    m = machine.model
    b_m = v.conj().T @ (0.7 * kron_matrix(b_label, n)) @ v
    exact = []
    for o in m.output_ops:
        o_mat = sum(c * kron_matrix(m.basis.label(t), n) for t, c in enumerate(o) if c)
        o_m = v.conj().T @ o_mat @ v
        exact.append(float(2 * np.sum((o_m[0, 1:] * b_m[1:, 0]).real / (e[0] - e[1:]))))
    deltas = np.array([0.04, 0.02, 0.01])
    outputs = []
    for d in deltas:
        s = SensitivitySystem(random_system(seed, n), [(0.7, b_label)], point=point, delta=d)
        outputs.append(s.equilibrate(x).outputs[0])
    errors = [float(np.abs(y - exact).max()) for y in outputs]
    scale = max(1.0, float(np.abs(exact).max()))
    # The limit is the exact derivative: Richardson's combination cancels the delta^2 term of
    # the centred difference, leaving O(delta^4) -- far below the plain difference's error
    # (whose size, ~ delta^2 d3<O>/dlambda3, grows as the gap closes: no fixed bound fits it).
    richardson = (4 * outputs[2] - outputs[1]) / 3
    assert np.abs(richardson - exact).max() <= 0.1 * errors[-1] + 1e-9 * scale
    errors_arr = np.array(errors)
    if errors_arr[-1] > 1e-9 * scale:  # leading error above the solver's round-off
        slope = np.polyfit(np.log(deltas), np.log(errors_arr), 1)[0]
        assert slope == pytest.approx(2.0, abs=0.2)


def test_replicas_nudge_with_opposite_signs_and_sum_shots_and_conjugates() -> None:
    system, _ = sensor(3, 4, delta=0.1)
    plus, minus = system.replicas
    x = np.array([[0.2]])
    eps = np.array([[1.0, -2.0]])
    nudged = system.equilibrate(x, Nudge(beta=0.01, error=eps))
    ref = [
        rep.equilibrate(x, Nudge(beta=0.01, error=s * eps / 0.2))
        for rep, s in ((plus, 1.0), (minus, -1.0))
    ]
    np.testing.assert_allclose(
        nudged.conjugates["theta"], ref[0].conjugates["theta"] + ref[1].conjugates["theta"]
    )
    np.testing.assert_allclose(nudged.outputs, (ref[0].outputs - ref[1].outputs) / 0.2)
    np.testing.assert_allclose(nudged.observables["replica_outputs"][:, 0], ref[0].outputs)
    for rep in (plus, minus):
        rep.shots = 50
    shot = system.equilibrate(x, rng=np.random.default_rng(1))
    assert shot.shots == 100
    settings_per_replica = plus.equilibrate(x, rng=np.random.default_rng(1)).observables
    np.testing.assert_allclose(
        shot.observables["total_shots"], 2 * settings_per_replica["total_shots"]
    )
    # the exact diagnostic ignores the shots
    for rep in (plus, minus):
        rep.shots = 0
    exact0 = system.exact_gradient(x, np.zeros((1, 2)), get_loss("neg_sq"))
    for rep in (plus, minus):
        rep.shots = 50
    exact50 = system.exact_gradient(x, np.zeros((1, 2)), get_loss("neg_sq"))
    np.testing.assert_allclose(exact50["theta"], exact0["theta"])
    with pytest.raises(ValueError, match="error"):
        system.equilibrate(x, Nudge(beta=0.1, target=np.zeros((1, 2))))
    with pytest.raises(ValueError, match="delta"):
        SensitivitySystem(random_system(3, 4), [(1.0, "X0")], delta=0.0)
    with pytest.raises(ValueError, match="unknown output 'Q'"):
        SensitivitySystem(random_system(3, 4), [(1.0, "X0")], delta=0.1, outputs=["Q"])


def test_ion_chain_sensor_with_a_non_linear_model_and_an_extended_basis() -> None:
    """Power-law ion chain (alpha trained: non-linear in theta) sensing a transverse field,
    a term its basis lacks: EP equals the replicas' linear response."""
    cfg = IonsConfig.model_validate(
        {
            "kind": "ions",
            "n_ions": 4,
            "train_alpha": True,
            "init_field": [0.6, -0.3, 0.4, 0.2],
            "output_ions": [0, 3],
            "correlators": [[1, 2]],
            "sensitivity": {
                "field": [{"pauli": "X{i}", "range": [0, 4]}],
                "point": 0.3,
                "delta": 0.02,
                "outputs": ["Z[0]", "X[1]X[2]"],
                "name": "hx",
            },
        }
    )
    system = cfg.build(0)
    assert isinstance(system, SensitivitySystem)
    assert system.outputs.labels == ("d<Z[0]>/dhx", "d<X[1]X[2]>/dhx")
    assert cfg.output_size() == system.outputs.size == 2
    x = np.zeros((1, 0))
    assert min_gap(system, x) > 0.05
    loss = get_loss("neg_sq")
    t = np.zeros((1, 2))
    exact = system.exact_gradient(x, t, loss)
    ep = EquilibriumPropagation(centred(1e-4)).estimate(
        system, x, t, loss, np.random.default_rng(0)
    )
    for g in ("field", "coupling", "alpha"):
        scale = max(1.0, float(np.abs(exact[g]).max()))
        np.testing.assert_allclose(ep.gradient[g], exact[g], atol=1e-5 * scale)


def test_config_output_labels_match_the_built_machines() -> None:
    q = QuantumConfig.model_validate(yaml.safe_load(CONFIG.read_text())["system"])
    assert q.machine_output_labels() == list(q.build_machine(0).outputs.labels) == ["Xsum"]
    ions = IonsConfig.model_validate(
        {"kind": "ions", "n_ions": 3, "output_ions": [2], "correlators": [[0, 1]]}
    )
    assert ions.machine_output_labels() == list(ions.build(0).outputs.labels)
    ryd = RydbergConfig.model_validate(
        {
            "kind": "rydberg",
            "positions": [[0, 0], [6, 0], [12, 0]],
            "output_atoms": [1],
            "correlators": [[0, 2]],
            "sensitivity": {"field": [{"pauli": "Z{i}", "range": [0, 3]}], "delta": 0.05},
        }
    )
    built = ryd.build(0)
    assert isinstance(built, SensitivitySystem)
    assert list(built.replicas[0].outputs.labels) == ryd.machine_output_labels()
    assert built.outputs.labels == ("d<n[1]>/dlambda", "d<n[0]n[2]>/dlambda")
    assert built.outputs.unit == "1"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"delta": 0.0}, "sensitivity.delta: Input should be greater than 0"),
        ({"delta": -0.01}, "sensitivity.delta: Input should be greater than 0"),
        ({"outputs": ["Zsum"]}, "unknown output 'Zsum'; the machine's outputs are \\['Xsum'\\]"),
        ({"field": [{"pauli": "X9"}]}, "sensitivity.field: .*qubit 9 out of range"),
        ({"field": [{"pauli": "X0", "coeff": 0.0}]}, "sensed operator B is zero"),
        ({"outputs": ["Xsum", "Xsum"]}, "named twice"),
        ({"bogus": 1}, "sensitivity.bogus: unknown key"),
    ],
)
def test_bad_sensitivity_blocks_are_refused_with_the_field_named(
    override: dict[str, object], message: str
) -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["system"]["sensitivity"].update(override)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, "quantum_sensitivity.yaml")
