"""The dashboard's figures (Bokeh): every run's lines in the same panels, so chosen runs overlay.

Each run has two data sources the page streams into (:class:`RunSources`): one row per step
(the columns of :data:`physlearn.dashboard.feed.STEP_COLUMNS`) and one per evaluation (its
metrics, at the step it followed). Every panel draws one line per run and record; a renderer is
named after the column it draws, so one hover template (``@$name``) serves them all. All step
axes are linked: zooming one zooms them all. Panel titles are HTML headings above the figures
(readable, selectable and found by a screen reader), not text painted into the canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.dashboard.feed import COS_FLOOR, STEP_COLUMNS

if TYPE_CHECKING:
    from bokeh.models.layouts import LayoutDOM
    from bokeh.models.renderers import GlyphRenderer
    from bokeh.models.sources import ColumnDataSource

#: Figures of the step panels: width, height in CSS pixels (they stretch to the page's width).
HEIGHT = 260
#: Above this many runs in one page the legends are hidden (hover names the run instead).
MAX_LEGEND = 8

_TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


@dataclass
class RunSources:
    """The data sources of one run's lines and the renderers drawing them."""

    key: str
    label: str
    color: str
    steps: ColumnDataSource
    evals: ColumnDataSource
    renderers: list[GlyphRenderer] = field(default_factory=list)

    def set_visible(self, visible: bool) -> None:
        """Show or hide every line of this run."""
        for r in self.renderers:
            r.visible = visible


def run_sources(key: str, label: str, index: int, eval_metrics: Sequence[str]) -> RunSources:
    """Empty sources for a run (the first poll fills them); colour by the run's position."""
    from bokeh.models.sources import ColumnDataSource
    from bokeh.palettes import Category10_10, Category20_20

    palette = Category10_10 if index < 10 else Category20_20
    steps = ColumnDataSource({"step": [], "run": [], **{c: [] for c in STEP_COLUMNS}})
    evals = ColumnDataSource({"step": [], "run": [], **{m: [] for m in eval_metrics}})
    return RunSources(key, label, palette[index % len(palette)], steps, evals)


def stream_rows(src: RunSources, steps: dict[str, np.ndarray], evals: dict[str, Any]) -> None:
    """Append a poll's new rows to a run's sources (only the columns the sources have)."""
    if len(steps["step"]):
        data: dict[str, Any] = {c: _plain(steps[c]) for c in src.steps.column_names if c in steps}
        data["run"] = [src.label] * len(steps["step"])
        src.steps.stream(data)
    if len(evals["eval_step"]):
        more: dict[str, Any] = {c: _plain(evals[c]) for c in src.evals.column_names if c in evals}
        more["step"] = _plain(evals["eval_step"])
        more["run"] = [src.label] * len(evals["eval_step"])
        src.evals.stream(more)


def _plain(values: np.ndarray) -> list[Any]:
    """Values for the browser: NaN (a gap in the line) as NaN, numbers as Python numbers."""
    return [float(v) for v in np.asarray(values, dtype=np.float64)]


def _figure(title_y: str, x_range: Any, y_log: bool = False, y_zero: bool = False) -> Any:
    from bokeh.models.formatters import PrintfTickFormatter
    from bokeh.models.ranges import DataRange1d
    from bokeh.models.tickers import LogTicker
    from bokeh.models.tools import HoverTool
    from bokeh.plotting import figure

    fig = figure(
        height=HEIGHT,
        sizing_mode="stretch_width",
        tools=_TOOLS,
        active_scroll="wheel_zoom",
        x_range=x_range,
        y_axis_type="log" if y_log else "linear",
        y_range=DataRange1d(start=0) if y_zero else DataRange1d(),
        x_axis_label="step",
        y_axis_label=title_y,
    )
    if y_log:  # within one decade Bokeh labels every minor tick with four decimals: fewer, %g
        fig.yaxis.formatter = PrintfTickFormatter(format="%.2g")
        fig.yaxis.ticker = LogTicker(desired_num_ticks=5)
    fig.add_tools(
        HoverTool(
            tooltips=[("run", "@run"), ("step", "@step"), ("record", "$name"), ("value", "@$name")],
            mode="mouse",
        )
    )
    fig.toolbar.logo = None
    return fig


def _panel(title: str, note: str, fig: Any, n_runs: int) -> LayoutDOM:
    """A heading, one line of explanation, and the figure."""
    from bokeh.layouts import column
    from bokeh.models.widgets import Div

    if fig.legend:
        fig.legend.click_policy = "hide"
        fig.legend.location = "top_right"
        fig.legend.label_text_font_size = "9pt"
        fig.legend.visible = n_runs <= MAX_LEGEND
        if n_runs > 1:  # one entry per run: beside the plot, not over the lines
            fig.add_layout(fig.legend[0], "right")
    head = Div(text=f"<h3 style='margin:8px 0 0 0'>{title}</h3><small>{note}</small>")
    return column(head, fig, sizing_mode="stretch_width")


def _line(
    fig: Any, src: RunSources, source: ColumnDataSource, col: str, legend: str, **kw: Any
) -> None:
    r = fig.line("step", col, source=source, color=src.color, name=col, legend_label=legend, **kw)
    src.renderers.append(r)


