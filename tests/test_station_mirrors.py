"""``system.mirrors``: a station takes its graph and its physics (conjugates and energy of the
measured node voltages) from the simulator config its bench mirrors. On a virtual-lab bench with
diodes every nudge the bench realises gives the diode_resistor simulator's outputs and
conjugates; a Shockley bench's energy carries the diodes' co-content, which only the mirrored
simulator knows; configs that disagree with their mirror are refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from qcodes.instrument import Instrument

from physlearn.config import ConfigError, parse_config
from physlearn.drivers.virtual_lab.testing import bench_experiment, running_lab, write_station
from physlearn.system import Nudge

from .conftest import CONFIGS

BENCH = CONFIGS / "virtual_lab_bench.yaml"
QUIET = {
    "dmm": {"noise": 0.0, "resolution": 0.0},
    "pots": {"spread": 0.0, "measure_noise": 0.0},
    "settling_tau": 0.0,
}
GRAPH = {"type": "layered", "sizes": [10, 16, 3]}


def _diodes(kind: str) -> dict[str, Any]:
    """Hidden clipping diodes; Shockley ones leaky (I_s = 1 uA) so that they conduct well inside
    the node voltages' range and their co-content is a visible share of the energy."""
    model: dict[str, Any] = {"kind": kind}
    if kind == "shockley":
        model["saturation_current"] = 1e-6
    return {"model": model, "placement": "hidden", "rails": [{"low": -0.3, "high": 0.3}]}


def _mirror(kind: str) -> dict[str, Any]:
    return {"kind": "diode_resistor", "graph": GRAPH, "diodes": _diodes(kind)}


@pytest.fixture(autouse=True)
def _close_instruments() -> Any:
    yield
    Instrument.close_all()


def _source(channels: str, function: str) -> dict[str, Any]:
    unit, level, lim = ("A", "curr", 5e-3) if function == "CURR" else ("V", "volt", 2.0)
    return {
        "channels": channels,
        "level": level,
        "unit": unit,
        "limits": {"min": -lim, "max": lim, "step": lim},
        "settings": {"function": function},
        "trip_status": "src.trip_status",
    }


def _system(station: Path, kind: str, nudge: dict[str, Any]) -> Any:
    """A station system on ``station`` mirroring the diode network (no ``graph`` of its own)."""
    from physlearn.run.start import build_system

    raw = yaml.safe_load((CONFIGS / "virtual_lab_resistor.yaml").read_text())
    raw = bench_experiment(raw, station, equilibrium={"settle_time": 0.0})
    del raw["system"]["graph"]
    raw["system"]["mirrors"] = _mirror(kind)
    raw["system"]["nudge"] = nudge
    raw["system"]["identity"]["swm"] = "^physlearn,VLAB-SWM3,"
    return build_system(parse_config(raw))


def _simulator(kind: str, g: np.ndarray) -> Any:
    from physlearn.simulators.resistor.config import DiodeResistorConfig

    cfg = DiodeResistorConfig.model_validate(
        {**_mirror(kind), "weights": {"conductance": {"min": 1e-6, "max": 1.0}}}
    )
    sim = cfg.build(0)
    sim.set_parameters({"conductance": g})
    return sim


