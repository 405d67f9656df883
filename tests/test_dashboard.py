"""``physlearn dashboard``: the command, the feed of committed rows, and the page in a real
headless Chromium against a real server on 127.0.0.1 (ephemeral port) and real runs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.config import parse_config
from physlearn.dashboard.feed import COS_FLOOR, THROUGHPUT_WINDOW, RunFeed
from physlearn.dashboard.targets import Target, classify, resolve, run_status
from physlearn.run.start import start_run

from .browser import Browser, find_browser
from .conftest import ROOT, load_yaml, run_cli

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium binary on PATH (apt-get install chromium-headless-shell; .ci/run does)",
)


def shots(tmp_path: Path) -> Path:
    """Where a browser test leaves its screenshot: PHYSLEARN_DASHBOARD_SHOTS (a directory) for
    a person to look at, else the test's temporary directory."""
    return Path(os.environ.get("PHYSLEARN_DASHBOARD_SHOTS") or tmp_path)


PANELS = (
    "Loss",
    "Metrics",
    "Gradient fidelity",
    "Step time",
    "Throughput",
    "Equilibrium residual",
    "Relaxation",
    "Parameters on the graph",
)
PROGRESS = re.compile(r"(\d+) of (\d+) steps committed \((\w+)\)")


def quick_config(tmp_path: Path, steps: int, flush_every: int = 4) -> dict[str, Any]:
    raw = load_yaml("quickstart.yaml")
    raw["schedule"] = {"steps": steps, "batch_size": 8, "eval_every": 8}
    raw["store"] = {"root": str(tmp_path / "runs"), "flush_every": flush_every}
    return raw


def finished_run(tmp_path: Path, steps: int = 24) -> Path:
    out = tmp_path / "quick.zarr"
    res = start_run(parse_config(quick_config(tmp_path, steps)), out)
    assert res.status == "success" and res.committed_steps == steps
    return out


def fake_run(tmp_path: Path) -> Path:
    """A group with a run's marker attributes: what the command checks before serving."""
    run = tmp_path / "r.zarr"
    run.mkdir()
    attrs = {"committed_steps": 0, "config": {}}
    meta = {"zarr_format": 3, "node_type": "group", "attributes": attrs}
    (run / "zarr.json").write_text(json.dumps(meta))
    return run


