"""Memristive weights on the stock-driver bench (configs/virtual_lab_memristor_bench.yaml): the
memristor board's devices are the network's edges. Over TCP, with the stock qcodes drivers for
the sources and the meter and our MemristorBoard driver: pulses move the node voltages as an
independent dense Laplacian solve with the devices' true conductances predicts, the network sees
the true (drifted) conductance at the time of the reading while ``MEM:READ?`` carries read noise,
and a lab config with both or neither weight bank is refused in one line.

The lab runs on a clock the tests advance (:class:`ManualClock`), so the devices' drift and the
node voltages' settling are exactly those at known times. Statistical bounds follow
tests/test_memristor.py: a mean of ``n`` draws to ``5 sigma / sqrt(n)``, a sample variance to
``6 sqrt(2 / (n - 1))`` relative.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.config import ConfigError
from physlearn.drivers.virtual_lab.config import parse_lab_config
from physlearn.drivers.virtual_lab.server import LabServer
from physlearn.drivers.virtual_lab.testing import lab_config

from .conftest import CONFIGS, run_cli

CONFIG = CONFIGS / "virtual_lab_memristor_bench.yaml"
KW: dict[str, Any] = {"visalib": "@py", "timeout": 3}
#: nodes read through the matrix: hidden ones and the three outputs
NODES = [10, 13, 17, 21, 25, 26, 27, 28]
#: the 34465A at 1 PLC on the 10 V range reads with ~3 uV rms (tests/test_stock_drivers.py)
ATOL = 3e-5


class ManualClock:
    """The lab's clock (seconds), advanced by the test only."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@contextmanager
def memristor_bench(clock: ManualClock, **device: Any) -> Iterator[dict[str, Any]]:
    """The memristor bench served on ephemeral ports with ``device`` fields replaced, and the
    drivers: three N6705Bs, the 34980A matrix, the 34465A on its row 1, the memristor board."""
    from qcodes.instrument_drivers.Keysight import (
        Keysight34465A,
        Keysight34980A,
        KeysightN6705B,  # fmt: skip
    )

    from physlearn.drivers.instruments.memristor_board import MemristorBoard

    raw = lab_config(CONFIG).model_dump(mode="json")
    raw["memristors"]["device"].update(device)
    server = LabServer(lab_config(raw), clock=clock).start()
    insts: dict[str, Any] = {}
    try:
        for name in ("psu1", "psu2", "psu3"):
            insts[name] = KeysightN6705B(f"mb_{name}", server.address(name), **KW)
        insts["mux"] = Keysight34980A("mb_mux", server.address("mux"), **KW)
        insts["dmm"] = Keysight34465A("mb_dmm", server.address("dmm34465a"), **KW)
        insts["mem"] = MemristorBoard("mb_mem", server.address("mem"), **KW)
        insts["dmm"].NPLC(1)
        insts["dmm"].autozero("OFF")
        insts["dmm"].range(10)
        yield {**insts, "server": server}
    finally:
        for inst in insts.values():
            inst.close()
        server.stop()


def _inputs(b: dict[str, Any], volts: np.ndarray) -> None:
    """Input k (node k) held at volts[k] through the three N6705Bs."""
    chans = [b["psu1"].ch1, b["psu1"].ch2, b["psu1"].ch3, b["psu1"].ch4, b["psu2"].ch1,
             b["psu2"].ch2, b["psu2"].ch3, b["psu2"].ch4, b["psu3"].ch1, b["psu3"].ch2]  # fmt: skip
    for ch, v in zip(chans, volts, strict=True):
        ch.source_voltage(float(v))
        ch.enable("on")
    for name in ("psu1", "psu2", "psu3"):  # writes are not acknowledged: sync on a query
        b[name].ask("*OPC?")


def _read_nodes(b: dict[str, Any]) -> np.ndarray:
    """The voltages of NODES, each closed alone on row 1 and read by the 34465A."""
    card, out = b["mux"].module[1], []
    for node in NODES:
        card.connect(1, node + 1)
        try:
            out.append(float(b["dmm"].volt()))
        finally:
            card.disconnect(1, node + 1)
    return np.array(out)


def _dense(edges: np.ndarray, n: int, leakage: float, g: np.ndarray, volts: np.ndarray) -> Any:
    """Every node's voltage by a dense Laplacian solve: edge conductances ``g`` (S, edge
    order), nodes ``0..len(volts)-1`` held at ``volts``, every node leaking to ground."""
    lap = np.zeros((n, n))
    for (i, j), gij in zip(edges, g, strict=True):
        lap[[i, j], [i, j]] += gij
        lap[i, j] -= gij
        lap[j, i] -= gij
    lap += leakage * np.eye(n)
    held = list(range(len(volts)))
    free = list(range(len(volts), n))
    v = np.zeros(n)
    v[held] = volts
    v[free] = np.linalg.solve(lap[np.ix_(free, free)], -lap[np.ix_(free, held)] @ volts)
    return v


