"""Sweeps: expansion, validation, execution on a real Dask LocalCluster, failures, resumption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from physlearn.cli import main
from physlearn.store.run_store import RunStore
from physlearn.sweep.execute import run_sweep
from physlearn.sweep.expand import load_sweep
from physlearn.sweep.plan import read_sweep_attrs
from tests.conftest import ROOT, load_yaml, run_cli

TARGET_NUDGE_ERROR = "a target nudge realises 'mse', not the loss 'cross_entropy'"


def tiny_base(steps: int = 6) -> dict[str, Any]:
    """The quickstart network on iris, cut to a few small steps."""
    raw = load_yaml("quickstart.yaml")
    raw["schedule"] = {"steps": steps, "batch_size": 8, "eval_every": 3}
    raw["store"] = {"flush_every": 2}
    return raw


def write_sweep(tmp_path: Path, spec: dict[str, Any], base_steps: int = 6) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_base(base_steps), sort_keys=False))
    spec = {"base": "base.yaml", **spec}
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A real LocalCluster: 2 worker processes, one thread each, on 127.0.0.1 only."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP server: a free port
    ) as cluster:
        yield cluster.scheduler_address


# --------------------------------------------------------------------------------------------
# Expansion


def test_expansion_ids_overrides_and_order(tmp_path: Path) -> None:
    spec = {
        "name": "exp",
        "set": {"optimizer.lr": 0.001},
        "variants": {"plain": {}, "skip": {"set": {"system.graph.skip": True}}},
        "grid": {"estimator.beta": [1e-4, 0.001], "system.graph.sizes.1": [4, 8]},
        "seeds": [0, 3],
    }
    path = write_sweep(tmp_path, spec)
    sweep = load_sweep(path)
    assert len(sweep.runs) == 2 * 2 * 2 * 2
    ids = [r.run_id for r in sweep.runs]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "plain__beta-0.0001__sizes.1-4__seed-0"
    assert ids[-1] == "skip__beta-0.001__sizes.1-8__seed-3"
    assert ids == [r.run_id for r in load_sweep(path).runs]  # deterministic
    assert sweep.axis_names == ["variant", "estimator.beta", "system.graph.sizes.1"]
    last = sweep.runs[-1].config
    assert last.name == ids[-1]
    assert last.seed == 3
    assert last.estimator.beta == 0.001  # type: ignore[union-attr]
    assert last.system.graph.skip is True  # type: ignore[union-attr]
    assert last.system.graph.sizes == [10, 8, 3]  # type: ignore[union-attr]
    assert last.optimizer.lr == 0.001
    assert sweep.runs[0].config.system.graph.skip is False  # type: ignore[union-attr]
    assert sweep.store_path() == Path("sweeps/exp.zarr")


def test_values_without_a_file_safe_name_are_hashed(tmp_path: Path) -> None:
    graphs = [{"type": "layered", "sizes": [10, n, 3]} for n in (4, 6)]
    sweep = load_sweep(write_sweep(tmp_path, {"name": "g", "grid": {"system.graph": graphs}}))
    ids = [r.run_id for r in sweep.runs]
    assert len(set(ids)) == 2
    assert all(i.startswith("graph-h") and len(i) == len("graph-h") + 8 for i in ids)
    assert [r.config.system.graph.sizes[1] for r in sweep.runs] == [4, 6]  # type: ignore[union-attr]


def test_random_axes_are_reproducible_and_in_range(tmp_path: Path) -> None:
    def spec(seed: int) -> dict[str, Any]:
        return {
            "name": "rnd",
            "random": {
                "samples": 5,
                "seed": seed,
                "axes": {
                    "optimizer.lr": {"dist": "log_uniform", "low": 1e-4, "high": 1e-2},
                    "system.graph.sizes.1": {"dist": "int", "low": 3, "high": 6},
                    "optimizer.kind": {"dist": "choice", "values": ["adam", "sgd"]},
                },
            },
            "seeds": 2,
        }

    a = load_sweep(write_sweep(tmp_path, spec(0)))
    b = load_sweep(write_sweep(tmp_path, spec(0)))
    c = load_sweep(write_sweep(tmp_path, spec(1)))
    assert len(a.runs) == 10
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    assert [r.axes for r in a.runs] == [r.axes for r in b.runs]
    assert {r.run_id for r in a.runs}.isdisjoint(r.run_id for r in c.runs)
    lrs = np.array([r.config.optimizer.lr for r in a.runs])
    assert np.all((lrs >= 1e-4) & (lrs <= 1e-2))
    assert {r.config.system.graph.sizes[1] for r in a.runs} <= {3, 4, 5, 6}  # type: ignore[union-attr]
    # sample i has the same values for every seed
    assert a.runs[0].axes == a.runs[1].axes and a.runs[0].seed != a.runs[1].seed


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"name": "b", "gird": {"seed": [1]}}, "gird: unknown key"),
        ({"name": "b", "grid": {"estimator.beta": [0.1, -1.0]}}, "beta--1.0"),
        ({"name": "b", "grid": {"estimator.beta": [0.1, -1.0]}}, "estimator.beta"),
        ({"name": "b", "grid": {"estimator.betta": [0.1]}}, "betta: unknown key"),
        ({"name": "b", "grid": {"seed.x": [1]}}, "seed.x"),
        ({"name": "b", "grid": {"estimator.beta": []}}, "has no values"),
        ({"name": "b", "grid": {"optimizer.lr": [0.1, 0.1]}}, "lists 0.1 twice"),
        ({"name": "b", "seeds": [1, 1]}, "seeds"),
        ({"name": "b", "grid": {"seed": [1]}, "seeds": 2}, "'seed' is swept by 'seeds'"),
        ({"name": "b", "base": "missing.yaml"}, "base:"),
        ({"name": "b/../x"}, "name:"),
        ({"name": "b", "random": {"samples": 2, "axes": {"optimizer.lr": {"dist": "normal"}}}},
         "random.axes.optimizer.lr"),
    ],
)  # fmt: skip
def test_bad_sweep_files_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict[str, Any], needle: str
) -> None:
    path = write_sweep(tmp_path, spec)
    out = tmp_path / "store.zarr"
    code = main(["sweep", str(path), "--out", str(out), "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert not out.exists()


def test_bad_sweep_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"name": "b", "grid": {"estimator.beta": [1e-4, 0.0]}})
    out = tmp_path / "store.zarr"
    proc = run_cli("sweep", str(path), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "run 'beta-0.0'" in proc.stderr
    assert "estimator.beta: Input should be greater than 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_imports_stay_lazy() -> None:
    code = (
        "import sys, physlearn.cli, physlearn.sweep.command, physlearn.report.command; "
        "print(sorted(m for m in ('dask', 'distributed', 'matplotlib') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Execution


@pytest.mark.slow
def test_sweep_on_a_local_cluster_of_processes(tmp_path: Path, scheduler: str) -> None:
    path = write_sweep(
        tmp_path, {"name": "four", "grid": {"system.graph.sizes.1": [4, 8]}, "seeds": 2}
    )
    out = tmp_path / "four.zarr"
    result = run_sweep(load_sweep(path), out, scheduler=scheduler)
    assert result.all_succeeded and result.ran == 4
    attrs = read_sweep_attrs(out)
    assert attrs is not None
    assert [r["run_id"] for r in attrs["runs"]] == [
        "sizes.1-4__seed-0",
        "sizes.1-4__seed-1",
        "sizes.1-8__seed-0",
        "sizes.1-8__seed-1",
    ]
    assert {r["status"] for r in attrs["runs"]} == {"success"}
    assert attrs["driver"] is None and attrs["axes"] == ["system.graph.sizes.1"]
    writers = set()
    for row in attrs["runs"]:
        store = RunStore.open(out / row["run_id"])
        assert store.status() == "success"
        assert store.committed() == 6 == row["committed_steps"]
        assert store.attrs["guid"] == row["guid"]
        assert store.attrs["config"]["seed"] == row["seed"]
        assert 0 <= row["metrics"]["test_accuracy"] <= 1
        writers.add(store.attrs["pid"])
    assert os.getpid() not in writers  # the runs ran in worker processes
    # each run group is a normal run: xarray reads it, inspect accepts it
    import xarray as xr

    ds = xr.open_zarr(out / "sizes.1-8__seed-1", consolidated=False)
    assert ds.sizes["step"] == 6 and ds.sizes["edge"] == 10 * 8 + 8 * 3
    assert main(["inspect", str(out / "sizes.1-8__seed-1"), "--json"]) == 0


@pytest.mark.slow
def test_a_local_cluster_starts_while_planning_and_runs_go_longest_first(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"name": "order", "grid": {"schedule.steps": [2, 4, 6]}})
    out = tmp_path / "order.zarr"
    finished: list[str] = []
    result = run_sweep(
        load_sweep(path), out, workers=1, on_result=lambda rec: finished.append(rec.run_id)
    )
    assert result.all_succeeded and result.ran == 3
    assert finished == ["steps-6", "steps-4", "steps-2"]  # one worker: in submission order
    assert [r.run_id for r in result.records] == ["steps-2", "steps-4", "steps-6"]
    assert {"cluster_start", "cluster_wait", "cluster_close"} <= set(result.timings)
    pids = {RunStore.open(out / rid).attrs["pid"] for rid in finished}
    assert len(pids) == 1 and os.getpid() not in pids  # in the cluster's worker process
    assert [RunStore.open(out / rid).committed() for rid in finished] == [6, 4, 2]


def test_physlearns_local_cluster_turns_dask_bookkeeping_down() -> None:
    # the workers' profiler sampled the run's thread every 10 ms (runs ~9 % slower)
    import dask.config
    import distributed  # noqa: F401  (registers the distributed.* defaults)

    from physlearn.sweep.execute import _QUIET_DASK, _local_cluster

    before = {k: dask.config.get(k) for k in _QUIET_DASK}
    cluster, client = _local_cluster(1)
    try:
        seen = client.run(lambda: {k: dask.config.get(k) for k in _QUIET_DASK})
        assert list(seen.values()) == [_QUIET_DASK]
        assert {k: dask.config.get(k) for k in _QUIET_DASK} == before  # the driver's untouched
        # the scheduler's HTTP server (no dashboard): loopback, a free port, never 8787
        http = cluster.scheduler.http_server
        assert http.address == "127.0.0.1" and http.port not in (0, 8787)
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_others_complete(
    tmp_path: Path, scheduler: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # nudge: target cannot realise the cross-entropy loss: the estimator raises at run time
    spec = {"name": "mixed", "grid": {"estimator.nudge": ["auto", "target"]}, "seeds": 2}
    path = write_sweep(tmp_path, spec)
    out = tmp_path / "mixed.zarr"
    assert main(["sweep", str(path), "--out", str(out), "--scheduler", scheduler]) == 1
    printed = capsys.readouterr().out
    assert f"fail  nudge-target__seed-0: ValueError: {TARGET_NUDGE_ERROR}" in printed
    attrs = read_sweep_attrs(out)
    assert attrs is not None
    rows = {r["run_id"]: r for r in attrs["runs"]}
    for seed in (0, 1):
        ok = RunStore.open(out / f"nudge-auto__seed-{seed}")
        assert ok.status() == "success" and ok.committed() == 6
        bad = RunStore.open(out / f"nudge-target__seed-{seed}")
        assert bad.attrs["exit_status"] == "fail"
        assert bad.attrs["error"] == f"ValueError: {TARGET_NUDGE_ERROR}"
        assert rows[f"nudge-target__seed-{seed}"]["status"] == "fail"
        assert rows[f"nudge-target__seed-{seed}"]["error"] == bad.attrs["error"]
    guids = {rid: RunStore.open(out / rid).attrs["guid"] for rid in rows}

    # again: nothing runs (failed runs are skipped); --retry-failed resumes them (they fail again)
    sweep = load_sweep(path)
    again = run_sweep(sweep, out, workers=0)
    assert again.ran == 0 and again.count("fail") == 2 and again.count("success") == 2
    retried = run_sweep(sweep, out, scheduler=scheduler, retry_failed=True)
    assert retried.ran == 2 and retried.count("fail") == 2
    assert all(r.action == "resumed" for r in retried.records if r.status == "fail")
    assert guids == {rid: RunStore.open(out / rid).attrs["guid"] for rid in rows}


def test_an_edited_sweep_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sweep(tmp_path, {"name": "edit", "seeds": 1}, base_steps=2)
    out = tmp_path / "edit.zarr"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "0"]) == 0
    before = RunStore.open(out / "seed-0").attrs
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["optimizer"]["lr"] = 0.123
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "run 'seed-0'" in err and "optimizer.lr: stored 0.0002, sweep 0.123" in err
    assert RunStore.open(out / "seed-0").attrs == before


def test_dry_run_lists_the_plan_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sweep(tmp_path, {"name": "dry", "grid": {"optimizer.lr": [0.1, 0.2]}})
    out = tmp_path / "dry.zarr"
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "start  lr-0.1  [pending]" in printed and "start  lr-0.2  [pending]" in printed
    assert not out.exists()


def _statuses(out: Path) -> dict[str, str]:
    """exit_status of every run group with attributes; ``unfinished`` when it has none yet,
    ``started`` once an unfinished run has committed steps."""
    found = {}
    for d in sorted(out.iterdir()) if out.exists() else []:
        try:
            store = RunStore.open(d)
        except Exception:  # being created right now
            continue
        status = str(store.attrs.get("exit_status", "unfinished"))
        found[d.name] = "started" if status == "unfinished" and store.committed() else status
    return found


@pytest.mark.slow
def test_an_interrupted_sweep_is_finished_by_running_it_again(
    tmp_path: Path, scheduler: str
) -> None:
    spec = {"name": "crash", "grid": {"system.graph.sizes.1": [4, 8]}, "seeds": 2}
    path = write_sweep(tmp_path, spec, base_steps=16)
    out = tmp_path / "crash.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", "sweep", str(path), "--out", str(out)]
        + ["--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the driver and its workers
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            seen = list(_statuses(out).values())
            if seen.count("success") >= 2 and "started" in seen:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # a crash: driver and workers die at once
        proc.wait(timeout=30)
    before = _statuses(out)
    assert list(before.values()).count("success") >= 2, before
    finished = {
        rid: {k: RunStore.open(out / rid).attrs[k] for k in ("guid", "run_timestamp")}
        for rid, s in before.items()
        if s == "success"
    }
    partial = {
        rid: RunStore.open(out / rid).attrs["guid"] for rid, s in before.items() if s != "success"
    }
    assert partial, f"no run was caught mid-way: {before}"
    deadline = time.monotonic() + 30  # the killed workers must be gone before resuming
    while time.monotonic() < deadline and any(
        RunStore.open(out / rid).status() == "running" for rid in partial
    ):
        time.sleep(0.1)

    result = run_sweep(load_sweep(path), out, scheduler=scheduler)
    assert result.all_succeeded and len(result.records) == 4
    assert result.ran == 4 - len(finished)
    for rid, facts in finished.items():
        attrs = RunStore.open(out / rid).attrs
        assert {k: attrs[k] for k in facts} == facts  # not run again
    for rid, guid in partial.items():
        store = RunStore.open(out / rid)
        assert store.attrs["guid"] == guid  # resumed, not restarted
        assert store.committed() == 16
    actions = {r.run_id: r.action for r in result.records}
    assert {actions[rid] for rid in partial} <= {"resumed"}
    assert {actions[rid] for rid in finished} == {"skip"}
