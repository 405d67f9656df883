"""Where a run's time goes, and what a station run's instruments did (see
:mod:`physlearn.report.run_report`).

Every run logs ``step_time`` (wall-clock seconds per step): the report draws it with its moving
mean, and the throughput in steps per second. A station run (a system that talks to
instruments) also logs, per step, the settle time of every phase (``settle_time``) and
cumulative counters of its instruments (``system_instrument_time``, ``system_settle_wait``,
``system_readings``, ``system_retries``, ``system_reconnects``; whatever the system declares as
``system_<name>``): the instrument panel draws each counter's increase per step -- time in the
instruments and waiting for the network against the step's time, readings, retries and
reconnects -- and the settle time per phase. A counter the store does not hold is named in the
figure's caption as missing, not drawn as zero. The instruments themselves (driver, identity,
address) and the safety envelope come from the run's ``system_snapshot`` attribute
(:func:`instruments_html`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.report.figures import PLAIN_TEXT, as_typed, moving_average, new_figure
from physlearn.report.page import html_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from physlearn.store.run_store import RunStore

#: The instrument counters the panel looks for (``system_<name>``), by what they count.
TIME_COUNTERS = ("instrument_time", "settle_wait")
EVENT_COUNTERS = ("retries", "reconnects", "readings")


def read_timing(store: RunStore) -> dict[str, Any]:
    """The committed ``step_time``, ``settle_time`` (step, phase) and every ``system_*``
    counter of ``store`` (per-step increases of cumulative ones), with their long names."""
    names = set(store.array_names())
    out: dict[str, Any] = {"series": {}, "names": {}}
    for name in sorted(names):
        if name not in ("step_time", "settle_time") and not name.startswith("system_"):
            continue
        array = store.array(name)
        values = np.asarray(store.read(name), dtype=float)
        long_name = str(array.attrs.get("long_name", name))
        if name.startswith("system_") and "cumulative" in long_name:
            values = np.diff(values, prepend=0.0)  # the increase during each step
            long_name = long_name.replace(", cumulative", "").replace("cumulative", "").strip()
            long_name += " per step"
        out["series"][name] = values
        out["names"][name] = long_name
    return out


def step_timing(timing: Mapping[str, Any], title: str) -> Figure | None:
    """Step time per step (dots, moving mean) and throughput (steps per second)."""
    t = np.asarray(timing["series"].get("step_time", []), dtype=float)
    if not (t.size and np.isfinite(t).any()):
        return None
    fig = new_figure(8.8, 3.4)
    a1, a2 = fig.subplots(1, 2)
    steps = np.arange(1, t.size + 1)
    mean = moving_average(t, max(1, t.size // 25))
    a1.plot(steps, t, ".", ms=3, color="0.55", label="per step")
    a1.plot(steps, mean, color="C0", label="moving mean")
    a1.set(xlabel="optimiser step", ylabel="wall-clock time of the step (s)", title="step time")
    a1.set_ylim(bottom=0)
    median = float(np.nanmedian(t))
    a1.axhline(median, color="C1", ls="--", lw=1, label=f"median {median:.3g} s")
    a1.legend(fontsize=7)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = 1.0 / mean
    a2.plot(steps, rate, color="C2")
    a2.set(xlabel="optimiser step", ylabel="steps per second (moving mean)", title="throughput")
    a2.set_ylim(bottom=0)
    total = float(np.nansum(t))
    fig.suptitle(f"{title}: time ({total:.4g} s in {t.size} steps)", fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


def missing_counters(timing: Mapping[str, Any]) -> list[str]:
    """The instrument records a station run would log that this store does not hold."""
    series = timing["series"]
    wanted = [f"system_{c}" for c in (*TIME_COUNTERS, *EVENT_COUNTERS)]
    return [n for n in ["settle_time", *wanted] if n not in series]


def is_instrumented(timing: Mapping[str, Any], snapshot: Mapping[str, Any]) -> bool:
    """A run on instruments: the system logged counters, or its snapshot lists instruments."""
    return any(n.startswith("system_") for n in timing["series"]) or bool(
        snapshot.get("instruments")
    )


def instrument_panel(timing: Mapping[str, Any], phases: Sequence[str], title: str) -> Figure | None:
    """Per step: the step time beside the time spent in instrument calls and waiting for the
    network; the retries, reconnects and readings; the settle time per phase."""
    series, names = timing["series"], timing["names"]
    times = [n for n in ("step_time", *(f"system_{c}" for c in TIME_COUNTERS)) if n in series]
    events = [f"system_{c}" for c in EVENT_COUNTERS if f"system_{c}" in series]
    settle = np.asarray(series.get("settle_time", []), dtype=float)
    panels = [p for p, show in (("t", len(times) > 1), ("e", events), ("s", settle.size)) if show]
    if not panels:
        return None
    fig = new_figure(4.4 * len(panels), 3.6)
    axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
    if "t" in panels:
        ax = axes.pop(0)
        for k, n in enumerate(times):
            y = series[n]
            ax.plot(np.arange(1, y.size + 1), y, lw=1.2, color=f"C{k}", label=names[n])
        ax.set(xlabel="optimiser step", ylabel="seconds per step", title="time per step")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
    if "e" in panels:
        _events_panel(axes.pop(0), series, names, events)
    if "s" in panels:
        ax = axes.pop(0)
        steps = np.arange(1, settle.shape[0] + 1)
        for k in range(settle.shape[1] if settle.ndim == 2 else 0):
            ax.plot(steps, settle[:, k], lw=1, label=phases[k] if k < len(phases) else f"{k}")
        ax.set(xlabel="optimiser step", ylabel=names.get("settle_time", "settle time") + " (s)")
        ax.set_title("settling per phase")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
    fig.suptitle(f"{title}: instruments", fontsize=10, **PLAIN_TEXT)
    return as_typed(fig)


def _events_panel(ax: Axes, series: Mapping[str, np.ndarray], names: Mapping[str, str],
                  events: Sequence[str]) -> None:  # fmt: skip
    """Retries and reconnects per step as bars (said in words when there were none); the
    readings, which are work and not trouble, as a line on their own axis."""
    trouble = [n for n in events if n != "system_readings"]
    width = 0.8 / max(len(trouble), 1)
    for k, n in enumerate(trouble):
        y = series[n]
        x = np.arange(1, y.size + 1) + (k - (len(trouble) - 1) / 2) * width
        ax.bar(x, y, width=width, color=f"C{k + 3}", label=f"{names[n]} (total {y.sum():g})")
    quiet = bool(trouble) and not any(series[n].sum() for n in trouble)
    if quiet:
        what = ", ".join(f"no {n.removeprefix('system_')}" for n in trouble)
        ax.text(0.5, 0.9, what, transform=ax.transAxes, ha="center", fontsize=9, color="C3",
                bbox={"facecolor": "white", "edgecolor": "C3"}, parse_math=False)  # fmt: skip
        ax.set_ylim(0, 1)
    ax.set(xlabel="optimiser step", ylabel="count per step", title="retries and reconnects")
    if "system_readings" in series:
        y = series["system_readings"]
        twin = ax.twinx()
        twin.plot(np.arange(1, y.size + 1), y, "k.--", lw=0.8, ms=4, label=names["system_readings"])
        twin.set_ylabel(names["system_readings"], fontsize=8)
        twin.set_ylim(bottom=0)
        twin.legend(fontsize=6, loc="lower right")
    if trouble and not quiet:
        ax.legend(fontsize=6, loc="upper left")


def instruments_html(snapshot: Mapping[str, Any]) -> str:
    """The instruments (name, identity, driver, address) and the safety envelope of a station
    run's snapshot, as tables; empty for a system without instruments."""
    instruments = snapshot.get("instruments") or {}
    if not isinstance(instruments, Mapping) or not instruments:
        return ""
    rows = [
        [str(name), str(i.get("idn", "")), str(i.get("class", "")), str(i.get("address", ""))]
        for name, i in instruments.items()
        if isinstance(i, Mapping)
    ]
    parts = [html_table(["instrument", "identity", "driver", "address"], rows)]
    envelope = snapshot.get("envelope") or {}
    if isinstance(envelope, Mapping) and envelope:
        env_rows = [
            [str(role), *(str(e.get(k, "")) for k in ("min", "max", "step", "unit"))]
            for role, e in envelope.items()
            if isinstance(e, Mapping)
        ]
        parts.append(html_table(["envelope", "min", "max", "ramp step", "unit"], env_rows))
    return "".join(parts)
