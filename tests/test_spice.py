"""Cross-check of physlearn's resistor-network solvers against ngspice on exported netlists.

Every node voltage of linear networks (both simulators) and of Shockley-diode networks (with
series resistance, bias rails, diodes between free nodes, and nudges) must agree with ngspice to
1e-6 relative. Ideal diodes do not exist in SPICE: the ideal solver is checked against its KKT
conditions in ``test_nonlinear_resistor.py``; here, that it is refused with a clear message.

Without ngspice these tests are skipped with the reason; on CI (``CI=true``) a missing ngspice
is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from physlearn.simulators.graphs.generators import from_edge_list, lattice, layered
from physlearn.simulators.resistor import spice
from physlearn.simulators.resistor.circuit import clipping_diodes, deep_diode_network
from physlearn.simulators.resistor.elements import DiodeModel
from physlearn.simulators.resistor.linear import LinearResistorNetwork, ResistorState
from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork
from physlearn.system import Nudge

RTOL = 1e-6
ATOL = 1e-9  # volts: the floor for nodes near 0 V


@pytest.fixture
def ngspice() -> str:
    exe = spice.find_ngspice()
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ngspice is required on CI (apt-get install ngspice) but was not found")
        pytest.skip(
            "ngspice is not installed (Debian: apt-get install ngspice): SPICE cross-check skipped"
        )
    return exe


def assert_agree(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    assert np.all(np.isfinite(ref)), "ngspice did not report every node"
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


def linear_node_voltages(net: LinearResistorNetwork, x: np.ndarray) -> np.ndarray:
    """All node voltages of the linear simulator: sources, and its free-node state (ascending)."""
    eq = net.equilibrate(x)
    st = eq.state
    assert isinstance(st, ResistorState)
    g = net.graph
    v = np.zeros((x.shape[0], g.n_nodes))
    free = np.setdiff1d(np.arange(g.n_nodes), g.input_nodes)
    v[:, free] = np.asarray(st.v).real.T
    v[:, g.input_nodes[: x.shape[1]]] = x
    return v


def test_linear_networks_match_ngspice(ngspice: str):
    rng = np.random.default_rng(0)
    g = lattice(6, 7, neighbours=2, skips=[2])
    x = rng.uniform(-1, 1, (5, 7))
    lin = LinearResistorNetwork(g, bounds=(1e-5, 1e-2), init=(1e-4, 1e-3), seed=1)
    res = spice.simulate(lin, x)
    assert_agree(linear_node_voltages(lin, x), res.voltages)
    # the same conductances in the non-linear simulator (no diodes), with a ground source
    lg = LinearResistorNetwork(g, bounds=(1e-5, 1e-2), init=(1e-4, 1e-3), seed=2, ground=True)
    res_g = spice.simulate(lg, x)
    assert_agree(linear_node_voltages(lg, x)[:, : g.n_nodes + 1], res_g.voltages)
    net = NonlinearResistorNetwork(
        g, params=lin.get_parameters()["conductance"], bounds=(1e-5, 1e-2)
    )
    eq = net.equilibrate(x)
    assert_agree(net.node_voltages(eq, x), res.voltages)
    assert np.ptp(res.voltages[:, 7:]) > 0.1  # a real test: the free nodes do vary


def test_shockley_diode_networks_match_ngspice_free_and_nudged(ngspice: str):
    rng = np.random.default_rng(1)
    g, an, ca, bias = deep_diode_network([5, 8, 6, 3], [(-0.2, 0.2), (-0.1, 0.1)])
    # plus diodes between free nodes (hidden -> hidden) and from an input to a hidden node
    an = np.concatenate([an, [5, 9, 0]])
    ca = np.concatenate([ca, [13, 14, 7]])
    for model in (
        DiodeModel(),
        DiodeModel(saturation_current=2e-9, emission=1.7, series_resistance=30.0),
    ):
        net = NonlinearResistorNetwork(
            g, an, ca, model, bias, bounds=(1e-4, 1e-2), init=(1e-4, 1e-2), seed=3
        )
        x = rng.uniform(-3, 3, (6, 5))
        free = net.equilibrate(x)
        v = net.node_voltages(free, x)
        res = spice.simulate(net, x)
        assert_agree(v[:, : g.n_nodes], res.voltages)
        assert_agree(v[:, g.n_nodes :], res.bias)
        assert np.abs(free.observables["diode_current"]).max() > 1e-4  # diodes conduct
        t = rng.uniform(-0.2, 0.2, (6, 3))
        for nudge in (Nudge(beta=2e-3, target=t), Nudge(beta=1e-3, error=t), Nudge(clamp=t)):
            eq = net.equilibrate(x, nudge, warm_start=free.state)
            res_n = spice.simulate(net, x, nudge=nudge)
            assert_agree(net.node_voltages(eq, x)[:, : g.n_nodes], res_n.voltages)
    # one pattern as a plain .op, and the alter-loop batch, give the same answers
    one = spice.simulate(net, x[2])
    assert_agree(v[2:3, : g.n_nodes], one.voltages)
    alt = spice.simulate(net, x, mode="alter")
    assert_agree(v[:, : g.n_nodes], alt.voltages)


def test_a_diode_lattice_matches_ngspice(ngspice: str):
    g = lattice(8, 8)
    an, ca, bias = clipping_diodes(g, [g.hidden_nodes], [(-0.1, 0.1)])
    x = np.random.default_rng(4).uniform(-1, 1, (8, 8))
    for backend in ("dense", "sparse"):
        net = NonlinearResistorNetwork(
            g, an, ca, DiodeModel(), bias, bounds=(1e-4, 1e-3), seed=4, backend=backend
        )
        eq = net.equilibrate(x)
        res = spice.simulate(net, x)
        assert_agree(net.node_voltages(eq, x)[:, : g.n_nodes], res.voltages)


def test_netlist_is_complete_and_refuses_what_spice_cannot_do():
    g = from_edge_list(4, [[0, 2], [1, 2], [2, 3]], [0, 1], [3])
    net = NonlinearResistorNetwork(
        g, [2, 5], [4, 2], DiodeModel(series_resistance=5.0), [0.3, -0.3], params=[1e-3, 2e-3, 4e-3]
    )
    deck = spice.to_netlist(net, [0.5, -0.25])
    lines = deck.splitlines()
    assert "R0 n0 n2 1000.0" in lines and "R2 n2 n3 250.0" in lines
    assert "VB0 b0 0 DC 0.3" in lines and "VB1 b1 0 DC -0.3" in lines
    assert "D0 n2 b0 dmod" in lines and "D1 b1 n2 dmod" in lines
    assert ".model dmod D(IS=1e-14 N=1.0 RS=5.0)" in lines
    assert "VIN0 n0 0 DC 0.5" in lines and "VIN1 n1 0 DC -0.25" in lines
    assert ".op" in lines and lines[-1] == ".end"
    assert any(ln.startswith(".options") and "temp=27.0" in ln for ln in lines)
    batch = spice.to_netlist(net, [[0.5, -0.25], [0.1, 0.2]])
    assert (
        ".dc VPATTERN 0 1 1" in batch and "BIN0 n0 0 V = pwl(V(pattern), 0, 0.5, 1, 0.1)" in batch
    )
    ideal = NonlinearResistorNetwork(g, [2], [4], DiodeModel(kind="ideal"), [0.3])
    with pytest.raises(ValueError, match="ideal diodes have no SPICE model"):
        spice.to_netlist(ideal, [0.0, 0.0])
    with pytest.raises(ValueError, match="inputs must be finite volts of shape"):
        spice.to_netlist(net, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="target nudge is a conductance beta > 0"):
        spice.to_netlist(net, [0.0, 0.0], nudge=Nudge(beta=-1e-3, target=np.zeros((1, 1))))
    with pytest.raises(TypeError, match="only resistor networks"):
        spice.circuit_of(cast(Any, object()))
    lin = LinearResistorNetwork(layered([2, 3, 1]), seed=0)
    assert spice.to_netlist(lin, [1.0, -1.0]).count("\nR") == 9


def test_cli_exports_a_configured_network_that_ngspice_solves_like_us(
    ngspice: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from physlearn.cli import main
    from physlearn.config import load_config
    from physlearn.task import Task

    cfg_path = Path(__file__).parents[1] / "configs" / "resistor_digits_deep.yaml"
    shockley = ["system.diodes.model.kind=shockley", "system.diodes.rails=[{low: -0.3, high: 0.3}]"]
    out = tmp_path / "digits.cir"
    args = ["export-spice", str(cfg_path), "--pattern", "7", "--out", str(out)]
    assert main([*args, *sum((["--set", s] for s in shockley), [])]) == 0
    cfg = load_config(cfg_path, shockley)
    net = cfg.system.build(cfg.seed)
    assert isinstance(net, NonlinearResistorNetwork)
    task = Task(cfg.task, cfg.task.dataset.load(cfg.seed), net.outputs.size)
    x = task.encode_inputs(task.data.x_test[7:8])
    res = spice.run_ngspice(out.read_text(), net.graph.n_nodes, net.bias.size)
    assert_agree(net.node_voltages(net.equilibrate(x), x)[:, : net.graph.n_nodes], res.voltages)
    # ideal diodes cannot be exported: a user error (exit 2) with the reason
    capsys.readouterr()
    assert main(["export-spice", str(cfg_path), "--pattern", "0"]) == 2
    assert "ideal diodes have no SPICE model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short quickstart run (a layered linear resistor network, trained for 6 steps)."""
    from physlearn.config import parse_config
    from physlearn.run.start import start_run
    from tests.conftest import load_yaml

    raw = load_yaml("quickstart.yaml")
    raw["schedule"] = {"steps": 6, "batch_size": 8, "eval_every": 3}
    path = tmp_path_factory.mktemp("trained") / "run.zarr"
    assert start_run(parse_config(raw), path).status == "success"
    return path


