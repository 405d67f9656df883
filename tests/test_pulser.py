"""Rydberg arrays as Pulser describes them (issue 24, items 1-2).

* A ``rydberg`` config naming a Pulser device is checked by Pulser's own device validation when
  it loads: an impossible register, Omega or Delta is refused in one line naming the limit.
* physlearn's Rydberg Hamiltonian is pulser-simulation's for the same register and drive
  (matrices on 3-6 atoms, a constant-drive evolution, the exported sweep at several times).
* ``physlearn export-pulser`` writes a sequence that rebuilds from its JSON, passes Pulser's
  QPU validation and ends on the trained Hamiltonian of the chosen pattern.

Without Pulser (``pip install 'physlearn[pulser]'``) these tests are skipped; on CI
(``CI=true``) a missing Pulser is a failure (the ``dev`` extra installs it).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from physlearn.simulators.quantum.rydberg import RydbergArray
from physlearn.simulators.quantum.rydberg_config import RydbergConfig

TWO_PI = 2.0 * math.pi

try:
    import pulser  # noqa: F401
    import pulser_simulation  # noqa: F401

    HAVE_PULSER = True
except ImportError:
    HAVE_PULSER = False

if not HAVE_PULSER:
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("Pulser is required on CI (the dev extra installs physlearn[pulser])")
    pytest.skip("Pulser is not installed: pip install 'physlearn[pulser]'", allow_module_level=True)

from physlearn.simulators.quantum import pulser_bridge as pb  # noqa: E402

DAD = "DigitalAnalogDevice"


def _ryd(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "rydberg",
        "device": DAD,
        "positions": [[0.0, 0.0], [7.0, 0.0], [14.0, 0.0], [7.0, 7.0]],
        "input_atoms": [0, 2],
        "output_atoms": [1, 3],
        "detuning_bound": 30.0,
        "init_detuning": 6.0,
        "init_rabi": 9.0,
    }
    return base | kw


def _refusal(**kw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        RydbergConfig.model_validate(_ryd(**kw))
    errors = info.value.errors()
    assert len(errors) == 1
    message = str(errors[0]["msg"])
    assert "\n" not in message
    return message


# -- item 1: the device's limits, checked by Pulser when the config loads ----------------------


@settings(max_examples=20, deadline=None)
@given(gap=st.floats(0.5, 3.99))
def test_device_refuses_atoms_closer_than_its_minimum_distance(gap: float) -> None:
    message = _refusal(positions=[[0.0, 0.0], [gap, 0.0], [10.0, 0.0]], output_atoms=[1])
    assert message.startswith("Value error, positions: DigitalAnalogDevice refuses the register")
    assert "minimal distance between atoms in this device (4 µm)" in message
    assert "('q0', 'q1')" in message


@settings(max_examples=20, deadline=None)
@given(gap=st.floats(4.00001, 12.0), angle=st.floats(0.0, math.pi / 2))
def test_device_accepts_atoms_at_or_beyond_its_minimum_distance(gap: float, angle: float) -> None:
    # Pulser rounds coordinates to 1e-6 um, so a pair exactly at 4 um may land just below it
    pos = [[0.0, 0.0], [gap * math.cos(angle), gap * math.sin(angle)], [-12.0, 0.0]]
    cfg = RydbergConfig.model_validate(_ryd(positions=pos, input_atoms=[0], output_atoms=[2]))
    assert cfg.device == DAD


def test_device_refuses_a_register_beyond_its_radius_and_atom_count() -> None:
    wide = _refusal(positions=[[0.0, 0.0], [60.0, 0.0], [110.0, 0.0]], output_atoms=[1])
    assert "All atoms must be at most 50 μm away from the center" in wide
    assert "['q0', 'q2']" in wide
    many = _refusal(positions=[[5.0 * i, 0.0] for i in range(21)], input_atoms=[0])
    assert "21 atoms exceed max_atoms = 20 of exact emulation" in many


@pytest.mark.parametrize(
    ("overrides", "pieces"),
    [
        (
            {"init_rabi": TWO_PI * 2.6},
            [
                "init_rabi/init_detuning",
                "rydberg_global refuses Omega = 16.3363",
                "max_amp = 15.70",
            ],
        ),
        (
            {"detuning_bound": TWO_PI * 21, "init_detuning": 0.0},
            ["detuning_bound = 131.947", "detuning values go out of the range", "max_abs_det"],
        ),
        (
            {"detuning_bound": TWO_PI * 10.5},
            [
                "detuning_bound = 65.9734: DigitalAnalogDevice's dmm_0 cannot spread the local "
                "detunings over 131.947 rad/us",
                "bottom_detuning = -125.66",
            ],
        ),
        ({"init_detuning": 31.0}, ["init_detuning reaches 31 rad/us, beyond the detuning bound"]),
    ],
)
def test_device_refuses_out_of_range_omega_and_delta_naming_the_limit(
    overrides: dict[str, Any], pieces: list[str]
) -> None:
    message = _refusal(**overrides)
    for piece in pieces:
        assert piece in message


def test_device_config_refuses_what_the_device_cannot_be() -> None:
    assert "AnalogDevice drives one global detuning" in _refusal(
        device="AnalogDevice", positions=[[0, 0], [8, 0], [16, 0], [8, 8]]
    )
    assert "rydberg_level = 60 differs from DigitalAnalogDevice's Rydberg level 70" in _refusal(
        rydberg_level=60
    )
    assert "limits: the hand-written limits apply only without a device" in _refusal(
        limits={"min_distance": 3.0}
    )
    assert "'Fresnel' is not a Pulser device" in _refusal(device="Fresnel")


def test_without_pulser_a_device_config_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pulser", None)
    monkeypatch.setitem(sys.modules, "pulser.devices", None)
    message = _refusal()
    assert "Pulser is not installed; pip install 'physlearn[pulser]'" in message
    assert RydbergConfig.model_validate(_ryd(device=None)).device is None  # no device: no Pulser


def test_machine_uses_the_devices_c6_and_limits() -> None:
    for name in (DAD, "MockDevice"):
        device = pb.load_device(name)
        cfg = RydbergConfig.model_validate(_ryd(device=name, detuning_bound=None))
        arr = cfg.build(0)
        assert arr.c6 == device.interaction_coeff
        assert arr.limits.device == name
        assert arr.group("rabi").upper == device.channels["rydberg_global"].max_amp or (
            name == "MockDevice" and arr.group("rabi").upper == TWO_PI * 2.5
        )
    dad = RydbergConfig.model_validate(_ryd(detuning_bound=None)).build(0)
    # the largest bound whose every corner the DMM drives: half its bottom detuning
    assert dad.group("detuning").upper == pytest.approx(TWO_PI * 10.0)
    assert dad.limits.detuning_spread_max == pytest.approx(TWO_PI * 20.0)
    assert dad.limits.min_distance == 4.0 and dad.limits.rabi_max == pytest.approx(TWO_PI * 2.5)


@settings(max_examples=30, deadline=None)
@given(x=st.lists(st.floats(-115.0, 115.0), min_size=2, max_size=2))
@example(x=[100.0, -30.0]).via("spread 130 rad/us > 2 pi x 20")
@example(x=[60.0, -60.0]).via("spread 120 rad/us, drivable")
def test_inputs_beyond_the_dmm_spread_are_refused_at_run_time(x: list[float]) -> None:
    """Every |Delta_i| stays within detuning_max (6 + 115 < 2 pi x 20): only the spread of the
    local detunings, which the DMM's bottom_detuning bounds, decides."""
    arr = RydbergConfig.model_validate(_ryd()).build(0)  # trainable Delta_i = 6 rad/us
    total = np.array([6.0 + x[0], 6.0, 6.0 + x[1], 6.0])
    spread = total.max() - total.min()
    inputs = np.array([x])
    if spread > TWO_PI * 20.0 * (1 + 1e-9):
        with pytest.raises(ValueError, match="beyond the device limit detuning_spread_max"):
            arr.equilibrate(inputs)
    else:
        assert np.isfinite(arr.equilibrate(inputs).outputs).all()


