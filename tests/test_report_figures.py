"""What the report's figures show (issue 21, item 4): the gradient misalignment 1 - cos on a log
axis, step time, no series drawn over another, bands inside the metric's range, labels from the
schema and the store, per-run links from a sweep's table, and a station run's instruments."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from physlearn.config import json_schema, parse_config
from physlearn.report import figures as F
from physlearn.report import sweep_figures as SF
from physlearn.report import timing as T
from physlearn.report.command import make_report
from physlearn.report.labels import axis_titles, field_info, metric_range
from physlearn.run.start import start_run
from physlearn.store.run_store import RunStore
from tests.conftest import CONFIGS
from tests.test_report import check_report, tiny_raw


def _lines(ax: Any) -> list[Any]:
    return list(ax.get_lines())


# -- gradient fidelity --------------------------------------------------------------------------


def test_misalignment_near_one_is_resolved_on_a_log_axis() -> None:
    """A cosine of 1 - 1e-7 was a flat line at 1.00 on a 0.96-1.04 axis."""
    rng = np.random.default_rng(0)
    mis = 10 ** rng.uniform(-9, -6, 40)
    fig = F.gradient_fidelity({"grad_cosine": 1 - mis, "grad_rel_error": mis * 3}, "t")
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    dots = _lines(ax)[0]
    np.testing.assert_allclose(dots.get_ydata(), 1 - (1 - mis), rtol=1e-12)
    lo, hi = ax.get_ylim()
    assert lo < mis.min() and hi > mis.max() and hi < 1e-4  # the axis spans the misalignment
    assert "1 − cos" in ax.get_ylabel()


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 30), elements=st.floats(0.5, 1.0)),
    st.integers(0, 5),
)
def test_every_cosine_is_drawn_on_the_log_axis(cos: np.ndarray, exact: int) -> None:
    """Cosines of exactly 1 (1 - cos = 0, no place on a log axis) are drawn at the floor and
    counted; every step has a finite, positive point."""
    cos = np.concatenate([cos, np.ones(exact)])
    fig = F.gradient_fidelity({"grad_cosine": cos}, "t")
    assert fig is not None
    ax = fig.axes[0]
    points = [ln for ln in _lines(ax) if ln.get_linestyle() == "None"]
    y = np.concatenate([ln.get_ydata() for ln in points])
    assert y.size == cos.size and np.all(np.isfinite(y)) and np.all(y > 0)
    at_floor = int(np.sum(1 - cos <= F.COS_FLOOR))
    assert int(np.sum(y == F.COS_FLOOR)) == at_floor
    assert ax.get_yscale() == "log"
    if at_floor:
        legend = ax.get_legend()
        assert legend is not None
        labels = [t.get_text() for t in legend.get_texts()]
        assert f"{at_floor} steps at or below 1e-16" in labels


# -- sweeps: bands, overplotting, labels --------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, 6, elements=st.floats(0.0, 1.0)),
    arrays(np.float64, 6, elements=st.floats(0.0, 0.6)),
)
def test_accuracy_bands_and_error_bars_stay_in_0_1(mean: np.ndarray, spread: np.ndarray) -> None:
    """+-std bands went above accuracy 1.0 (and below 0)."""
    x = np.arange(6.0)
    curves = {"test_accuracy": [SF.SweepCurve("a", x, mean, spread, 3)]}
    fig = SF.sweep_curves(curves, {}, {}, "t")
    assert fig is not None
    (band,) = fig.axes[0].collections
    verts = np.concatenate([p.vertices for p in band.get_paths()])
    assert verts[:, 1].min() >= 0.0 and verts[:, 1].max() <= 1.0
    panel = SF.AxisPanel("lr", [str(v) for v in x], x + 1.0)
    panel.series["s"] = (mean, spread, np.full(6, 3.0))
    fig = SF.sweep_axes([panel], "test_accuracy", "accuracy", "t")
    assert fig is not None
    caps = [ln for ln in _lines(fig.axes[0]) if ln.get_marker() == "_"]
    ends = np.concatenate([ln.get_ydata() for ln in caps])
    assert ends.min() >= 0.0 and ends.max() <= 1.0


def test_metric_ranges() -> None:
    assert metric_range("test_accuracy") == (0.0, 1.0)
    assert metric_range("grad_cosine") == (-1.0, 1.0)
    assert metric_range("test_loss", np.array([0.1, 2.0])) == (0.0, math.inf)
    assert metric_range("test_loss", np.array([-0.1, 2.0])) == (-math.inf, math.inf)


def test_identical_curves_each_get_their_own_panel() -> None:
    """Sweep series overplotted each other: two configurations with the same curve showed as
    one line."""
    x = np.arange(5.0)
    same = np.linspace(0.2, 0.8, 5)
    cs = [SF.SweepCurve(f"cfg{k}", x, same, np.full(5, 0.05), 2) for k in range(3)]
    fig = SF.sweep_curves({"test_accuracy": cs, "test_loss": cs}, {}, {}, "t")
    assert fig is not None
    assert len(fig.axes) == 6
    for k, ax in enumerate(fig.axes):
        coloured = [ln for ln in _lines(ax) if ln.get_color() != SF.CONTEXT_GREY]
        assert len(coloured) == 1
        assert ax.get_title(loc="left") == f"cfg{k // 2} (n=2)"


def test_series_against_a_numeric_axis_are_set_side_by_side() -> None:
    values = np.array([1e-5, 1e-4, 1e-3])
    panel = SF.AxisPanel("optimizer.lr", ["1e-05", "0.0001", "0.001"], values, label="lr")
    for k in range(3):
        panel.series[f"s{k}"] = (np.full(3, 0.5), np.zeros(3), np.ones(3))
    fig = SF.sweep_axes([panel], "test_accuracy", "accuracy", "t")
    assert fig is not None
    xs = [ln.get_xdata() for ln in _lines(fig.axes[0]) if ln.get_marker() in SF.MARKERS]
    assert len(xs) == 3
    for i in range(3):  # three distinct positions around each value, the middle one on it
        at = sorted(float(x[i]) for x in xs)
        assert len(set(at)) == 3 and at[1] == pytest.approx(values[i])
        assert values[i] / 3 < at[0] < at[2] < values[i] * 3


def test_axis_labels_are_the_schemas_titles_with_the_path() -> None:
    cfg = tiny_raw()
    titles = axis_titles(
        ["store.flush_every", "optimizer.lr", "system.graph.sizes.1", "estimator.beta", "seed"],
        cfg,
    )
    assert titles["store.flush_every"][0] == "Also commit every N steps (store.flush_every)"
    assert titles["optimizer.lr"][0] == "Learning rate (optimizer.lr)"
    assert titles["system.graph.sizes.1"][0] == "Nodes per layer [1] (system.graph.sizes.1)"
    assert titles["estimator.beta"][0].endswith("(estimator.beta)")
    assert titles["seed"] == ("seed", "")
    assert "Learning rate" in titles["optimizer.lr"][1]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json_schema()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(["system", "graph", "sizes", "store", "task", "kind", "x_y", "0", "7"]),
        min_size=1,
        max_size=4,
    )
)
def test_any_path_gets_a_title(schema: dict[str, Any], parts: list[str]) -> None:
    """Paths the schema does not know (a plugin's field, a typo) still get a readable title,
    never an exception; a description only where the schema has the field."""
    title, description = field_info(".".join(parts), tiny_raw(), schema)
    assert title and "_" not in title and isinstance(description, str)


# -- a run: step time, labels from the store ----------------------------------------------------


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tiny_raw(6)
    raw["diagnostics"] = {"exact_gradient": True}
    path = tmp_path_factory.mktemp("run") / "run.zarr"
    assert start_run(parse_config(raw), path).status == "success"
    return path


def test_a_runs_report_draws_its_step_time(run_path: Path, tmp_path: Path) -> None:
    """step_time was logged but never drawn."""
    rep = make_report(run_path, tmp_path / "rep")
    check_report(rep.out_dir, {"timing.png", "gradient_fidelity.png", "training.png"})
    assert "instruments.png" not in {p.name for p in rep.figures}  # no instruments here
    store = RunStore.open(run_path)
    fig = T.step_timing(T.read_timing(store), "t")
    assert fig is not None
    dots = _lines(fig.axes[0])[0]
    np.testing.assert_array_equal(dots.get_ydata(), store.read("step_time"))
    assert fig.axes[0].get_ylabel() == "wall-clock time of the step (s)"


def test_training_legends_are_the_records_long_names(run_path: Path) -> None:
    from physlearn.report.run_report import read_scalars, record_names

    store = RunStore.open(run_path)
    names = record_names(store)
    assert names["test_accuracy"] == "accuracy on the test split"
    fig = F.training_curves(read_scalars(store), "t", names=names)
    assert fig is not None
    legends = [ax.get_legend() for ax in fig.axes]
    shown = {t.get_text() for lg in legends if lg is not None for t in lg.get_texts()}
    assert {"accuracy on the test split", "objective on the test split"} <= shown


# -- a station run: the instruments -------------------------------------------------------------


@pytest.mark.slow
def test_a_station_runs_report_shows_its_instruments(tmp_path: Path) -> None:
    from qcodes.instrument import Instrument

    raw = yaml.safe_load((CONFIGS / "virtual_lab_resistor.yaml").read_text())
    raw["system"]["lab"] = {"serve": str(CONFIGS / "virtual_lab_bench.yaml")}
    raw["system"]["station"] = str(CONFIGS / "virtual_lab_station.yaml")
    raw["schedule"] = {"steps": 3, "batch_size": 4, "eval_every": 3}
    try:
        assert start_run(parse_config(raw), tmp_path / "lab.zarr").status == "success"
    finally:
        Instrument.close_all()
    rep = make_report(tmp_path / "lab.zarr", tmp_path / "rep")
    check_report(rep.out_dir, {"instruments.png", "timing.png"})
    page = rep.html.read_text()
    snap = RunStore.open(tmp_path / "lab.zarr").attrs["system_snapshot"]
    assert "<h2>Instruments</h2>" in page
    for name, inst in snap["instruments"].items():
        assert f"<td>{name}</td><td>{inst['idn']}</td>" in page
    timing = T.read_timing(RunStore.open(tmp_path / "lab.zarr"))
    assert T.missing_counters(timing) == []  # this system logs every counter
    fig = T.instrument_panel(timing, ["free", "b+", "b-"], "t")
    assert fig is not None
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["time per step", "retries and reconnects", "settling per phase"]
    # cumulative counters are drawn as their increase per step
    readings = RunStore.open(tmp_path / "lab.zarr").read("system_readings")
    np.testing.assert_array_equal(timing["series"]["system_readings"], np.diff(readings, prepend=0))


def test_counters_a_store_lacks_are_named_not_drawn_as_zero() -> None:
    timing = {
        "series": {"step_time": np.ones(3), "system_readings": np.full(3, 4.0)},
        "names": {"step_time": "step", "system_readings": "readings per step"},
    }
    assert T.missing_counters(timing) == [
        "settle_time",
        "system_instrument_time",
        "system_settle_wait",
        "system_retries",
        "system_reconnects",
    ]
    fig = T.instrument_panel(timing, [], "t")
    assert fig is not None and len(fig.axes) == 2  # the events panel and its readings axis
    assert not fig.axes[0].patches  # no bars of retries that were never logged


# -- a sweep: links to every run's own report ---------------------------------------------------


@pytest.mark.slow
def test_a_sweeps_run_table_links_every_runs_report(tmp_path: Path) -> None:
    from physlearn.sweep.execute import run_sweep
    from physlearn.sweep.expand import load_sweep

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_raw(4)))
    spec = {"name": "links", "base": "base.yaml", "grid": {"store.flush_every": [1, 2]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    store = tmp_path / "links.zarr"
    assert run_sweep(load_sweep(tmp_path / "sweep.yaml"), store, workers=0).all_succeeded
    rep = make_report(store, tmp_path / "rep")
    page = rep.html.read_text()
    links = re.findall(r'<td><a href="(runs/[^"]+/report\.html)">([^<]+)</a></td>', page)
    assert len(links) == 2
    for href, run_id in links:
        assert (rep.out_dir / href).is_file()
        check_report((rep.out_dir / href).parent, {"training.png"})
        assert run_id in (rep.out_dir / href).read_text()
    assert "Also commit every N steps (store.flush_every)" in page
