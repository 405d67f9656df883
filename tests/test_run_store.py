"""End to end on the resistor network: the run store's contents, xarray, resume after SIGKILL,
and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from physlearn.cli import main
from physlearn.config import parse_config
from physlearn.run.start import resume_run, start_run
from physlearn.store.run_store import RunStore

from .conftest import ROOT

TIMING = {"timestamp", "step_time", "eval_timestamp", "settle_time"}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    store = RunStore.open(path)
    return {n: store.read(n) for n in store.array_names() if n not in TIMING}


def _assert_same_run(a: Path, b: Path) -> None:
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)
    ca, cb = RunStore.open(a).read_checkpoint(), RunStore.open(b).read_checkpoint()
    assert ca is not None and cb is not None
    for k in ca.held:
        np.testing.assert_array_equal(ca.held[k], cb.held[k])
        np.testing.assert_array_equal(ca.shadow[k], cb.shadow[k])
    for k in ca.optimizer:
        np.testing.assert_array_equal(ca.optimizer[k], cb.optimizer[k])


def test_store_opens_in_xarray_with_dims_and_units(quick_raw, tmp_path):
    xr = pytest.importorskip("xarray")
    cfg = parse_config(quick_raw)
    res = start_run(cfg, tmp_path / "r.zarr")
    assert res.status == "success"
    ds = xr.open_zarr(tmp_path / "r.zarr", consolidated=False)
    assert ds.sizes["step"] == 24
    assert ds["outputs"].dims == ("step", "phase", "sample", "output")
    assert ds["conj_conductance"].dims == ("step", "phase", "sample", "edge")
    assert ds["param_conductance"].attrs["units"] == "S"
    assert ds["inputs"].attrs["units"] == "V"
    assert "long_name" in ds["loss"].attrs
    assert list(ds["phase"].values) == ["free", "beta+0.1", "beta-0.1"] or ds.sizes["phase"] == 3
    attrs = ds.attrs
    for key in ("config", "physlearn_version", "guid", "run_timestamp", "completed_timestamp"):
        assert key in attrs
    assert attrs["exit_status"] == "success" and attrs["committed_steps"] == 24
    assert attrs["phases"][1]["warm_start"] == "free"
    # evaluations at 0, 8, 16, 24
    assert ds["eval_step"].values.tolist() == [0, 8, 16, 24]
    # the logged parameters are those the machine held; the conjugates reproduce the gradient
    conj = ds["conj_conductance"].values
    g = ds["grad_conductance"].values
    beta = quick_raw["estimator"]["beta"]
    est = (conj[:, 1].mean(axis=1) - conj[:, 2].mean(axis=1)) / (2 * beta)
    # the difference of two nearby conjugates cancels ~4 digits: compare at that precision
    np.testing.assert_allclose(est, g, rtol=1e-7, atol=1e-9 * np.abs(g).max())


def test_inspect_json_reports_status_steps_and_metrics(quick_raw, tmp_path, capsys):
    cfg = parse_config(quick_raw)
    start_run(cfg, tmp_path / "r.zarr")
    assert main(["inspect", str(tmp_path / "r.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "success"
    assert info["committed_steps"] == 24
    assert {"loss", "test_accuracy"} <= set(info["metrics"])
    assert main(["inspect", str(tmp_path / "missing.zarr")]) == 2


def _spawn_run(cfg_path: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", "run", str(cfg_path), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _wait_committed(out: Path, at_least: int, proc: subprocess.Popen[str], timeout=120) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (out / "zarr.json").exists():
            try:
                n = json.loads((out / "zarr.json").read_text())["attributes"]["committed_steps"]
            except (json.JSONDecodeError, KeyError):
                n = 0
            if n >= at_least:
                return int(n)
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.005)
    raise AssertionError("run did not commit in time")


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_exact(quick_raw, write_config, tmp_path):
    quick_raw["schedule"]["steps"] = 60
    quick_raw["store"]["flush_every"] = 1
    cfg_path = write_config(quick_raw)
    ref = tmp_path / "ref.zarr"
    start_run(parse_config(quick_raw), ref)

    rng = np.random.default_rng()
    out = tmp_path / "killed.zarr"
    proc = _spawn_run(cfg_path, out)
    k1 = int(rng.integers(3, 25))
    _wait_committed(out, k1, proc)
    time.sleep(float(rng.uniform(0, 0.05)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert RunStore.open(out).status() == "interrupted"

    # resume in a subprocess and kill it again further on
    proc = subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", "resume", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    k2 = int(rng.integers(30, 50))
    _wait_committed(out, k2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    res = resume_run(out)
    assert res.status == "success" and res.committed_steps == 60
    _assert_same_run(ref, out)


@pytest.mark.slow
def test_ctrl_c_once_stops_at_step_boundary_and_resumes(quick_raw, write_config, tmp_path):
    quick_raw["schedule"]["steps"] = 200
    cfg_path = write_config(quick_raw)
    out = tmp_path / "int.zarr"
    proc = _spawn_run(cfg_path, out)
    _wait_committed(out, 4, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    store = RunStore.open(out)
    assert store.attrs["exit_status"] == "abort"
    n = store.committed()
    assert 4 <= n < 200
    assert "Traceback" not in err
    # the aborted run resumes to the same end as an uninterrupted run
    quick_raw["schedule"]["steps"] = 200
    ref = tmp_path / "ref.zarr"
    start_run(parse_config(quick_raw), ref)
    resume_run(out)
    _assert_same_run(ref, out)


@pytest.mark.slow
def test_ctrl_c_twice_leaves_a_resumable_store(quick_raw, write_config, tmp_path):
    quick_raw["schedule"]["steps"] = 200
    cfg_path = write_config(quick_raw)
    out = tmp_path / "int2.zarr"
    proc = _spawn_run(cfg_path, out)
    _wait_committed(out, 4, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    store = RunStore.open(out)
    assert store.attrs["exit_status"] == "abort"
    res = resume_run(out)
    assert res.status == "success" and res.committed_steps == 200


@pytest.mark.slow
def test_run_stopped_between_last_step_and_its_evaluation_resumes_exactly(
    quick_raw, tmp_path, monkeypatch
):
    from physlearn.run import campaign

    cfg = parse_config(quick_raw)
    ref = tmp_path / "ref.zarr"
    start_run(cfg, ref)

    real = campaign.Campaign.evaluate

    def failing(self, updates):  # the instrument dies during the final evaluation
        if updates == self.total:
            raise RuntimeError("instrument lost during evaluation")
        return real(self, updates)

    monkeypatch.setattr(campaign.Campaign, "evaluate", failing)
    out = tmp_path / "stopped.zarr"
    with pytest.raises(RuntimeError, match="instrument lost"):
        start_run(cfg, out)
    store = RunStore.open(out)
    assert store.attrs["exit_status"] == "fail"
    assert store.committed() == 24  # every complete step kept
    assert int(store.read("eval_step")[-1]) == 16
    monkeypatch.setattr(campaign.Campaign, "evaluate", real)
    res = resume_run(out)
    assert res.status == "success"
    _assert_same_run(ref, out)
