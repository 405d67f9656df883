"""Faults at the bench, on physlearn's VLAB bench and on the stock-driver bench (N6705B / 2450 /
34980A + 34465A): the virtual lab drops connections, swallows replies, garbles them and repeats
stale scans; the system retries, reconnects or aborts to the safe state, keeping every
committed step, and the run resumes to the store an uninterrupted run writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qcodes.instrument import Instrument

from physlearn.config import parse_config
from physlearn.drivers.errors import ComplianceTrip, InstrumentFault
from physlearn.drivers.virtual_lab.config import FaultSpec
from physlearn.drivers.virtual_lab.testing import running_lab, write_station
from physlearn.run.start import resume_run, start_run
from physlearn.store.run_store import RunStore

from .lab_benches import BENCH_PARAMS, STOCK, VLAB, BenchCase, assert_safe, check_ramps

TIMING = {"timestamp", "step_time", "eval_timestamp", "settle_time"}
#: the runs' length: 8 steps of 8 on the VLAB bench; the stock bench reads a node at a time
#: (about 30 exchanges per pattern), so 5 steps of 4 evaluated on 15 test patterns
SCHEDULE = {
    "vlab": {"steps": 8, "batch_size": 8, "eval_every": 8},
    "stock": {"steps": 5, "batch_size": 4, "eval_every": 5},
}


def experiment(case: BenchCase, root: Path, station: Path, **system: Any) -> dict[str, Any]:
    raw = case.raw(station, **system)
    raw["schedule"] = dict(SCHEDULE[case.name])
    raw["store"] = {"root": str(root), "flush_every": 1}
    if case is STOCK:
        raw["task"]["dataset"]["test_fraction"] = 0.1
    return raw


def n_steps(case: BenchCase) -> int:
    return int(SCHEDULE[case.name]["steps"])


@pytest.fixture(autouse=True)
def _close_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Callable[[BenchCase], Path]:
    """A fault-free run on each ideal bench, made when first asked for."""
    done: dict[str, Path] = {}

    def get(case: BenchCase) -> Path:
        if case.name not in done:
            tmp = tmp_path_factory.mktemp(f"ref-{case.name}")
            with running_lab(case.lab, **case.quiet) as lab:
                raw = experiment(case, tmp, write_station(lab, tmp / "station.yaml"))
                res = start_run(parse_config(raw), tmp / "ref.zarr")
            Instrument.close_all()
            assert res.status == "success"
            done[case.name] = tmp / "ref.zarr"
        return done[case.name]

    return get


def _arrays(path: Path, steps: int | None = None) -> dict[str, np.ndarray]:
    store = RunStore.open(path)
    out = {}
    for name in store.array_names():
        if name in TIMING or name.startswith("system_"):  # the bench's own bookkeeping
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


#: faults drawn by the lab's ``faults`` section. Stale scans only where the meter reports a
#: reading counter (the VLAB DMM: the stock dialects never repeat a reading). On the stock bench
#: the 34980A is spared, and replies are garbled only where the stock drivers' parsing is
#: retried (the meter's readings, the bank's taps): test_station_phases shows the defects
#: (a crosspoint left closed, a garbled status or read-back inside a write not retried)
_SOURCES = ["psu1", "psu2", "psu3", "smu1", "smu2", "smu3"]
FAULTS = {
    "vlab": [{"timeout": 0.004, "drop": 0.004, "garble": 0.02, "stuck": 0.05, "seed": 3}],
    "stock": [
        {"timeout": 1e-3, "drop": 1e-3, "instruments": [*_SOURCES, "dmm34465a", "pots"]},
        {"garble": 0.01, "instruments": ["dmm34465a", "pots"], "seed": 5},
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BENCH_PARAMS)
def test_retried_faults_leave_no_trace_in_the_data(tmp_path, reference, case):
    """Timeouts, dropped connections, garbled replies (and, on the VLAB bench, stale scans)
    drawn at random by the lab's ``faults`` section: the run retries and reconnects through all
    of them and stores exactly what the fault-free run stores."""
    counts: dict[str, int] = {}
    for k, faults in enumerate(FAULTS[case.name]):
        with running_lab(case.lab, **case.quiet, faults=faults) as lab:
            station = write_station(lab, tmp_path / f"station{k}.yaml", timeout=0.25)
            retry = {"attempts": 8, "reconnects": 6, "backoff": 0}
            raw = experiment(case, tmp_path, station, retry=retry)
            res = start_run(parse_config(raw), tmp_path / f"faulty{k}.zarr")
            counts = {n: counts.get(n, 0) + c for n, c in lab.faults.counts.items()}
            assert_safe(lab)
        assert res.status == "success"
        # retries and reconnects are transparent: the same measurements as without faults
        _assert_same(reference(case), tmp_path / f"faulty{k}.zarr")
    assert counts["garble"] > 0 and counts["timeout"] + counts["drop"] > 0, counts
    assert case is STOCK or counts["stuck"] > 0, counts


def test_the_faults_section_names_the_stock_instruments():
    """The stock bench's instruments can be singled out by name in ``faults.instruments``; a
    name the lab does not serve is refused."""
    from physlearn.config import ConfigError
    from physlearn.drivers.virtual_lab.testing import lab_config

    spec = lab_config(STOCK.lab, faults={"garble": 0.1, "instruments": ["psu1", "mux"]})
    assert spec.faults.instruments == ["psu1", "mux"]
    with pytest.raises(ConfigError, match="unknown instruments"):
        lab_config(STOCK.lab, faults={"garble": 0.1, "instruments": ["psu9"]})


def _garble_the_meter_after(lab: Any, case: BenchCase, step: int) -> Callable[[int], None]:
    """An ``on_step`` that turns the lab's faults on once ``step`` is committed: every reply
    of the meter garbled from then on."""

    def arm(done: int) -> None:
        if done == step:
            lab.set_faults(FaultSpec(garble=0.999, instruments=[case.meter]))

    return arm


@pytest.mark.slow
@pytest.mark.parametrize("case", BENCH_PARAMS)
def test_fault_aborts_to_the_safe_state_then_the_run_resumes(tmp_path, reference, case):
    """With one attempt and no reconnect, a garbled reading in step 3 stops the run: the bench
    ends safe, the store keeps the two committed steps -- equal to the fault-free run's -- and
    says why; resumed on a quiet lab, the run ends with the fault-free run's store."""
    with running_lab(case.lab, **case.quiet) as lab:
        # a generous timeout: on a loaded machine a slow reply must not abort the run first
        station = write_station(lab, tmp_path / "station.yaml", timeout=5.0)
        raw = experiment(case, tmp_path, station, retry={"attempts": 1, "reconnects": 0})
        out = tmp_path / "aborted.zarr"
        with pytest.raises(InstrumentFault, match="gave up after 1 attempt"):
            start_run(parse_config(raw), out, on_step=_garble_the_meter_after(lab, case, 2))
        assert lab.faults.counts["garble"] == 1
        assert_safe(lab)
        store = RunStore.open(out)
        assert store.status() == "fail" and case.meter in store.attrs["error"]
        assert store.committed() == 2
        # every committed step is intact: identical to the same steps of the fault-free run
        _assert_same(reference(case), out, steps=2)
        lab.set_faults(FaultSpec())
        res = resume_run(out)
        assert_safe(lab)
    assert res.status == "success" and res.committed_steps == n_steps(case)
    _assert_same(reference(case), out)


