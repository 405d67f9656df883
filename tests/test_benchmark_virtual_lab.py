"""``benchmarks/virtual_lab.py --fast`` runs end to end and prints its table (no timing asserted:
wall-clock figures belong to the benchmark, not to the test suite)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_virtual_lab_benchmark_prints_its_table() -> None:
    """A smoke run (fast timing, 2 steps of batch 2): every bucket, the extrapolation, the three
    reading loops with their validity and the ratios are printed."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/virtual_lab.py", "--fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for row in (
        "stock.timing = fast",
        "EXTRAPOLATED to the full schedule of bench_qcodes_stock.yaml: 210 steps",
        "  wall ",
        "  instrument (driver calls: qcodes, pyvisa, replies)",
        "  settling waits",
        "  physlearn itself (wall - instrument - settling)",
        "  run thread CPU (physlearn + qcodes + pyvisa)",
        "  READ? per node (the station)",
        "  memory + *TRG, no wait",
        "no: relay opens mid-reading",
        "ratio READ?-per-node / buffered, at data-sheet timing",
        "projected on real instruments",
        "physlearn's own share of a step, measured:",
    ):
        assert row in out, f"missing {row!r} in:\n{out}"


def test_the_benchmark_refuses_a_single_step() -> None:
    """The buckets are taken over the steps after the first: --steps 1 is a usage error (exit 2,
    one line), before any lab is served."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/virtual_lab.py", "--steps", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--steps: at least 2" in proc.stderr
    assert "Traceback" not in proc.stderr
