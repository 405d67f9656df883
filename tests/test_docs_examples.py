"""Every code example of README.md and lab_protocols.md runs (issue 21, item 6).

Convention: a fenced block preceded by the line ``<!-- runnable -->`` is executed here; every
other fenced block must be on :data:`NOT_RUNNABLE` with the reason it cannot run here (sample
output, a config excerpt, real hardware, the whole test suite). A new unmarked block therefore
fails :func:`test_every_block_is_run_or_has_a_reason` until it is marked or given a reason.

How a runnable block runs, in a fresh directory that holds ``configs/`` (a copy of the
repository's) and ``.venv`` (a link to the repository's), with ``.venv/bin`` first on PATH:

* ``bash``: line by line (``\\`` continues a line), each with ``bash -c``, each must exit 0.
  Commands that serve until Ctrl-C (:data:`SERVERS`) are started in the background, must print
  their first line and stay up, and are stopped with SIGINT at the end of the block (exit 0 or
  130), so the lines after them talk to them (lab_protocols §0).
* ``python``: the whole block in one ``python -c`` process (matplotlib's Agg backend).

The documented commands run verbatim except for these substitutions, which keep the suite
short and stand in for what only the reader has:

* the copy of ``configs/`` is shortened: every experiment trains 3 steps (``schedule.steps: 3``,
  ``eval_every: 3``, no ``epochs``) and every sweep 2 steps per run with one seed;
* ``configs/my_bench.yaml`` (the operator's own bench) is ``configs/virtual_lab_resistor.yaml``;
* ``runs/<...>.zarr`` (and, in Python, a run path that does not exist) is the first run store
  the block made under ``runs/`` (the README's: the quickstart), ``sweeps/<name>.zarr`` the
  first sweep store (:data:`PREREQUISITES` makes them for blocks that read runs without making
  one);
* optional arguments written in brackets (``[--json]``) are left out;
* lines on :data:`SKIP_LINES` are not run, each for the reason given there.

A block that fails because of a defect outside the documents is listed in
:data:`KNOWN_DEFECTS` (a strict xfail naming the defect) until the defect is fixed.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "lab_protocols.md")
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```(\S*)\s*$")

#: Blocks that are not run, by (file, first line), with the reason.
NOT_RUNNABLE: dict[tuple[str, str], str] = {
    ("README.md", "make run    # train a resistor network on iris with equilibrium propagation;"
     " writes a Zarr run under runs/"): "`make run` trains the full quickstart (minutes) and "
    "`make test` runs the whole suite, this test included; the quickstart's commands are run "
    "in the block below",
    ("README.md", "from pulser import QPUBackend, Sequence"): "needs pulser-pasqal and a Pasqal "
    "Cloud account (it submits to a QPU)",
    ("README.md", "name: my_study                        # store: sweeps/my_study.zarr"): "a sweep "
    "file's fields (its base, quickstart.yaml, is relative to a sweep file's folder); the "
    "shipped sweep files are run by the block below",
    ("lab_protocols.md", "system:"): "an excerpt of a station system section (elided with "
    "`...`), not a whole config; configs/virtual_lab_resistor.yaml is the runnable one",
    ("lab_protocols.md", "inputs:"): "an excerpt of configs/bench_qcodes_stock.yaml's roles, "
    "which the README's commands run whole",
    ("lab_protocols.md", "  [FAIL] dmm: identity: 'physlearn,VLAB-DMM,DMM0001,1.0' does NOT "
     "match '^Keithley'"): "sample output of a failing dry run, not a command",
    ("lab_protocols.md", "pytest tests/test_lab_hardware.py "
     "--device-address=TCPIP::192.168.1.20::5025::SOCKET"): "real hardware at a LAN address",
}  # fmt: skip

#: Lines of runnable blocks that are not run, by a substring, with the reason.
SKIP_LINES: dict[str, str] = {
    "--scheduler tcp://head:8786": "an existing Dask cluster at a placeholder address",
    "physlearn export-pulser runs/<run>.zarr": "needs a rydberg run with a Pulser device "
    "(system.device); the block's runs are resistor and station runs, and training one on a "
    "Pulser device takes minutes",
}

#: Commands that serve until interrupted.
SERVERS = ("physlearn lab serve", "physlearn dashboard")

#: Commands run before a block that reads runs or sweeps without making them, by (file, first
#: line): what it reads must exist.
PREREQUISITES: dict[tuple[str, str], list[str]] = {
    ("README.md", "import physlearn"): [
        "physlearn sweep configs/sweep_resistor_sizes.yaml --workers 0 --progress off",
        "physlearn run configs/quickstart.yaml --progress off",
    ],
    ("lab_protocols.md", "import physlearn"): [
        "physlearn run configs/virtual_lab_resistor.yaml --progress off",
    ],
    ("lab_protocols.md", "physlearn resume runs/<name>-<time>.zarr"): [
        "physlearn run configs/virtual_lab_resistor.yaml --progress off",
    ],
}

#: Runnable blocks that fail because of a known defect outside the documents, with the defect:
#: strict, so the test fails (and the entry must go) once the defect is fixed.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}

TIMEOUT = 300.0  # s, per command
START_TIMEOUT = 60.0  # s, for a server's first line


@dataclass(frozen=True)
class Block:
    """A fenced code block: its file, line (1-based, the fence), language, text, marker."""

    file: str
    line: int
    lang: str
    text: str
    runnable: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.file, self.text.splitlines()[0] if self.text else ""


def read_blocks(file: str) -> list[Block]:
    """Every fenced block of ``file``; runnable when the line before the fence is MARKER."""
    lines = (ROOT / file).read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        text = "\n".join(lines[i + 1 : end])
        out.append(Block(file, i + 1, m.group(1), text, before == MARKER))
        i = end + 1
    return out


ALL_BLOCKS = [b for f in DOCS for b in read_blocks(f)]
RUNNABLE = [b for b in ALL_BLOCKS if b.runnable]


def test_every_block_is_run_or_has_a_reason() -> None:
    keys = [b.key for b in ALL_BLOCKS]
    assert len(set(keys)) == len(keys), "two blocks start with the same line: make one differ"
    unmarked = [b for b in ALL_BLOCKS if not b.runnable]
    missing = [f"{b.file}:{b.line} {b.key[1]!r}" for b in unmarked if b.key not in NOT_RUNNABLE]
    assert not missing, f"mark these {MARKER} or give a reason in NOT_RUNNABLE: {missing}"
    stale = set(NOT_RUNNABLE) - {b.key for b in unmarked}
    assert not stale, f"NOT_RUNNABLE names blocks that are gone or now runnable: {stale}"
    assert all(reason.strip() for reason in NOT_RUNNABLE.values())
    assert set(KNOWN_DEFECTS) <= {b.key for b in RUNNABLE}, "KNOWN_DEFECTS names no runnable block"
    assert {b.lang for b in RUNNABLE} <= {"bash", "python"}
    assert len(RUNNABLE) >= 8  # the commands of both documents are run, not only listed


# -- the directory a block runs in ------------------------------------------------------------


def shorten(configs: Path) -> None:
    """Experiments train 3 steps, sweeps 2 steps per run and one seed (see the docstring)."""
    for path in configs.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            continue
        if isinstance(raw.get("schedule"), dict):
            raw["schedule"].pop("epochs", None)
            raw["schedule"].update(steps=3, eval_every=3)
        elif "base" in raw and any(k in raw for k in ("grid", "variants", "random")):
            raw["set"] = {
                **(raw.get("set") or {}),
                "schedule.epochs": None,
                "schedule.steps": 2,
                "schedule.eval_every": 2,
            }
            raw["seeds"] = 1
        else:
            continue
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shorten(tmp_path / "configs")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return tmp_path


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONSTARTUP", None)
    return env


def first(pattern: str, cwd: Path) -> str:
    """The oldest store matching ``pattern``: the first the block (or its prerequisites) made."""
    found = sorted(cwd.glob(pattern), key=lambda p: p.stat().st_mtime)
    assert found, f"the example reads {pattern} but no earlier command made one"
    return str(found[0].relative_to(cwd))


def substitute(line: str, cwd: Path, python: bool = False) -> str:
    """The documented command with the substitutions of the module docstring."""
    line = line.replace("configs/my_bench.yaml", "configs/virtual_lab_resistor.yaml")
    if not python:
        line = re.sub(r"\s\[[^\]]*\]", "", line)
    if re.search(r"runs/<\S*>\.zarr", line):
        line = re.sub(r"runs/<\S*>\.zarr", first("runs/*.zarr", cwd), line)
    if "sweeps/<name>.zarr" in line:
        line = line.replace("sweeps/<name>.zarr", first("sweeps/*.zarr", cwd))
    if python:
        for path in set(re.findall(r"runs/[^\"']+\.zarr", line)):
            if not (cwd / path).exists():
                line = line.replace(path, first("runs/*.zarr", cwd))
    return line


def commands(text: str) -> list[str]:
    """The block's command lines (continuations joined; blank and comment lines left out)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def run(command: str, cwd: Path, where: str) -> None:
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, (
        f"{where}: `{command}` exited {proc.returncode}\n{proc.stdout[-2000:]}\n"
        f"{proc.stderr[-2000:]}"
    )