@pytest.mark.slow
def test_every_nudge_on_a_diode_bench_matches_the_diode_simulator(tmp_path: Path) -> None:
    """Free, current injection (both signs), target through nudge resistors, clamp: outputs and
    conjugates measured on the diode bench equal NonlinearResistorNetwork's at the held
    conductances, with hidden nodes clipped at the rails."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-1.5, 1.5, (3, 10))
    y = rng.uniform(-0.5, 0.5, (3, 3))
    nudges: list[dict[str, Any]] = [
        {
            "error": {"sources": _source("src.ch{11..13}", "CURR")},
            "target": {
                "sources": _source("src.ch{14..16}", "VOLT"),
                "switches": {"channels": "swm.ch{1..3}"},
                "conductance": 1e-4,
            },
        },
        {"clamp": {"sources": _source("src.ch{11..13}", "VOLT")}},
    ]
    seen = set()
    with running_lab(BENCH, diodes=_diodes("ideal"), **QUIET) as lab:
        station = write_station(lab, tmp_path / "station.yaml")
        for nudge in nudges:
            system = _system(station, "ideal", nudge)
            with system:
                g = system.get_parameters()["conductance"]
                system.set_parameters({"conductance": rng.uniform(1e-4, 5e-3, g.size)})
                sim = _simulator("ideal", system.get_parameters()["conductance"])
                free = system.equilibrate(x)
                volts = free.observables["node_voltages"][:, 10:26]
                assert np.any(np.isclose(np.abs(volts), 0.3, atol=1e-9))  # clipped units
                np.testing.assert_allclose(free.outputs, sim.equilibrate(x).outputs, atol=1e-9)
                for kind in nudge:
                    for b in (1e-4, -1e-4) if kind == "error" else (1e-4,):
                        n = Nudge(beta=b, **{kind: 10 * y if kind == "error" else y})
                        got, want = system.equilibrate(x, n), sim.equilibrate(x, n)
                        np.testing.assert_allclose(got.outputs, want.outputs, atol=1e-9)
                        np.testing.assert_allclose(
                            got.conjugates["conductance"],
                            want.conjugates["conductance"],
                            rtol=1e-6,
                            atol=1e-12,
                        )
                        seen.add(kind)
            Instrument.close_all()
    assert seen == {"error", "target", "clamp"}


def test_a_shockley_bench_energy_is_the_mirrored_simulators(tmp_path: Path) -> None:
    """The energy of a Shockley bench includes the diodes' co-content: it equals the
    simulator's energy at the same equilibrium and exceeds the resistors' share alone."""
    x = np.random.default_rng(4).uniform(-1.5, 1.5, (2, 10))
    with running_lab(BENCH, diodes=_diodes("shockley"), **QUIET) as lab:
        station = write_station(lab, tmp_path / "station.yaml")
        system = _system(
            station, "shockley", {"error": {"sources": _source("src.ch{11..13}", "CURR")}}
        )
        with system:
            g = system.get_parameters()["conductance"]
            got = system.equilibrate(x)
        want = _simulator("shockley", g).equilibrate(x)
    resistors = got.conjugates["conductance"] @ g
    np.testing.assert_allclose(got.outputs, want.outputs, atol=1e-8)
    np.testing.assert_allclose(got.energy, want.energy, rtol=1e-6)
    # the diodes' share: 100 x the tolerance of the match above (the linear energy fails it)
    assert np.all(got.energy - resistors > 1e-4 * got.energy)


def _raw(**system: Any) -> dict[str, Any]:
    raw = yaml.safe_load((CONFIGS / "bench_diode.yaml").read_text())
    raw["system"].update(system)
    return raw


def test_the_graph_comes_from_the_mirror() -> None:
    cfg = parse_config(_raw())
    assert cfg.system.graph == cfg.system.mirrors.graph  # type: ignore[union-attr]
    assert cfg.system.graph.sizes == [10, 16, 3]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("system", "match"),
    [
        (
            {"graph": {"type": "layered", "sizes": [10, 12, 3]}},
            r"graph .*12.* disagrees with mirrors.graph .*16",
        ),
        ({"mirrors": {**_mirror("ideal"), "ground": True}}, "mirrors.ground must be false"),
        (
            {"mirrors": {**_mirror("ideal"), "weights": {"element": "transistor"}}},
            "mirrors.weights.element must be resistor",
        ),
        ({"mirrors": _mirror("shockley")}, r"mirrors.diodes disagrees with the diodes of the lab"),
        (
            {"mirrors": {"kind": "resistor", "graph": GRAPH}},
            r"mirrors.diodes disagrees with the diodes of the lab",
        ),
        ({"mirrors": {**_mirror("ideal"), "kind": "xy"}}, "mirrors"),
    ],
)
def test_a_station_disagreeing_with_its_mirror_is_refused(
    system: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_config(_raw(**system))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_the_deep_diode_bench_config_trains_end_to_end(tmp_path: Path) -> None:
    """configs/bench_diode.yaml, shortened: it serves its diode lab, trains through the stock
    drivers with the mirrored physics, logs an evaluation and stops the lab."""
    from physlearn.run.start import start_run
    from physlearn.store.run_store import RunStore

    raw = yaml.safe_load((CONFIGS / "bench_diode.yaml").read_text())
    raw["schedule"] = {"steps": 2, "batch_size": 2, "eval_every": 2}
    raw["store"] = {"root": str(tmp_path / "runs")}
    res = start_run(parse_config(raw), tmp_path / "diode.zarr")
    assert res.status == "success"
    store = RunStore.open(tmp_path / "diode.zarr")
    volts = np.asarray(store.read("obs_node_voltages"))
    assert volts.shape[1:] == (3, 2, 29)  # phases, patterns, nodes
    assert np.all(np.abs(volts[..., 10:26]) <= 0.3 + 1e-3)  # hidden nodes inside the rails
    acc = np.asarray(store.read("test_accuracy"))  # before the first step and at the end
    assert acc.shape == (2,) and np.all((acc >= 0) & (acc <= 1))
