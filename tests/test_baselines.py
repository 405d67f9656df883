"""Baselines beside every result (issue 23 item 4): reference models fitted at run start on the
run's own split and encoded inputs, stored in the run attributes, shown by ``inspect`` and the
run report; a stored config without ``task.baselines`` resumes bit-identically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from physlearn.baselines import baseline_rows, compute_baselines
from physlearn.cli import main
from physlearn.config import ConfigError, TaskConfig, parse_config
from physlearn.datasets import IrisConfig
from physlearn.losses import get_loss
from physlearn.run.start import resume_run, start_run
from physlearn.store.run_store import RunStore

from .conftest import load_yaml
from .test_run_store import _assert_same_run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart (iris on a resistor network), shortened, with its default baselines."""
    tmp = tmp_path_factory.mktemp("bl")
    raw = load_yaml("quickstart.yaml")
    raw["schedule"] = {**raw["schedule"], "steps": 16, "eval_every": 8}
    raw["schedule"].pop("epochs", None)
    raw["store"] = {"root": str(tmp), "flush_every": 4}
    path = tmp / "quick.zarr"
    assert start_run(parse_config(raw), path).status == "success"
    return path


def _encode_quickstart(x: np.ndarray, x_train: np.ndarray) -> np.ndarray:
    """The quickstart's encoding written out by hand: standardise with the training split's
    statistics, 0.5 V per unit, +x and -x, then bias sources at +1 V and -1 V."""
    u = 0.5 * (x - x_train.mean(axis=0)) / x_train.std(axis=0)
    return np.hstack([u, -u, np.ones((len(x), 1)), -np.ones((len(x), 1))])


def test_quickstart_baselines_equal_sklearn_on_the_runs_split(quick_run: Path) -> None:
    store = RunStore.open(quick_run)
    stored = store.attrs["baselines"]
    assert set(stored) == {"majority", "linear"}
    d = IrisConfig(test_fraction=0.3).load(0)  # the run's split (seed 0)
    x_tr, x_te = _encode_quickstart(d.x_train, d.x_train), _encode_quickstart(d.x_test, d.x_train)
    # the encoding above is the machine's: the logged inputs are its rows
    idx = store.read("sample_index")
    np.testing.assert_allclose(store.read("inputs"), x_tr[idx], rtol=0, atol=1e-12)
    majority = DummyClassifier(strategy="most_frequent").fit(x_tr, d.y_train)
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    logistic.fit(x_tr, d.y_train)
    for name, model in (("majority", majority), ("linear", logistic)):
        assert stored[name]["test_accuracy"] == pytest.approx(model.score(x_te, d.y_test), abs=0)
        assert stored[name]["train_accuracy"] == pytest.approx(model.score(x_tr, d.y_train), abs=0)
    assert stored["majority"]["test_accuracy"] == pytest.approx(1 / 3)
    assert stored["linear"]["test_accuracy"] > 0.9


def _regression_raw(tmp: Path) -> dict[str, Any]:
    raw = load_yaml("quickstart.yaml")
    raw["task"] = {
        "dataset": {"kind": "regression", "features": 4, "targets": 3, "noise": 0.1},
        "encoding": {"standardize": False, "scale": 1.0, "differential": True, "bias": [1, -1]},
        "target": {"scale": 0.5, "offset": 0.1},
        "loss": "mse",
        "report_loss": "xy_cosine",
    }
    raw["store"] = {"root": str(tmp)}
    return raw


def test_regression_baselines_use_the_task_loss_on_encoded_targets(tmp_path: Path) -> None:
    cfg = parse_config(_regression_raw(tmp_path))
    got = compute_baselines(cfg, 3, get_loss("mse"))["baselines"]
    d = cfg.task.dataset.load(cfg.seed)

    def enc(x: np.ndarray) -> np.ndarray:
        return np.hstack([x, -x, np.ones((len(x), 1)), -np.ones((len(x), 1))])

    t_tr, t_te = 0.5 * d.y_train + 0.1, 0.5 * d.y_test + 0.1
    for name, model in (("mean", DummyRegressor()), ("linear", LinearRegression())):
        model.fit(enc(d.x_train), t_tr)
        pred = model.predict(enc(d.x_test))
        mse = float(np.mean(0.5 * np.sum((pred - t_te) ** 2, axis=1)))
        cosine = float(np.mean(0.5 * np.sum(1 - np.cos(pred - t_te), axis=1)))
        assert got[name]["test_loss"] == pytest.approx(mse, rel=1e-12)
        assert got[name]["test_report_loss"] == pytest.approx(cosine, rel=1e-12)
    assert got["linear"]["test_loss"] < 0.5 * got["mean"]["test_loss"]