@contextmanager
def serving(*paths: Path, interval: float = 0.5, options: tuple[str, ...] = ()) -> Iterator[str]:
    """``physlearn dashboard PATHS --port 0`` in a subprocess: its URL; Ctrl-C at the end, which
    must stop it with exit 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", "dashboard", *map(str, paths), "--port", "0"]
        + ["--interval", str(interval), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, f"no address printed: {line!r} {proc.stderr.read() if proc.poll() else ''}"
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "physlearn dashboard: stopped" in err


def shown_progress(text: str) -> tuple[int, int, str]:
    match = PROGRESS.search(text)
    assert match, text[:2000]
    return int(match.group(1)), int(match.group(2)), match.group(3)


# --------------------------------------------------------------------------------------------
# The page in a browser


@needs_browser
@pytest.mark.slow
def test_a_finished_runs_page_shows_its_committed_steps_and_every_panel(tmp_path: Path) -> None:
    run = finished_run(tmp_path)
    assert BROWSER is not None
    with serving(run) as url, Browser(BROWSER, tmp_path) as browser:
        browser.goto(url)
        text = browser.wait_for_text("24 of 24 steps committed (success)")
        for title in PANELS:
            assert title in text
        # the edges are coloured by the last committed step's conductances
        assert "param_conductance held during step 23 (the last committed), 208 edges" in text
        assert "quickstart on a resistor system" in text
        time.sleep(1.0)  # let the figures draw before the screenshot
        shot = browser.screenshot(shots(tmp_path) / "physlearn-dashboard-run.png")
    assert shot.stat().st_size > 20_000


@needs_browser
@pytest.mark.slow
def test_the_page_advances_while_a_run_commits(tmp_path: Path, write_config: Any) -> None:
    raw = quick_config(tmp_path, steps=20_000, flush_every=1)
    raw["schedule"]["eval_every"] = 500
    out = tmp_path / "live.zarr"
    cmd = [sys.executable, "-m", "physlearn.cli", "run", str(write_config(raw)), "--out", str(out)]
    run = subprocess.Popen(cmd + ["--progress", "off"], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        _wait_for_commits(out, 1, run)
        assert BROWSER is not None
        with serving(out, interval=0.3) as url, Browser(BROWSER, tmp_path) as browser:
            browser.goto(url)
            first, total, status = shown_progress(browser.wait_for_text("steps committed"))
            assert (total, status) == (20_000, "running")
            deadline = time.monotonic() + 30
            later = first
            while later <= first and time.monotonic() < deadline:
                time.sleep(0.5)
                later = shown_progress(browser.text())[0]
            committed = json.loads((out / "zarr.json").read_text())["attributes"]
            assert first < later <= committed["committed_steps"]
            browser.screenshot(shots(tmp_path) / "physlearn-dashboard-live.png")
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(timeout=60)


def _wait_for_commits(
    out: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended early"
        try:
            attrs = json.loads((out / "zarr.json").read_text())["attributes"]
        except (OSError, ValueError, KeyError):
            attrs = {}
        if int(attrs.get("committed_steps", 0)) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{out}: no commit within {timeout} s")


@needs_browser
@pytest.mark.slow
def test_a_sweep_page_lists_its_runs_and_links_to_each(tmp_path: Path) -> None:
    base = quick_config(tmp_path, steps=4)
    del base["store"]["root"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"name": "pair", "base": "base.yaml", "grid": {"system.graph.sizes.1": [4, 6]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "pair.zarr"
    proc = run_cli("sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    assert BROWSER is not None
    with serving(out) as url, Browser(BROWSER, tmp_path) as browser:
        browser.goto(url)
        text = browser.wait_for_text("sizes.1-6")
        assert "Sweep pair" in text and "system.graph.sizes.1" in text
        rows = re.findall(r"(sizes\.1-[46]) ([46]) success 4 / 4", text)
        assert rows == [("sizes.1-4", "4"), ("sizes.1-6", "6")], text[:2000]
        time.sleep(1.0)
        browser.screenshot(shots(tmp_path) / "physlearn-dashboard-sweep.png")
        # the link's page: that run alone
        browser.goto(url + "?run=" + quote("s0/sizes.1-6", safe=""))
        text = browser.wait_for_text("4 of 4 steps committed (success)")
        assert "sizes.1-6" in text and "overview" in text
        browser.goto(url + "?run=" + quote("s0/../../etc", safe=""))
        browser.wait_for_text("No run s0/../../etc here")


# --------------------------------------------------------------------------------------------
# The command line


@pytest.mark.parametrize("kind", ["missing", "file", "empty_dir", "plain_group"])
def test_a_path_that_is_no_store_exits_2_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "thing.zarr"
    if kind == "file":
        path.write_text("x")
    elif kind == "empty_dir":
        path.mkdir()
    elif kind == "plain_group":
        path.mkdir()
        (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    proc = run_cli("dashboard", str(path), "--port", "0", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--interval", "0"], "--interval"),
        (["--interval", "nan"], "--interval"),
        (["--port", "70000"], "--port"),
    ],
)
def test_bad_options_exit_2_in_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run_cli("dashboard", str(fake_run(tmp_path)), *args, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("dashboard", str(run), "--port", str(port), timeout=60)
    assert proc.returncode == 2
    assert f"--port {port}: cannot listen there" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_another_interface_is_served_when_allowed(tmp_path: Path) -> None:
    """``--host 0.0.0.0 --allow-remote`` serves (without the flag: exit 2, see above)."""
    run = finished_run(tmp_path, steps=2)
    with serving(run, options=("--host", "0.0.0.0", "--allow-remote")) as url:
        with urllib.request.urlopen(url, timeout=60) as page:
            assert page.status == 200 and b"bokeh" in page.read()


def test_importing_physlearn_its_command_line_and_the_dashboard_modules_imports_no_bokeh() -> None:
    """Bokeh (an extra) is imported when the server starts: every module imports without it,
    as the wheel test imports every module in an environment without the extra."""
    code = (
        "import sys, pkgutil, importlib, physlearn, physlearn.cli, physlearn.dashboard as d; "
        "physlearn.cli.build_parser(); "
        "[importlib.import_module(m.name) "
        " for m in pkgutil.walk_packages(d.__path__, 'physlearn.dashboard.')]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bokeh', 'xarray')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# What a page reads


def test_a_feed_hands_out_each_committed_row_once(tmp_path: Path) -> None:
    run = finished_run(tmp_path, steps=10)
    feed = RunFeed(run)
    first = feed.poll()
    assert first.progress == "10 of 10 steps committed (success)"
    assert first.steps["step"].tolist() == list(range(10))
    assert first.evals["eval_step"].tolist() == [0, 8, 10]
    # 1 - cos of the exact-gradient diagnostic, floored for the log axis
    assert np.all(first.steps["one_minus_cos"] >= COS_FLOOR)
    assert np.all(first.steps["one_minus_cos"] < 1e-3)
    assert first.params is not None and first.params.step == 9
    assert first.params.values.shape == (208,)
    again = feed.poll()
    assert again.steps["step"].size == 0 and again.evals["eval_step"].size == 0
    assert again.params is None  # nothing new to colour the graph with
    assert again.last == first.last and set(first.last) >= {"loss", "test_accuracy"}


@settings(max_examples=40, deadline=None)
@given(
    stamps=st.lists(st.floats(0.001, 10.0), min_size=1, max_size=40).map(np.cumsum),
    cuts=st.lists(st.integers(0, 40), max_size=5),
)
def test_throughput_and_increments_do_not_depend_on_how_polls_split_the_steps(
    stamps: np.ndarray, cuts: list[int]
) -> None:
    whole = RunFeed(Path("unused"))
    expected_rate = whole._throughput(stamps)
    expected_inc = whole._increments("c", stamps)
    pieces = RunFeed(Path("unused"))
    bounds = [0, *sorted(c for c in cuts if c < len(stamps)), len(stamps)]
    rate = np.concatenate(
        [pieces._throughput(stamps[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    )
    inc = np.concatenate(
        [pieces._increments("c", stamps[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    )
    np.testing.assert_allclose(rate, expected_rate)
    np.testing.assert_allclose(inc, expected_inc)
    assert np.isnan(rate[0])
    # a counter's first value also holds the time before the first step: no increment there
    assert np.isnan(inc[0])
    np.testing.assert_allclose(inc[1:], np.diff(stamps))
    k = min(THROUGHPUT_WINDOW, len(stamps) - 1)
    if k:
        assert rate[-1] == pytest.approx(k / (stamps[-1] - stamps[-1 - k]))


def test_a_runs_status_is_read_without_touching_its_lock(tmp_path: Path) -> None:
    host = socket.gethostname()
    assert run_status({"exit_status": "abort", "pid": os.getpid(), "host": host}) == "abort"
    assert run_status({"pid": os.getpid(), "host": host}) == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert run_status({"pid": dead.pid, "host": host}) == "interrupted"
    for pid in (0, -1, "x", None):  # never os.kill(0 or -1): those address process groups
        assert run_status({"pid": pid, "host": host}) == "interrupted"
    assert run_status({"pid": os.getpid(), "host": host + "-elsewhere"}) == "unfinished"


def test_a_page_address_names_only_runs_of_the_targets(tmp_path: Path) -> None:
    run = finished_run(tmp_path, steps=2)
    targets = classify([str(run)])
    assert targets == [Target("run", run, 0)]
    ref = resolve(targets, "0")
    assert ref is not None and ref.path == run
    for key in ("1", "s0/x", "../0", "s0/../../etc", ""):
        assert resolve(targets, key) is None


@needs_browser
@pytest.mark.slow
def test_a_station_runs_page_shows_its_instruments_envelope_and_counters(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "configs" / "virtual_lab_resistor.yaml").read_text())
    raw["system"]["lab"] = {"serve": str(ROOT / "configs" / "virtual_lab_bench.yaml")}
    raw["system"]["station"] = str(ROOT / "configs" / "virtual_lab_station.yaml")
    raw["system"]["equilibrium"] = {"settle_time": 0.0}
    raw["schedule"] = {"steps": 2, "batch_size": 4, "eval_every": 2}
    raw["store"] = {"root": str(tmp_path / "runs")}
    out = tmp_path / "bench.zarr"
    assert start_run(parse_config(raw), out).status == "success"
    assert BROWSER is not None
    with serving(out) as url, Browser(BROWSER, tmp_path) as browser:
        browser.goto(url)
        text = browser.wait_for_text("2 of 2 steps committed (success)")
        for title in ("Instruments", "Envelope", "Instrument faults", "Parameters on the graph"):
            assert title in text
        assert "physlearn,VLAB-SRC16," in text and "physlearn,VLAB-POT208," in text
        assert re.search(r"inputs -2\.0 2\.0 1\.0 0\.0 0\.0 V", text), text
        assert re.search(r"Bench at the last committed step : .*retries: 0", text), text
        # a bench measures no residual: that panel is left out rather than drawn empty
        assert "Equilibrium residual" not in text and "Gradient fidelity" not in text
        time.sleep(1.0)
        browser.screenshot(shots(tmp_path) / "physlearn-dashboard-station.png")


def test_ticking_runs_in_a_table_draws_them(tmp_path: Path) -> None:
    from bokeh.document import Document

    from physlearn.dashboard.page import overview

    runs = []
    for name in ("a", "b", "c"):
        runs.append(tmp_path / name / "quick.zarr")
        start_run(parse_config(quick_config(tmp_path / name, 2)), runs[-1])
    targets = classify([str(r) for r in runs])
    page = overview(Document(), targets)
    assert page.shown == {"0", "1", "2"}  # the runs given are drawn at first
    visible = {k: [r.visible for r in s.renderers] for k, s in page.sources.items()}
    assert all(all(v) for v in visible.values())
    (table,) = page.tables
    table.source.selected.indices = [2]
    assert page.shown == {"2"}
    assert not any(r.visible for r in page.sources["0"].renderers)
    assert all(r.visible for r in page.sources["2"].renderers)


@needs_browser
def test_a_closed_browser_leaves_no_process_behind(tmp_path: Path) -> None:
    """Debian's chromium commands are scripts starting the browser as a child: closing must end
    the browser, not only the script."""
    assert BROWSER is not None
    browser = Browser(BROWSER, tmp_path)
    browser.goto("about:blank")
    browser.close()
    profile = str(tmp_path / "chromium-profile")
    deadline = time.monotonic() + 10
    while (left := _processes_naming(profile)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