@pytest.mark.slow
@pytest.mark.parametrize("case", BENCH_PARAMS)
def test_interrupt_in_the_loop_ramps_to_safe_and_resumes(tmp_path, reference, case):
    with running_lab(case.lab, **case.quiet) as lab:
        raw = experiment(case, tmp_path, write_station(lab, tmp_path / "station.yaml"))
        out = tmp_path / "int.zarr"

        def interrupt(step: int) -> None:
            if step == 3:
                raise KeyboardInterrupt  # what a second Ctrl-C raises inside the loop

        res = start_run(parse_config(raw), out, on_step=interrupt)
        assert res.status == "abort" and res.committed_steps == 3
        assert_safe(lab)
        res = resume_run(out)
        assert_safe(lab)
    assert res.status == "success"
    _assert_same(reference(case), out)


#: the compliance that trips: the VLAB inputs' current limit far below the load current, the
#: stock 2450s' voltage limit (the error nudge) at its lowest, below the output nodes' voltages
_TRIP = {
    "vlab": (("inputs",), 1e-4, "exceeds limit 0.0001 A"),
    "stock": (("nudge", "error", "sources"), 0.02, "exceeds limit 0.02 V"),
}


@pytest.mark.parametrize(
    "case",
    [
        BENCH_PARAMS[0],
        pytest.param(
            STOCK,
            id="stock",
            marks=[pytest.mark.slow],
        ),
    ],
)
def test_compliance_trip_is_not_retried_and_ends_safe(tmp_path, case):
    path, value, logged = _TRIP[case.name]
    with running_lab(case.lab, record=True, **case.quiet) as lab:
        raw = experiment(case, tmp_path, write_station(lab, tmp_path / "station.yaml"))
        role = raw["system"]
        for key in path:
            role = role[key]
        role["compliance"]["value"] = value
        with pytest.raises(ComplianceTrip, match="tripped by their compliance"):
            start_run(parse_config(raw), tmp_path / "trip.zarr")
        assert_safe(lab)
        assert lab.bench.trip_log and logged in lab.bench.trip_log[0]
        received = lab.received()
    # nothing was measured with a tripped source: every reading came before the phase whose
    # trip-status queries found the trip (the VLAB inputs trip at the first phase; the 2450s'
    # voltage limit once an output node exceeds it, a few patterns in)
    queries = [k for k, (_, line) in enumerate(received) if "TRIP" in line.upper()]
    reads = [k for k, (name, line) in enumerate(received) if name == case.meter and line == "READ?"]
    assert queries and all(k < queries[-1] for k in reads)
    if case.name == "vlab":
        assert reads == []
    assert RunStore.open(tmp_path / "trip.zarr").status() == "fail"


