"""Sweep safety: run ids are one safe path component, nothing is removed that is not provably a
run group this sweep created, and one driver at a time writes a sweep store (issue 19, items 2
and 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.cli import main
from physlearn.config import ConfigError
from physlearn.store.lock import StoreLock
from physlearn.store.run_store import RunStore
from physlearn.sweep.execute import run_sweep
from physlearn.sweep.expand import load_sweep, parse_sweep
from physlearn.sweep.plan import read_sweep_attrs
from tests.conftest import ROOT
from tests.test_sweep import tiny_base, write_sweep

BAD_NAMES = ["..", ".", "a/b", "", ".hidden", "../x", "a\\b", "x" * 200, "a b", "é", "a\x00b"]


def _sentinels(tmp_path: Path) -> list[Path]:
    """Files beside and above the sweep store that no sweep may touch."""
    box = tmp_path / "box"
    box.mkdir(exist_ok=True)
    out = []
    for d in (tmp_path, box, box / "sibling"):
        d.mkdir(exist_ok=True)
        f = d / "keep.txt"
        f.write_text("precious")
        out.append(f)
    return out


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_bad_variant_name_is_refused_and_nothing_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, dry_run: bool
) -> None:
    # a variant named '..' made the sweep rmtree the store's parent; '.' wiped the store
    path = write_sweep(tmp_path, {"name": "v", "variants": {bad: {}, "ok": {}}})
    keep = _sentinels(tmp_path)
    out = tmp_path / "box" / "store.zarr"
    argv = ["sweep", str(path), "--out", str(out), "--workers", "0"]
    code = main([*argv, "--dry-run"] if dry_run else argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"variants: {bad!r} is not a valid variant name" in err
    assert not out.exists()
    assert all(f.read_text() == "precious" for f in keep)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(min_size=0, max_size=80))
def test_every_variant_name_is_refused_or_a_safe_path_component(tmp_path: Path, name: str) -> None:
    raw = {"name": "h", "base": tiny_base(), "variants": {name: {}}, "seeds": [0]}
    try:
        sweep = parse_sweep(raw)
    except ConfigError as exc:
        assert repr(name) in str(exc)
        return
    for run in sweep.runs:
        rid = run.run_id
        assert rid not in ("", ".", "..") and not rid.startswith(".")
        assert "/" not in rid and "\\" not in rid and "\x00" not in rid
        assert len(rid) <= 150
        assert (tmp_path / rid).resolve().parent == tmp_path.resolve()


@settings(max_examples=30, deadline=None)
@given(value=st.one_of(st.text(max_size=60), st.floats(), st.integers(), st.lists(st.text())))
def test_axis_values_never_make_an_unsafe_run_id(value: Any) -> None:
    raw = {"name": "a", "base": tiny_base(), "grid": {"description": [value]}}
    if not isinstance(value, str):
        raw["grid"] = {"store.flush_every": [value]}  # may be an invalid experiment: fine
    try:
        sweep = parse_sweep(raw)
    except ConfigError:
        return
    (rid,) = [r.run_id for r in sweep.runs]
    assert rid.startswith(("description-", "flush_every-"))
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in rid), rid


def _two_seed_store(tmp_path: Path) -> tuple[Path, Path]:
    """A sweep store holding seed-0 (done) of a 2-seed sweep; returns (sweep file, store)."""
    one = write_sweep(tmp_path, {"name": "s", "seeds": 1}, base_steps=2)
    out = tmp_path / "s.zarr"
    assert main(["sweep", str(one), "--out", str(out), "--workers", "0"]) == 0
    two = write_sweep(tmp_path, {"name": "s", "seeds": 2}, base_steps=2)
    return two, out


def test_a_directory_that_is_not_this_sweeps_run_is_never_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two, out = _two_seed_store(tmp_path)
    foreign = out / "seed-1"  # where the sweep's next run goes: a half-made group, or anything
    foreign.mkdir()
    (foreign / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    (foreign / "precious.txt").write_text("precious")
    capsys.readouterr()
    for argv in (["--dry-run"], ["--workers", "0"]):
        assert main(["sweep", str(two), "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert f"{foreign} exists and is not a run of this sweep" in err, err
        assert len(err.strip().splitlines()) == 1
        assert (foreign / "precious.txt").read_text() == "precious"
    assert RunStore.open(out / "seed-0").status() == "success"


def test_runs_carry_the_sweeps_identity(tmp_path: Path) -> None:
    two, out = _two_seed_store(tmp_path)
    assert main(["sweep", str(two), "--out", str(out), "--workers", "0"]) == 0
    attrs = read_sweep_attrs(out)
    assert attrs is not None and isinstance(attrs.get("guid"), str)
    for rid in ("seed-0", "seed-1"):
        assert RunStore.open(out / rid).attrs["sweep"] == {"guid": attrs["guid"], "run_id": rid}


def test_the_guarded_remover_removes_only_this_sweeps_unlocked_children(tmp_path: Path) -> None:
    from physlearn.sweep.plan import _remove_own_run

    two, out = _two_seed_store(tmp_path)
    guid = str((read_sweep_attrs(out) or {})["guid"])
    run = out / "seed-0"
    keep = _sentinels(tmp_path)
    # not direct children of the root, or not the run they claim to be
    for name in ("..", ".", "seed-0/checkpoint", "missing"):
        assert not _remove_own_run(out, name, "seed-0", guid)
    (out / "link").symlink_to(run, target_is_directory=True)
    assert not _remove_own_run(out, "link", "seed-0", guid)
    assert not _remove_own_run(out, "seed-0", "seed-1", guid)  # another run id
    assert not _remove_own_run(out, "seed-0", "seed-0", "another-sweep")  # another sweep
    with StoreLock(run, "a test holding it"):
        assert not _remove_own_run(out, "seed-0", "seed-0", guid)  # locked by a writer
    assert run.is_dir() and all(f.read_text() == "precious" for f in keep)
    assert _remove_own_run(out, "seed-0", "seed-0", guid)
    assert not run.exists() and (out / "zarr.json").is_file()


# --------------------------------------------------------------------------------------------
# One driver at a time


def test_a_second_driver_is_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two, out = _two_seed_store(tmp_path)
    capsys.readouterr()
    with StoreLock(out, "sweep driver (a test)"):
        assert main(["sweep", str(two), "--out", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "is locked by another writer (sweep driver (a test) by pid" in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "seed-1").exists()  # nothing ran
    assert main(["sweep", str(two), "--out", str(out), "--workers", "0"]) == 0


def _arrays(store: Path) -> dict[str, np.ndarray]:
    """Every array of a run store but the clock readings (timestamps, wall-clock durations)."""
    s = RunStore.open(store)
    out = {}
    for n in s.array_names():
        a = s.array(n).attrs
        clock = str(a.get("units", "")).startswith("seconds since") or "wall-clock" in str(
            a.get("long_name", "")
        )
        if not clock:
            out[n] = np.asarray(s.read(n))
    return out


@pytest.mark.slow
def test_two_drivers_started_together_one_runs_the_other_exits_2(tmp_path: Path) -> None:
    # two drivers raced: runs marked 'fail' though complete, a ContainsGroupError traceback
    spec = {"name": "race", "grid": {"optimizer.lr": [0.001, 0.002]}}
    path = write_sweep(tmp_path, spec, base_steps=24)
    reference = tmp_path / "reference.zarr"
    assert run_sweep(load_sweep(path), reference, workers=0).all_succeeded
    ids = ["lr-0.001", "lr-0.002"]
    cmd = [sys.executable, "-m", "physlearn.cli", "sweep", str(path), "--workers", "0", "--out"]
    for trial in range(3):
        out = tmp_path / f"race{trial}.zarr"
        procs = [
            subprocess.Popen(
                [*cmd, str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]  # fmt: skip
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 2], results
        loser = next(r for r in results if r[0] == 2)
        assert "Traceback" not in loser[2] and len(loser[2].strip().splitlines()) == 1, loser
        assert "is locked by another writer (sweep driver by pid" in loser[2], loser
        winner = next(r for r in results if r[0] == 0)
        assert "Traceback" not in winner[2] and "(2 run now)" in winner[1], winner
        attrs = read_sweep_attrs(out)
        assert attrs is not None and attrs["driver"] is None
        assert [r["status"] for r in attrs["runs"]] == ["success", "success"]
        for rid in ids:
            got, want = _arrays(out / rid), _arrays(reference / rid)
            assert sorted(got) == sorted(want)
            for name in want:
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"{rid}/{name}")


def test_dry_run_names_a_running_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two, out = _two_seed_store(tmp_path)
    capsys.readouterr()
    with StoreLock(out, "sweep driver"):
        assert main(["sweep", str(two), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "start  seed-1  [pending]" in printed
    assert "being run now (sweep driver by pid" in printed


def test_only_this_sweeps_unlocked_construction_leftovers_are_removed(tmp_path: Path) -> None:
    import shutil

    two, out = _two_seed_store(tmp_path)
    guid = str((read_sweep_attrs(out) or {})["guid"])
    ours = out / ".seed-1.creating-ours"  # a run store of this sweep, killed before its rename
    shutil.copytree(out / "seed-0", ours)
    RunStore.open(ours, mode="r+").update_attrs(sweep={"guid": guid, "run_id": "seed-1"})
    other = out / ".seed-1.creating-other"  # the same, but made by another sweep
    shutil.copytree(ours, other)
    RunStore.open(other, mode="r+").update_attrs(sweep={"guid": "elsewhere", "run_id": "seed-1"})
    stranger = out / ".seed-1.creating-stranger"  # not a run store at all
    stranger.mkdir()
    (stranger / "keep.txt").write_text("precious")
    locked = out / ".seed-1.creating-locked"  # ours, but a writer holds it
    shutil.copytree(ours, locked)
    with StoreLock(locked, "a test holding it"):
        assert main(["sweep", str(two), "--out", str(out), "--workers", "0"]) == 0
    assert not ours.exists()
    assert other.is_dir() and locked.is_dir() and (stranger / "keep.txt").read_text() == "precious"
    assert RunStore.open(out / "seed-1").status() == "success"
