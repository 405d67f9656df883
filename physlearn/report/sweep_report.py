"""The report of a sweep store: the run table, final metrics per configuration (mean +- std over
seeds), the final metric against every swept axis and learning curves (see
:mod:`physlearn.report.command`)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from physlearn.report import figures as F
from physlearn.report import sweep_figures as SF
from physlearn.report.labels import axis_titles, record_label
from physlearn.report.page import (
    HTML_NAME,
    Link,
    PageFigure,
    Report,
    add_figure,
    esc,
    figure_html,
    html_table,
    kv_table,
    number_text,
    write_page,
    yaml_text,
)
from physlearn.report.run_report import read_scalars
from physlearn.run.result import last_metrics
from physlearn.store.run_store import RunStore, StoreError
from physlearn.sweep.expand import axis_labels, id_value
from physlearn.sweep.plan import read_sweep_attrs
from physlearn.sweep.spec import canonical

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_CURVES = 12
#: Where a sweep's report writes the reports of its runs (one folder per run id).
RUNS_DIR = "runs"
MAX_SERIES = 6


@dataclass
class _SweepRun:
    run_id: str
    axes: dict[str, Any]
    seed: int | None
    status: str
    committed: int
    total: int
    metrics: dict[str, float]
    error: str | None
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # the run's stored config (None: no store)
    names: dict[str, str] = field(default_factory=dict)  # record -> label, from its store


def read_sweep_runs(path: Path, attrs: dict[str, Any]) -> list[_SweepRun]:
    """Every run of the table, with status and metrics read from its own store when it has one
    (the store is the truth; the table covers runs that failed before creating it)."""

    out: list[_SweepRun] = []
    for row in attrs.get("runs", []):
        rid = str(row["run_id"])
        run = _SweepRun(
            rid,
            dict(row.get("axes", {})),
            row.get("seed"),
            str(row.get("status", "pending")),
            int(row.get("committed_steps", 0)),
            int(row.get("total_steps", 0)),
            dict(row.get("metrics", {})),
            row.get("error"),
        )
        try:
            store = RunStore.open(path / rid)
        except StoreError:
            out.append(run)
            continue
        run.status = store.status()
        run.committed = store.committed()
        run.total = int(store.attrs.get("total_steps", run.total))
        run.metrics = last_metrics(store)
        run.error = store.attrs.get("error")
        run.config = store.attrs.get("config")
        run.names = {
            n: record_label(n, store.array(n).attrs)
            for n in ("test_accuracy", "test_loss", "loss")
            if n in store.array_names()
        }
        s = read_scalars(store, equilibrium=False)
        ev = s.get("eval_step", np.array([]))
        for k in ("test_accuracy", "test_loss"):
            if k in s and s[k].size == ev.size and ev.size:
                run.curves[k] = (ev, s[k])
        if "loss" in s and s["loss"].size:
            loss = s["loss"]
            run.curves["loss"] = (
                np.arange(1, loss.size + 1, dtype=float),
                F.moving_average(loss, F._window(loss.size)),
            )
        out.append(run)
    return out


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if not v.size:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _value_text(v: Any) -> str:

    if isinstance(v, str | int | float | bool) or v is None:
        return str(v) if not isinstance(v, float) else f"{v:g}"
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 40 else id_value(v)


def _label(values: dict[str, Any], axes: Sequence[str]) -> str:
    """``variant, path-suffix=value, ...`` for the given axes."""

    labels = axis_labels([a for a in axes if a != "variant"])
    return ", ".join(
        _value_text(values.get(a))
        if a == "variant"
        else f"{labels[a]}={_value_text(values.get(a))}"
        for a in axes
    )


@dataclass
class _Group:
    key: tuple[str, ...]
    label: str
    runs: list[_SweepRun]


def group_runs(runs: Sequence[_SweepRun], axes: Sequence[str]) -> list[_Group]:
    """Runs that differ only in their seed, in order of first appearance."""

    groups: dict[tuple[str, ...], _Group] = {}
    for r in runs:
        key = tuple(canonical(r.axes.get(a)) for a in axes)
        if key not in groups:
            groups[key] = _Group(key, _label(r.axes, axes) or "all runs", [])
        groups[key].runs.append(r)
    return list(groups.values())


def _metric_names(runs: Sequence[_SweepRun]) -> list[str]:
    names = []
    for m in ("test_accuracy", "test_loss", "loss"):
        if any(m in r.metrics for r in runs):
            names.append(m)
    return names


def sweep_table(groups: Sequence[_Group], axes: Sequence[str], metrics: Sequence[str]) -> str:
    """The per-configuration table as aligned text (mean +- std over the successful seeds)."""
    head = [*(a for a in axes), "ok/runs", *metrics]
    rows = []
    for g in groups:
        ok = [r for r in g.runs if r.status == "success"]
        cells = [_value_text(g.runs[0].axes.get(a)) for a in axes]
        cells.append(f"{len(ok)}/{len(g.runs)}")
        for m in metrics:
            mean, std, n = _stats([r.metrics.get(m, math.nan) for r in ok])
            cells.append(f"{mean:.3f} ± {std:.3f}" if n else "n/a")
        rows.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _axis_panels(runs: Sequence[_SweepRun], axes: Sequence[str], metric: str) -> list[SF.AxisPanel]:

    ok = [r for r in runs if r.status == "success" and metric in r.metrics]
    panel_axes = list(axes) or ["seed"]
    titles = axis_titles(panel_axes, _config(runs))
    panels = []
    for a in panel_axes:

        def value(r: _SweepRun, a: str = a) -> Any:
            return r.seed if a == "seed" else r.axes.get(a)

        cats: dict[str, Any] = {}
        for r in runs:
            cats.setdefault(canonical(value(r)), value(r))
        keys = list(cats)
        vals = list(cats.values())
        numeric = None
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            numeric = np.asarray(vals, dtype=float)
            order = np.argsort(numeric)
            numeric, keys, vals = numeric[order], [keys[i] for i in order], [vals[i] for i in order]
        others = [b for b in axes if b != a]
        combos: dict[str, str] = {}
        for r in runs:
            ck = canonical([r.axes.get(b) for b in others])
            combos.setdefault(ck, _label(r.axes, others))
        pooled = len(combos) > MAX_SERIES or not others
        series_keys = {"all": "all runs" if others else metric} if pooled else combos
        panel = SF.AxisPanel(a, [_value_text(v) for v in vals], numeric, label=titles[a][0])
        for sk, slabel in series_keys.items():
            mean, spread, cnt = (np.full(len(keys), np.nan) for _ in range(3))
            for i, k in enumerate(keys):
                sel = [
                    r.metrics[metric]
                    for r in ok
                    if canonical(value(r)) == k
                    and (pooled or canonical([r.axes.get(b) for b in others]) == sk)
                ]
                mean[i], spread[i], cnt[i] = _stats(sel)
            panel.series[slabel] = (mean, spread, cnt)
        panels.append(panel)
    return panels


def _config(runs: Sequence[_SweepRun]) -> dict[str, Any] | None:
    """A run's stored config (the kinds that resolve the schema's unions), if any run has one."""
    return next((r.config for r in runs if isinstance(r.config, dict)), None)


def _record_names(runs: Sequence[_SweepRun]) -> dict[str, str]:
    """Labels of the metrics, from the first run store that has each."""
    names: dict[str, str] = {}
    for r in runs:
        for k, v in r.names.items():
            names.setdefault(k, v)
    return names


def _group_curves(groups: Sequence[_Group], metric: str) -> list[SF.SweepCurve]:
    out = []
    for g in groups[:MAX_CURVES]:
        cs = [r.curves[metric] for r in g.runs if r.status == "success" and metric in r.curves]
        if not cs:
            continue
        n = min(c[0].size for c in cs)
        x = cs[0][0][:n]
        ys = np.stack([c[1][:n] for c in cs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(ys, axis=0)
            spread = np.nanstd(ys, axis=0, ddof=1) if len(cs) > 1 else np.zeros(n)
        out.append(SF.SweepCurve(g.label, x, mean, spread, len(cs)))
    return out


def sweep_figures(store: str | Path) -> dict[str, Figure]:
    """The figures a report of the sweep store at ``store`` draws, by file name (for use in
    notebooks and tests; :func:`make_report` writes them). Raises StoreError for anything
    but a sweep store."""

    path = Path(store)
    attrs = read_sweep_attrs(path)
    if attrs is None:
        raise StoreError(f"{path} is not a physlearn sweep store")
    axes = [str(a) for a in attrs.get("axes", [])]
    runs = read_sweep_runs(path, attrs)
    name = str(attrs.get("name", path.name))
    drawn = _sweep_figures(runs, group_runs(runs, axes), axes, _metric_names(runs), name)
    return {file: fig for file, fig, _ in drawn if fig is not None}


def _sweep_figures(
    runs: Sequence[_SweepRun],
    groups: Sequence[_Group],
    axes: Sequence[str],
    metrics: Sequence[str],
    name: str,
) -> list[tuple[str, Figure | None, str]]:
    """(file, figure or None, caption) of every sweep figure."""
    primary = metrics[0] if metrics else "loss"
    curve_metrics = [m for m in ("test_accuracy", "test_loss", "loss") if m in metrics]
    curves: dict[str, Sequence[SF.SweepCurve]] = {
        m: _group_curves(groups, m) for m in curve_metrics
    }
    names = _record_names(runs)
    ylabels = {m: names.get(m, record_label(m)) for m in curve_metrics}
    more = (
        f" (first {MAX_CURVES} of {len(groups)} configurations)" if len(groups) > MAX_CURVES else ""
    )
    xlabels = {
        "test_accuracy": "optimiser step (evaluation)",
        "test_loss": "optimiser step (evaluation)",
        "loss": "optimiser step (moving mean of the batch loss)",
    }
    return [
        (
            "sweep_axes.png",
            SF.sweep_axes(
                _axis_panels(runs, axes, primary),
                primary,
                ylabels.get(primary, record_label(primary)),
                name,
            ),
            f"Final {primary} against each swept axis: mean ± std over seeds (successful runs); "
            "one series per combination of the other axes, or all pooled when there are many.",
        ),
        (
            "sweep_curves.png",
            SF.sweep_curves(curves, xlabels, ylabels, name),
            f"Learning curves, one row per configuration: mean and ±std band over seeds (clipped "
            f"to the metric's range), the other configurations in grey{more}.",
        ),
    ]


def run_reports(path: Path, runs: Sequence[_SweepRun], out_dir: Path) -> dict[str, str]:
    """Write the report of every run that has a store into ``out_dir/<run_id>/``; returns the
    links to them relative to the sweep's page (``runs/<run_id>/report.html``, quoted)."""
    from physlearn.report.run_report import run_report

    links: dict[str, str] = {}
    for r in runs:
        try:
            store = RunStore.open(path / r.run_id)
        except StoreError:
            continue
        run_report(store, out_dir / r.run_id)
        links[r.run_id] = f"{RUNS_DIR}/{quote(r.run_id)}/{HTML_NAME}"
    return links


