"""Reports show text from configs as typed: a sweep axis value with ``$...$`` (matplotlib's
mathtext) made ``physlearn report`` fail, and ``$x^2$`` was typeset (issue 19, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from physlearn.cli import main
from physlearn.sweep.execute import run_sweep
from physlearn.sweep.expand import load_sweep
from tests.test_report import check_report, tiny_raw

# typeset by mathtext; an unknown command (a parse error); specials outside and inside $...$
VALUES = ["$x^2$", r"$\undefinedcmd{a}$ 50% _b^c", r"a$b \$ {c}_d"]


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("texts")
    (tmp / "base.yaml").write_text(yaml.safe_dump(tiny_raw(2)))
    spec = {
        "name": "texts",
        "base": "base.yaml",
        "grid": {"description": VALUES, "store.flush_every": [1, 2]},
    }
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(spec))
    store = tmp / "texts.zarr"
    assert run_sweep(load_sweep(tmp / "sweep.yaml"), store, workers=0).all_succeeded
    return store


@pytest.mark.slow
def test_a_report_with_mathtext_in_axis_values_is_written(
    sweep_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    assert main(["report", str(sweep_store), "--out", str(out)]) == 0, capsys.readouterr().err
    check_report(out, {"sweep_axes.png", "sweep_curves.png"})
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "$x^2$" in page and "a$b \\$ {c}_d" in page  # HTML-escaped, not altered


@pytest.mark.slow
def test_axis_values_are_drawn_as_typed(sweep_store: Path) -> None:
    from matplotlib.text import Text

    from physlearn.report.sweep_report import sweep_figures

    figs = sweep_figures(sweep_store)
    axes_fig, curves_fig = figs["sweep_axes.png"], figs["sweep_curves.png"]
    for fig in (axes_fig, curves_fig):
        fig.canvas.draw()  # lays out and renders every text: a parse error would raise here
    # the description panel: one categorical tick label per value, exactly as typed
    desc = next(ax for ax in axes_fig.axes if ax.get_xlabel() == "Description (description)")
    assert [t.get_text() for t in desc.get_xticklabels()] == VALUES
    # the flush_every panel: one series per description value, named by it
    flush = next(ax for ax in axes_fig.axes if ax.get_xlabel().endswith("(store.flush_every)"))
    legend = flush.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [f"description={v}" for v in VALUES]
    # the learning curves: a row of panels per configuration, titled by it
    shown = [ax.get_title(loc="left") for ax in curves_fig.axes[::3]]
    assert shown == [f"description={v}, flush_every={n} (n=1)" for v in VALUES for n in (1, 2)]
    # every text that carries a value is drawn as typed: no mathtext, no TeX
    carrying = [
        t
        for fig in (axes_fig, curves_fig)
        for t in fig.findobj(Text)
        if any(v in t.get_text() for v in VALUES)
    ]
    assert len(carrying) >= len(VALUES) * 2 + 6
    for t in carrying:
        assert t.get_parse_math() is False and t.get_usetex() is False, t.get_text()