def _predicted(server: LabServer, g: np.ndarray, volts: np.ndarray) -> np.ndarray:
    """Voltages of NODES with inputs 0..9 held at ``volts``, nothing injected."""
    b = server.bench
    return np.asarray(_dense(b.edges, b.n_nodes, server.config.leakage, g, volts)[NODES])


def _sync(board: Any) -> None:
    """Pulse commands are not acknowledged: one query returns after they were executed."""
    assert board.ask("*OPC?") == "1"


@pytest.mark.slow
def test_pulses_move_the_nodes_as_the_network_predicts() -> None:
    clock = ManualClock()
    rng = np.random.default_rng(1)
    with memristor_bench(clock, drift="none") as b:
        server, board = b["server"], b["mem"]
        devices = server.bench.memristors
        assert board.count == server.bench.edges.shape[0] == 208
        volts = rng.uniform(0.0, 2.0, 10)
        _inputs(b, volts)
        clock.t += 1.0  # >> settling_tau: the nodes have settled
        g0 = devices.conductance(clock.t)
        np.testing.assert_allclose(g0, 1e-4)  # `initial` of every device
        want = _predicted(server, g0, volts)
        np.testing.assert_allclose(_read_nodes(b), want, rtol=0, atol=ATOL)
        for step in range(2):
            if step == 0:  # MEM:PULS:ALL, signed counts per device
                board.apply_pulses(rng.integers(-40, 41, 208))
            else:  # MEM:PULS:SET / MEM:PULS:RES on lists of devices
                board.pulse("SET", 25, list(range(1, 209, 3)))
                board.pulse("RESET", 10, list(range(2, 209, 5)))
            _sync(board)
            clock.t += 1.0
            g = devices.conductance(clock.t)
            before, want = want, _predicted(server, g, volts)
            assert np.max(np.abs(want - before)) > 1e-2  # the pulses matter to the network
            np.testing.assert_allclose(_read_nodes(b), want, rtol=0, atol=ATOL)
        assert board.errors() == []


@pytest.mark.slow
def test_reads_carry_noise_but_the_network_sees_the_true_conductance() -> None:
    clock = ManualClock()
    rng = np.random.default_rng(2)
    with memristor_bench(clock, drift="none") as b:
        server, board = b["server"], b["mem"]
        devices = server.bench.memristors
        board.apply_pulses(rng.integers(0, 61, 208))  # a spread of conductances
        _sync(board)
        volts = rng.uniform(0.0, 2.0, 10)
        _inputs(b, volts)
        clock.t += 1.0
        true = devices.conductance(clock.t)
        reads = np.array([board.read_conductances() for _ in range(10)])
        np.testing.assert_array_equal(devices.conductance(clock.t), true)  # reads disturb nothing
        sigma = server.config.memristors.device.read_noise
        rel = (reads / true - 1).ravel()
        n = rel.size
        assert abs(rel.mean()) <= 5 * sigma / math.sqrt(n)
        assert abs(rel.var(ddof=1) / sigma**2 - 1) <= 6 * math.sqrt(2 / (n - 1))
        assert np.all(reads[0] != reads[1])  # every reading draws its own noise
        measured = _read_nodes(b)
        want_true = _predicted(server, true, volts)
        want_read = _predicted(server, reads[0], volts)
        np.testing.assert_allclose(measured, want_true, rtol=0, atol=ATOL)
        assert np.max(np.abs(want_read - want_true)) > 10 * ATOL  # the check can tell them apart


@pytest.mark.slow
def test_the_network_sees_the_drifted_conductance_at_the_time_of_the_reading() -> None:
    clock = ManualClock()
    rng = np.random.default_rng(3)
    # log drift with a device-to-device spread of its coefficient: the conductances' ratios
    # change with time, so the node voltages do (a common factor would cancel)
    with memristor_bench(clock, drift="log", drift_nu=0.02, d2d_drift=0.8) as b:
        server, board = b["server"], b["mem"]
        devices = server.bench.memristors
        board.apply_pulses(rng.integers(0, 61, 208))
        _sync(board)
        volts = rng.uniform(0.0, 2.0, 10)
        _inputs(b, volts)
        clock.t += 1.0
        fresh = _predicted(server, devices.conductance(clock.t), volts)
        np.testing.assert_allclose(_read_nodes(b), fresh, rtol=0, atol=ATOL)
        clock.t += 3600.0  # an hour later, no command in between
        drifted = devices.conductance(clock.t)
        want = _predicted(server, drifted, volts)
        assert np.max(np.abs(want - fresh)) > 10 * ATOL  # drift is visible at the nodes
        np.testing.assert_allclose(_read_nodes(b), want, rtol=0, atol=ATOL)
        # the board reads the drifted conductances too, with its read noise
        sigma = server.config.memristors.device.read_noise
        rel = board.read_conductances() / drifted - 1
        assert np.max(np.abs(rel)) < 6 * sigma


