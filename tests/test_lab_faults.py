"""Faults at the bench: the virtual lab drops connections, swallows replies, garbles them and
repeats stale scans; the system retries, reconnects or aborts to the safe state, keeping every
committed step, and the run resumes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from qcodes.instrument import Instrument

from physlearn.config import parse_config
from physlearn.drivers.errors import ComplianceTrip, InstrumentFault
from physlearn.drivers.virtual_lab.config import FaultSpec
from physlearn.drivers.virtual_lab.testing import bench_experiment, running_lab, write_station
from physlearn.run.start import resume_run, start_run
from physlearn.store.run_store import RunStore

from .conftest import CONFIGS

BENCH = CONFIGS / "virtual_lab_bench.yaml"
QUIET = {
    "dmm": {"noise": 0.0, "resolution": 0.0},
    "pots": {"spread": 0.0, "measure_noise": 0.0},
    "settling_tau": 0.0,
}
TIMING = {"timestamp", "step_time", "eval_timestamp", "settle_time"}
STEPS = 8


def experiment(root: Path, station: Path, **system: Any) -> dict[str, Any]:
    raw = yaml.safe_load((CONFIGS / "virtual_lab_resistor.yaml").read_text())
    system.setdefault("equilibrium", {"settle_time": 0.0})
    raw = bench_experiment(raw, station, **system)
    raw["schedule"] = {"steps": STEPS, "batch_size": 8, "eval_every": STEPS}
    raw["store"] = {"root": str(root), "flush_every": 1}
    return raw


@pytest.fixture(autouse=True)
def _close_instruments():
    yield
    Instrument.close_all()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A fault-free run on the ideal lab."""
    tmp = tmp_path_factory.mktemp("ref")
    with running_lab(BENCH, **QUIET) as lab:
        raw = experiment(tmp, write_station(lab, tmp / "station.yaml"))
        res = start_run(parse_config(raw), tmp / "ref.zarr")
    Instrument.close_all()
    assert res.status == "success"
    return tmp / "ref.zarr"


def _arrays(path: Path, steps: int | None = None) -> dict[str, np.ndarray]:
    store = RunStore.open(path)
    out = {}
    for name in store.array_names():
        if name in TIMING:
            continue
        a = store.read(name)
        dims = store.array(name).metadata.dimension_names or ()
        if steps is not None and dims and dims[0] == "step":
            a = a[:steps]
        out[name] = a
    return out


def _assert_same(a: Path, b: Path, steps: int | None = None) -> None:
    xa, xb = _arrays(a, steps), _arrays(b, steps)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        if steps is not None and name.startswith(("eval_", "test_")):
            continue
        np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)


def _assert_safe(lab: Any) -> None:
    s = lab.bench.summary()
    assert not s["output"].any(), "a source output is still on"
    assert not s["volt"].any() and not s["curr"].any(), "a source level is not at 0"
    assert not s["closed"].any(), "a relay is still closed"


@pytest.mark.slow
def test_retried_faults_leave_no_trace_in_the_data(tmp_path, reference):
    faults = {"timeout": 0.004, "drop": 0.004, "garble": 0.02, "stuck": 0.05, "seed": 3}
    with running_lab(BENCH, **QUIET, faults=faults) as lab:
        station = write_station(lab, tmp_path / "station.yaml", timeout=0.25)
        raw = experiment(tmp_path, station, retry={"attempts": 8, "reconnects": 6, "backoff": 0})
        res = start_run(parse_config(raw), tmp_path / "faulty.zarr")
        counts = dict(lab.faults.counts)
        _assert_safe(lab)
    assert res.status == "success"
    assert counts["garble"] > 0 and counts["stuck"] > 0 and counts["timeout"] + counts["drop"] > 0
    # retries and reconnects are transparent: the same measurements as without faults
    _assert_same(reference, tmp_path / "faulty.zarr")


@pytest.mark.slow
def test_fault_aborts_to_the_safe_state_then_the_run_resumes(tmp_path, reference):
    # seed 1: the 118th reply of the DMM is garbled -- during step 3 (3 set-up replies, 45
    # scans of the first evaluation, 24 scans per step)
    faults = {"garble": 0.003, "instruments": ["dmm"], "seed": 1}
    with running_lab(BENCH, **QUIET, faults=faults) as lab:
        # a generous timeout: on a loaded machine a slow reply must not abort the run first
        station = write_station(lab, tmp_path / "station.yaml", timeout=5.0)
        raw = experiment(tmp_path, station, retry={"attempts": 1, "reconnects": 0})
        out = tmp_path / "aborted.zarr"
        with pytest.raises(InstrumentFault, match="gave up after 1 attempt"):
            start_run(parse_config(raw), out)
        _assert_safe(lab)
        store = RunStore.open(out)
        k = store.committed()
        assert store.status() == "fail" and "replied" in store.attrs["error"]
        assert 1 <= k < STEPS
        # every committed step is intact: identical to the same steps of the fault-free run
        _assert_same(reference, out, steps=k)
        lab.set_faults(FaultSpec())
        res = resume_run(out)
        _assert_safe(lab)
    assert res.status == "success" and res.committed_steps == STEPS
    _assert_same(reference, out)


