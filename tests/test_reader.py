"""The reader API (physlearn.open_run, physlearn.open_sweep) and ``physlearn export``, on real run
and sweep stores written by real ``physlearn run`` / ``physlearn sweep`` processes: every open
is a committed prefix of the finished run (while it writes, after SIGKILL, with a torn commit's
tail), every dimension has a coordinate and every variable units and a long name, a sweep stacks
along its axes, and the netCDF export gives the run back."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.cli import main
from physlearn.config import parse_config
from physlearn.run.start import resume_run, start_run
from physlearn.store.run_store import RunStore

from .conftest import CONFIGS, ROOT, run_cli

xr = pytest.importorskip("xarray")

from physlearn import open_run, open_sweep  # noqa: E402  (after the importorskip)
from physlearn.read.cli import decode_attrs  # noqa: E402

#: Records that differ between two runs of the same config (wall-clock times).
TIMING = {"timestamp", "step_time", "eval_timestamp", "settle_time"}
#: What each open keeps to compare with the finished run: whole records, and the last committed
#: record (the one a torn commit would show) of the larger ones.
KEPT = ("loss", "test_accuracy", "converged", "grad_cosine")
KEPT_LAST = ("param_conductance", "conj_conductance", "outputs")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 24-step quickstart run (evaluations at 0, 8, 16, 24), made once."""
    raw = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())
    raw["schedule"] = {**raw["schedule"], "steps": 24, "eval_every": 8}
    raw["schedule"].pop("epochs", None)
    raw["store"] = {"root": "unused", "flush_every": 4}
    out = tmp_path_factory.mktemp("finished") / "run.zarr"
    assert start_run(parse_config(raw), out).status == "success"
    return out


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _quickstart(out: Path, *sets: str) -> subprocess.Popen[str]:
    """``physlearn run configs/quickstart.yaml`` committing every step, into ``out``."""
    overrides = ["store.flush_every=1", "schedule.eval_every=5", *sets]
    return _spawn(
        "run", "configs/quickstart.yaml", "--out", str(out), "--progress", "off",
        *[a for s in overrides for a in ("--set", s)],
    )  # fmt: skip


def _snapshot(ds: Any) -> dict[str, Any]:
    """The committed counts and the kept records of one open, loaded now (in one compute)."""
    n = ds.sizes["step"]
    parts = {name: ds[name] for name in KEPT if name in ds}
    if n:
        parts |= {f"last:{name}": ds[name].isel(step=n - 1) for name in KEPT_LAST if name in ds}
    loaded = xr.Dataset(parts).compute()
    got = {k: v.values for k, v in loaded.data_vars.items() if not k.startswith("last:")}
    last = {k[5:]: v.values for k, v in loaded.data_vars.items() if k.startswith("last:")}
    got["eval_step"] = ds["eval_step"].values if "eval_step" in ds.coords else np.zeros(0)
    return {"steps": n, "evals": ds.sizes["eval"], "data": got, "last": last}


def _assert_prefix(snap: dict[str, Any], final: Any) -> None:
    """An open equals the first records of the finished run and holds no fill value."""
    n, e = snap["steps"], snap["evals"]
    for name, values in snap["data"].items():
        dim = final[name].dims[0]
        whole = final[name].isel({dim: slice(0, n if dim == "step" else e)}).values
        np.testing.assert_array_equal(values, whole, err_msg=f"{name} after {n} steps")
        if values.dtype.kind == "f":
            assert np.isfinite(values).all(), f"{name}: a fill value after {n} steps"
    for name, values in snap["last"].items():
        whole = final[name].isel(step=n - 1).values
        np.testing.assert_array_equal(values, whole, err_msg=f"{name}, step {n - 1}")
        assert np.isfinite(values).all(), f"{name}: a fill value at step {n - 1}"