@pytest.mark.parametrize("bank", ["pots", "memristors"])
def test_drift_moves_the_equilibrium_without_restarting_the_settling(bank: str) -> None:
    """Settled nodes follow the devices' drift at once: a drift step is not a change of the
    instruments that starts a new exponential settling from the old voltages."""
    from physlearn.drivers.virtual_lab.bench import Bench

    raw: dict[str, Any] = {
        "graph": {"type": "layered", "sizes": [3, 4, 2]},
        "dmm": {"mux_channels": 9},
        "settling_tau": 1e-3,
        "seed": 4,
    }
    if bank == "pots":
        raw["pots"] = {"spread": 0.1, "drift": 1e-3, "drift_interval": 0.1}
    else:
        raw["memristors"] = {"initial": 3e-6, "device": {"drift": "log", "drift_nu": 0.02,
                                                         "d2d_drift": 0.8}}  # fmt: skip
    clock = ManualClock()
    bench = Bench(parse_lab_config(raw), clock)
    rng = np.random.default_rng(5)
    if bench.memristors is not None:
        bench.memristors.pulse(rng.integers(-10, 11, 20), clock.t)
        devices = bench.memristors

        def true_g() -> np.ndarray:
            return devices.conductance(clock.t)
    else:
        bench.taps[:] = rng.integers(0, 1024, 20)

        def true_g() -> np.ndarray:
            law, t = bench.pot_spec().law, clock.t - bench.t0
            return np.asarray(law.conductance(bench.taps) * bench.gain * (1 + bench.drift_rate * t))

    volts = np.array([1.0, -0.5, 0.25])
    bench.volt[:3] = volts
    bench.output[:3] = True
    bench.changed(conductances=True)
    settled = []
    for dt in (1.0, 50.0):  # >> settling_tau, >= drift_interval
        clock.t += dt
        want = _dense(bench.edges, 9, raw.get("leakage", 1e-12), true_g(), volts)
        np.testing.assert_allclose(bench.voltages(), want, rtol=0, atol=1e-12)
        settled.append(want)
    assert np.max(np.abs(settled[1] - settled[0])) > 1e-3  # the drift moved the nodes


# -- the weight bank in the lab config -------------------------------------------------------------


def _bad_config(tmp_path: Path, which: str) -> Path:
    raw = yaml.safe_load(CONFIG.read_text())
    if which == "both":
        raw["pots"] = {"law": {"kind": "linear", "n_taps": 1024, "g_min": 1e-5, "g_max": 1e-2}}
    else:
        del raw["memristors"]
    path = tmp_path / f"{which}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("which", ["both", "neither"])
def test_lab_serve_refuses_both_or_neither_weight_bank_in_one_line(
    tmp_path: Path, which: str
) -> None:
    res = run_cli("lab", "serve", str(_bad_config(tmp_path, which)), "--port", "0", timeout=60)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"{which}.yaml" in lines[0] and f"got {which}" in lines[0]
    assert "pots" in lines[0] and "memristors" in lines[0]


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3),
    pots=st.booleans(),
    memristors=st.booleans(),
    channels=st.one_of(st.none(), st.integers(1, 40)),
)
def test_a_lab_has_exactly_one_weight_bank_covering_every_edge(
    sizes: list[int], pots: bool, memristors: bool, channels: int | None
) -> None:
    edges = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    raw: dict[str, Any] = {"graph": {"type": "layered", "sizes": sizes}}
    if pots:
        raw["pots"] = {}
    if memristors:
        raw["memristors"] = {"channels": channels}
    if pots == memristors:
        with pytest.raises(ConfigError, match=r"pots .* or memristors .*; got (both|neither)"):
            parse_lab_config(raw)
    elif memristors and channels is not None and channels != edges:
        with pytest.raises(ConfigError, match=rf"memristors.channels is {channels} but"):
            parse_lab_config(raw)
    else:
        cfg = parse_lab_config(raw)
        bank = cfg.pots.name if pots else cfg.memristors.name  # type: ignore[union-attr]
        assert bank in cfg.instrument_names()
        other = "pots" if memristors else "mem"
        assert other not in cfg.instrument_names()
