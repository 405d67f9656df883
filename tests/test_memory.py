"""The allocator policy of a campaign process: freed step-sized blocks are reused, not faulted
in again."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.memory import retain_freed_memory

from .conftest import run_cli

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only")


def _faults_of_alloc_cycles(nbytes: int, cycles: int) -> int:
    """Minor page faults while allocating, touching and freeing two blocks ``cycles`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        a = np.empty(nbytes // 8)
        a[:] = 1.0
        b = np.empty(nbytes // 8)
        b[:] = 2.0
        del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@linux
def test_freed_blocks_are_reused_without_page_faults() -> None:
    assert retain_freed_memory()
    assert retain_freed_memory()  # idempotent
    nbytes = 16 << 20  # a 10 000-node step's arrays are of this order
    _faults_of_alloc_cycles(nbytes, 1)  # the heap grows once
    pages = 2 * 5 * nbytes // 4096
    faults = _faults_of_alloc_cycles(nbytes, 5)
    # without the setting every cycle faults in every page again (about `pages` faults)
    assert faults < pages // 100, f"{faults} page faults for {pages} pages reused"


_RUN_THEN_MEASURE = """
import json, resource, sys
import numpy as np
from physlearn.config import parse_config
from physlearn.run.start import start_run

raw, out, retain = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
assert start_run(parse_config(raw), out, retain_freed_memory=retain).status == "success"

def faults(nbytes, cycles):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        a = np.empty(nbytes // 8)
        a[:] = 1.0
        b = np.empty(nbytes // 8)
        b[:] = 2.0
        del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

nbytes = 16 << 20
faults(nbytes, 1)
print(json.dumps({"faults": faults(nbytes, 5), "pages": 2 * 5 * nbytes // 4096}))
"""


@pytest.mark.slow
@linux
@pytest.mark.parametrize("retain", [False, True])
def test_a_run_changes_the_allocator_only_when_asked(
    quick_raw: dict[str, Any], tmp_path: Path, retain: bool
) -> None:
    """``start_run`` leaves the process's allocator as it found it (a notebook keeps glibc's
    defaults) unless ``retain_freed_memory=True``: measured in a fresh process after a run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    args = [json.dumps(quick_raw), str(tmp_path / "run.zarr"), "1" if retain else "0"]
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_THEN_MEASURE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    reused = seen["faults"] < seen["pages"] // 100
    assert reused == retain, seen


@pytest.mark.slow
def test_cli_takes_the_allocator_flag_on_run_resume_and_sweep(
    quick_raw: dict[str, Any], write_config: Any, tmp_path: Path
) -> None:
    """``--retain-freed-memory`` is the command line's opt-in (run, resume, sweep)."""
    out = tmp_path / "run.zarr"
    res = run_cli("run", str(write_config(quick_raw)), "--out", str(out), "--retain-freed-memory")
    assert res.returncode == 0, res.stderr
    res = run_cli("resume", str(out), "--retain-freed-memory")
    assert res.returncode == 0, res.stderr
    sweep = {"name": "mem", "base": quick_raw, "seeds": 1}
    sweep_file = str(write_config(sweep, "sweep.yaml"))
    res = run_cli("sweep", sweep_file, "--dry-run", "--retain-freed-memory")
    assert res.returncode == 0, res.stderr
