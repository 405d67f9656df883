"""Reports: PNG figures and one self-contained HTML page for a run store or a sweep store.

``physlearn report STORE [--out DIR]`` writes, into ``DIR`` (default ``<STORE>.report/`` beside
the store), the figures as PNG files and ``report.html``, which embeds every figure as a
``data:`` URI (it opens offline, alone) and links the PNG file beside it.

A run's report shows the loss and accuracy curves (per step and on the test split), the
gradient fidelity (``grad_cosine``, ``grad_rel_error``) when the run logged the exact gradient,
histograms of every parameter group at the first and last step with its spread over the run, the
edge parameter drawn on the system's graph (the run's ``graph`` group) and the equilibrium
diagnostics. A sweep's report has the run table, a table of the final metrics per configuration
(mean +- std over seeds), the final metric against every swept axis and the learning curves of
every configuration (mean and +-std band over seeds).

Only committed records are read (see :mod:`physlearn.store.run_store`), so a running, interrupted or
failed run reports what it has. matplotlib is imported lazily and used without pyplot.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from physlearn.store.run_store import RunStore

if TYPE_CHECKING:
    pass
from physlearn.report.page import Report
from physlearn.report.run_report import run_report
from physlearn.report.sweep_report import sweep_report
from physlearn.sweep.plan import read_sweep_attrs


def default_out(store: Path) -> Path:
    """``<store>.report`` beside the store."""
    store = Path(store)
    return store.with_name(store.name + ".report")


def make_report(store: str | Path, out: str | Path | None = None) -> Report:
    """Write the figures and ``report.html`` of a run or sweep store. Raises StoreError when
    ``store`` is neither."""

    path = Path(store)
    out_dir = Path(out) if out is not None else default_out(path)
    sweep_attrs = read_sweep_attrs(path)
    if sweep_attrs is not None:
        return sweep_report(path, sweep_attrs, out_dir)
    return run_report(RunStore.open(path), out_dir)


def report_command(store: str, out: str | None = None) -> int:
    """``physlearn report``: write the report and say where it is."""
    rep = make_report(store, out)
    if rep.table:
        print(rep.table)
    print(f"{rep.kind} report: {rep.html} ({len(rep.figures)} figures beside it)")
    return 0
