"""Figures of runs and sweeps, drawn with matplotlib's object API (no pyplot, no global state).

Every function takes plain numpy data (see :mod:`physlearn.report.run_report` and
:mod:`physlearn.report.sweep_report`, which read the stores) and
returns a :class:`matplotlib.figure.Figure`, or None when there is nothing to draw; ``save``
writes it as a PNG with the Agg renderer. matplotlib is imported inside the functions, so importing
this module is cheap.

Text that comes from configs and stores (run and sweep names, variant names, axis values, field
paths, parameter names, units) is shown as typed: every title, axis label, legend entry and
categorical tick label is drawn without mathtext or TeX (:data:`PLAIN_TEXT`). With mathtext, a
sweep value ``$x^2$`` was typeset, and an unknown command inside ``$...$`` made the report fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROLE_COLOURS = {"input": "#1f77b4", "output": "#d62728", "hidden": "#7f7f7f"}
#: Text properties that show a string as typed: no mathtext (``$...$``), no TeX.
PLAIN_TEXT = MappingProxyType({"parse_math": False, "usetex": False})


def new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas (independent of any pyplot backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def as_typed(fig: Figure) -> Figure:
    """Show every axes title, axis label and legend entry of ``fig`` as typed (see the module
    docstring). Tick labels keep mathtext (log axes format theirs with it); categorical tick
    labels and the figure title are made with :data:`PLAIN_TEXT` where they are set."""
    for ax in fig.axes:
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
        legend = ax.get_legend()
        if legend is not None:
            texts += legend.get_texts()
        for t in texts:
            t.update(dict(PLAIN_TEXT))
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG (Agg) and return the path."""
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def _finite(a: np.ndarray) -> bool:
    return bool(a.size) and bool(np.isfinite(a).any())


