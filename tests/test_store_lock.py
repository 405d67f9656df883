"""One writer per run store: a second ``resume`` exits 2 naming the holder, the store ends as an
uninterrupted run's, and a store's status says ``running`` exactly while its lock is held."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.cli import main
from physlearn.config import parse_config
from physlearn.run.start import start_run
from physlearn.store.lock import StoreLock
from physlearn.store.run_store import RunStore

from .conftest import ROOT
from .test_run_store import _assert_same_run, _spawn_run, _wait_committed
from .test_store_integrity import stop_at

TRIALS = 5


def _resume(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", "resume", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_two_resumes_started_together_one_writes(
    quick_raw: dict[str, Any], write_config: Any, tmp_path: Path
) -> None:
    quick_raw["schedule"]["steps"] = 100
    quick_raw["store"]["flush_every"] = 1
    ref = tmp_path / "ref.zarr"
    start_run(parse_config(quick_raw), ref)
    killed = tmp_path / "killed.zarr"  # SIGKILLed at a random step, as a crash leaves it
    proc = _spawn_run(write_config(quick_raw), killed)
    _wait_committed(killed, int(np.random.default_rng().integers(2, 8)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    for trial in range(TRIALS):
        store = tmp_path / f"trial{trial}.zarr"
        shutil.copytree(killed, store)
        procs = [_resume(store), _resume(store)]
        outcomes = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
        codes = sorted(o[3] for o in outcomes)
        assert codes == [0, 2], outcomes
        (winner,) = [o for o in outcomes if o[3] == 0]
        (loser,) = [o for o in outcomes if o[3] == 2]
        err = loser[2].strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "locked by another writer" in err and f"pid {winner[0]} " in err, err
        assert "physlearn resume" in err  # what the holder is doing
        _assert_same_run(ref, store)


def test_status_is_running_exactly_while_the_lock_is_held(
    quick_raw: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.zarr"
    start_run(parse_config(quick_raw), path, on_step=stop_at(5))
    # as a SIGKILLed writer leaves it, with its recorded pid reused by a live process (ours)
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["exit_status"]
    meta["attributes"]["pid"] = os.getpid()
    (path / "zarr.json").write_text(json.dumps(meta))
    assert RunStore.open(path).status() == "interrupted"

    with StoreLock(path, "holding for a test"):
        assert RunStore.open(path).status() == "running"
        assert main(["resume", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"holding for a test by pid {os.getpid()} " in err, err
    assert RunStore.open(path).status() == "interrupted"
    assert main(["resume", str(path)]) == 0
    assert RunStore.open(path).status() == "success"


def test_the_writer_holds_the_lock_until_the_run_ends(
    quick_raw: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "r.zarr"
    seen = []

    def on_step(done: int) -> None:
        seen.append(RunStore.open(path).status())

    start_run(parse_config(quick_raw), path, on_step=on_step)
    assert seen and set(seen) == {"running"}
    assert RunStore.open(path).status() == "success"
    with StoreLock(path) as lock:  # released: anyone may take it now
        assert lock.held