# -- physlearn's Hamiltonian is Pulser's ----------------------------------------------------------


def _random_array(n: int, seed: int) -> tuple[np.ndarray, float, np.ndarray]:
    """A register of ``n`` atoms >= 5 um apart within 14 um, a Rabi frequency and detunings
    whose spread the DMM drives (rad/us)."""
    rng = np.random.default_rng(seed)
    pos = [rng.uniform(-14, 14, 2)]
    while len(pos) < n:
        p = rng.uniform(-14, 14, 2)
        if min(np.linalg.norm(p - q) for q in pos) >= 5.0:
            pos.append(p)
    return np.asarray(pos), float(rng.uniform(1.0, 15.0)), rng.uniform(-60.0, 60.0, n)


def _physlearn_h(pos: np.ndarray, rabi: float, det: np.ndarray, c6: float) -> np.ndarray:
    arr = RydbergArray(
        pos,
        c6=c6,
        output_atoms=[0],
        limits=pb.device_limits(pb.load_device(DAD)),
        params={"detuning": det, "rabi": np.array(rabi)},
    )
    h = arr.model.basis.operator(arr.model.coefficients(arr.get_parameters())).toarray()
    return np.asarray(h)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_hamiltonian_equals_pulser_simulations_for_the_same_register_and_drive(n: int) -> None:
    device = pb.load_device(DAD)
    pos, rabi, det = _random_array(n, seed=n)
    seq = pb.constant_sequence(device, pos, rabi, det, 0.2)
    ours = _physlearn_h(pos, rabi, det, device.interaction_coeff)
    theirs = pb.hamiltonian(seq, 100)
    scale = np.abs(ours).max()
    # positions pass through the layout rounded to 1e-6 um: C6/r^6 moves by ~1e-7 relative
    np.testing.assert_allclose(theirs, ours, atol=1e-6 * scale)
    # the basis-state energies: |g...g> (physlearn's 0, Pulser's last) is 0, one |r> costs -Delta_i
    np.testing.assert_allclose(
        np.diag(ours)[[0] + [2 ** (n - 1 - i) for i in range(n)]].real, [0.0, *(-det)], atol=1e-9
    )