@pytest.mark.slow
def test_interrupt_in_the_loop_ramps_to_safe_and_resumes(tmp_path, reference):
    with running_lab(BENCH, **QUIET) as lab:
        raw = experiment(tmp_path, write_station(lab, tmp_path / "station.yaml"))
        out = tmp_path / "int.zarr"

        def interrupt(step: int) -> None:
            if step == 3:
                raise KeyboardInterrupt  # what a second Ctrl-C raises inside the loop

        res = start_run(parse_config(raw), out, on_step=interrupt)
        assert res.status == "abort" and res.committed_steps == 3
        _assert_safe(lab)
        res = resume_run(out)
    assert res.status == "success"
    _assert_same(reference, out)


def test_compliance_trip_is_not_retried_and_ends_safe(tmp_path):
    with running_lab(BENCH, **QUIET) as lab:
        raw = experiment(tmp_path, write_station(lab, tmp_path / "station.yaml"))
        raw["system"]["inputs"]["compliance"]["value"] = 1e-4  # A: far below the load current
        with pytest.raises(ComplianceTrip, match="tripped by their compliance"):
            start_run(parse_config(raw), tmp_path / "trip.zarr")
        _assert_safe(lab)
        assert lab.bench.trip_log and "exceeds limit 0.0001 A" in lab.bench.trip_log[0]
        scans = [line for _, line in lab.received("dmm") if line == "READ?"]
    assert scans == []  # nothing was measured with a tripped source
    assert RunStore.open(tmp_path / "trip.zarr").status() == "fail"


@pytest.mark.slow
@pytest.mark.parametrize("instrument", ["src", "dmm"])
def test_a_ctrl_c_between_a_query_and_its_reply_ends_safe_with_ramps(
    tmp_path, reference, monkeypatch, instrument
):
    """A second Ctrl-C raises KeyboardInterrupt wherever the run is -- here after a query went
    out and before its reply was read, so the reply stays in the session. The run aborts, the
    sources ramp down within their steps from the levels they really hold (not from a stale
    reply read as the answer to a later query), every committed step is kept, and the run
    resumes."""
    import pyvisa.resources

    cls = pyvisa.resources.MessageBasedResource
    read, write = cls.read, cls.write
    hot = "STAT:TRIP?" if instrument == "src" else "READ?"  # the query of every phase
    sent: dict[int, str] = {}
    calls = [0]

    def remembered(self: Any, message: str, *args: Any, **kwargs: Any) -> Any:
        sent[id(self)] = message
        return write(self, message, *args, **kwargs)

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> str:
        if sent.get(id(self), "").endswith(hot):
            calls[0] += 1
            if calls[0] == 20:  # in the training loop: its query went out, the reply waits
                raise KeyboardInterrupt
        return read(self, *args, **kwargs)

    with running_lab(BENCH, record=True, **QUIET) as lab:
        monkeypatch.setattr(cls, "write", remembered)
        monkeypatch.setattr(cls, "read", interrupted)
        raw = experiment(tmp_path, write_station(lab, tmp_path / "station.yaml"))
        out = tmp_path / "ctrl_c.zarr"
        res = start_run(parse_config(raw), out)
        assert res.status == "abort" and calls[0] >= 20
        _assert_safe(lab)
        # every level set-point walks by at most the role's step (inputs 1 V, currents 5 mA)
        held: dict[tuple[str, str], float] = {}
        for _, line in lab.received("src"):
            for cmd in line.split(";"):
                m = re.fullmatch(r":?SOUR(\d+):(VOLT|CURR) (\S+)", cmd.strip())
                if m:
                    key, v = (m.group(1), m.group(2)), float(m.group(3))
                    step = 1.0 if m.group(2) == "VOLT" else 5e-3
                    assert abs(v - held.get(key, 0.0)) <= step, f"{cmd}: jump"
                    held[key] = v
        monkeypatch.setattr(cls, "read", read)
        res = resume_run(out)
        _assert_safe(lab)
    assert res.status == "success"
    _assert_same(reference, out)