def test_inspect_shows_baselines_beside_the_metrics(
    quick_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(quick_run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["baselines"] == RunStore.open(quick_run).attrs["baselines"]
    assert "accuracy" in info["baselines_note"]
    assert main(["inspect", str(quick_run)]) == 0
    text = capsys.readouterr().out
    acc = info["baselines"]["linear"]["test_accuracy"]
    assert "linear (StandardScaler + LogisticRegression(C=1)): " in text
    assert f"test_accuracy {acc:.4g}" in text
    assert text.index("test_accuracy:") < text.index("baselines:")  # beside the run's metrics


def test_report_draws_baselines_as_labelled_lines_with_literal_text(quick_run: Path) -> None:
    pytest.importorskip("matplotlib")
    from physlearn.report import figures as F
    from physlearn.report.run_report import read_scalars

    store = RunStore.open(quick_run)
    rows = baseline_rows(store.attrs)
    rows.append(("$x^2$", "test_loss", 0.25))  # a name drawn as typed, not as mathtext
    fig = F.training_curves(read_scalars(store), "quick", rows)
    assert fig is not None
    fig.canvas.draw()  # mathtext in a label would be parsed (and could fail) here
    loss_ax, acc_ax = fig.axes[:2]
    lines = {ln.get_label(): ln for ax in (loss_ax, acc_ax) for ln in ax.get_lines()}
    linear = store.attrs["baselines"]["linear"]["test_accuracy"]
    assert lines["linear baseline (test_accuracy)"].get_ydata()[0] == linear
    assert lines["linear baseline (test_accuracy)"] in acc_ax.get_lines()
    assert lines["$x^2$ baseline (test_loss)"] in loss_ax.get_lines()
    legend = [t for t in loss_ax.get_legend().get_texts() if "$x^2$" in t.get_text()]
    assert legend and not legend[0].get_parse_math()


@pytest.mark.slow
def test_run_report_page_lists_baselines(quick_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert main(["report", str(quick_run), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    acc = RunStore.open(quick_run).attrs["baselines"]["majority"]["test_accuracy"]
    assert "<h2>Baselines</h2>" in page
    assert f"<th>majority: test_accuracy</th><td>{acc:.4g}</td>" in page


def test_baselines_change_nothing_the_run_computes(quick_raw: dict[str, Any], tmp_path: Path):
    on = tmp_path / "on.zarr"
    start_run(parse_config(quick_raw), on)
    quick_raw["task"]["baselines"] = []
    off = tmp_path / "off.zarr"
    start_run(parse_config(quick_raw), off)
    _assert_same_run(on, off)
    assert RunStore.open(off).attrs["baselines"] == {}
    assert RunStore.open(off).attrs["baselines_note"] == "none (task.baselines: [])"


def test_store_without_the_field_resumes_bit_identically(
    quick_raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from physlearn.run import campaign

    cfg = parse_config(quick_raw)
    ref = tmp_path / "ref.zarr"
    start_run(cfg, ref)
    real = campaign.Campaign.evaluate

    def failing(self: campaign.Campaign, updates: int) -> None:
        if updates == 16:
            raise RuntimeError("instrument lost")
        real(self, updates)

    monkeypatch.setattr(campaign.Campaign, "evaluate", failing)
    out = tmp_path / "old.zarr"
    with pytest.raises(RuntimeError, match="instrument lost"):
        start_run(cfg, out)
    # make it a store written before baselines: no attributes, no config field
    store = RunStore.open(out, mode="r+", writer="test")
    old_cfg = store.attrs["config"]
    del old_cfg["task"]["baselines"]
    store.group.attrs.pop("baselines")
    store.group.attrs.pop("baselines_note")
    store.update_attrs(config=old_cfg)
    store.release()
    monkeypatch.setattr(campaign.Campaign, "evaluate", real)
    assert resume_run(out).status == "success"
    _assert_same_run(ref, out)
    attrs = RunStore.open(out).attrs
    assert "baselines" not in attrs and "baselines" not in attrs["config"]["task"]
    assert main(["inspect", str(out)]) == 0
    assert "baselines: not computed (run created before baselines)" in capsys.readouterr().out


def test_unlabelled_task_has_no_baselines() -> None:
    cfg = parse_config(load_yaml("quantum_phase_exploration.yaml"))
    assert compute_baselines(cfg, 1, get_loss("neg_abs")) == {
        "baselines": {},
        "baselines_note": "none (the task has no labels)",
    }


NAMES = st.lists(st.sampled_from(["majority", "mean", "linear"]), max_size=4)


@settings(max_examples=30, deadline=None)
@given(names=NAMES, dataset=st.sampled_from(["iris", "regression", "none"]))
def test_baselines_field_is_checked_against_the_dataset(names: list[str], dataset: str) -> None:
    raw = {"dataset": {"kind": dataset}, "baselines": names}
    wrong = {"iris": "mean", "regression": "majority", "none": None}[dataset]
    bad = len(set(names)) < len(names) or (bool(names) and (dataset == "none" or wrong in names))
    if not bad:
        assert TaskConfig.model_validate(raw).baselines == names
        return
    with pytest.raises(ValidationError, match="task.baselines") as err:
        TaskConfig.model_validate(raw)
    assert str(err.value).count("task.baselines") == 1


def test_a_wrong_baseline_is_one_line_naming_the_field(tmp_path: Path) -> None:
    raw = load_yaml("quickstart.yaml")
    raw["task"]["baselines"] = ["mean"]
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    msg = str(err.value)
    assert (
        "\n" not in msg and "task.baselines: 'mean' does not apply" in msg and "'majority'" in msg
    )
