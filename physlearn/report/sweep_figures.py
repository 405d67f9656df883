"""Figures of sweeps: the final metric against every swept axis and the learning curves of every
configuration (see :mod:`physlearn.report.sweep_report`, which reads the stores).

Nothing is drawn on top of something else it could hide:

* against an axis, the series (one per combination of the other axes) are set side by side
  around each axis value (a fixed fraction of the gap to the next value, multiplicative on a
  log axis) and each has its own marker;
* the learning curves are small multiples: one row per configuration, one column per metric;
  a panel draws its configuration in colour over the other configurations' means in light
  grey, so identical curves (a sweep over a setting that does not change the physics) stay
  readable.

Every mean +- std band and error bar is clipped to the metric's range
(:func:`~physlearn.report.labels.metric_range`: an accuracy band never leaves [0, 1]). Text from
configs is drawn as typed (:data:`~physlearn.report.figures.PLAIN_TEXT`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from physlearn.report.figures import PLAIN_TEXT, as_typed, log_if_positive, new_figure
from physlearn.report.labels import clip_band, metric_range

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MARKERS = "osD^v<>ph*"
#: The context curves of the other configurations in a small multiple.
CONTEXT_GREY = "0.82"


@dataclass
class SweepCurve:
    """Mean and spread over seeds of one configuration's curve."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    n: int


@dataclass
class AxisPanel:
    """A final metric against one swept axis: one series per combination of the other axes
    (or all pooled), each point the mean and spread over seeds. ``label``: the axis as shown
    (the field's title and path)."""

    axis: str
    categories: list[str]
    numeric: np.ndarray | None  # numeric axis values (None: categorical)
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    # label -> (mean, spread, n) per category
    label: str = ""


def dodged(x: np.ndarray, j: int, k: int, log: bool) -> np.ndarray:
    """Positions of series ``j`` of ``k`` around the values ``x``: spread over 40 % of the
    smallest gap between values (in log10 on a log axis), centred on each value."""
    if k <= 1:
        return x
    u = np.unique(x[np.isfinite(x)])
    t = np.log10(u) if log else u
    gap = float(np.diff(t).min()) if t.size > 1 else (1.0 if log else max(abs(float(t[0])), 1.0))
    shift = (j - (k - 1) / 2) * 0.4 * gap / k
    return x * 10**shift if log else x + shift


def sweep_axes(
    panels: Sequence[AxisPanel], metric: str, metric_label: str, title: str
) -> Figure | None:
    """One panel per swept axis: final ``metric`` (mean +- spread over seeds, clipped to the
    metric's range), ``metric_label`` on the y axis."""
    if not panels:
        return None
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = new_figure(4.6 * cols, 3.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, p in zip(axes, panels, strict=False):
        _axis_panel(ax, p, metric, metric_label)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(f"{title}: final {metric_label}, mean ± std over seeds", fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


def _axis_panel(ax: Axes, p: AxisPanel, metric: str, metric_label: str) -> None:
    k = len(p.series)
    log = False
    if p.numeric is not None:
        v = p.numeric.astype(float)
        log = bool((v > 0).all() and v.max() / v.min() > 30)
    bounds = metric_range(metric, np.concatenate([m for m, _, _ in p.series.values()]))
    for j, (label, (mean, spread, cnt)) in enumerate(p.series.items()):
        base = p.numeric.astype(float) if p.numeric is not None else np.arange(len(p.categories))
        x = dodged(base.astype(float), j, k, log and p.numeric is not None)
        ok = cnt > 0
        lo, hi = clip_band(mean[ok], spread[ok], bounds)
        ax.errorbar(
            x[ok],
            mean[ok],
            yerr=np.stack([mean[ok] - lo, hi - mean[ok]]),
            fmt=MARKERS[j % len(MARKERS)] + ("-" if p.numeric is not None else ""),
            capsize=3,
            ms=5,
            label=label,
            color=f"C{j % 10}",
        )
    if p.numeric is not None:
        v = p.numeric.astype(float)
        if log:
            ax.set_xscale("log")
        if v.size <= 8:
            ax.set_xticks(v, p.categories, fontsize=8, **PLAIN_TEXT)
    else:
        many = len(p.categories) > 3
        ax.set_xlim(-0.5, len(p.categories) - 0.5)
        ax.set_xticks(np.arange(len(p.categories)))
        ax.set_xticklabels(
            p.categories,
            rotation=30 if many else 0,
            ha="right" if many else "center",
            fontsize=8,
            parse_math=False,
            usetex=False,
        )
    counts = sum(cnt for _, _, cnt in p.series.values())
    for i in np.flatnonzero(np.asarray(counts) == 0):  # every run there failed or is missing
        x0 = float(p.numeric[i]) if p.numeric is not None else float(i)
        ax.annotate(
            "no successful run",
            (x0, 0.02),
            xycoords=("data", "axes fraction"),
            ha="center",
            fontsize=7,
            color="0.4",
            rotation=90,
            va="bottom",
        )
    ax.set(xlabel=p.label or p.axis, ylabel=f"final {metric_label}")
    if metric.endswith("accuracy"):
        ax.set_ylim(-0.02, 1.02)
    if k > 1:
        ax.legend(fontsize=7)


def sweep_curves(
    curves: Mapping[str, Sequence[SweepCurve]],
    xlabel: dict[str, str],
    ylabel: dict[str, str],
    title: str,
) -> Figure | None:
    """Small multiples: a row per configuration, a column per metric; each panel its
    configuration's mean and +-std band over seeds (clipped to the metric's range) over the
    other configurations' means in grey."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    labels = list(dict.fromkeys(c.label for cs in curves.values() for c in cs))
    rows, cols = len(labels), len(curves)
    fig = new_figure(4.2 * cols, 1.1 + 2.1 * rows)
    grid = fig.subplots(rows, cols, squeeze=False, sharex="col", sharey="col")
    for col, (metric, cs) in enumerate(curves.items()):
        by_label = {c.label: c for c in cs}
        bounds = metric_range(metric, np.concatenate([c.mean for c in cs]))
        for row, label in enumerate(labels):
            ax = grid[row, col]
            for other in cs:
                if other.label != label:
                    ax.plot(other.x, other.mean, color=CONTEXT_GREY, lw=0.8, zorder=1)
            c = by_label.get(label)
            if c is not None:
                colour = f"C{row % 10}"
                if c.n > 1:
                    lo, hi = clip_band(c.mean, c.spread, bounds)
                    ax.fill_between(c.x, lo, hi, color=colour, alpha=0.2, lw=0, zorder=2)
                ax.plot(c.x, c.mean, color=colour, lw=1.4, zorder=3)
            ax.set_title(f"{label} (n={c.n if c else 0})", fontsize=8, loc="left", **PLAIN_TEXT)
            if metric.endswith("accuracy"):
                ax.set_ylim(-0.02, 1.02)
            if row == rows - 1:
                ax.set_xlabel(xlabel.get(metric, "optimiser step"), fontsize=8)
            ax.set_ylabel(textwrap.fill(ylabel.get(metric, metric), 26), fontsize=7)
            ax.tick_params(labelsize=7)
        if metric.endswith("loss"):
            log_if_positive(grid[0, col], *[c.mean for c in cs])
    fig.suptitle(
        f"{title}: mean ± std over seeds per configuration (grey: the other configurations)",
        fontsize=10,
        **PLAIN_TEXT,
    )
    return as_typed(fig)