def _wait(out: Path, proc: subprocess.Popen[str], steps: int, timeout: float = 120) -> None:
    """Until the run at ``out`` has committed ``steps`` steps (read with open_run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()[1]}"
        if out.exists() and open_run(out).sizes["step"] >= steps:
            return
        time.sleep(0.01)
    raise AssertionError(f"{out}: {steps} steps not committed in {timeout} s")


@pytest.mark.slow
def test_every_open_during_a_run_is_a_prefix_of_the_finished_run(tmp_path: Path) -> None:
    """Hundreds of opens while ``physlearn run`` commits every step (xarray.open_zarr failed a
    third of them or showed uncommitted steps, issue 21); the run is then stopped with Ctrl-C."""
    out = tmp_path / "live.zarr"
    proc = _quickstart(out, "schedule.epochs=2000")  # stopped long before its end
    try:
        _wait(out, proc, 1)
        snaps = []
        deadline = time.monotonic() + 30  # 200 opens take 10-20 s on two busy cores
        while len(snaps) < 200 and time.monotonic() < deadline and proc.poll() is None:
            ds = open_run(out)
            assert ds.sizes["step"] == ds.attrs["committed_steps"]
            snaps.append(_snapshot(ds))
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # interrupted, not finished: the opens saw a live run
    final = open_run(out)
    assert final.attrs["exit_status"] == "abort"
    final = final[[n for n in (*KEPT, *KEPT_LAST) if n in final]].load()
    assert len(snaps) >= 100, f"only {len(snaps)} opens"
    assert len({s["steps"] for s in snaps}) >= 20  # it did commit while being read
    for snap in snaps:
        _assert_prefix(snap, final)


@pytest.mark.slow
def test_after_sigkill_open_run_gives_a_prefix_of_the_resumed_run(tmp_path: Path) -> None:
    out = tmp_path / "killed.zarr"
    proc = _quickstart(out, "schedule.epochs=8")  # 56 steps
    _wait(out, proc, 20)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed = open_run(out)
    assert "exit_status" not in killed.attrs and 20 <= killed.sizes["step"] < 56
    snap = _snapshot(killed)
    assert resume_run(out).status == "success"
    final = open_run(out)
    assert final.sizes["step"] == 56
    _assert_prefix(snap, final)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.integers(1, 40),
    st.sets(st.sampled_from(["loss", "conj_conductance", "test_accuracy", "eval_step"])),
    st.booleans(),
)
def test_a_torn_commit_is_not_read(
    finished: Path, tmp_path: Path, tail: int, torn: set[str], garbage: bool
) -> None:
    """A crash between a commit's resize and its marker leaves arrays longer than committed
    (fill values or the new records); open_run reads the committed records only."""
    import zarr

    store = tmp_path / f"torn-{tail}-{len(torn)}-{garbage}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(finished, store)
    group = zarr.open_group(str(store), mode="r+", zarr_format=3)
    for name in torn:
        a = group[name]
        n = a.shape[0]
        a.resize((n + tail, *a.shape[1:]))
        if garbage:
            a[n:] = np.full((tail, *a.shape[1:]), 7, dtype=a.dtype)
    ds = open_run(store)
    ref = open_run(finished)
    assert (ds.sizes["step"], ds.sizes["eval"]) == (24, 4)
    xr.testing.assert_identical(ds.load(), ref.load())


def _assert_labelled(ds: Any) -> None:
    """Units and a long name on every variable and coordinate; a coordinate on every dim."""
    for name, var in ds.variables.items():
        assert var.attrs.get("units") not in (None, ""), f"{name} has no units"
        assert var.attrs.get("long_name"), f"{name} has no long_name"
    for dim in ds.dims:
        assert dim in ds.coords, f"dimension {dim!r} has no coordinate"


def test_every_variable_has_units_and_a_long_name_and_every_dimension_a_coordinate(
    finished: Path,
) -> None:
    ds = open_run(finished)
    _assert_labelled(ds)
    assert ds.sizes["step"] == 24 and ds["eval_step"].values.tolist() == [0, 8, 16, 24]
    assert ds["eval_step"].dims == ("eval",) and "eval_step" in ds.coords
    assert list(ds["phase"].values) == ["free", "beta+0.0001", "beta-0.0001"]
    # the edges' endpoints and layers, from the graph group
    layout = RunStore.open(finished).graph_layout()
    assert layout is not None
    np.testing.assert_array_equal(ds["edge_source"].values, layout["edges"][:, 0])
    np.testing.assert_array_equal(ds["edge_target"].values, layout["edges"][:, 1])
    assert ds["param_conductance"].dims == ("step", "edge")
    assert set(np.unique(ds["edge_layer"].values)) == {0, 1}  # 10 -> 16 -> 3 layers
    assert list(ds["node_role"].values[:10]) == ["input"] * 10
    assert ds["node_layer"].values.tolist() == [0] * 10 + [1] * 16 + [2] * 3


def test_an_xy_run_with_observables_and_three_groups_is_labelled(tmp_path: Path) -> None:
    """Another system: node phases logged as an observable, parameter groups on nodes and edges
    of an all-to-all graph (no layers)."""
    raw = yaml.safe_load((CONFIGS / "xy_xor_dense.yaml").read_text())
    raw["schedule"] = {**raw["schedule"], "steps": 3, "eval_every": 2}
    raw["store"] = {"root": str(tmp_path)}
    assert start_run(parse_config(raw), tmp_path / "xy.zarr").status == "success"
    ds = open_run(tmp_path / "xy.zarr")
    _assert_labelled(ds)
    assert ds["obs_phase"].dims == ("step", "phase", "sample", "node")  # declared by the system
    assert ds["obs_phase"].attrs["units"] == "rad"
    assert ds["param_bias_amplitude"].dims == ("step", "node") and ds.sizes["edge"] == 10
    assert "edge_layer" not in ds.coords and ds["edge_source"].size == 10


def test_the_readme_example_plots_accuracy_against_eval_step(finished: Path) -> None:
    """README.md and lab_protocols.md section 10: ``ds.test_accuracy.plot(x="eval_step")``
    raised ValueError with xarray.open_zarr (eval_step was a data variable)."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = open_run(finished)
    lines = ds.test_accuracy.plot(x="eval_step")
    np.testing.assert_array_equal(lines[0].get_xdata(), [0, 8, 16, 24])
    assert ds.outputs.sel(phase="free").dims == ("step", "sample", "output")
    plt.close("all")


