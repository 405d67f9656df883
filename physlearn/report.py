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

Only committed records are read (see :mod:`physlearn.store`), so a running, interrupted or
failed run reports what it has. matplotlib is imported lazily and used without pyplot.
"""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn import figures as F
from physlearn.store import RunStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STEP_SCALARS = ("loss", "report_loss", "batch_accuracy", "lr", "grad_cosine", "grad_rel_error")
EVAL_SCALARS = (
    "eval_step",
    "test_loss",
    "test_accuracy",
    "train_loss",
    "train_accuracy",
    "test_report_loss",
)
FIGURE_NAMES = (
    "training.png",
    "gradient_fidelity.png",
    "parameters.png",
    "graph.png",
    "equilibrium.png",
    "sweep_axes.png",
    "sweep_curves.png",
)
MAX_CURVES = 12
MAX_SERIES = 6
HTML_NAME = "report.html"


@dataclass
class Report:
    """What :func:`make_report` wrote."""

    kind: str  # "run" or "sweep"
    out_dir: Path
    html: Path
    figures: list[Path]
    table: str = ""  # sweeps: the per-configuration table as text


@dataclass
class _Figure:
    file: str
    caption: str
    png: bytes


# --------------------------------------------------------------------------------------------
# Entry points


def default_out(store: Path) -> Path:
    """``<store>.report`` beside the store."""
    store = Path(store)
    return store.with_name(store.name + ".report")


def make_report(store: str | Path, out: str | Path | None = None) -> Report:
    """Write the figures and ``report.html`` of a run or sweep store. Raises StoreError when
    ``store`` is neither."""
    from physlearn.sweep import read_sweep_attrs

    path = Path(store)
    out_dir = Path(out) if out is not None else default_out(path)
    sweep_attrs = read_sweep_attrs(path)
    if sweep_attrs is not None:
        return _sweep_report(path, sweep_attrs, out_dir)
    return _run_report(RunStore.open(path), out_dir)


def report_command(store: str, out: str | None = None) -> int:
    """``physlearn report``: write the report and say where it is."""
    rep = make_report(store, out)
    if rep.table:
        print(rep.table)
    print(f"{rep.kind} report: {rep.html} ({len(rep.figures)} figures beside it)")
    return 0


# --------------------------------------------------------------------------------------------
# Reading a run


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
        from physlearn.orchestrator import build_system
        from physlearn.store import to_jsonable
        from physlearn.system import Graph

        system = build_system(parse_config(attrs["config"], "stored config"))
    except Exception:  # an old or foreign config: no picture, not an error
        return None
    if isinstance(system, Graph):
        rebuilt: dict[str, Any] = to_jsonable(system.graph_layout())
        return rebuilt
    return None


def last_metrics(store: RunStore) -> dict[str, float]:
    from physlearn.orchestrator import _last_metrics

    return _last_metrics(store)


# --------------------------------------------------------------------------------------------
# Run report


def _run_report(store: RunStore, out_dir: Path) -> Report:
    attrs = store.attrs
    cfg = attrs.get("config", {})
    title = str(cfg.get("name", store.path.name))
    s = read_scalars(store)
    params = read_parameters(store)
    figs: list[_Figure] = []
    _add(
        figs,
        "training.png",
        F.training_curves(s, title),
        "Loss per optimiser step (batch at "
        "the free equilibrium, moving mean) and on the test split; accuracy; learning rate.",
    )
    _add(
        figs,
        "gradient_fidelity.png",
        F.gradient_fidelity(s, title),
        "Cosine similarity and "
        "relative error of the gradient estimate against the exact (implicit) gradient.",
    )
    _add(
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
            _add(
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
    _add(
        figs,
        "equilibrium.png",
        F.equilibrium_diagnostics(s, phases, unit, title),
        "Relaxation iterations and largest residual force per phase.",
    )

    metrics = last_metrics(store)
    summary = [
        ("store", str(store.path)),
        ("status", store.status()),
        ("steps committed", f"{store.committed()} / {attrs.get('total_steps', '?')}"),
        ("evaluations committed", str(store.committed("eval"))),
        ("system", str(cfg.get("system", {}).get("kind", "?"))),
        ("estimator", _estimator_text(cfg.get("estimator", {}))),
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
    body = [
        f"<h1>Run {_e(title)}</h1>",
        f"<p>{_e(cfg.get('description', ''))}</p>" if cfg.get("description") else "",
        "<h2>Summary</h2>",
        _kv_table(summary),
        "<h2>Last metrics</h2>",
        _kv_table([(k, _num(v)) for k, v in metrics.items()]) if metrics else "<p>none yet</p>",
        "<h2>Figures</h2>",
        *(_figure_html(f) for f in figs),
        "<h2>Config</h2>",
        f"<details><summary>validated config</summary><pre>{_e(_yaml(cfg))}</pre></details>",
    ]
    return _write(out_dir, "run", f"physlearn run {title}", body, figs)


def _estimator_text(e: dict[str, Any]) -> str:
    kind = str(e.get("kind", "?"))
    if kind == "ep":
        return f"EP, {e.get('nudging')} nudging, beta={e.get('beta')}"
    return kind


def _optimizer_text(o: dict[str, Any]) -> str:
    return f"{o.get('kind', '?')}, lr={o.get('lr', '?')}"


# --------------------------------------------------------------------------------------------
# Sweep report


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


def read_sweep_runs(path: Path, attrs: dict[str, Any]) -> list[_SweepRun]:
    """Every run of the table, with status and metrics read from its own store when it has one
    (the store is the truth; the table covers runs that failed before creating it)."""
    from physlearn.store import StoreError

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
    from physlearn.sweep import _id_value

    if isinstance(v, str | int | float | bool) or v is None:
        return str(v) if not isinstance(v, float) else f"{v:g}"
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 40 else _id_value(v)


def _label(values: dict[str, Any], axes: Sequence[str]) -> str:
    """``variant, path-suffix=value, ...`` for the given axes."""
    from physlearn.sweep import _axis_labels

    labels = _axis_labels([a for a in axes if a != "variant"])
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
    from physlearn.sweep import _canonical

    groups: dict[tuple[str, ...], _Group] = {}
    for r in runs:
        key = tuple(_canonical(r.axes.get(a)) for a in axes)
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


def _axis_panels(runs: Sequence[_SweepRun], axes: Sequence[str], metric: str) -> list[F.AxisPanel]:
    from physlearn.sweep import _canonical

    ok = [r for r in runs if r.status == "success" and metric in r.metrics]
    panel_axes = list(axes) or ["seed"]
    panels = []
    for a in panel_axes:

        def value(r: _SweepRun, a: str = a) -> Any:
            return r.seed if a == "seed" else r.axes.get(a)

        cats: dict[str, Any] = {}
        for r in runs:
            cats.setdefault(_canonical(value(r)), value(r))
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
            ck = _canonical([r.axes.get(b) for b in others])
            combos.setdefault(ck, _label(r.axes, others))
        pooled = len(combos) > MAX_SERIES or not others
        series_keys = {"all": "all runs" if others else metric} if pooled else combos
        panel = F.AxisPanel(a, [_value_text(v) for v in vals], numeric)
        for sk, slabel in series_keys.items():
            mean, spread, cnt = (np.full(len(keys), np.nan) for _ in range(3))
            for i, k in enumerate(keys):
                sel = [
                    r.metrics[metric]
                    for r in ok
                    if _canonical(value(r)) == k
                    and (pooled or _canonical([r.axes.get(b) for b in others]) == sk)
                ]
                mean[i], spread[i], cnt[i] = _stats(sel)
            panel.series[slabel] = (mean, spread, cnt)
        panels.append(panel)
    return panels


def _group_curves(groups: Sequence[_Group], metric: str) -> list[F.SweepCurve]:
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
        out.append(F.SweepCurve(g.label, x, mean, spread, len(cs)))
    return out


def sweep_figures(store: str | Path) -> dict[str, Figure]:
    """The figures a report of the sweep store at ``store`` draws, by file name (for use in
    notebooks and tests; :func:`make_report` writes them). Raises StoreError for anything
    but a sweep store."""
    from physlearn.store import StoreError
    from physlearn.sweep import read_sweep_attrs

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
    curves: dict[str, Sequence[F.SweepCurve]] = {m: _group_curves(groups, m) for m in curve_metrics}
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
            F.sweep_axes(_axis_panels(runs, axes, primary), primary, name),
            f"Final {primary} against each swept axis: mean ± std over seeds (successful runs); "
            "one series per combination of the other axes, or all pooled when there are many.",
        ),
        (
            "sweep_curves.png",
            F.sweep_curves(curves, xlabels, name),
            f"Learning curves per configuration: mean and ±std band over seeds{more}.",
        ),
    ]


def _sweep_report(path: Path, attrs: dict[str, Any], out_dir: Path) -> Report:
    name = str(attrs.get("name", path.name))
    axes = [str(a) for a in attrs.get("axes", [])]
    runs = read_sweep_runs(path, attrs)
    groups = group_runs(runs, axes)
    metrics = _metric_names(runs)
    table = sweep_table(groups, axes, metrics)
    figs: list[_Figure] = []
    for file, fig, caption in _sweep_figures(runs, groups, axes, metrics, name):
        _add(figs, file, fig, caption)

    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    spec = attrs.get("spec", {})
    summary = [
        ("store", str(path)),
        ("sweep file", str(attrs.get("sweep_file") or "")),
        ("runs", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"),
        ("axes", ", ".join(axes) or "none"),
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
    run_rows = [
        [
            r.run_id,
            *(_value_text(r.axes.get(a)) for a in axes),
            str(r.seed),
            r.status,
            f"{r.committed}/{r.total}",
            *(_num(r.metrics[m]) if m in r.metrics else "" for m in metrics),
            r.error or "",
        ]
        for r in runs
    ]
    body = [
        f"<h1>Sweep {_e(name)}</h1>",
        f"<p>{_e(spec.get('description', ''))}</p>" if spec.get("description") else "",
        "<h2>Summary</h2>",
        _kv_table(summary),
        "<h2>Per configuration</h2>",
        "<p>Final metrics of the successful runs, mean ± std over seeds.</p>",
        _table([*axes, "ok/runs", *metrics], agg_rows),
        "<h2>Figures</h2>",
        *(_figure_html(f) for f in figs),
        "<h2>Runs</h2>",
        f"<p>Each run is a run store: <code>physlearn report {_e(str(path))}/&lt;run_id&gt;</code>"
        " draws its own figures.</p>",
        _table(["run", *axes, "seed", "status", "steps", *metrics, "error"], run_rows),
        "<h2>Sweep spec</h2>",
        f"<details><summary>sweep file (validated)</summary><pre>{_e(_yaml(spec))}</pre></details>",
    ]
    rep = _write(out_dir, "sweep", f"physlearn sweep {name}", body, figs)
    rep.table = table
    return rep


# --------------------------------------------------------------------------------------------
# HTML


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}figure{margin:1em 0}img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}pre{background:#f8f8f8;padding:.8em;overflow:auto}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _num(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "n/a"


def _yaml(obj: Any) -> str:
    import yaml

    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=None))


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _add(figs: list[_Figure], file: str, fig: Figure | None, caption: str) -> None:
    if fig is None:
        return
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    figs.append(_Figure(file, caption, buf.getvalue()))


def _figure_html(f: _Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f'<figure id="{_e(f.file.removesuffix(".png"))}">'
        f'<img src="data:image/png;base64,{data}" alt="{_e(f.file)}">'
        f'<figcaption>{_e(f.caption)} <a href="{_e(f.file)}">{_e(f.file)}</a></figcaption>'
        "</figure>"
    )


def _write(
    out_dir: Path, kind: str, title: str, body: Sequence[str], figs: list[_Figure]
) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {f.file for f in figs}
    for stale in FIGURE_NAMES:  # figures of an earlier report that no longer apply
        if stale not in written and (out_dir / stale).is_file():
            (out_dir / stale).unlink()
    paths = []
    for f in figs:
        p = out_dir / f.file
        p.write_bytes(f.png)
        paths.append(p)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
    html_path = out_dir / HTML_NAME
    html_path.write_text(page, encoding="utf-8")
    return Report(kind, out_dir, html_path, paths)