def test_constant_drive_evolves_like_pulser_simulation() -> None:
    device = pb.load_device(DAD)
    pos, rabi, det = _random_array(4, seed=7)
    seq = pb.constant_sequence(device, pos, rabi, det, 0.5)
    h = _physlearn_h(pos, rabi, det, device.interaction_coeff)
    for start, t_ns in ((0, 400), (5, 250), (12, 450)):  # |g...g>, two states with |r> atoms
        psi0 = np.zeros(16, complex)
        psi0[start] = 1.0
        ours = sla.expm(-1j * h * t_ns / 1000.0) @ psi0  # ns -> us
        theirs = pb.evolve(seq, psi0, t_ns)
        assert abs(np.vdot(theirs, ours)) ** 2 > 1 - 1e-6  # equal up to a global phase
        np.testing.assert_allclose(np.abs(theirs) ** 2, np.abs(ours) ** 2, atol=1e-6)


def test_sweep_follows_the_interpolated_hamiltonian() -> None:
    device = pb.load_device(DAD)
    pos, rabi, det = _random_array(3, seed=3)
    start = -40.0
    seq = pb.sweep_sequence(device, pos, rabi, det, 1.0, start_detuning=start)
    c6 = device.interaction_coeff
    assert seq.get_duration() == 1000
    for t_ns in (0, 250, 600, 999):
        s = t_ns / 999.0  # Pulser's ramps sample start..stop inclusive: the last ns is the target
        ours = _physlearn_h(pos, s * rabi, (1 - s) * start + s * det, c6)
        np.testing.assert_allclose(pb.hamiltonian(seq, t_ns), ours, atol=1e-6 * np.abs(ours).max())