def test_opening_takes_no_lock_and_writes_nothing(finished: Path) -> None:
    def tree() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(finished)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in finished.rglob("*")
        }

    before = tree()
    lock = RunStore.open(finished, writer="a test holding the writer lock")  # another writer
    try:
        open_run(finished).load()
    finally:
        lock.release()
    # the lock file is the writer's; nothing else changed
    assert {k: v for k, v in tree().items() if "writer.lock" not in k} == {
        k: v for k, v in before.items() if "writer.lock" not in k
    }


@pytest.mark.filterwarnings("ignore:Object at writer.lock")  # the lock group's lock file
def test_open_datatree_reads_the_whole_store(finished: Path) -> None:
    """Issue 21: xarray.open_datatree failed on a run store (checkpoint arrays had no dimension
    names); now every group opens, the checkpoint slots included."""
    tree = xr.open_datatree(finished, engine="zarr", consolidated=False)
    slot = tree["checkpoint/a"].to_dataset()
    assert slot["held__conductance"].dims == ("held__conductance_0",)
    assert slot["held__conductance"].shape == (208,)
    assert tree["graph"].to_dataset()["edges"].dims == ("edge", "end")


def test_import_physlearn_does_not_import_xarray() -> None:
    code = (
        "import sys, physlearn; assert callable(physlearn.open_run); "
        "print(int('xarray' in sys.modules))"
    )
    cold = "import sys, physlearn; print(int('xarray' in sys.modules or 'dask' in sys.modules))"
    for snippet, expected in ((cold, "0"), (code, "0")):
        proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == expected