def start_server(command: str, cwd: Path, where: str) -> subprocess.Popen[str]:
    """Start a serving command; return once it printed its first line (and is still up)."""
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    first = proc.stdout.readline() if ready else ""
    time.sleep(0.5)
    if not first or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"{where}: `{command}` did not start within {START_TIMEOUT} s: {first!r}")
    return proc


def stop_server(proc: subprocess.Popen[str], command: str, where: str) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode in (0, 130), f"{where}: `{command}` exited {proc.returncode}\n{out}"


def run_bash(block: Block, cwd: Path) -> None:
    servers: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for k, line in enumerate(commands(block.text)):
            where = f"{block.file}:{block.line + 1 + k}"
            if any(s in line for s in SKIP_LINES):
                continue
            command = substitute(line, cwd)
            bare = re.sub(r"^\.venv/bin/", "", command)
            if bare.startswith(SERVERS):
                servers.append((start_server(command, cwd, where), command))
            else:
                run(command, cwd, where)
    finally:
        for proc, command in servers:
            stop_server(proc, command, block.file)


def run_python(block: Block, cwd: Path) -> None:
    source = substitute(block.text, cwd, python=True)
    proc = subprocess.run(
        [sys.executable, "-c", source],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"{block.file}:{block.line}: the example raised\n{proc.stderr}"


def _param(block: Block) -> Any:
    reason = KNOWN_DEFECTS.get(block.key)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(block, marks=marks, id=f"{block.file}:{block.line}")


@pytest.mark.slow
@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_documented_example_runs(block: Block, workdir: Path) -> None:
    for command in PREREQUISITES.get(block.key, []):
        run(command, workdir, f"{block.file}:{block.line} (prerequisite)")
    runner: Any = run_bash if block.lang == "bash" else run_python
    runner(block, workdir)


@pytest.mark.slow
def test_an_example_that_drifted_from_the_code_fails(workdir: Path) -> None:
    """The runner catches what issue 21 found: the README's old example (``xr.open_zarr`` and
    ``plot(x="eval_step")``, a data variable) raised ValueError; a command with a wrong path
    exits 2."""
    run("physlearn run configs/quickstart.yaml --progress off", workdir, "setup")
    old = Block(
        "README.md",
        1,
        "python",
        'import xarray as xr\nds = xr.open_zarr("runs/<run>.zarr")\n'
        'ds.test_accuracy.plot(x="eval_step")',
        True,
    )
    with pytest.raises(AssertionError, match="eval_step"):
        run_python(old, workdir)
    wrong = Block("README.md", 1, "bash", "physlearn validate configs/quickstrat.yaml", True)
    with pytest.raises(AssertionError, match="exited 2"):
        run_bash(wrong, workdir)
