"""The conformance kit (physlearn.testing) over every system kind physlearn ships, each built
small through the normal config path, and against deliberately broken systems (the kit fails)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter

from physlearn.config import SystemConfig, parse_config
from physlearn.simulators.graphs.generators import layered
from physlearn.simulators.resistor.linear import LinearResistorNetwork
from physlearn.system import Equilibrium, FloatArray, Nudge, Params, PhysicalSystem
from physlearn.testing import CHECKS, SkipCheck, check_system, iter_checks

from .conftest import CONFIGS

CHAIN = [{"pauli": "Z{i} Z{i+1}", "coeff": -1.0, "range": [0, 3]}]
QUANTUM: dict[str, Any] = {
    "kind": "quantum",
    "qubits": 4,
    "h0": CHAIN,
    "inputs": [[{"pauli": "Z0", "coeff": 0.5}], [{"pauli": "Z3", "coeff": 0.5}]],
    "trainable": [
        {"terms": [{"pauli": "X{i}", "coeff": -1.0, "range": [0, 4]}], "separate": True},
        {"terms": [{"pauli": "Z{i}", "coeff": -1.0, "range": [0, 4]}], "init": 0.2},
    ],
    "outputs": [{"label": "Z1", "terms": [{"pauli": "Z1"}]}, {"terms": [{"pauli": "X2"}]}],
    "bounds": [-3.0, 3.0],
    "init_range": [0.8, 1.2],
    "solver": {"dense_below": 4},  # 16 states: the Lanczos path, which carries its state
}
SENSOR = {
    **QUANTUM,
    "sensitivity": {"field": [{"pauli": "X{i}", "coeff": -1.0, "range": [0, 4]}], "delta": 0.01},
}
GRAPH = {"type": "layered", "sizes": [3, 4, 2]}
RAILS = {"placement": "hidden", "rails": [{"low": -0.3, "high": 0.3}]}
SYSTEMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (system section, kit options)
    "resistor": (
        {"kind": "resistor", "graph": GRAPH, "ground": True, "conductance": {"resolution": 1e-5}},
        {"beta": 1e-4},
    ),
    "diode_resistor": (
        {
            "kind": "diode_resistor",
            "graph": GRAPH,
            "diodes": {**RAILS, "model": {"kind": "shockley"}},
            "weights": {"conductance": {"min": 1e-5, "max": 1e-3}},
        },
        {"beta": 1e-5},
    ),
    "transistor_ideal_diode": (
        {
            "kind": "diode_resistor",
            "graph": GRAPH,
            "diodes": {**RAILS, "model": {"kind": "ideal"}},
            "weights": {"element": "transistor"},
        },
        {"beta": 1e-5},
    ),
    "xy": (
        {
            "kind": "xy",
            "graph": {"type": "lattice", "rows": 3, "cols": 3, "inputs": 2, "outputs": 2},
        },
        {"beta": 0.05},
    ),
    "quantum": (QUANTUM, {"beta": 0.05}),
    "quantum_sensitivity": (SENSOR, {"beta": 1e-3}),
    "rydberg": (
        {
            "kind": "rydberg",
            "positions": [[0.0, 0.0], [7.0, 0.0], [14.0, 0.0], [7.0, 7.0]],
            "input_atoms": [0, 2],
            "output_atoms": [1, 3],
            "detuning_bound": 30.0,
            "init_detuning": 6.0,
            "init_rabi": 9.0,
        },
        {"beta": 1.0, "input_range": (-5.0, 5.0)},
    ),
    "ions": (
        {
            "kind": "ions",
            "n_ions": 3,
            "couplings": "individual",
            "j0": 0.8,
            "init_field": 0.3,
            "x_field": 0.2,
            "input_ions": [0, 2],
            "output_ions": [1],
        },
        {"beta": 0.05},
    ),
    "elastic": ({"kind": "elastic", "graph": GRAPH}, {"beta": 0.05}),
}


def build(system: dict[str, Any], seed: int = 0) -> PhysicalSystem:
    """``system`` built through the normal config path, in an experiment whose regression
    task is as wide as its ports (a sensor without inputs: the one empty pattern)."""
    sizes = TypeAdapter(SystemConfig).validate_python(system)
    n_in, n_out = sizes.input_size(), sizes.output_size()
    dataset = (
        {"kind": "regression", "features": n_in, "targets": n_out} if n_in else {"kind": "none"}
    )
    raw = {
        "system": system,
        "task": {"dataset": dataset, "target": {"kind": "value"}, "loss": "mse"},
        "schedule": {"steps": 1, "batch_size": 1},
    }
    return parse_config(raw).system.build(seed)


#: Real bugs the kit found, left for their owners to fix (strict: the mark must go then).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def _cases() -> Iterator[Any]:
    for kind in SYSTEMS:
        for check in CHECKS:
            bug = KNOWN_BUGS.get((kind, check))
            marks = (
                [pytest.mark.xfail(reason=bug, strict=True, raises=AssertionError)] if bug else []
            )
            yield pytest.param(kind, check, marks=marks, id=f"{kind}-{check}")


@pytest.mark.parametrize(("kind", "check"), list(_cases()))
def test_system_conforms(kind: str, check: str) -> None:
    system, options = SYSTEMS[kind]
    checks = dict(iter_checks(lambda: build(system), **options))
    try:
        checks[check]()
    except SkipCheck as why:
        pytest.skip(str(why))


# -- the station bench, served in-process by the virtual lab ----------------------------------
QUIET = {
    "dmm": {"noise": 0.0, "resolution": 0.0},
    "pots": {"spread": 0.0, "measure_noise": 0.0},
    "settling_tau": 0.0,
}


@pytest.fixture(scope="module")
def station_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Any]]:
    """Station systems against one noise-free virtual lab (ephemeral ports on 127.0.0.1)."""
    from qcodes.instrument import Instrument

    from physlearn.drivers.virtual_lab.testing import bench_experiment, running_lab, write_station

    raw = yaml.safe_load((CONFIGS / "virtual_lab_resistor.yaml").read_text())
    with running_lab(CONFIGS / "virtual_lab_bench.yaml", **QUIET) as lab:
        station = write_station(lab, tmp_path_factory.mktemp("lab") / "station.yaml")
        raw = bench_experiment(raw, station, equilibrium={"settle_time": 0.0})
        raw["schedule"] = {"steps": 1, "batch_size": 4}
        yield lambda: parse_config(raw).system.build(0)
        Instrument.close_all()


def test_every_registered_system_kind_runs_the_kit() -> None:
    """The kit covers every system the registry offers (physlearn's own register by entry
    point like a third party's): a kind added without a small config here fails."""
    from physlearn.registry import kinds

    covered = {section["kind"] for section, _ in SYSTEMS.values()} | {"station"}
    assert set(kinds()) <= covered, f"no conformance config for {sorted(set(kinds()) - covered)}"


@pytest.mark.slow
@pytest.mark.parametrize("check", list(CHECKS))
def test_station_conforms(station_factory: Callable[[], PhysicalSystem], check: str) -> None:
    """The bench: conductances on a 10-bit tap grid (held within 0.5 % of the request), error
    nudges of 1e-4 A within the 5 mA source envelope, results equal to 1e-7 of their scale."""
    checks = dict(iter_checks(station_factory, beta=1e-4, hold_rtol=5e-3, rtol=1e-7, batch=3))
    try:
        checks[check]()
    except SkipCheck as why:
        pytest.skip(str(why))


# -- the kit fails on broken systems ----------------------------------------------------------
class Clipping(LinearResistorNetwork):
    """Clips out-of-bounds requests instead of refusing them."""

    def set_parameters(self, params: Params) -> Params:
        g = self.group("conductance")
        return super().set_parameters(
            {"conductance": np.clip(params["conductance"], g.lower, g.upper)}
        )


class OffConjugates(LinearResistorNetwork):
    """Conjugates 1 % larger than dE/dg."""

    def equilibrate(self, inputs: FloatArray, nudge: Nudge | None = None, warm_start: Any = None,
                    rng: np.random.Generator | None = None) -> Equilibrium:  # fmt: skip
        eq = super().equilibrate(inputs, nudge, warm_start, rng)
        eq.conjugates = {k: 1.01 * v for k, v in eq.conjugates.items()}
        return eq


class WrongSign(LinearResistorNetwork):
    """Injects +beta eps instead of -beta eps (an error nudge pushing the wrong way)."""

    def equilibrate(self, inputs: FloatArray, nudge: Nudge | None = None, warm_start: Any = None,
                    rng: np.random.Generator | None = None) -> Equilibrium:  # fmt: skip
        if nudge is not None and nudge.kind == "error":
            nudge = Nudge(beta=-nudge.beta, error=nudge.error)
        return super().equilibrate(inputs, nudge, warm_start, rng)


class Unsafe(LinearResistorNetwork):
    """Closes without making anything safe."""

    def close(self) -> None:
        pass


class MemoryCarry(LinearResistorNetwork):
    """export_state drops the state, and import_state takes it from the object's memory: the
    same object resumes warm (0 iterations), a fresh one cold."""

    def carried_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        return {"outputs": (batch, self.outputs.size)}

    def export_state(self, state: Any) -> dict[str, FloatArray] | None:
        self.kept = state
        return {"outputs": np.zeros((np.shape(state)[0], self.outputs.size))}

    def import_state(self, arrays: Any) -> Any:
        return getattr(self, "kept", None)

    def equilibrate(self, inputs: FloatArray, nudge: Nudge | None = None, warm_start: Any = None,
                    rng: np.random.Generator | None = None) -> Equilibrium:  # fmt: skip
        eq = super().equilibrate(inputs, nudge, warm_start, rng)
        eq.state = np.asarray(eq.outputs)
        eq.iterations = np.full(eq.batch, 0 if warm_start is not None else 5, dtype=np.int64)
        return eq


class SharedBatch(LinearResistorNetwork):
    """Every sample's free outputs depend on the batch (a leaked batch mean)."""

    def equilibrate(self, inputs: FloatArray, nudge: Nudge | None = None, warm_start: Any = None,
                    rng: np.random.Generator | None = None) -> Equilibrium:  # fmt: skip
        eq = super().equilibrate(inputs, nudge, warm_start, rng)
        if nudge is None:
            eq.outputs = eq.outputs + 1e-3 * eq.outputs.mean(axis=0)
        return eq


class FreeOnly(LinearResistorNetwork):
    """equilibrate_many ignores the nudges."""

    def equilibrate_many(self, inputs: FloatArray, nudges: Any, warm_start: Any = None,
                         rng: np.random.Generator | None = None) -> list[Equilibrium]:  # fmt: skip
        return [self.equilibrate(inputs, None, warm_start, rng) for _ in nudges]


def _toy(cls: type[LinearResistorNetwork]) -> Callable[[], PhysicalSystem]:
    return lambda: cls(layered([3, 4, 2]), bounds=(1e-5, 1e-2), init=(1e-4, 1e-3), seed=0)


def test_the_real_network_passes_every_check() -> None:
    report = check_system(_toy(LinearResistorNetwork), beta=1e-4)
    assert report == dict.fromkeys(CHECKS, "passed")


@pytest.mark.parametrize(
    ("toy", "check"),
    [
        (Clipping, "set_parameters"),
        (OffConjugates, "energy_gradient"),
        (WrongSign, "nudges"),
        (FreeOnly, "equilibrate_many"),
        (MemoryCarry, "carried_state"),
        (Unsafe, "lifecycle"),
        (SharedBatch, "batch_invariance"),
    ],
)
def test_the_kit_names_the_broken_check(toy: type[LinearResistorNetwork], check: str) -> None:
    with pytest.raises(AssertionError, match=f"^check '{check}' failed: "):
        check_system(_toy(toy), beta=1e-4)
    report = check_system(_toy(toy), beta=1e-4, skip=(check,))  # only that check fails
    assert report[check] == "skipped: asked"


def test_skips_say_why_and_options_are_checked() -> None:
    class NoEnergy(LinearResistorNetwork):
        def equilibrate(self, inputs: FloatArray, nudge: Nudge | None = None,
                        warm_start: Any = None, rng: Any = None) -> Equilibrium:  # fmt: skip
            eq = super().equilibrate(inputs, nudge, warm_start, rng)
            eq.energy = None
            return eq

    report = check_system(_toy(NoEnergy), beta=1e-4)
    assert report["energy_gradient"].startswith("skipped: the system reports no energy")
    with pytest.raises(TypeError, match="unknown options"):
        check_system(_toy(LinearResistorNetwork), betta=1.0)
    with pytest.raises(ValueError, match="unknown checks"):
        check_system(_toy(LinearResistorNetwork), skip=("nudge",))