def sweep_report(path: Path, attrs: dict[str, Any], out_dir: Path) -> Report:
    name = str(attrs.get("name", path.name))
    axes = [str(a) for a in attrs.get("axes", [])]
    runs = read_sweep_runs(path, attrs)
    groups = group_runs(runs, axes)
    metrics = _metric_names(runs)
    table = sweep_table(groups, axes, metrics)
    titles = axis_titles(axes, _config(runs))
    figs: list[PageFigure] = []
    for file, fig, caption in _sweep_figures(runs, groups, axes, metrics, name):
        add_figure(figs, file, fig, caption)

    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    spec = attrs.get("spec", {})
    summary = [
        ("store", str(path)),
        ("sweep file", str(attrs.get("sweep_file") or "")),
        ("runs", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"),
        *((f"axis {a}", f"{t}: {d}" if d else t) for a, (t, d) in titles.items()),
        ("seeds", str(attrs.get("seeds"))),
        ("created", str(attrs.get("created", ""))),
        ("updated", str(attrs.get("updated", ""))),
        ("physlearn", str(attrs.get("physlearn_version", ""))),
    ]
    agg_rows = []
    for g in groups:
        ok = [r for r in g.runs if r.status == "success"]
        cells = [_value_text(g.runs[0].axes.get(a)) for a in axes]
        cells.append(f"{len(ok)}/{len(g.runs)}")
        for m in metrics:
            mean, std, n = _stats([r.metrics.get(m, math.nan) for r in ok])
            cells.append(f"{mean:.4g} ± {std:.2g}" if n else "n/a")
        agg_rows.append(cells)
    links = run_reports(path, runs, out_dir / RUNS_DIR)
    run_rows = [
        [
            Link(r.run_id, links[r.run_id]) if r.run_id in links else r.run_id,
            *(_value_text(r.axes.get(a)) for a in axes),
            str(r.seed),
            r.status,
            f"{r.committed}/{r.total}",
            *(number_text(r.metrics[m]) if m in r.metrics else "" for m in metrics),
            r.error or "",
        ]
        for r in runs
    ]
    body = [
        f"<h1>Sweep {esc(name)}</h1>",
        f"<p>{esc(spec.get('description', ''))}</p>" if spec.get("description") else "",
        "<h2>Summary</h2>",
        kv_table(summary),
        "<h2>Per configuration</h2>",
        "<p>Final metrics of the successful runs, mean ± std over seeds.</p>",
        html_table([*axes, "ok/runs", *metrics], agg_rows),
        "<h2>Figures</h2>",
        *(figure_html(f) for f in figs),
        "<h2>Runs</h2>",
        "<p>Each run links to its own report (written beside this page, in "
        f"<code>{RUNS_DIR}/</code>); a run without a link has no store yet.</p>",
        html_table(["run", *axes, "seed", "status", "steps", *metrics, "error"], run_rows),
        "<h2>Sweep spec</h2>",
        "<details><summary>sweep file (validated)</summary>"
        f"<pre>{esc(yaml_text(spec))}</pre></details>",
    ]
    rep = write_page(out_dir, "sweep", f"physlearn sweep {name}", body, figs)
    rep.table = table
    return rep
