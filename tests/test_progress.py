"""A run talks without a terminal: timed progress lines on stdout when it has no TTY, and
``physlearn inspect --follow`` printing one line per commit until the run ends (issue 21)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from physlearn.run.progress import Progress, ProgressSpec

CLI = [sys.executable, "-m", "physlearn.cli"]


def test_lines_report_steps_rate_and_time_left_then_the_status() -> None:
    out = io.StringIO()
    p = Progress(ProgressSpec("lines", every=1e-9), "demo", total=10, start=2, out=out)
    time.sleep(0.01)
    p.update(4, {"loss": "0.5"})
    p.close("abort")
    first, last = out.getvalue().splitlines()
    assert first.startswith("physlearn: demo step 4/10 (40 %) loss=0.5 ")
    assert "step/s" in first and first.endswith(" left")
    assert last.startswith("physlearn: demo step 4/10") and last.endswith(" abort")


def test_lines_are_spaced_by_the_interval_and_off_prints_nothing() -> None:
    out = io.StringIO()
    p = Progress(ProgressSpec("lines", every=3600.0), "demo", total=5, start=0, out=out)
    for k in range(1, 6):
        p.update(k, {})
    assert out.getvalue() == ""  # an hour has not passed: no line yet
    p.close("success")
    assert out.getvalue().count("\n") == 1
    quiet = io.StringIO()
    q = Progress(ProgressSpec("off"), "demo", total=5, start=0, out=quiet)
    q.update(5, {})
    q.close("success")
    assert quiet.getvalue() == ""


def _short_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            "run",
            "configs/quickstart.yaml",
            "--out",
            str(tmp_path / "r.zarr"),
            "--set",
            "schedule.epochs=3",
            *extra,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_without_a_terminal_prints_progress_lines(tmp_path: Path) -> None:
    proc = _short_run(tmp_path, "--progress-every", "1e-6")
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stdout.splitlines() if x.startswith("physlearn: quickstart step")]
    assert len(lines) >= 10  # one per step at this interval (21 steps), and the last one
    assert lines[-1].startswith("physlearn: quickstart step 21/21 (100 %)")
    assert lines[-1].endswith(" success")
    assert "\r" not in proc.stderr  # no progress bar without a terminal


def test_progress_off_and_a_bad_interval(tmp_path: Path) -> None:
    proc = _short_run(tmp_path, "--progress", "off")
    assert proc.returncode == 0 and "quickstart step" not in proc.stdout
    bad = subprocess.run(
        [*CLI, "run", "configs/quickstart.yaml", "--progress-every", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "positive number of seconds" in bad.stderr


@pytest.mark.slow
def test_inspect_follow_prints_each_commit_until_the_run_ends(tmp_path: Path) -> None:
    out = tmp_path / "f.zarr"
    run = subprocess.Popen(
        [
            *CLI,
            "run",
            "configs/quickstart.yaml",
            "--out",
            str(out),
            "--progress",
            "off",
            "--set",
            "schedule.epochs=40",
            "--set",
            "store.flush_every=20",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "zarr.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        follow = subprocess.run(
            [*CLI, "inspect", str(out), "--follow", "--json", "--interval", "0.05"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        assert run.wait(timeout=300) == 0, run.stderr.read() if run.stderr else ""
    assert follow.returncode == 0, follow.stderr
    seen = [json.loads(line) for line in follow.stdout.splitlines()]
    steps = [s["committed_steps"] for s in seen]
    assert steps == sorted(steps) and len(set(steps)) >= 3  # it saw the run grow
    assert seen[-1]["status"] == "success" and steps[-1] == seen[-1]["total_steps"]
    assert all(s["status"] == "running" for s in seen[:-1])
