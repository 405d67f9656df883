"""A virtual-lab bench with fixed diodes and bias rails (``diodes:``, mirroring a diode_resistor
system): its node voltages, read through the stock qcodes drivers, are the non-linear network's
equilibrium; bad diode sections are refused in one line naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from physlearn.config import ConfigError
from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.server import LabServer
from physlearn.drivers.virtual_lab.testing import lab_config

from .test_stock_drivers import _inputs, _read_node

CONFIG = "configs/virtual_lab_stock_bench.yaml"
KW: dict[str, Any] = {"visalib": "@py", "timeout": 3}
RAILS = (-0.4, 0.4)
DIODES: dict[str, Any] = {
    "model": {"kind": "ideal"},
    "placement": "hidden",
    "rails": [{"low": RAILS[0], "high": RAILS[1]}],
}
HIDDEN = np.arange(10, 26)  # layered 10-16-3: nodes 10..25


def _reference(g: np.ndarray, inputs: np.ndarray, inject: dict[int, float]) -> np.ndarray:
    """Node voltages of the same 10-16-3 network from NonlinearResistorNetwork, the diodes laid
    out here by hand: node -> high rail (node 30), low rail (node 29) -> node."""
    from physlearn.simulators.graphs.generators import layered
    from physlearn.simulators.resistor.elements import DiodeModel
    from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork
    from physlearn.system import Nudge

    graph = layered([10, 16, 3])
    an = np.concatenate([HIDDEN, np.full(16, 29)])
    ca = np.concatenate([np.full(16, 30), HIDDEN])
    net = NonlinearResistorNetwork(
        graph, an, ca, DiodeModel(kind="ideal"), list(RAILS), params=g, bounds=(1e-9, 1.0)
    )
    err = np.array([[-inject.get(int(o), 0.0) for o in graph.output_nodes]])
    eq = net.equilibrate(inputs[None, :], Nudge(beta=1.0, error=err))
    return np.asarray(net.node_voltages(eq, inputs[None, :])[0, :29])


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, Any]]:
    """The stock bench with clipping diodes on its hidden nodes, random taps."""
    from qcodes.instrument_drivers.Keithley import Keithley2450
    from qcodes.instrument_drivers.Keysight import (
        Keysight34465A,
        Keysight34980A,
        KeysightN6705B,  # fmt: skip
    )

    server = LabServer(lab_config(CONFIG, diodes=DIODES)).start()
    b = server.bench
    with b.lock:
        b.taps[:] = np.random.default_rng(5).integers(0, 1024, b.taps.size)
        b.changed(conductances=True)
    insts: dict[str, Any] = {"server": server}
    try:
        for name in ("psu1", "psu2", "psu3"):
            insts[name] = KeysightN6705B(f"d_{name}", server.address(name), **KW)
        insts["smu"] = Keithley2450("d_smu1", server.address("smu1"), **KW)
        insts["mux"] = Keysight34980A("d_mux", server.address("mux"), **KW)
        insts["dmm"] = Keysight34465A("d_dmm", server.address("dmm34465a"), **KW)
        insts["dmm"].NPLC(1)
        insts["dmm"].range(10)
        yield insts
    finally:
        for inst in insts.values():
            if inst is not server:
                inst.close()
        server.stop()


@pytest.mark.parametrize("current", [0.0, 3e-4])
def test_stock_drivers_read_the_diode_network_equilibrium(
    bench: dict[str, Any], current: float
) -> None:
    """Inputs from the N6705Bs, a 2450 injecting ``current`` into output 26: every node read
    through the 34980A and 34465A equals NonlinearResistorNetwork's equilibrium, with hidden
    nodes both clipped at a rail and inside the rails."""
    x = np.random.default_rng(7).uniform(-1.5, 1.5, 10)
    _inputs(bench, x)
    k = bench["smu"]
    k.source_function("current")
    k.source.limit(10.0)
    k.source.current(current)
    k.output_enabled(True)
    k.ask("*OPC?")
    try:
        got = np.array([_read_node(bench, n) for n in range(29)])
    finally:
        k.source.current(0.0)
        k.output_enabled(False)
    with bench["server"].bench.lock:
        g = bench["server"].bench.edge_conductance()
    want = _reference(g, x, {26: current})
    np.testing.assert_allclose(got, want, atol=3e-5)  # DMM noise 1 uV rms
    h = want[HIDDEN]
    assert np.any(np.isclose(h, RAILS[1])) or np.any(np.isclose(h, RAILS[0]))
    assert np.any((h > RAILS[0] + 1e-3) & (h < RAILS[1] - 1e-3))


def test_without_inputs_the_rails_still_hold_the_hidden_nodes() -> None:
    """Rails are sources inside the bench: with every output off, hidden nodes sit inside them
    (a rail pair above 0 V pulls them up to the low rail, not to the leakage ground)."""
    diodes = {**DIODES, "rails": [{"low": 0.1, "high": 0.3}]}
    b = Bench(lab_config(CONFIG, diodes=diodes, settling_tau=0.0))
    v = b.voltages()
    np.testing.assert_allclose(v[HIDDEN], 0.1, atol=1e-9)


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"diodes": {"placement": "hidden"}}, "diodes: placement 'hidden' needs 'rails'"),
        ({"diodes": {"placement": [[10, 11]]}}, "joins two network nodes"),
        (
            {"diodes": DIODES, "source": {"wiring": [*range(10), 26, 27, 12]}},
            "source channel 13 is wired to node 12",
        ),
        (
            {
                "diodes": DIODES,
                "source": {"wiring": [*range(10), 26, 27, None]},
                "switch": {"relays": [{"source": 13, "node": 20, "conductance": 1e-4}]},
            },
            "switch relay 1 reaches node 20",
        ),
    ],
)
def test_bad_diode_sections_are_refused_in_one_line(sections: dict[str, Any], match: str) -> None:
    raw = lab_config(CONFIG).model_dump(mode="json")
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    with pytest.raises(ConfigError, match=match) as info:
        lab_config(raw)
    assert "\n" not in str(info.value)
