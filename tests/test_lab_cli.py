"""The command line at the bench: `run --dry-run`, `lab serve`, `lab calibrate`, and how a run
stopped by the bench is reported."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from qcodes.instrument import Instrument

from physlearn.cli import main
from physlearn.config import load_config
from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.config import load_lab_config
from physlearn.run.start import build_system

from .conftest import CONFIGS, ROOT, run_cli

DEMO = str(CONFIGS / "virtual_lab_resistor.yaml")


@pytest.fixture(autouse=True)
def _close_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


def test_dry_run_passes_on_the_shipped_config(capsys):
    assert main(["run", DEMO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run passed" in out and "[FAIL]" not in out
    assert "src: identity: 'physlearn,VLAB-SRC16,SRC0001,1.0' matches" in out
    assert "inputs: dataset inside the envelope" in out


@pytest.mark.slow
def test_dry_run_passes_on_the_shipped_stock_config(capsys):
    """The stock-driver bench (its lab served by the run): every instrument connects through its
    stock qcodes driver and identifies, every role resolves, the dataset fits the envelope."""
    assert main(["run", str(CONFIGS / "bench_qcodes_stock.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run passed" in out and "[FAIL]" not in out
    assert "smu1: identity: 'KEITHLEY INSTRUMENTS,MODEL 2450," in out
    assert "mux: identity: 'Agilent Technologies,34980A," in out
    assert "roles: every channel and parameter of the config resolves" in out


def test_dry_run_reports_every_problem_and_exits_2(capsys):
    code = main(
        [
            "run",
            DEMO,
            "--dry-run",
            "--set",
            "system.inputs.limits.max=1.0",  # V: the data reaches 1.49 V
            "--set",
            "system.identity.dmm=^Keithley",  # the wrong meter
            "--set",
            "estimator.beta=5.0e-4",  # W: up to 10 mA of nudge current, envelope 5 mA
        ]
    )
    out = capsys.readouterr().out
    assert code == 2
    fails = [line for line in out.splitlines() if "[FAIL]" in line]
    assert any("dmm: identity" in f and "does NOT match '^Keithley'" in f for f in fails)
    assert any("inputs: dataset inside the envelope" in f and "1.492" in f for f in fails)
    assert any("nudge.error: worst case" in f and "0.01 A" in f for f in fails)
    assert "dry run FAILED: 3 of" in out


def test_a_bad_station_section_is_a_user_error(capsys):
    assert main(["validate", DEMO, "--set", "system.station=nowhere.yaml"]) == 2
    err = capsys.readouterr().err
    assert "system.station" in err and "does not exist" in err and "Traceback" not in err
    assert main(["validate", DEMO, "--set", "system.inputs.channels=src.ch{01..09}"]) == 2
    assert "10 input nodes" in capsys.readouterr().err
    assert main(["validate", DEMO, "--set", "system.probes.readings=meter.readings"]) == 2
    assert "instrument 'meter'" in capsys.readouterr().err


def test_a_run_stopped_by_the_bench_exits_1_with_a_message(tmp_path, capsys):
    code = main(
        [
            "run",
            DEMO,
            "--out",
            str(tmp_path / "r.zarr"),
            "--set",
            "system.inputs.compliance.value=1.0e-4",
            "--set",
            "schedule.epochs=1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "tripped by their compliance" in err and "ramped to its safe state" in err
    assert "Traceback" not in err


def test_lab_serve_answers_over_tcp_and_stops_on_ctrl_c(tmp_path):
    import pyvisa

    station = tmp_path / "station.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "physlearn.cli",
            "lab",
            "serve",
            str(CONFIGS / "virtual_lab_bench.yaml"),
            "--port",
            "0",
            "--station-out",
            str(station),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        t0 = time.monotonic()
        while not station.exists() and proc.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        assert station.exists(), proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)  # the file is complete once written; the servers are already bound
        insts = yaml.safe_load(station.read_text())["instruments"]
        assert set(insts) == {"src", "dmm", "pots", "swm"}
        assert all(i["address"].startswith("TCPIP::127.0.0.1::") for i in insts.values())
        rm = pyvisa.ResourceManager("@py")
        res = rm.open_resource(
            insts["pots"]["address"], read_termination="\n", write_termination="\n"
        )
        assert isinstance(res, pyvisa.resources.MessageBasedResource)
        try:
            assert res.query("*IDN?") == "physlearn,VLAB-POT208,POT0001,1.0"
        finally:
            res.close()
            rm.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "virtual lab stopped" in out and "Traceback" not in err


def test_lab_serve_refuses_a_remote_host_without_the_flag():
    res = run_cli("lab", "serve", str(CONFIGS / "virtual_lab_bench.yaml"), "--host", "0.0.0.0")
    assert res.returncode == 2
    assert "loopback" in res.stderr and "--allow-remote" in res.stderr
    assert "Traceback" not in res.stderr


def test_calibration_measures_every_device_and_the_system_uses_it(tmp_path):
    lab_raw = yaml.safe_load((CONFIGS / "virtual_lab_bench.yaml").read_text())
    lab_raw["pots"].update(spread=0.05, measure_noise=0.0)
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(lab_raw))
    cal = tmp_path / "cal.json"
    sets = ["--set", f"system.lab.serve={lab_file}"]
    assert main(["lab", "calibrate", DEMO, "--out", str(cal), "--points", "5", *sets]) == 0
    table = json.loads(cal.read_text())
    taps = np.array(table["taps"])
    assert taps.tolist() == [0, 256, 512, 767, 1023]
    # the bench's true devices: nominal law x each device's gain (seeded spread)
    bench = Bench(load_lab_config(lab_file))
    truth = np.asarray(bench.config.pots.law.conductance(taps))[None, :] * bench.gain[:, None]
    np.testing.assert_allclose(np.array(table["conductance"]), truth, rtol=1e-12)
    # a 5 % spread shrinks the range every device reaches: train inside it
    overrides = [
        sets[1],
        f"system.weights.calibration={cal}",
        "system.weights.conductance.min=2.0e-5",
        "system.weights.conductance.max=8.0e-3",
    ]
    system = build_system(load_config(DEMO, overrides))
    assert system.bank.tapmap.source == "calibration cal.json"  # type: ignore[attr-defined]
    g = np.full(208, 2e-3)
    taps_for = system.bank.tapmap.nearest(g)  # type: ignore[attr-defined]
    held = system.bank.tapmap.conductance(taps_for)  # type: ignore[attr-defined]
    # calibrated: each device's held conductance is within half a tap step of the request
    step = np.diff(truth, axis=1).mean(axis=1) / np.diff(taps).mean()
    assert np.all(np.abs(held - g) <= 0.5 * step + 1e-15)
    nominal_error = np.abs(bench.gain * 2e-3 - 2e-3)
    assert nominal_error.max() > 10 * np.abs(held - g).max()  # the nominal law would be far off


def test_drivers_yaml_is_shipped_as_package_data():
    from importlib.resources import files

    assert (files("physlearn.drivers.virtual_lab") / "virtual_lab_sim.yaml").is_file()
    assert (
        Path(str(files("physlearn.drivers.virtual_lab"))).resolve()
        == (ROOT / "drivers" / "virtual_lab").resolve()
    )
