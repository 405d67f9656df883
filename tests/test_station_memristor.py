"""Memristive weights on the station system (``weights.kind: memristor``), end to end over TCP:
the stock-driver bench of configs/bench_memristor.yaml served by a real virtual lab on ephemeral
127.0.0.1 ports, the station system built from the experiment config, real run stores.

What is checked:

* a short run logs ``requested_conductance`` (the projected update, recomputed here from the
  logged gradients) and ``realised_conductance`` (what the board read back after programming:
  the devices' true conductance up to the read noise) per step and edge, in S;
* write-verify leaves every device it does not report within its tolerance, and reports the
  devices that cannot reach their targets (stuck devices; one write of one pulse);
* write-verify lands closer to its targets than open loop (device-to-device variation);
* no pulse command beyond ``max_pulses_per_step`` reaches the board (the recording lab).

Two boards: the configured one (read noise 2.89 % of G, log drift) and a *noise-free* one (no
read noise, no drift) on which a reading is the truth, so the algorithm's claims can be checked
exactly. Write-verify can only know its readings: on the configured board a device it does not
report is within tolerance *as read*, and its true conductance is within the tolerance plus the
read noise (6 sigma). Note: this config's tolerance (1 % of the window, 9.9e-6 S) is below the
read noise above G ~ 3.4e-4 S, so there write-verify reports devices on most updates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import physlearn
from physlearn.config import parse_config
from physlearn.drivers.station.programming import nominal_pulses
from physlearn.drivers.virtual_lab.memristor import MemristorModel
from physlearn.drivers.virtual_lab.server import LabServer
from physlearn.drivers.virtual_lab.testing import (
    bench_experiment,
    lab_config,
    running_lab,
    write_station,
)
from physlearn.run.start import build_system, start_run

from .conftest import CONFIGS

CONFIG = CONFIGS / "bench_memristor.yaml"
LAB = CONFIGS / "virtual_lab_memristor_bench.yaml"
#: a board whose readings are its devices' true conductances, which do not drift
NOISE_FREE: dict[str, Any] = {"read_noise": 0.0, "drift": "none"}
BOARDS = {"configured": {}, "noise-free": NOISE_FREE}
GROUP = "conductance"
#: a reading is G (1 + read_noise xi); 6 sigma bounds every one of ~1e5 readings
K_SIGMA = 6.0
_EVENT = re.compile(
    r"write-verify: (\d+) device\(s\) outside tolerance after (\d+) writes "
    r"\(edges \[([\d, ]*)\](\.\.\.)?\)"
)
_PULSES = re.compile(r"MEM(?:ORY)?:PULS(?:E)?:(ALL|SET|RES(?:ET)?)\s+(.*)", re.IGNORECASE)


def lab_raw(seed: int = 0, **device: Any) -> dict[str, Any]:
    """The memristor bench's lab config with device fields replaced."""
    raw = lab_config(LAB).model_dump(mode="json")
    raw["seed"] = seed
    raw["memristors"]["device"].update(device)
    return raw


def experiment(station: Path, root: Path, **programming: Any) -> dict[str, Any]:
    """configs/bench_memristor.yaml on ``station`` with ``weights.programming`` fields replaced."""
    raw = yaml.safe_load(CONFIG.read_text())
    weights = raw["system"]["weights"]
    weights = {**weights, "programming": {**weights["programming"], **programming}}
    out = bench_experiment(raw, station, weights=weights)
    out["store"] = {"root": str(root / "runs")}
    return out


@contextmanager
def station(lab: LabServer, tmp: Path, **programming: Any) -> Iterator[Any]:
    """The station system of configs/bench_memristor.yaml on ``lab``, opened (it closes its
    instruments on exit: qcodes names are global, so one system at a time)."""
    raw = experiment(write_station(lab, tmp / "station.yaml"), tmp, **programming)
    with build_system(parse_config(raw)) as system:
        yield system


def tolerance(weights: Any) -> float:
    """Write-verify's tolerance (S) of a ``weights`` section: a fraction of the nominal window."""
    w = weights
    return float(w.programming.tolerance * (w.device.g_max - w.device.g_min))


def new_events(system: Any, before: int) -> list[str]:
    return [e for e in system.events[before:] if e.startswith("write-verify")]


