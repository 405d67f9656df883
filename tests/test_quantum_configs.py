"""The shipped quantum experiment configs validate and run a few steps end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from threadpoolctl import threadpool_limits

from physlearn.config import ConfigError, parse_config
from physlearn.run.start import start_run
from physlearn.simulators.quantum.datasets import (
    ClusterIsingPhasesConfig,
    cluster_ising_string_order,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUANTUM = [
    "quantum_phase_exploration.yaml",
    "quantum_phase_sensor.yaml",
    "rydberg_iris.yaml",
    "ions_regression.yaml",
    "quantum_sensitivity.yaml",
]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def _shrink(raw: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    raw["schedule"] = {
        "steps": 3,
        "batch_size": min(2, raw["schedule"]["batch_size"]),
        "eval_every": 3,
    }
    raw["store"] = {"root": str(tmp_path / "runs")}
    ds = raw["task"]["dataset"]
    if ds["kind"] == "cluster_ising_phases":
        ds.update(train_size=4, test_size=4, label_sites=8)
    if ds["kind"] == "iris":
        raw["diagnostics"] = {"exact_gradient": True, "every": 1}
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("name", QUANTUM)
def test_quantum_configs_run_a_few_steps(name: str, tmp_path: Path) -> None:
    raw = _shrink(yaml.safe_load((CONFIGS / name).read_text()), tmp_path)
    cfg = parse_config(raw, name)
    res = start_run(cfg, tmp_path / "run.zarr")
    assert res.status == "success" and res.committed_steps == 3
    g = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    shots = np.asarray(g["shots"])
    assert np.all(shots == getattr(cfg.system, "shots", 0))
    if cfg.diagnostics.exact_gradient:
        assert np.nanmin(np.asarray(g["grad_cosine"])) > 0.99


def test_rydberg_config_with_an_impossible_register_is_refused() -> None:
    raw = yaml.safe_load((CONFIGS / "rydberg_iris.yaml").read_text())
    raw["system"]["positions"][1] = [3.0, 0.0]
    with pytest.raises(ConfigError, match="min_distance"):
        parse_config(raw, "rydberg_iris.yaml")


def test_cluster_ising_labels_follow_the_known_phases() -> None:
    s = cluster_ising_string_order(
        np.array([0.0, 0.3, 1.6, 0.1]), np.array([0.0, 0.2, 0.0, 1.6]), 8
    )
    assert s[0] == pytest.approx(1.0, abs=1e-9)  # the cluster state itself
    assert s[1] > 0.8  # deep in the SPT phase
    assert s[2] < 0.3 and s[3] < 0.3  # paramagnet, X-ordered phase
    data = ClusterIsingPhasesConfig(train_size=20, test_size=10, label_sites=8).load(0)
    again = ClusterIsingPhasesConfig(train_size=20, test_size=10, label_sites=8).load(0)
    np.testing.assert_array_equal(data.x_train, again.x_train)
    assert data.x_train.shape == (20, 2) and set(np.unique(data.y_train)) <= {0, 1}


@pytest.mark.slow
def test_a_degenerate_ground_state_fails_the_run_cleanly(tmp_path: Path) -> None:
    """Deep in the ferromagnet (weak field, strong Ising coupling) the two ordered states split by
    ~4e-9, below gap_tol, so with ``degenerate: fail`` (the default) EP's free phase is
    ill-defined. The run fails with the solver's message and no traceback, and its store records
    the failure."""
    from physlearn.store.run_store import RunStore
    from tests.conftest import run_cli

    cfg = CONFIGS / "quantum_phase_exploration.yaml"
    res = run_cli(
        "run",
        str(cfg),
        "--set",
        "system.trainable.0.init=0.2",
        "--set",
        "system.trainable.1.init=1.5",
        "--set",
        "system.solver.degenerate=fail",
        "--set",
        f"store.root={tmp_path}",
    )
    assert res.returncode == 1, res.stderr
    assert "degenerate ground state" in res.stderr
    assert "Traceback" not in res.stderr
    (store_path,) = tmp_path.glob("*.zarr")
    store = RunStore.open(store_path)
    assert store.attrs["exit_status"] == "fail"
    assert "degenerate" in store.attrs["error"]


@pytest.mark.slow
def test_phase_exploration_runs_from_the_published_doublet_start_point(tmp_path: Path) -> None:
    """Issue 23: from theta = (0.2, 0.9) the open chain's edge doublet is split by ~2e-7 <
    gap_tol; the shipped config (``degenerate: manifold``) runs from it, with EP equal to the
    manifold's linear-response gradient."""
    raw = _shrink(
        yaml.safe_load((CONFIGS / "quantum_phase_exploration.yaml").read_text()), tmp_path
    )
    raw["system"]["trainable"][0]["init"] = 0.2
    raw["system"]["trainable"][1]["init"] = 0.9
    cfg = parse_config(raw, "quantum_phase_exploration.yaml")
    res = start_run(cfg, tmp_path / "run.zarr")
    assert res.status == "success" and res.committed_steps == 3
    g = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert np.nanmin(np.asarray(g["grad_cosine"])) > 0.999
    assert np.all(np.asarray(g["converged"]))
