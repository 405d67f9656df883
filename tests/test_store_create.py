"""Store creation is atomic: a process killed while creating a store leaves nothing under the
store's name (so ``run --out`` works again and ``resume`` says what happened), and a later
creation removes only its own unlocked, stale construction directories."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.cli import main
from physlearn.store.lock import StoreLock
from physlearn.store.run_store import RunStore

from .conftest import ROOT

# a store with 2 x 400 checkpoint arrays: a few seconds of creation to be killed in
CREATE = """
import sys
import numpy as np
from physlearn.store.run_store import RunStore
shapes = {f"held/g{i}": (3,) for i in range(400)}
RunStore.create(sys.argv[1], {"phase": (np.array(["free"]), "1")}, shapes, {"config": {}})
"""
LEFTOVER = re.compile(r"\.r\.zarr\.creating-[0-9a-f]{12}")


def _kill_while_creating(final: Path, rng: np.random.Generator) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CREATE, str(final)], cwd=ROOT)
    t0 = time.monotonic()
    while not any(final.parent.iterdir()):  # creation has begun
        assert proc.poll() is None and time.monotonic() - t0 < 60, "creation did not start"
        time.sleep(0.005)
    time.sleep(float(rng.uniform(0.05, 0.8)))
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, "the creation finished before the kill: make it longer"


@pytest.mark.slow
def test_sigkill_during_creation_leaves_nothing_under_the_name(
    quick_raw: dict[str, Any],
    write_config: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parent = tmp_path / "runs"
    parent.mkdir()
    final = parent / "r.zarr"
    rng = np.random.default_rng()
    for _ in range(2):
        _kill_while_creating(final, rng)
        assert not final.exists()
    assert all(LEFTOVER.fullmatch(p.name) for p in parent.iterdir()), list(parent.iterdir())

    assert main(["resume", str(final)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err, err
    assert f"physlearn run CONFIG --out {final}" in err

    assert main(["run", str(write_config(quick_raw)), "--out", str(final)]) == 0
    assert RunStore.open(final).status() == "success"


def test_only_own_unlocked_stale_leftovers_are_removed(tmp_path: Path) -> None:
    def leftover(name: str, age: float) -> Path:
        p = tmp_path / name
        p.mkdir()
        (p / "zarr.json").write_text("{}")
        os.utime(p, (time.time() - age, time.time() - age))
        return p

    stale = leftover(".r.zarr.creating-0123456789ab", 120)
    locked = leftover(".r.zarr.creating-ba9876543210", 120)
    young = leftover(".r.zarr.creating-aaaaaaaaaaaa", 1)
    kept = [
        locked,
        young,
        leftover(".s.zarr.creating-0123456789ab", 120),  # another store's
        leftover(".r.zarr.creating-notours", 120),  # not a name this code makes
        leftover("r.zarr.creating-0123456789ab", 120),  # not hidden
    ]
    link = tmp_path / ".r.zarr.creating-cccccccccccc"
    link.symlink_to(kept[2])
    os.utime(link, (time.time() - 120, time.time() - 120), follow_symlinks=False)
    kept.append(link)
    with StoreLock(locked, "creating, still alive"):
        store = RunStore.create(tmp_path / "r.zarr", {}, {}, {"config": {}})
        store.release()
    assert not stale.exists()
    assert all(p.is_symlink() or p.exists() for p in kept)
    assert (kept[2] / "zarr.json").exists()  # the link's target untouched