#: the query of every phase each bench is interrupted in (its reply not yet read), and the
#: how manieth: inside the training loop, past the first evaluation
_HOT = {
    ("vlab", "source"): ("STAT:TRIP?", 20),
    ("vlab", "meter"): ("READ?", 20),
    ("stock", "source"): ("*OPC?", 60),  # three N6705B per phase, 15 phases evaluated first
    ("stock", "meter"): ("READ?", 500),  # 29 readings per phase
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "instrument"),
    [
        pytest.param(VLAB, "source", id="vlab-source"),
        pytest.param(VLAB, "meter", id="vlab-meter"),
        pytest.param(STOCK, "source", id="stock-source"),
        pytest.param(STOCK, "meter", id="stock-meter"),
    ],
)
def test_a_ctrl_c_between_a_query_and_its_reply_ends_safe_with_ramps(
    tmp_path, reference, monkeypatch, case, instrument
):
    """A second Ctrl-C raises KeyboardInterrupt wherever the run is -- here after a query went
    out and before its reply was read, so the reply stays in the session. The run aborts, the
    sources ramp down within their steps from the levels they really hold (not from a stale
    reply read as the answer to a later query), every committed step is kept, and the run
    resumes."""
    import pyvisa.resources

    cls = pyvisa.resources.MessageBasedResource
    read, write = cls.read, cls.write
    hot, nth = _HOT[(case.name, instrument)]
    sent: dict[int, str] = {}
    calls = [0]

    def remembered(self: Any, message: str, *args: Any, **kwargs: Any) -> Any:
        sent[id(self)] = message
        return write(self, message, *args, **kwargs)

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> str:
        if sent.get(id(self), "").endswith(hot):
            calls[0] += 1
            if calls[0] == nth:  # its query went out, the reply waits
                raise KeyboardInterrupt
        return read(self, *args, **kwargs)

    with running_lab(case.lab, record=True, **case.quiet) as lab:
        monkeypatch.setattr(cls, "write", remembered)
        monkeypatch.setattr(cls, "read", interrupted)
        raw = experiment(case, tmp_path, write_station(lab, tmp_path / "station.yaml"))
        out = tmp_path / "ctrl_c.zarr"
        start = lab.bench.summary()
        res = start_run(parse_config(raw), out)
        assert res.status == "abort" and calls[0] >= nth
        assert_safe(lab)
        # every level set-point walks by at most the role's step (inputs 1 V, currents 5 mA)
        n = check_ramps(
            lab, lab.received(), start, {"VOLT": 1.0, "CURR": 5e-3}, rtol=case.level_rtol
        )
        assert n > 0
        monkeypatch.setattr(cls, "read", read)
        res = resume_run(out)
        assert_safe(lab)
    assert res.status == "success"
    _assert_same(reference(case), out)