def check_reported(system: Any, before: int, off: np.ndarray) -> None:
    """The events since ``before`` report exactly the devices ``off`` marks (count, first 10)."""
    events = new_events(system, before)
    if not off.any():
        assert events == []
        return
    assert len(events) == 1, events
    m = _EVENT.fullmatch(events[0])
    assert m is not None, events[0]
    bad = np.flatnonzero(off)
    assert int(m.group(1)) == bad.size
    assert [int(e) for e in m.group(3).split(",")] == bad[:10].tolist()
    assert (m.group(4) is not None) == (bad.size > 10)
    np.testing.assert_array_equal(system.bank.last.unconverged, bad)


# -- a short run logs requested and realised conductances -------------------------------------


@pytest.fixture(scope="module", params=list(BOARDS))
def short_run(request: Any, tmp_path_factory: Any) -> dict[str, Any]:
    """Three steps of configs/bench_memristor.yaml (batch 4, 15 test patterns) on a board; after
    the run, the board's true conductances, what get_parameters reads, and the most the devices
    can have drifted since the run began (relative)."""
    pytest.importorskip("xarray")
    tmp = tmp_path_factory.mktemp("short_run")
    spec = lab_config(lab_raw(**BOARDS[request.param])).memristors.device
    with running_lab(lab_raw(**BOARDS[request.param])) as lab:
        raw = experiment(write_station(lab, tmp / "station.yaml"), tmp)
        raw["schedule"] = {"steps": 3, "batch_size": 4, "eval_every": 3}
        raw["task"]["dataset"]["test_fraction"] = 0.1
        cfg = parse_config(raw)
        began = lab.bench.clock()
        res = start_run(cfg, tmp / "run.zarr")
        system: Any = build_system(cfg)
        try:
            system.connect()  # reads, writes no weight
            read = system.get_parameters()[GROUP]
            true = lab.bench.memristors.conductance(lab.bench.clock())
            elapsed = lab.bench.clock() - began
        finally:
            system.close()
    assert res.status == "success" and res.committed_steps == 3
    assert spec.drift in ("none", "log") and spec.d2d_drift == 0
    drifted = 0.0 if spec.drift == "none" else spec.drift_nu * np.log1p(elapsed / spec.drift_t0)
    return {
        "ds": physlearn.open_run(tmp / "run.zarr"),
        "cfg": cfg,
        "read": read,
        "true": true,
        "sigma": spec.read_noise,
        "drifted": drifted,
    }


@pytest.mark.slow
def test_a_run_logs_requested_and_realised_conductance_per_step_and_edge(
    short_run: dict[str, Any],
) -> None:
    ds = short_run["ds"]
    for name in ("requested_conductance", "realised_conductance"):
        assert ds[name].dims == ("step", "edge")
        assert ds[name].shape == (3, 208)
        assert ds[name].attrs["units"] == "S"
        assert np.isfinite(ds[name].values).all()
    # the conductances each step used are those the previous step realised
    real = ds["realised_conductance"].values
    np.testing.assert_array_equal(ds["param_conductance"].values[1:], real[:-1])
    # the devices write-verify left outside tolerance, counted per step, are the logged ones
    tol = tolerance(short_run["cfg"].system.weights)
    off = np.abs(real - ds["requested_conductance"].values) > tol
    np.testing.assert_array_equal(ds["system_unverified_devices"].values, off.sum(axis=1))


@pytest.mark.slow
def test_requested_is_the_projected_update_of_the_logged_gradients(
    short_run: dict[str, Any],
) -> None:
    """requested[k] = clip(requested[k-1] - lr[k] * adam_k, bounds): the update is taken from
    what was asked before, never from what the devices realised (Adam recomputed here)."""
    ds, cfg = short_run["ds"], short_run["cfg"]
    req = ds["requested_conductance"].values
    grad, lr = ds["grad_conductance"].values, ds["lr"].values
    opt, bounds = cfg.optimizer, cfg.system.weights.conductance
    assert opt.kind == "adam"
    m = v = np.zeros(req.shape[1])
    for k in range(req.shape[0]):
        t = k + 1
        m = opt.beta1 * m + (1 - opt.beta1) * grad[k]
        v = opt.beta2 * v + (1 - opt.beta2) * grad[k] ** 2
        d = (m / (1 - opt.beta1**t)) / (np.sqrt(v / (1 - opt.beta2**t)) + opt.eps)
        if k:
            want = np.clip(req[k - 1] - lr[k] * d, bounds.min, bounds.max)
            np.testing.assert_allclose(req[k], want, rtol=1e-12, atol=0)
    assert np.all((bounds.min <= req) & (req <= bounds.max))
    assert np.abs(np.diff(req, axis=0)).max() > 1e-5  # the update moved the requests


