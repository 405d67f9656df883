"""Reports: valid PNG figures and one self-contained HTML page, for a run and for a sweep."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from physlearn.cli import main
from physlearn.config import parse_config
from physlearn.report.command import default_out, make_report
from physlearn.run.start import start_run
from physlearn.store.run_store import RunStore
from physlearn.sweep.execute import run_sweep
from physlearn.sweep.expand import load_sweep
from tests.conftest import load_yaml

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_raw(steps: int = 8) -> dict[str, Any]:
    raw = load_yaml("quickstart.yaml")
    raw["schedule"] = {"steps": steps, "batch_size": 8, "eval_every": 4}
    raw["store"] = {"flush_every": 4}
    return raw


class _Refs(HTMLParser):
    """Collects <img src> and <a href> of a page (and fails on nothing: html.parser is lax,
    so the checks below are on what it found)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        d = dict(attrs)
        if tag == "img":
            self.images.append(d)
        if tag == "a" and d.get("href"):
            self.links.append(str(d["href"]))


def check_report(out_dir: Path, expected: set[str]) -> _Refs:
    """Every PNG valid and readable; the HTML parses, embeds and links every figure, and
    refers to nothing outside the folder."""
    from matplotlib.image import imread
    from PIL import Image

    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert expected <= set(pngs), pngs
    for name in pngs:
        data = (out_dir / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE
        with Image.open(out_dir / name) as im:
            im.verify()
        img = imread(out_dir / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert float(np.ptp(img[..., :3])) > 0  # not a blank canvas
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(page)
    refs.close()
    assert {"html", "head", "body", "table", "figure", "img"} <= set(refs.tags)
    embedded = {}
    for img in refs.images:
        src = str(img.get("src"))
        assert src.startswith("data:image/png;base64,")  # nothing fetched from elsewhere
        embedded[str(img.get("alt"))] = base64.b64decode(src.split(",", 1)[1])
    assert sorted(embedded) == pngs
    for name in pngs:
        assert embedded[name] == (out_dir / name).read_bytes()
        assert name in refs.links
    assert all(not link.startswith(("http:", "https:", "//")) for link in refs.links)
    assert "<script" not in page and "<link" not in page
    return refs


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tiny_raw()
    raw["diagnostics"] = {"exact_gradient": True}
    path = tmp_path_factory.mktemp("run") / "run.zarr"
    res = start_run(parse_config(raw), path)
    assert res.status == "success"
    return path


def test_run_stores_its_graph_layout(run_path: Path) -> None:
    store = RunStore.open(run_path)
    layout = store.graph_layout()
    assert layout is not None
    assert "graph_layout" not in store.attrs  # arrays, not attributes rewritten at every commit
    assert layout["edge_group"] == "conductance"
    n_edges = store.read("param_conductance").shape[1]
    assert np.asarray(layout["edges"]).shape == (n_edges, 2)
    assert np.asarray(layout["positions"]).shape == (10 + 16 + 3, 2)
    assert layout["node_roles"].count("output") == 3


@pytest.mark.slow
def test_run_report(run_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main(["report", str(run_path), "--out", str(out)]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    expected = {"training.png", "gradient_fidelity.png", "parameters.png", "graph.png"}
    check_report(out, expected)
    page = (out / "report.html").read_text()
    store = RunStore.open(run_path)
    assert store.attrs["guid"] in page
    assert f"{float(store.read('test_accuracy')[-1]):.4g}" in page


def test_report_of_something_else_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nothing.zarr")]) == 2
    assert "nothing.zarr does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nothing.zarr.report").exists()


@pytest.mark.slow
def test_sweep_report(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_raw(6)))
    spec = {
        "name": "rep",
        "base": "base.yaml",
        "grid": {"estimator.nudge": ["auto", "target"], "system.graph.sizes.1": [4, 6]},
        "seeds": 2,
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    store = tmp_path / "rep.zarr"
    result = run_sweep(load_sweep(tmp_path / "sweep.yaml"), store, workers=0)
    assert result.count("success") == 4 and result.count("fail") == 4

    rep = make_report(store)
    assert rep.kind == "sweep"
    assert rep.out_dir == default_out(store) == tmp_path / "rep.zarr.report"
    check_report(rep.out_dir, {"sweep_axes.png", "sweep_curves.png"})
    page = rep.html.read_text()
    for rec in result.records:
        assert rec.run_id in page
    # the table: mean and std over seeds of the final test accuracy, per configuration
    rows = [re.split(r"\s{2,}", line.strip()) for line in rep.table.splitlines()]
    assert rows[0] == [
        "estimator.nudge",
        "system.graph.sizes.1",
        "ok/runs",
        "test_accuracy",
        "test_loss",
        "loss",
    ]
    table = {(r[0], r[1]): r[2:] for r in rows[1:]}
    assert len(table) == 4
    for size in (4, 6):
        acc = [
            float(RunStore.open(store / f"nudge-auto__sizes.1-{size}__seed-{s}").read(
                "test_accuracy")[-1])
            for s in (0, 1)
        ]  # fmt: skip
        ok = table[("auto", str(size))]
        assert ok[0] == "2/2"
        assert ok[1] == f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f}"
        assert table[("target", str(size))] == ["0/2", "n/a", "n/a", "n/a"]