# -- item 2: physlearn export-pulser ------------------------------------------------------------

XOR_RUN: dict[str, Any] = {
    "name": "ryd_xor_pulser",
    "seed": 0,
    "system": _ryd(),
    "task": {
        "dataset": {"kind": "xor"},
        "encoding": {"scale": 10.0},
        "target": {"kind": "onehot", "high": 0.8, "low": 0.1},
        "loss": "mse",
    },
    "estimator": {"kind": "ep", "nudging": "centred", "beta": 1.0, "nudge": "error"},
    "optimizer": {"kind": "adam", "lr": 0.3},
    "schedule": {"steps": 3, "batch_size": 4, "eval_every": 3},
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-atom XOR machine on DigitalAnalogDevice, trained for 3 steps."""
    from physlearn.config import parse_config
    from physlearn.run.start import start_run

    path = tmp_path_factory.mktemp("pulser") / "run.zarr"
    assert start_run(parse_config(copy.deepcopy(XOR_RUN)), path).status == "success"
    return path


def _trained_hamiltonian(run: Path, step: int, pattern: int) -> np.ndarray:
    from physlearn.simulators.quantum.pulser_export import pattern_input, trained_machine

    cfg, machine, _ = trained_machine(run, step, [])
    x, _ = pattern_input(cfg, machine.outputs.size, pattern, "test")
    coeffs = machine.model.coefficients(machine.get_parameters()) + (x @ machine.model.input_ops)[0]
    return np.asarray(machine.model.basis.operator(coeffs).toarray())


def test_exported_sequence_rebuilds_from_json_passes_validation_and_ends_on_the_trained_h(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pulser import QPUBackend, Sequence

    import physlearn
    from physlearn.cli import main

    held = physlearn.open_run(trained_run).param_detuning.values
    assert not np.allclose(held[0], held[-1])  # the steps hold different machines
    out = tmp_path / "seq.json"
    argv = ["export-pulser", str(trained_run), "--step", "1", "--pattern", "2"]
    assert main([*argv, "--duration-us", "2.5", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}: DigitalAnalogDevice, 2.5 us sweep")
    assert "Rydberg populations of q1, q3" in said
    text = out.read_text()
    assert json.loads(text)["name"] == "ryd_xor_pulser step 1 test pattern 2"
    seq = Sequence.from_abstract_repr(text)
    QPUBackend.validate_sequence(seq, mimic_qpu=True)  # raises if the device refuses it
    assert seq.device.name == DAD and seq.get_measurement_basis() == "ground-rydberg"
    assert seq.register.layout is not None and seq.get_duration() == 2500
    pos = np.array([seq.register.qubits[f"q{i}"].as_array() for i in range(4)])
    np.testing.assert_allclose(pb.centred(np.asarray(XOR_RUN["system"]["positions"])), pos)
    # the last ns drives the Hamiltonian physlearn trained, for this pattern
    target = _trained_hamiltonian(trained_run, 1, 2)
    np.testing.assert_allclose(pb.hamiltonian(seq, 2499), target, atol=1e-6 * np.abs(target).max())
    # the first drives none: |g...g> (physlearn's state 0) is the ground state, gapped
    start = np.diag(pb.hamiltonian(seq, 0)).real
    assert start[0] == 0.0 and start[1:].min() >= TWO_PI - 1e-9
    capsys.readouterr()
    assert main(["export-pulser", str(trained_run)]) == 0  # stdout, last step, pattern 0
    assert json.loads(capsys.readouterr().out)["name"] == "ryd_xor_pulser step 2 test pattern 0"


def test_exported_sweep_prepares_the_ground_state_as_its_duration_grows(trained_run: Path) -> None:
    """pulser-simulation runs the exported sequence: the prepared state approaches physlearn's
    ground state of the trained Hamiltonian (gap ~4.8 rad/us) as the sweep slows down."""
    from physlearn.simulators.quantum.pulser_export import export_run

    _, vecs = np.linalg.eigh(_trained_hamiltonian(trained_run, -1, 0))
    psi0 = np.zeros(16, complex)
    psi0[0] = 1.0
    fidelity = []
    for duration in (0.5, 4.0):
        seq = pb.from_json(export_run(trained_run, 0, duration_us=duration).json)
        final = pb.evolve(seq, psi0, seq.get_duration() - 1)
        fidelity.append(abs(np.vdot(vecs[:, 0], final)) ** 2)
    assert fidelity[0] < 0.8 < 0.99 < fidelity[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step", "3"], "--step 3: the run has committed steps 0..2 (or -1..-3)"),
        (["--pattern", "9"], "--pattern 9: the test split has patterns 0..3"),
        (["--start-detuning", "5"], "--start-detuning 5: give a negative detuning"),
        (["--duration-us", "0"], "--duration-us 0.0: give a positive sweep duration (us)"),
        (["--set", "system.device=AnalogDevice"], "AnalogDevice drives one global detuning"),
        (["--set", "system.device=null"], "system.device is not set; name the Pulser device"),
    ],
)
def test_export_refuses_in_one_line_with_exit_2(
    trained_run: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from physlearn.cli import main

    assert main(["export-pulser", str(trained_run), *args]) == 2
    said = capsys.readouterr()
    assert said.err.count("\n") == 1 and message in said.err
    assert said.out == ""


def test_export_pulser_is_a_command_of_the_installed_cli(trained_run: Path) -> None:
    """The entry point: a real process, exit 2 and one line on stderr for a bad step."""
    cmd = [sys.executable, "-m", "physlearn.cli", "export-pulser", str(trained_run), "--step", "9"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "physlearn: error: --step 9: the run has committed steps 0..2 (or -1..-3)\n"
    )


def test_physlearns_sweep_evolution_is_pulser_simulations() -> None:
    """evolve_sweep (issue 24 item 3 groundwork) on the sequence sweep_sequence writes: the same
    state as pulser-simulation at every checked time (DMM ramp included)."""
    from physlearn.simulators.quantum.sweep import evolve_sweep, fidelity

    device = pb.load_device(DAD)
    pos, rabi, det = _random_array(4, seed=11)
    seq = pb.sweep_sequence(device, pos, rabi, det, 0.3, start_detuning=-30.0)
    arr = RydbergArray(
        pos,
        c6=device.interaction_coeff,
        output_atoms=[0],
        limits=pb.device_limits(device),
        params={"detuning": det, "rabi": np.array(rabi)},
    )
    start, end = arr.sweep_endpoints(np.zeros(0), start_detuning=-30.0)
    psi0 = np.zeros(16, complex)
    psi0[0] = 1.0
    for t_ns in (80, 200, 280):
        ours = evolve_sweep(arr.model.basis, start, end, psi0, 0.3, stop=t_ns)
        theirs = pb.evolve(seq, psi0, t_ns)
        assert 1 - fidelity(ours, theirs) < 1e-7
        # both discretise the 1 ns samples (midpoint here, an interpolating spline in qutip):
        # O(dt^2 |dH/dt|) apart with |H| up to ~400 rad/us
        np.testing.assert_allclose(np.abs(ours) ** 2, np.abs(theirs) ** 2, atol=2e-5)


def test_c6_table_is_pulsers() -> None:
    """physlearn's C6 of the configs without a device are Pulser's (ARC) values."""
    from pulser.devices.interaction_coefficients import c6_dict

    from physlearn.simulators.quantum.rydberg import C6_RAD_US_UM6

    for level, c6 in C6_RAD_US_UM6.items():
        assert c6 == c6_dict[level]


def test_pulser_simulations_shots_follow_physlearns_distribution() -> None:
    """Bitstrings sampled by pulser-simulation at the end of a sweep have the Born statistics
    of physlearn's own prepared state (chi^2), read with physlearn's convention (character i
    is atom i, '1' is |r>): the outputs a QPU's counts would give are the machine's."""
    import warnings

    from scipy.stats import chisquare

    from physlearn.simulators.quantum.sweep import evolve_sweep, outputs_from_counts

    device = pb.load_device(DAD)
    pos = np.array([[0.0, 0.0], [7.0, 0.0], [20.0, 0.0]])
    det = np.array([4.0, 3.0, -30.0])  # atom 2 stays in |g>: an asymmetric distribution
    seq = pb.sweep_sequence(device, pos, 8.0, det, 0.6, start_detuning=-20.0)
    arr = RydbergArray(
        pos,
        c6=device.interaction_coeff,
        output_atoms=[0, 1, 2],
        limits=pb.device_limits(device),
        params={"detuning": det, "rabi": np.array(8.0)},
    )
    start, end = arr.sweep_endpoints(np.zeros(0), start_detuning=-20.0)
    psi0 = np.zeros(8, complex)
    psi0[0] = 1.0
    probs = np.abs(evolve_sweep(arr.model.basis, start, end, psi0, 0.6)) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pulser_simulation import QutipEmulator

        np.random.seed(7)  # noqa: NPY002 - pulser-simulation samples with the global generator
        counts = dict(QutipEmulator.from_sequence(seq).run().sample_final_state(4000))
    keys = [format(b, "03b") for b in range(8)]
    expected = probs * 4000
    big = expected >= 5
    observed = np.array([counts.get(k, 0) for k in keys], float)
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    assert chisquare(obs, exp).pvalue > 1e-3
    n_r = outputs_from_counts(counts, [0, 1, 2])
    assert n_r[2] < 0.02 < n_r[0]  # atom 2 (far detuned) is the last character


@pytest.mark.parametrize("name", ["AnalogDevice", DAD, "WeightedAnalogDevice"])
def test_registers_come_from_a_layout_the_device_accepts(name: str) -> None:
    """Real devices require a layout filled at most max_layout_filling (WeightedAnalogDevice:
    at least 150 traps): the atoms' traps plus spare ones, the atoms where the config put them."""
    device = pb.load_device(name)
    pos = np.array([[7.0 * i, 0.0] for i in range(8)] + [[10.5, 7.0], [24.5, 7.0], [38.5, 7.0]])
    register = pb.device_register(device, pos)
    device.validate_register(register)  # raises if the device refuses it
    layout = register.layout
    assert layout is not None
    assert layout.number_of_traps >= max(device.min_layout_traps, 11 / device.max_layout_filling)
    got = np.array([register.qubits[f"q{i}"].as_array() for i in range(11)])
    np.testing.assert_allclose(got, pb.centred(pos), atol=1e-6)


def test_a_run_whose_inputs_the_device_cannot_spread_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inputs that push the local detunings beyond the DMM's spread mid-run: exit 1 and one
    line naming the limit and what to lower (it used to end in a ValueError traceback)."""
    import yaml

    from physlearn.cli import main

    raw = copy.deepcopy(XOR_RUN)
    raw["system"].update(init_detuning=0.0)
    raw["task"]["encoding"] = {"scale": 64.0}  # XOR (1, 0): +64 and -64 rad/us, |Delta| < 125.7
    raw["store"] = {"root": str(tmp_path / "runs")}
    path = tmp_path / "spread.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--progress", "off"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "physlearn: run failed: local detunings (trainable + input) spread over 128 rad/us, "
        "beyond the device limit detuning_spread_max = 125.664 rad/us (DigitalAnalogDevice's "
        "detuning map modulator); lower detuning_bound or the input scale (task.encoding.scale)"
    )
    assert "Traceback" not in err