def test_cli_exports_a_run_stores_trained_network_that_ngspice_solves_like_the_run(
    ngspice: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export-spice RUN writes the conductances the run held at the chosen step (issue 21,
    item 5: only a config's initial conductances could be exported)."""
    import physlearn
    from physlearn.cli import main
    from physlearn.config import parse_config
    from physlearn.task import Task

    run = trained_run
    ds = physlearn.open_run(run)
    held = ds.param_conductance.values
    assert not np.allclose(held[0], held[-1])  # trained: the steps hold different networks
    for step, row in ((0, 0), (-1, 5), (3, 3)):
        out = tmp_path / f"step{step}.cir"
        argv = ["export-spice", str(run), "--step", str(step), "--pattern", "2", "--out", str(out)]
        assert main(argv) == 0
        deck = out.read_text()
        ohms = [float(ln.split()[3]) for ln in deck.splitlines() if ln.startswith("R")]
        np.testing.assert_allclose(1.0 / np.asarray(ohms), held[row], rtol=1e-12)
        assert f"parameters held during step {row} of run.zarr" in deck
        cfg = parse_config(ds.attrs["config"])
        net = cfg.system.build(cfg.seed)
        net.set_parameters({"conductance": held[row]})
        task = Task(cfg.task, cfg.task.dataset.load(cfg.seed), net.outputs.size)
        x = task.encode_inputs(task.data.x_test[2:3])
        assert isinstance(net, LinearResistorNetwork)
        res = spice.run_ngspice(deck, net.graph.n_nodes, 0)
        assert_agree(linear_node_voltages(net, x), res.voltages)
    capsys.readouterr()
    assert main(["export-spice", str(run)]) == 0  # default: the last committed step
    assert "parameters held during step 5 of run.zarr" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--step", "6"], "--step 6: the run has committed steps 0..5 (or -1..-6)"),
        (["--step", "-7"], "--step -7: the run has committed steps 0..5 (or -1..-6)"),
        (["--pattern", "999"], "--pattern 999: the test split has patterns 0..44"),
        (["--set", "system.kind=xy"], "(stored config) is not a valid experiment"),
        (
            ["--set", "system={kind: elastic, graph: {type: layered, sizes: [10, 4, 3]}}"],
            "run cannot be exported to SPICE; only resistor and diode_resistor runs",
        ),
    ],
)
def test_export_of_a_run_refuses_bad_arguments_in_one_line(
    trained_run: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from physlearn.cli import main

    capsys.readouterr()
    assert main(["export-spice", str(trained_run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_station_run_is_refused_in_one_line_not_a_traceback(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A station system cannot even list its parameters unconnected: export-spice of a lab run
    raised RuntimeError (exit 1, a traceback) before it checked the system's kind."""
    import json

    import yaml

    from physlearn.cli import main

    configs = Path(__file__).parents[1] / "configs"
    system = yaml.safe_load((configs / "virtual_lab_resistor.yaml").read_text())["system"]
    system["station"] = str(configs / "virtual_lab_station.yaml")
    system["lab"] = {"serve": str(configs / "virtual_lab_bench.yaml")}
    capsys.readouterr()
    station = ["--set", f"system={json.dumps(system)}", "--set", "diagnostics.exact_gradient=false"]
    assert main(["export-spice", str(trained_run), *station]) == 2
    err = capsys.readouterr().err
    assert "a station run cannot be exported to SPICE" in err and len(err.splitlines()) == 1


def test_step_without_a_run_store_and_a_directory_that_is_no_run_are_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from physlearn.cli import main

    cfg_path = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
    assert main(["export-spice", str(cfg_path), "--step", "1"]) == 2
    assert "--step 1: only a run store has steps" in capsys.readouterr().err
    assert main(["export-spice", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and len(err.strip().splitlines()) == 1