@pytest.mark.slow
def test_realised_is_what_the_board_reads_back(short_run: dict[str, Any]) -> None:
    """The last step's realised conductances are a reading of the devices, as get_parameters
    gives: the true conductance exactly on the noise-free board, else within the read noise
    (relative error of mean ~0 and std read_noise, as a fresh reading's)."""
    ds, true, read = short_run["ds"], short_run["true"], short_run["read"]
    sigma, drifted = short_run["sigma"], short_run["drifted"]
    real = ds["realised_conductance"].values[-1]
    req = ds["requested_conductance"].values[-1]
    assert np.abs(real - req).max() > 0  # programmed devices do not hold the request exactly
    if sigma == 0:
        np.testing.assert_array_equal(real, true)
        np.testing.assert_array_equal(read, true)
        return
    n = real.size
    for got in (real, read):
        rel = got / true - 1
        # the devices drift (log law) between the last step's reading and now
        assert abs(rel.mean()) <= 5 * sigma / np.sqrt(n) + drifted
        assert abs(rel.std(ddof=1) / sigma - 1) <= 6 * np.sqrt(1 / (2 * (n - 1)))


# -- write-verify ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("board", list(BOARDS))
def test_write_verify_leaves_every_device_it_does_not_report_within_tolerance(
    board: str, tmp_path: Path
) -> None:
    """Random targets inside the nominal window: the devices write-verify does not report are
    within tolerance of their targets as read back (exactly what write-verify can know) and, on
    the board's true conductances, within tolerance plus the read noise (exactly the tolerance
    on the noise-free board; drift between the last reading and the check, a few ms, is below
    1e-5 of G); the events report the others."""
    device = BOARDS[board]
    sigma = lab_config(lab_raw(**device)).memristors.device.read_noise
    with running_lab(lab_raw(**device)) as lab, station(lab, tmp_path) as system:
        tol, nominal = tolerance(system.config.weights), system.config.weights.device
        devices = lab.bench.memristors

        @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(seed=st.integers(0, 2**32 - 1), spread=st.floats(0.05, 1.0))
        def check(seed: int, spread: float) -> None:
            rng = np.random.default_rng(seed)
            now = system.get_parameters()[GROUP]
            moved = now + spread * rng.uniform(-1, 1, now.size) * (nominal.g_max - nominal.g_min)
            targets = np.clip(moved, nominal.g_min, nominal.g_max)
            before = len(system.events)
            held = system.set_parameters({GROUP: targets})[GROUP]
            true = devices.conductance(lab.bench.clock())
            np.testing.assert_array_equal(held, system.bank.last.conductance)
            off = np.abs(held - targets) > tol
            check_reported(system, before, off)
            ok = ~off
            assert ok.sum() >= 20  # devices verified: the check below is not vacuous
            err = np.abs(true - targets)[ok]
            assert np.all(err <= tol + K_SIGMA * sigma * true[ok])

        check()


def _stuck_targets(devices: Any, tol: float) -> np.ndarray:
    """Targets inside every device's window; a stuck device's far from where it is stuck."""
    lo, hi = devices.g_lo.max() + 3 * tol, devices.g_hi.min() - 3 * tol
    targets = np.random.default_rng(4).uniform(lo, hi, devices.n)
    at_top = devices.g_prog > (devices.g_lo + devices.g_hi) / 2
    return np.where(devices.stuck, np.where(at_top, lo, hi), targets)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("device", "programming"),
    [
        ({**NOISE_FREE, "stuck": 0.03}, {}),
        (NOISE_FREE, {"max_iterations": 1, "max_pulses_per_step": 1}),
    ],
    ids=["stuck devices", "one write of one pulse"],
)
def test_write_verify_reports_the_devices_that_cannot_reach_their_targets(
    device: dict[str, Any], programming: dict[str, Any], tmp_path: Path
) -> None:
    with running_lab(lab_raw(**device)) as lab, station(lab, tmp_path, **programming) as system:
        tol, devices = tolerance(system.config.weights), lab.bench.memristors
        if programming:  # each device sent 3e-4 S away: one pulse moves it < 1.5e-4 S
            now = system.get_parameters()[GROUP]
            targets = np.where(now > 5.5e-4, now - 3e-4, now + 3e-4)
            cannot = np.ones(devices.n, dtype=bool)
        else:
            targets = _stuck_targets(devices, tol)
            cannot = devices.stuck
            assert 1 <= cannot.sum() <= 10  # every stuck device is named in the event
        before = len(system.events)
        held = system.set_parameters({GROUP: targets})[GROUP]
        off = np.abs(held - targets) > tol
        assert np.all(off[cannot])
        check_reported(system, before, off)
        if not programming:  # write-verify brought every other device within tolerance
            np.testing.assert_array_equal(off, cannot)