def _dots(fig: Any, src: RunSources, col: str, legend: str, **kw: Any) -> None:
    r = fig.scatter("step", col, source=src.evals, color=src.color, name=col, legend_label=legend)
    src.renderers.append(r)
    _line(fig, src, src.evals, col, legend, **kw)


def grid(items: list[LayoutDOM], per_row: int = 2) -> LayoutDOM:
    """Panels side by side, ``per_row`` to a row, sharing the page's width."""
    from bokeh.layouts import layout

    rows = [items[i : i + per_row] for i in range(0, len(items), per_row)]
    return layout(rows, sizing_mode="stretch_width")


@dataclass(frozen=True)
class Line:
    """One record drawn in a panel: its column, its legend for a single run, its style."""

    col: str
    legend: str
    evals: bool = False  # a per-evaluation column, drawn with dots
    style: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Spec:
    """A panel: heading, explanation, y axis, and its lines."""

    title: str
    note: str
    y_label: str
    lines: tuple[Line, ...]
    log: bool = False
    zero: bool = False  # counts and rates: the y axis starts at 0


DASHED = (("line_dash", "dashed"),)
DOTTED = (("line_dash", "dotted"),)


def specs(eval_metrics: Sequence[str], bench: bool) -> list[Spec]:
    """The step panels: loss and metrics, gradient fidelity, step time, throughput, equilibrium
    diagnostics, and with ``bench`` (runs on a station) the instruments' retries."""
    metrics = [
        Line(m, m, evals=True, style=(("line_width", 2),))
        for m in eval_metrics
        if not m.endswith("_loss")
    ]
    tests = [Line(m, m, evals=True, style=DASHED) for m in eval_metrics if m.endswith("_loss")]
    timing = [Line("step_time", "step (wall clock)")]
    if bench:
        timing.append(Line("instrument_time", "inside instrument calls", style=DASHED))
        timing.append(Line("settle_wait", "settling waits", style=DOTTED))
    out = [
        Spec(
            "Loss",
            "training batch (line), test split (dashed, per evaluation)",
            "loss",
            (Line("loss", "training batch", style=(("line_width", 1.5),)), *tests),
        ),
        Spec(
            "Metrics",
            "per evaluation (dots); training-batch accuracy per step (faint)",
            "metric",
            (Line("batch_accuracy", "batch accuracy", style=(("alpha", 0.35),)), *metrics),
        ),
        Spec(
            "Gradient fidelity",
            "1 − cos(estimate, exact gradient) (solid) and |estimate − exact| / |exact| "
            f"(dotted); values below {COS_FLOOR:g} are drawn at {COS_FLOOR:g}",
            "1 − cos",
            (
                Line("one_minus_cos", "1 − cos", style=(("line_width", 1.5),)),
                Line("grad_rel_error", "relative error", style=DOTTED),
            ),
            log=True,
        ),
        Spec(
            "Step time",
            "wall-clock time of each step"
            + ("; inside instrument calls (dashed); settling (dotted)" if bench else ""),
            "seconds per step",
            tuple(timing),
            log=True,
        ),
        Spec(
            "Throughput",
            "committed steps per second, over the last 10 steps",
            "steps per second",
            (Line("throughput", "steps per second"),),
            zero=True,
        ),
        Spec(
            "Equilibrium residual",
            "largest force (current) imbalance over the step's phases and samples",
            "largest |residual|",
            (Line("residual_max", "largest residual"),),
            log=True,
        ),
        Spec(
            "Relaxation",
            "mean iterations to equilibrium (solid); relaxations that missed "
            "their tolerance (dashed)",
            "count",
            (
                Line("iterations_mean", "mean iterations"),
                Line("nonconverged", "not converged", style=DASHED),
            ),
        ),
    ]
    if bench:
        out.append(
            Spec(
                "Instrument faults",
                "operations retried (solid) and VISA sessions "
                "reopened (dashed) since the run started",
                "count (cumulative)",
                (Line("retries", "retries"), Line("reconnects", "reconnects", style=DASHED)),
            )
        )
    return out


def step_panels(
    runs: list[RunSources], panel_specs: list[Spec], recorded: set[str] | None = None
) -> list[LayoutDOM]:
    """The panels of ``panel_specs`` with every run's lines (one legend entry per run when
    several are drawn); a panel none of whose columns is in ``recorded`` is left out."""
    from bokeh.models.ranges import DataRange1d

    x_range = DataRange1d(start=0)
    out = []
    for spec in panel_specs:
        if recorded is not None and not any(line.col in recorded for line in spec.lines):
            continue
        fig = _figure(spec.y_label, x_range, y_log=spec.log, y_zero=spec.zero)
        for s in runs:
            for line in spec.lines:
                legend = s.label if len(runs) > 1 else line.legend
                kw = dict(line.style)
                if line.evals:
                    _dots(fig, s, line.col, legend, **kw)
                else:
                    _line(fig, s, s.steps, line.col, legend, **kw)
        out.append(_panel(spec.title, spec.note, fig, len(runs)))
    return out
