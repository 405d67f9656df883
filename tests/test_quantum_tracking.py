"""The quantum machine's free state carried across training steps.

A tracked free phase (from the previous step's ground and first excited state) keeps the cold
solve's guarantees: it finds a level of another symmetry sector that came down (as the new ground
state or the new first excited state), refuses a (near-)degenerate ground state, and falls back
to a cold solve for other inputs. A run carrying the state and resumed from a checkpoint ends
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from threadpoolctl import threadpool_limits

from physlearn.config import parse_config
from physlearn.estimators import EquilibriumPropagation, centred
from physlearn.losses import get_loss
from physlearn.run.campaign import Campaign
from physlearn.run.start import resume_run, start_run
from physlearn.simulators.quantum.lanczos import DegenerateGroundStateError, SolverOptions
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.states import ground_state
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
from physlearn.simulators.quantum.warm import QuantumCarry
from physlearn.store.run_store import RunStore
from physlearn.system import ParameterGroup

from .conftest import CONFIGS
from .test_run_store import _assert_same_run

N = 8  # 256 states: the Lanczos path (dense_below = 64)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def _sector_chain() -> tuple[PauliBasis, Any]:
    """Transverse-field chain plus c * P, P = X0 X1 ... X7 (commutes with H): every level is in
    the even (P = +1) or odd (P = -1) sector, and c shifts the sectors by +-c."""
    labels = [f"X{i}" for i in range(N)] + [f"Z{i} Z{i + 1}" for i in range(N - 1)]
    labels.append(" ".join(f"X{i}" for i in range(N)))
    basis = PauliBasis.from_labels(labels, N)

    def coeffs(c: float) -> np.ndarray:
        return np.r_[np.full(N, -1.0), np.full(N - 1, -0.5), c]

    return basis, coeffs


def _dense(basis: PauliBasis, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = basis.operator(c).toarray()
    e, v = np.linalg.eigh(h)
    p = basis.operator(np.r_[np.zeros(basis.size - 1), 1.0]).toarray()
    return e, v, np.einsum("ri,rs,si->i", v, p, v)


@pytest.mark.parametrize("c_new", [-0.5, 0.5, 2.0])
def test_tracked_solve_finds_a_level_of_another_sector_that_came_down(c_new: float) -> None:
    basis, coeffs = _sector_chain()
    opts = SolverOptions()
    prev = ground_state(basis.operator(coeffs(-2.0)), None, opts)
    assert prev.excited is not None
    # both tracked states are even: the odd sector is absent from the previous pair
    p_op = basis.operator(np.r_[np.zeros(basis.size - 1), 1.0])
    for v in (prev.vector, prev.excited):
        assert v @ (p_op @ v) == pytest.approx(1.0, abs=1e-8)
    e, v, par = _dense(basis, coeffs(c_new))
    assert par[1] < 0  # an odd level is now E1 (c = -0.5, 0.5) or E0 too (c = 2)
    if c_new > 1:
        assert par[0] < 0
    gs = ground_state(basis.operator(coeffs(c_new)), prev.vector, opts, excited=prev.excited)
    assert gs.energy == pytest.approx(e[0], abs=1e-9)
    assert gs.gap == pytest.approx(e[1] - e[0], abs=1e-8)
    assert abs(np.vdot(v[:, 0], gs.vector)) == pytest.approx(1.0, abs=1e-9)
    assert gs.excited is not None
    assert abs(np.vdot(v[:, 1], gs.excited)) == pytest.approx(1.0, abs=1e-8)


def test_tracked_solve_refuses_a_degenerate_ground_state() -> None:
    # within the tracked pair: Ising chain, the Z0 field that split |0..0> and |1..1> goes to 1e-9
    n = 7
    labels = [f"Z{i} Z{i + 1}" for i in range(n - 1)] + ["Z0", "X3"]
    basis = PauliBasis.from_labels(labels, n)
    opts = SolverOptions(dense_below=0)
    c = np.r_[np.full(n - 1, -1.0), -0.1, 1e-6]
    prev = ground_state(basis.operator(c), None, opts)
    c[-2] = -1e-9
    with pytest.raises(DegenerateGroundStateError, match="break the symmetry"):
        ground_state(basis.operator(c), prev.vector, opts, excited=prev.excited)
    # across sectors: the odd ground state comes down to within 2e-9 of the even one, from a
    # pair that holds no odd state at all
    sbasis, coeffs = _sector_chain()
    prev = ground_state(sbasis.operator(coeffs(-2.0)), None, SolverOptions())
    e, _, par = _dense(sbasis, coeffs(0.0))
    c_star = (e[par < 0][0] - e[par > 0][0]) / 2  # E_even(c) = E_even(0) + c, E_odd: - c
    h = sbasis.operator(coeffs(c_star + 1e-9))
    with pytest.raises(DegenerateGroundStateError):
        ground_state(h, None, SolverOptions())  # the cold solve refuses it ...
    with pytest.raises(DegenerateGroundStateError):  # ... and so does the tracked one
        ground_state(h, prev.vector, SolverOptions(), excited=prev.excited)


def _chain_system(n_inputs: int = 0) -> QuantumSystem:
    """The sector chain as a machine: theta = (transverse field, Ising coupling), c = -2 fixed,
    output <X0>; an input (if any) adds to the first Ising coupling."""
    basis, _ = _sector_chain()
    h0 = np.zeros(basis.size)
    h0[-1] = -2.0
    ops = np.zeros((2, basis.size))
    ops[0, :N] = -1.0
    ops[1, N : 2 * N - 1] = -1.0
    inputs = np.zeros((n_inputs, basis.size))
    if n_inputs:
        inputs[0, basis.index("Z0 Z1")] = -1.0
    out = np.zeros((1, basis.size))
    out[0, basis.index("X0")] = 1.0
    groups = (ParameterGroup("theta", (2,), ("term",), -5.0, 5.0, "1"),)
    model = HamiltonianModel(basis, h0, inputs, out, groups, {"theta": ops})
    return QuantumSystem(model, {"theta": np.array([1.0, 0.5])})


def test_carried_free_state_is_tracked_only_for_the_same_inputs() -> None:
    system = _chain_system(n_inputs=1)
    assert system.carried_shapes(3) == {"inputs": (3, 1), "vectors": (3, 2, 1 << N)}
    x = np.array([[0.0], [0.1], [0.2]])
    free = system.equilibrate(x)
    arrays = system.export_state(free.state)
    assert arrays is not None
    assert {k: v.shape for k, v in arrays.items()} == system.carried_shapes(3)
    carry = system.import_state(arrays)
    assert isinstance(carry, QuantumCarry)
    system.set_parameters({"theta": np.array([1.02, 0.48])})
    cold = system.equilibrate(x)
    warm = system.equilibrate(x, warm_start=carry)
    np.testing.assert_allclose(warm.outputs, cold.outputs, atol=1e-9)
    np.testing.assert_allclose(warm.energy, cold.energy, atol=1e-9)
    assert warm.iterations is not None and cold.iterations is not None
    assert np.all(warm.iterations < cold.iterations)
    # the tracked phase exports its pair again (the next step tracks from it)
    assert system.export_state(warm.state) is not None
    # other inputs or another batch shape: exactly the cold solve
    for other in (x + 0.05, x[:2]):
        got = system.equilibrate(other, warm_start=carry)
        ref = system.equilibrate(other)
        np.testing.assert_array_equal(got.outputs, ref.outputs)
        np.testing.assert_array_equal(got.iterations, ref.iterations)


def test_nothing_is_carried_at_finite_temperature_or_for_dense_registers() -> None:
    system = _chain_system()
    hot = QuantumSystem(system.model, system.get_parameters(), temperature=0.5)
    assert hot.carried_shapes(1) == {}
    assert hot.export_state(hot.equilibrate(np.zeros((1, 0))).state) is None
    dense = QuantumSystem(
        system.model, system.get_parameters(), solver=SolverOptions(dense_below=1 << N)
    )
    assert dense.carried_shapes(1) == {}


def test_ep_free_phase_accepts_the_carried_state() -> None:
    system = _chain_system()
    x, t = np.zeros((1, 0)), np.zeros((1, 1))
    est = EquilibriumPropagation(centred(0.05), nudge="error")
    loss = get_loss("neg_abs")
    first = est.estimate(system, x, t, loss, np.random.default_rng(0))
    carry = system.import_state(system.export_state(first.free.state) or {})
    system.set_parameters({"theta": np.array([1.01, 0.51])})
    cold = est.estimate(system, x, t, loss, np.random.default_rng(0))
    warm = est.estimate(system, x, t, loss, np.random.default_rng(0), warm_start=carry)
    np.testing.assert_allclose(warm.gradient["theta"], cold.gradient["theta"], rtol=1e-6)
    assert warm.free.iterations is not None and cold.free.iterations is not None
    assert warm.free.iterations[0] < cold.free.iterations[0]


def _exploration(tmp_path: Path, steps: int = 20) -> dict[str, Any]:
    raw = yaml.safe_load((CONFIGS / "quantum_phase_exploration.yaml").read_text())
    n = 8
    sys_ = raw["system"]
    sys_["qubits"] = n
    sys_["h0"][0]["range"] = [0, n - 2]
    sys_["trainable"][0]["terms"][0]["range"] = [0, n]
    sys_["trainable"][1]["terms"][0]["range"] = [0, n - 1]
    sys_["solver"]["dense_below"] = 64  # Lanczos on 256 states: the carried state is used
    sys_["solver"]["degenerate"] = "fail"  # the default policy (manifold solves carry nothing)
    raw["optimizer"]["lr"] = 0.05
    raw["schedule"] = {"steps": steps, "batch_size": 1, "eval_every": 5}
    raw["store"] = {"root": str(tmp_path / "runs"), "flush_every": 4, "flush_seconds": 1e6}
    raw["diagnostics"] = {"exact_gradient": False}
    return raw


@pytest.mark.slow
def test_quantum_run_resumed_from_a_checkpoint_is_bit_identical(tmp_path, monkeypatch) -> None:
    cfg = parse_config(_exploration(tmp_path))
    ref = tmp_path / "ref.zarr"
    assert start_run(cfg, ref).status == "success"
    ck = RunStore.open(ref).read_checkpoint()
    assert ck is not None and float(ck.carry["valid"]) == 1.0
    assert ck.carry["vectors"].shape == (1, 2, 256)

    # the carried state is in play: without it (every free phase cold) the run differs
    with monkeypatch.context() as m:
        m.setattr(QuantumSystem, "carried_shapes", lambda self, batch: {})
        cold = tmp_path / "cold.zarr"
        start_run(cfg, cold)
    it, it_cold = (RunStore.open(p).read("iterations")[:, 0, 0] for p in (ref, cold))
    assert it[0] == it_cold[0] and not np.array_equal(it, it_cold)  # free-phase products
    assert not np.array_equal(
        RunStore.open(ref).read("outputs"), RunStore.open(cold).read("outputs")
    )

    # a crash at step 10 with nothing flushed since step 8: resume from the step-8 checkpoint
    def crash(done: int) -> None:
        if done == 10:
            raise RuntimeError("machine lost")

    # (no commit after the crash; the commit already in flight completes)
    monkeypatch.setattr(Campaign, "_safe_flush", lambda self: self.recorder.drain())
    out = tmp_path / "crashed.zarr"
    with pytest.raises(RuntimeError, match="machine lost"):
        start_run(cfg, out, on_step=crash)
    assert RunStore.open(out).committed() == 8
    monkeypatch.undo()
    # stop once more (Ctrl-C: commit and stop) at step 13, then run to the end
    stopped = resume_run(out, on_step=lambda done: _interrupt(done, 13))
    assert stopped.status == "abort" and stopped.committed_steps == 13
    res = resume_run(out)
    assert res.status == "success" and res.committed_steps == 20
    _assert_same_run(ref, out)


def _interrupt(done: int, at: int) -> None:
    if done == at:
        raise KeyboardInterrupt


@pytest.mark.slow
def test_a_run_created_without_carried_state_resumes_as_it_began(tmp_path, monkeypatch) -> None:
    cfg = parse_config(_exploration(tmp_path, steps=8))
    with monkeypatch.context() as m:  # the store of an older version: no carry slots
        m.setattr(QuantumSystem, "carried_shapes", lambda self, batch: {})
        ref = tmp_path / "ref.zarr"
        start_run(cfg, ref)
        out = tmp_path / "old.zarr"
        stopped = start_run(cfg, out, on_step=lambda done: _interrupt(done, 4))
    assert stopped.status == "abort" and stopped.committed_steps == 4
    assert "carry/valid" not in RunStore.open(out).checkpoint_entries()
    res = resume_run(out)  # the machine now carries its free state; this run keeps cold starts
    assert res.status == "success"
    _assert_same_run(ref, out)