@pytest.mark.slow
def test_write_verify_lands_closer_to_its_targets_than_open_loop(tmp_path: Path) -> None:
    """On the same devices and targets, open loop trusts the nominal curves: device-to-device
    variation of the step (30 %) makes it miss; write-verify corrects from what it reads. Judged
    on what each logs as realised (the read-back) and on the true conductances."""
    errors: dict[str, dict[str, list[float]]] = {}
    with running_lab(lab_raw()) as lab:
        for mode in ("open_loop", "write_verify"):
            errors[mode] = {"read": [], "true": []}
            with station(lab, tmp_path, mode=mode) as system:
                before = len(system.events)
                for seed in range(3):
                    targets = np.random.default_rng(seed).uniform(1e-5, 1e-3, 208)
                    held = system.set_parameters({GROUP: targets})[GROUP]
                    true = lab.bench.memristors.conductance(lab.bench.clock())
                    errors[mode]["read"].append(float(np.median(np.abs(held - targets))))
                    errors[mode]["true"].append(float(np.median(np.abs(true - targets))))
                if mode == "open_loop":  # no tolerance, nothing reported
                    assert new_events(system, before) == []
    for judged in ("read", "true"):
        wv, ol = errors["write_verify"][judged], errors["open_loop"][judged]
        assert all(w < o for w, o in zip(wv, ol, strict=True)), (judged, wv, ol)


# -- the pulse envelope ------------------------------------------------------------------------


def pulse_counts(received: list[tuple[str, str]]) -> list[int]:
    """Every pulse count the board received (signed for MEM:PULS:ALL, else as written)."""
    counts: list[int] = []
    for _, line in received:
        for cmd in line.split(";"):
            m = _PULSES.fullmatch(cmd.strip())
            if m is None:
                continue
            if m.group(1).upper() == "ALL":
                counts += [int(c) for c in m.group(2).split(",")]
            else:
                counts.append(int(m.group(2).split(",")[0]))
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["open_loop", "write_verify"])
def test_no_pulse_command_beyond_max_pulses_per_step_reaches_the_board(
    mode: str, tmp_path: Path
) -> None:
    """Half the devices sent across the window (about 90 nominal pulses each, more than the 64
    of max_pulses_per_step): the programming clips the counts, so every command the board
    receives carries at most 64 pulses per device (and the clip is met: some carry 64)."""
    with running_lab(lab_raw(), record=True) as lab, station(lab, tmp_path, mode=mode) as system:
        w = system.config.weights
        top = w.programming.max_pulses_per_step
        model = MemristorModel(**w.device.model_dump())
        g_lo, g_hi = w.device.g_min, w.device.g_max

        @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(seed=st.integers(0, 2**32 - 1))
        def check(seed: int) -> None:
            rng = np.random.default_rng(seed)
            system.set_parameters({GROUP: np.full(208, 1.5 * g_lo)})  # all low
            now = system.get_parameters()[GROUP]
            far = rng.random(208) < 0.5
            targets = np.where(far, 0.96 * g_hi, rng.uniform(g_lo, 2 * g_lo, 208))
            asked = nominal_pulses(now, targets, model, 10**6)
            assert np.abs(asked).max() > top  # the request goes beyond the envelope
            lab.clear_received()
            system.set_parameters({GROUP: targets})
            counts = np.abs(pulse_counts(lab.received("mem")))
            assert counts.size >= 208  # at least one write of every device
            assert counts.max() == top

        check()