def moving_average(y: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean over up to ``n`` points (NaNs ignored)."""
    if n <= 1 or y.size == 0:
        return y.astype(float)
    v = np.where(np.isfinite(y), y, 0.0)
    w = np.isfinite(y).astype(float)
    cv, cw = np.cumsum(np.insert(v, 0, 0.0)), np.cumsum(np.insert(w, 0, 0.0))
    idx = np.arange(1, y.size + 1)
    lo = np.maximum(idx - n, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = (cv[idx] - cv[lo]) / (cw[idx] - cw[lo])
    return out


def _window(n: int) -> int:
    return max(1, n // 25)


def log_if_positive(ax: Axes, *arrays: np.ndarray) -> None:
    """A log y axis when every finite value is positive and they span more than 30x."""
    vals = np.concatenate([a[np.isfinite(a)] for a in arrays if a.size]) if arrays else np.array([])
    if vals.size and (vals > 0).all() and vals.max() / vals.min() > 30:
        ax.set_yscale("log")


# --------------------------------------------------------------------------------------------
# One run


def training_curves(
    s: dict[str, np.ndarray],
    title: str,
    baselines: Sequence[tuple[str, str, float]] = (),
    names: dict[str, str] | None = None,
) -> Figure | None:
    """Loss (per step, smoothed, and on the test split) and accuracy; the learning rate when it
    changes. ``s`` holds 1-D arrays named like the run store's. ``baselines``: (model, metric,
    value) of reference models (:func:`physlearn.baselines.baseline_rows`); their
    ``test_loss`` and ``test_accuracy`` are drawn as labelled horizontal lines. ``names``: the
    records' labels (their long names in the store), used in the legends."""
    names = names or {}
    loss = s.get("loss", np.array([]))
    if not loss.size and not s.get("test_loss", np.array([])).size:
        return None
    lr = s.get("lr", np.array([]))
    show_lr = _finite(lr) and np.nanmax(lr) > np.nanmin(lr)
    has_acc = any(_finite(s.get(k, np.array([]))) for k in ("test_accuracy", "batch_accuracy"))
    n = 1 + int(has_acc) + int(show_lr)
    fig = new_figure(4.2 * n, 4.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    ax = axes[0]
    steps = np.arange(1, loss.size + 1)
    if loss.size:
        ax.plot(steps, loss, color="0.75", lw=0.8, label=names.get("loss", "batch (free phase)"))
        ax.plot(steps, moving_average(loss, _window(loss.size)), color="C0", label="moving mean")
    ev = s.get("eval_step", np.array([]))
    for key, style in (("test_loss", "C1o-"), ("train_loss", "C2s-")):
        y = s.get(key, np.array([]))
        if _finite(y) and y.size == ev.size:
            ax.plot(ev, y, style, ms=3, label=names.get(key, key.replace("_", " ")))
    ref_loss = _reference_lines(ax, baselines, "test_loss")
    log_if_positive(ax, loss, s.get("test_loss", np.array([])), ref_loss)
    ax.set(xlabel="optimiser step", ylabel="loss", title="loss")
    below(ax)
    k = 1
    if has_acc:
        ax = axes[k]
        k += 1
        acc = s.get("batch_accuracy", np.array([]))
        if _finite(acc):
            ax.plot(
                np.arange(1, acc.size + 1),
                moving_average(acc, _window(acc.size)),
                color="C0",
                label=f"{names.get('batch_accuracy', 'training batches')} (moving mean)",
            )
        for key, style in (("test_accuracy", "C1o-"), ("train_accuracy", "C2s-")):
            y = s.get(key, np.array([]))
            if _finite(y) and y.size == ev.size:
                ax.plot(ev, y, style, ms=3, label=names.get(key, key.replace("_", " ")))
        _reference_lines(ax, baselines, "test_accuracy")
        ax.set(xlabel="optimiser step", ylabel="accuracy", title="accuracy", ylim=(-0.02, 1.02))
        below(ax)
    if show_lr:
        ax = axes[k]
        ax.plot(np.arange(1, lr.size + 1), lr, color="C4")
        ax.set(xlabel="optimiser step", ylabel="learning rate", title="learning-rate schedule")
    fig.suptitle(title, fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


def below(ax: Axes) -> None:
    """The legend under the axes: long names (the records' labels) would cover the curves."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def _reference_lines(
    ax: Axes, baselines: Sequence[tuple[str, str, float]], metric: str
) -> np.ndarray:
    """Dashed horizontal lines at the baselines' ``metric``, labelled with the model's name;
    returns their values."""
    values = [(name, v) for name, m, v in baselines if m == metric and math.isfinite(v)]
    for k, (name, v) in enumerate(values):
        ax.axhline(v, color=f"C{5 + k}", ls="--", lw=1, label=f"{name} baseline ({metric})")
    return np.array([v for _, v in values], dtype=float)


#: Where 1 - cos is drawn when the estimate is parallel to the exact gradient to float
#: precision (1 - cos rounds to 0 or below): about the spacing of doubles near 1.
COS_FLOOR = 1e-16


def gradient_fidelity(
    s: dict[str, np.ndarray], title: str, names: dict[str, str] | None = None
) -> Figure | None:
    """How far the gradient estimate is from the exact gradient, where the run logged it: the
    misalignment 1 - cos on a log axis (a cosine of 1 - 1e-7 is a flat line at 1.00 on a
    linear axis), and the relative error. A 1 - cos at or below :data:`COS_FLOOR` (parallel to
    float precision) is drawn at the floor with its own marker and counted in the legend.
    ``names``: labels of the records (their long names)."""
    names = names or {}
    cos = s.get("grad_cosine", np.array([]))
    rel = s.get("grad_rel_error", np.array([]))
    if not (_finite(cos) or _finite(rel)):
        return None
    fig = new_figure(8.8, 3.6)
    a1, a2 = fig.subplots(1, 2)
    with np.errstate(invalid="ignore"):
        mis = 1.0 - cos
    for ax, y in ((a1, mis), (a2, rel)):
        steps = np.flatnonzero(np.isfinite(y)) + 1
        yy = y[np.isfinite(y)]
        floor = yy <= COS_FLOOR if ax is a1 else np.zeros(yy.size, bool)
        shown = np.where(floor, COS_FLOOR, yy)
        ax.plot(steps[~floor], shown[~floor], ".", ms=3, color="0.55", label="per step")
        if floor.any():
            ax.plot(steps[floor], shown[floor], "v", ms=4, color="C3",
                    label=f"{int(floor.sum())} steps at or below {COS_FLOOR:g}")  # fmt: skip
        if yy.size:
            ax.plot(steps, moving_average(shown, _window(yy.size)), color="C0", label="moving mean")
            if (shown > 0).all():
                ax.set_yscale("log")
            ax.legend(fontsize=7)
    a1.set(xlabel="optimiser step", ylabel="1 − cos(estimate, exact gradient)")
    a1.set_title("gradient misalignment")
    a2.set(
        xlabel="optimiser step",
        ylabel=names.get("grad_rel_error", "relative error"),
        title="gradient relative error",
    )
    fig.suptitle(f"{title}: estimate vs exact gradient", fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


@dataclass
class ParamSeries:
    """A parameter group: first and last held values, and quantiles over (sampled) steps."""

    name: str
    unit: str
    first: np.ndarray
    last: np.ndarray
    steps: np.ndarray
    quantiles: np.ndarray  # (len(steps), 5): 5, 25, 50, 75, 95 %


def parameter_histograms(groups: Sequence[ParamSeries], title: str) -> Figure | None:
    """Per group: histogram of the first vs last step's values, and their spread over time."""
    groups = [g for g in groups if g.first.size]
    if not groups:
        return None
    fig = new_figure(8.4, 3.0 * len(groups))
    axes = fig.subplots(len(groups), 2, squeeze=False)
    for (a1, a2), g in zip(axes, groups, strict=True):
        both = np.concatenate([g.first.ravel(), g.last.ravel()])
        both = both[np.isfinite(both)]
        bins: Any = 30
        if both.size and both.min() > 0 and both.max() / both.min() > 30:
            bins = np.geomspace(both.min(), both.max(), 31)
            a1.set_xscale("log")
        elif both.size and both.min() == both.max():
            bins = 1
        a1.hist(g.first.ravel(), bins=bins, alpha=0.55, label="first step", color="C0")
        a1.hist(g.last.ravel(), bins=bins, alpha=0.55, label="last step", color="C3")
        a1.set(xlabel=f"{g.name} ({g.unit})", ylabel="count", title=f"{g.name}: first vs last")
        a1.legend(fontsize=8)
        q = g.quantiles
        if q.size:
            a2.fill_between(g.steps, q[:, 0], q[:, 4], color="C0", alpha=0.15, label="5-95 %")
            a2.fill_between(g.steps, q[:, 1], q[:, 3], color="C0", alpha=0.3, label="25-75 %")
            a2.plot(g.steps, q[:, 2], color="C0", label="median")
            log_if_positive(a2, q.ravel())
            a2.legend(fontsize=8)
        a2.set(xlabel="optimiser step", ylabel=f"{g.name} ({g.unit})", title="spread over steps")
    fig.suptitle(f"{title}: parameters", fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


def graph_values(
    layout: dict[str, Any],
    first: np.ndarray,
    last: np.ndarray,
    name: str,
    unit: str,
    title: str,
) -> Figure | None:
    """The edge parameter drawn on the graph (colour and width by value), initial and final."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm

    pos = np.asarray(layout.get("positions", []), dtype=float)
    edges = np.asarray(layout.get("edges", []), dtype=np.int64)
    roles = list(layout.get("node_roles", []))
    if pos.ndim != 2 or pos.shape[1] != 2 or edges.ndim != 2 or edges.shape[0] != first.size:
        return None
    vals = np.concatenate([first.ravel(), last.ravel()])
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return None
    norm: Normalize
    if vals.min() > 0:
        cmap = "viridis"
        if vals.max() / vals.min() > 10:
            norm = LogNorm(vals.min(), vals.max())
        else:
            norm = Normalize(vals.min(), vals.max())
    else:
        cmap = "RdBu_r"
        m = float(np.abs(vals).max()) or 1.0
        norm = TwoSlopeNorm(0.0, -m, m)
    vmax = float(np.abs(vals).max()) or 1.0
    span = np.ptp(pos, axis=0)
    equal = bool(span.min() > 0 and span.max() / span.min() < 2.5)
    if not equal:  # e.g. layers: stretch each axis to the unit box instead of squeezing
        pos = (pos - pos.min(axis=0)) / np.where(span > 0, span, 1.0)
    fig = new_figure(9.6, 4.6)
    axes = fig.subplots(1, 2)
    segs = edge_paths(pos, edges)
    lc = None
    for ax, v, label in ((axes[0], first.ravel(), "first step"), (axes[1], last.ravel(), "last")):
        order = np.argsort(np.abs(v))  # strongest edges on top
        lc = LineCollection(
            [segs[i] for i in order],
            array=v[order],
            cmap=cmap,
            norm=norm,
            linewidths=0.4 + 2.6 * np.abs(v[order]) / vmax,
        )
        ax.add_collection(lc)
        colours = [ROLE_COLOURS.get(r, "black") for r in roles] if roles else "black"
        ax.scatter(pos[:, 0], pos[:, 1], s=18, c=colours, zorder=3, edgecolors="white", lw=0.5)
        if equal:
            ax.set_aspect("equal", adjustable="datalim")
        ax.autoscale_view()
        ax.set_axis_off()
        ax.set_title(f"{name}, {label}", fontsize=9)
    assert lc is not None
    fig.colorbar(lc, ax=list(axes), shrink=0.8, label=f"{name} ({unit})")
    present = sorted(set(roles))
    if present:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], ls="", marker="o", color=ROLE_COLOURS.get(r, "black"), label=r)
            for r in present
        ]
        axes[0].legend(handles=handles, fontsize=7, loc="lower left", frameon=False)
    fig.suptitle(f"{title}: {name} on the graph", fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


def edge_paths(pos: np.ndarray, edges: np.ndarray, max_work: int = 5_000_000) -> list[np.ndarray]:
    """Polylines for the edges: straight, or a gentle arc when the straight segment would run
    through another node (skip edges of a lattice, layer-skipping edges), so that no edge hides
    behind others. The check costs edges x nodes; above ``max_work`` every edge is straight."""
    a, b = pos[edges[:, 0]], pos[edges[:, 1]]
    straight = [np.stack([p, q]) for p, q in zip(a, b, strict=True)]
    if edges.shape[0] * pos.shape[0] > max_work or not edges.size:
        return straight
    d = b - a
    length2 = np.einsum("ij,ij->i", d, d)
    rel = pos[None, :, :] - a[:, None, :]  # (E, N, 2)
    t = np.einsum("enk,ek->en", rel, d) / np.where(length2 > 0, length2, 1.0)[:, None]
    off = rel - t[..., None] * d[:, None, :]
    dist2 = np.einsum("enk,enk->en", off, off)
    scale2 = np.median(length2) if length2.size else 1.0
    through = ((t > 1e-6) & (t < 1 - 1e-6) & (dist2 < 1e-4 * scale2)).any(axis=1)
    u = np.linspace(0.0, 1.0, 16)[:, None]
    for e in np.flatnonzero(through):
        normal = np.array([-d[e, 1], d[e, 0]])
        control = (a[e] + b[e]) / 2 + 0.18 * normal
        straight[e] = (1 - u) ** 2 * a[e] + 2 * (1 - u) * u * control + u**2 * b[e]
    return straight


def equilibrium_diagnostics(
    s: dict[str, np.ndarray], phases: Sequence[str], unit: str, title: str
) -> Figure | None:
    """Per phase: mean relaxation iterations and the largest residual force, per step."""
    it = s.get("iterations_mean", np.array([]))
    res = s.get("residual_max", np.array([]))
    show_it = it.size > 0 and bool(np.nanmax(it) > 0)
    show_res = _finite(res)
    if not (show_it or show_res):
        return None
    n = int(show_it) + int(show_res)
    fig = new_figure(4.2 * n, 3.4)
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    steps = np.arange(1, max(it.shape[0] if it.size else 0, res.shape[0] if res.size else 0) + 1)
    if show_it:
        ax = axes.pop(0)
        for k in range(it.shape[1]):
            ax.plot(steps[: it.shape[0]], it[:, k], lw=1, label=_phase(phases, k))
        ax.set(xlabel="optimiser step", ylabel="iterations (batch mean)", title="relaxation")
        ax.legend(fontsize=7)
    if show_res:
        ax = axes.pop(0)
        for k in range(res.shape[1]):
            ax.plot(steps[: res.shape[0]], res[:, k], lw=1, label=_phase(phases, k))
        r = res[np.isfinite(res)]
        if (r > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="optimiser step", ylabel=f"largest residual ({unit})", title="residual")
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: equilibria", fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


def _phase(phases: Sequence[str], k: int) -> str:
    return phases[k] if k < len(phases) else f"phase {k}"