def test_export_netcdf_round_trips(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.nc"
    proc = run_cli("export", str(finished), "--to", "netcdf", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    with xr.open_dataset(out, decode_times=False) as back:
        back = back.load()
    back.attrs = decode_attrs(back.attrs)
    xr.testing.assert_identical(back, open_run(finished).load())
    # without decode_times=False, the timestamps' CF units make datetimes
    with xr.open_dataset(out) as cf:
        assert cf["timestamp"].dtype.kind == "M"


def test_export_defaults_to_the_run_path_with_suffix_nc(finished: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy.zarr"
    shutil.copytree(finished, run)
    assert main(["export", str(run)]) == 0
    with xr.open_dataset(tmp_path / "copy.nc") as back:
        assert back.sizes["step"] == 24


def _bad_targets(tmp_path: Path, finished: Path) -> dict[str, tuple[list[str], str]]:
    """Arguments that are the user's mistake, and a word the one-line message must contain."""
    import zarr

    (tmp_path / "plain").mkdir()
    (tmp_path / "file.zarr").write_text("not a store")
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w", zarr_format=3)
    sweep = tmp_path / "sweep.zarr"
    sweep.mkdir()
    (sweep / "zarr.json").write_text(
        json.dumps(
            {"zarr_format": 3, "node_type": "group", "attributes": {"kind": "physlearn-sweep"}}
        )
    )
    chunk = tmp_path / "chunk.zarr"  # a lost chunk's bytes replaced: found when it is read
    shutil.copytree(finished, chunk)
    (chunk / "loss" / "c" / "0").write_bytes(b"garbage")
    meta = tmp_path / "meta.zarr"  # an array's metadata cut short
    shutil.copytree(finished, meta)
    (meta / "loss" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    return {
        "missing": (["export", str(tmp_path / "nope.zarr")], "does not exist"),
        "damaged chunk": (["export", str(chunk)], "array 'loss' cannot be read"),
        "damaged metadata": (["export", str(meta)], "array 'loss' cannot be opened"),
        "plain directory": (["export", str(tmp_path / "plain")], "not a Zarr group"),
        "a file": (["export", str(tmp_path / "file.zarr")], "file.zarr"),
        "not a run": (["export", str(tmp_path / "group.zarr")], "not a physlearn run"),
        "a sweep": (["export", str(sweep)], "sweep store"),
        "directory in the way": (
            ["export", str(finished), "--out", str(tmp_path / "plain")],
            "directory is in the way",
        ),
    }


def test_export_refuses_what_is_not_a_run_in_one_line(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for case, (argv, word) in _bad_targets(tmp_path, finished).items():
        assert main(argv) == 2, case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("physlearn: error: "), (case, err)
        assert word in err, (case, err)
    assert not list(tmp_path.rglob("*.partial"))  # a failed export leaves no half file
    proc = run_cli("export", str(tmp_path / "nope.zarr"), "--to", "netcdf")  # the real CLI
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


# -- sweeps --------------------------------------------------------------------------------------


def _tiny_sweep(tmp_path: Path) -> Path:
    """2 variants (of different lengths) x 2 hidden widths x 2 seeds of a one-epoch quickstart."""
    spec = {
        "name": "tiny",
        "base": str(CONFIGS / "quickstart.yaml"),
        "set": {"schedule.eval_every": 3},
        "variants": {"layered": {"set": {"schedule.epochs": 1}},
                     "skip": {"set": {"system.graph.skip": True, "schedule.epochs": 2}}},
        "grid": {"system.graph.sizes.1": [4, 6]},
        "seeds": 2,
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _runs(root: Path) -> list[tuple[dict[str, Any], Path]]:
    table = json.loads((root / "zarr.json").read_text())["attributes"]["runs"]
    return [({**r["axes"], "seed": r["seed"]}, root / r["run_id"]) for r in table]


@pytest.mark.slow
def test_open_sweep_stacks_runs_along_the_axes_while_and_after_it_runs(tmp_path: Path) -> None:
    root = tmp_path / "tiny.zarr"
    proc = _spawn("sweep", str(_tiny_sweep(tmp_path)), "--out", str(root), "--workers", "0")
    opened = []
    while proc.poll() is None:
        if (root / "zarr.json").exists() and "runs" in (root / "zarr.json").read_text():
            ds = open_sweep(root)  # every open succeeds while the sweep writes
            if "loss" in ds:  # not before a run has its store
                opened.append((ds["run_status"].values.copy(), ds["loss"].values.copy()))
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    ds = open_sweep(root)
    assert ds["loss"].dims == ("variant", "system.graph.sizes.1", "seed", "step")
    assert list(ds["variant"].values) == ["layered", "skip"]
    assert (ds["run_status"] == "success").all()
    # each run is its own open_run, padded with NaN to the longest (skip: 2 epochs, 14 steps)
    for axes, path in _runs(root):
        one = open_run(path)
        loss = ds["loss"].sel(axes).values
        n = one.sizes["step"]
        assert n == (14 if axes["variant"] == "skip" else 7)
        np.testing.assert_array_equal(loss[:n], one["loss"].values)
        assert np.isnan(loss[n:]).all()
    mean = ds.test_accuracy.sel(variant="skip").mean("seed")
    assert mean.dims == ("system.graph.sizes.1", "eval")
    one = [open_run(p).test_accuracy.values for a, p in _runs(root) if a["variant"] == "skip"
           and a["system.graph.sizes.1"] == 6]  # fmt: skip
    np.testing.assert_allclose(mean.sel({"system.graph.sizes.1": 6}).values, np.mean(one, 0))
    # the output labels differ between the widths (node numbers): aligned by position
    assert ds.sizes["output"] == 3 and "output_label" in ds.coords
    assert len(opened) >= 3
    for status, loss in opened:  # every open during the sweep: finished values or NaN
        final = ds["loss"].values[..., : loss.shape[-1]]
        seen = ~np.isnan(loss)
        np.testing.assert_array_equal(loss[seen], final[seen])
        assert set(np.unique(status)) <= {"pending", "unfinished", "success"}


def test_open_sweep_random_samples_and_a_run_without_a_store(tmp_path: Path) -> None:
    """Random-search samples share one dimension (their values are coordinates on it); a run
    whose store does not exist (yet) is NaN with run_status pending."""
    spec = {
        "name": "rnd",
        "base": str(CONFIGS / "quickstart.yaml"),
        "set": {"schedule.steps": 2, "schedule.epochs": None},
        "random": {"samples": 2, "axes": {"optimizer.lr": {"dist": "log_uniform", "low": 1e-4,
                                                           "high": 1e-3}}},
        "seeds": [3, 5],
    }  # fmt: skip
    (tmp_path / "rnd.yaml").write_text(yaml.safe_dump(spec))
    root = tmp_path / "rnd.zarr"
    proc = run_cli("sweep", str(tmp_path / "rnd.yaml"), "--out", str(root), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    table = json.loads((root / "zarr.json").read_text())["attributes"]["runs"]
    shutil.rmtree(root / table[0]["run_id"])  # random sample 0, seed 3
    ds = open_sweep(root)
    assert ds["loss"].dims == ("random_sample", "seed", "step")
    assert list(ds["seed"].values) == [3, 5] and list(ds["random_sample"].values) == [0, 1]
    lrs = [table[0]["axes"]["optimizer.lr"], table[2]["axes"]["optimizer.lr"]]
    assert ds["optimizer.lr"].dims == ("random_sample",) and list(ds["optimizer.lr"].values) == lrs
    gone = {"random_sample": 0, "seed": 3}
    assert ds["run_status"].sel(gone).item() == "pending"
    assert ds["run_id"].sel(gone).item() == table[0]["run_id"]
    assert np.isnan(ds["loss"].sel(gone).values).all()
    for i, row in enumerate(table[1:], start=1):
        at = {"random_sample": i // 2, "seed": row["seed"]}
        assert ds["run_status"].sel(at).item() == "success"
        one = open_run(root / row["run_id"])["loss"].values
        np.testing.assert_array_equal(ds["loss"].sel(at).values, one)


def test_residual_and_observables_carry_the_units_their_system_declares(finished: Path) -> None:
    """The linear network's residual is a KCL current imbalance (A), not an energy (W)."""
    ds = open_run(finished)
    assert ds["residual"].attrs["units"] == "A"
    assert ds["energy"].attrs["units"] == "W"
