"""A full disk ends a run in one line (what filled up, how many steps are committed, how to go
on; exit 1) and leaves a consistent store that resumes, once space is freed, to exactly the
uninterrupted run. The disk is a real, tiny tmpfs (skipped where mounting is not permitted)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from physlearn.config import parse_config
from physlearn.run.start import start_run
from physlearn.store.run_store import RunStore

from .conftest import run_cli
from .test_run_store import _assert_same_run


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _fill(disk: Path, leave: int) -> Path:
    """A file taking all of ``disk``'s free space but ``leave`` bytes."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("wb") as fh:
        fh.truncate(0)
        os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - leave)
    return filler


@pytest.mark.slow
def test_disk_full_ends_in_one_line_and_resumes_exactly(
    quick_raw: dict[str, Any], write_config: Any, tmp_path: Path, tiny_disk: Path
) -> None:
    ref = tmp_path / "ref.zarr"
    start_run(parse_config(quick_raw), ref)
    # room for the store and its first commit (which writes every chunk), not for the second
    # (a chunk is rewritten beside the old one, then renamed over it)
    filler = _fill(tiny_disk, int(1.5 * _disk_usage(ref)))
    out = tiny_disk / "r.zarr"

    r = run_cli("run", str(write_config(quick_raw)), "--out", str(out))
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    store = RunStore.open(out)
    n = store.committed()
    assert 0 < n < 24
    assert err.startswith("physlearn: run failed: disk full: ")
    assert f"holding {out};" in err and f"{n} steps are committed" in err, err
    assert f"`physlearn resume {out}` continues" in err
    # consistent: the committed steps verify, and the failure is recorded
    store.verify(full=True)
    assert store.attrs["exit_status"] == "fail"
    assert "No space left on device" in store.attrs["error"]

    r = run_cli("resume", str(out))  # still full: the same one line, nothing lost
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert RunStore.open(out).committed() >= n

    filler.unlink()
    r = run_cli("resume", str(out))
    assert r.returncode == 0, r.stderr
    _assert_same_run(ref, out)
    RunStore.open(out).verify(full=True)
