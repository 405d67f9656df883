"""The report of one run store: scalars, parameters and the graph read from its committed
records, drawn and written as a page (see :mod:`physlearn.report.command`)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.baselines import baseline_rows
from physlearn.report import figures as F
from physlearn.report import timing as T
from physlearn.report.labels import record_label
from physlearn.report.page import (
    PageFigure,
    Report,
    add_figure,
    esc,
    figure_html,
    kv_table,
    number_text,
    write_page,
    yaml_text,
)
from physlearn.run.nonconverged_log import nonconverged_summary, nonconverged_text
from physlearn.run.result import last_metrics
from physlearn.store.run_store import RunStore

if TYPE_CHECKING:
    pass

STEP_SCALARS = ("loss", "report_loss", "batch_accuracy", "lr", "grad_cosine", "grad_rel_error")
EVAL_SCALARS = (
    "eval_step",
    "test_loss",
    "test_accuracy",
    "train_loss",
    "train_accuracy",
    "test_report_loss",
)


def read_scalars(store: RunStore, equilibrium: bool = True) -> dict[str, np.ndarray]:
    """The run's 1-D step and eval series, plus (``equilibrium``) per-phase summaries of the
    equilibria (``iterations_mean`` and ``residual_max``, shape (step, phase))."""
    names = set(store.array_names())
    s: dict[str, np.ndarray] = {}
    for n in (*STEP_SCALARS, *EVAL_SCALARS):
        if n in names:
            s[n] = np.asarray(store.read(n), dtype=float).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: NaN is the answer
        if equilibrium and "iterations" in names:
            it = np.asarray(store.read("iterations"), dtype=float)
            if it.ndim == 3 and it.shape[0]:
                s["iterations_mean"] = it.mean(axis=2)
        if equilibrium and "residual" in names:
            r = np.asarray(store.read("residual"), dtype=float)
            if r.ndim == 3 and r.shape[0]:
                s["residual_max"] = np.nanmax(np.abs(r), axis=2)
    return s


def read_parameters(store: RunStore, max_rows: int = 200) -> list[F.ParamSeries]:
    """Every ``param_<group>``: first and last committed step, and quantiles over at most
    ``max_rows`` evenly spaced steps (read with a stride, not in full)."""
    n = store.committed("step")
    out: list[F.ParamSeries] = []
    if n == 0:
        return out
    for name in store.array_names():
        if not name.startswith("param_"):
            continue
        a = store.array(name)
        stride = max(1, math.ceil(n / max_rows))
        rows = np.asarray(a[0:n:stride], dtype=float).reshape(-(-n // stride), -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanpercentile(rows, [5, 25, 50, 75, 95], axis=1).T
        out.append(
            F.ParamSeries(
                name=name.removeprefix("param_"),
                unit=str(a.attrs.get("units", "")),
                first=np.asarray(a[0], dtype=float),
                last=np.asarray(a[n - 1], dtype=float),
                steps=np.arange(0, n, stride) + 1,
                quantiles=q,
            )
        )
    return out


def graph_layout(store: RunStore) -> dict[str, Any] | None:
    """The run's ``graph`` group; for runs written before it existed, rebuilt from the stored
    config (None when the system has no graph)."""
    layout = store.graph_layout()
    if layout is not None:
        return layout
    attrs = store.attrs
    try:
        from physlearn.config import parse_config
        from physlearn.run.start import build_system
        from physlearn.store.run_store import to_jsonable
        from physlearn.system import Graph

        system = build_system(parse_config(attrs["config"], "stored config"))
    except Exception:  # an old or foreign config: no picture, not an error
        return None
    if isinstance(system, Graph):
        rebuilt: dict[str, Any] = to_jsonable(system.graph_layout())
        return rebuilt
    return None


def record_names(store: RunStore) -> dict[str, str]:
    """Every scalar record's label from the store's metadata (``long_name (units)``)."""
    names = set(store.array_names())
    return {
        n: record_label(n, store.array(n).attrs)
        for n in (*STEP_SCALARS, *EVAL_SCALARS, "step_time")
        if n in names
    }


def run_report(store: RunStore, out_dir: Path) -> Report:
    """The report page of ``store`` in ``out_dir``: summary, last metrics, figures, the
    instruments of a station run, config."""
    attrs = store.attrs
    cfg = attrs.get("config", {})
    title = str(cfg.get("name", store.path.name))
    figs = _run_figures(store, attrs, title)
    snapshot = attrs.get("system_snapshot") or {}
    instruments = T.instruments_html(snapshot) if isinstance(snapshot, dict) else ""
    metrics = last_metrics(store)
    summary = _summary(store, attrs)
    body = [
        f"<h1>Run {esc(title)}</h1>",
        f"<p>{esc(cfg.get('description', ''))}</p>" if cfg.get("description") else "",
        "<h2>Summary</h2>",
        kv_table(summary),
        "<h2>Last metrics</h2>",
        kv_table([(k, number_text(v)) for k, v in metrics.items()])
        if metrics
        else "<p>none yet</p>",
        "<h2>Baselines</h2>",
        _baselines_html(attrs),
        "<h2>Figures</h2>",
        *(figure_html(f) for f in figs),
        "<h2>Instruments</h2>" + instruments if instruments else "",
        "<h2>Config</h2>",
        f"<details><summary>validated config</summary><pre>{esc(yaml_text(cfg))}</pre></details>",
    ]
    return write_page(out_dir, "run", f"physlearn run {title}", body, figs)


def _run_figures(store: RunStore, attrs: dict[str, Any], title: str) -> list[PageFigure]:
    """Training curves, gradient fidelity, parameters, the graph (if rebuilt) and the
    equilibrium diagnostics of ``store`` (run attributes ``attrs``)."""
    s = read_scalars(store)
    names = record_names(store)
    params = read_parameters(store)
    figs: list[PageFigure] = []
    add_figure(
        figs,
        "training.png",
        F.training_curves(s, title, baseline_rows(attrs), names),
        "Loss per optimiser step (batch at "
        "the free equilibrium, moving mean) and on the test split; accuracy; learning rate. "
        "Dashed: baselines (reference models) on the same test split.",
    )
    add_figure(
        figs,
        "gradient_fidelity.png",
        F.gradient_fidelity(s, title, names),
        "Misalignment 1 − cos (log axis: 0 is exact) and relative error of the gradient "
        "estimate against the exact (implicit) gradient.",
    )
    timing = T.read_timing(store)
    add_figure(
        figs,
        "timing.png",
        T.step_timing(timing, title),
        "Wall-clock time of every optimiser step (moving mean, median) and the throughput.",
    )
    add_figure(
        figs,
        "parameters.png",
        F.parameter_histograms(params, title),
        "Parameter values at the "
        "first and the last step, and their spread (quantiles) over the run.",
    )
    layout = graph_layout(store)
    if layout is not None:
        group = str(layout.get("edge_group", ""))
        series = next((p for p in params if p.name == group), None)
        if series is not None:
            fig = F.graph_values(layout, series.first, series.last, group, series.unit, title)
            add_figure(
                figs,
                "graph.png",
                fig,
                f"{group} on the system's graph (edge colour and "
                "width by value; nodes by role), at the first and the last step.",
            )
    phases = [str(p.get("label", "")) for p in attrs.get("phases", [])]
    unit = "system units"
    if "residual" in store.array_names():
        unit = str(store.array("residual").attrs.get("units", unit))
    add_figure(
        figs,
        "equilibrium.png",
        F.equilibrium_diagnostics(s, phases, unit, title),
        "Relaxation iterations and largest residual force per phase.",
    )
    snapshot = attrs.get("system_snapshot") or {}
    if isinstance(snapshot, dict) and T.is_instrumented(timing, snapshot):
        missing = T.missing_counters(timing)
        add_figure(
            figs,
            "instruments.png",
            T.instrument_panel(timing, phases, title),
            "Per step: time in instrument calls and waiting for the network beside the step's "
            "time (the counters also run during the evaluations between steps, so they can "
            "exceed it); retries, reconnects and readings; settle time per phase. "
            + (f"Not logged by this run: {', '.join(missing)}." if missing else ""),
        )
    return figs


def _baselines_html(attrs: dict[str, Any]) -> str:
    """The reference models' metrics on the run's split (or why there are none)."""
    note = str(attrs.get("baselines_note", "not computed (run created before baselines)"))
    entries = attrs.get("baselines") or {}
    rows = [
        (f"{name}: {k}", number_text(v) if isinstance(v, (int, float)) else str(v))
        for name, entry in entries.items()
        for k, v in entry.items()
    ]
    return f"<p>{esc(note)}</p>" + (kv_table(rows) if rows else "")


def _summary(store: RunStore, attrs: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary table's rows: the store, its progress and what the run was."""
    cfg = attrs.get("config", {})
    summary = [
        ("store", str(store.path)),
        ("status", store.status()),
        ("steps committed", f"{store.committed()} / {attrs.get('total_steps', '?')}"),
        ("evaluations committed", str(store.committed("eval"))),
        ("system", str(cfg.get("system", {}).get("kind", "?"))),
        ("estimator", _estimator_text(cfg.get("estimator", {}))),
        ("non-converged samples", nonconverged_text(nonconverged_summary(store))),
        ("optimiser", _optimizer_text(cfg.get("optimizer", {}))),
        ("dataset", str(cfg.get("task", {}).get("dataset", {}).get("kind", "?"))),
        ("seed", str(cfg.get("seed", "?"))),
        ("started", str(attrs.get("run_timestamp", ""))),
        ("completed", str(attrs.get("completed_timestamp", "") or "")),
        ("guid", str(attrs.get("guid", ""))),
        ("physlearn", str(attrs.get("physlearn_version", ""))),
    ]
    if attrs.get("error"):
        summary.append(("error", str(attrs["error"])))
    return summary


def _estimator_text(e: dict[str, Any]) -> str:
    kind = str(e.get("kind", "?"))
    if kind == "ep":
        return f"EP, {e.get('nudging')} nudging, beta={e.get('beta')}"
    return kind


def _optimizer_text(o: dict[str, Any]) -> str:
    return f"{o.get('kind', '?')}, lr={o.get('lr', '?')}"
