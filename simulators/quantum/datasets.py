"""Generated quantum datasets: points of a phase diagram labelled by exact diagonalisation.

``cluster_ising_phases``: the cluster-Ising chain (Smacchia et al. 2011; the QCNN benchmark of
Cong, Choi & Lukin 2019 and the phase sensor of Wanjura & Marquardt 2024),

    H = -sum_i Z_{i-1} X_i Z_{i+1} - h1 sum_i X_i - h2 sum_i X_i X_{i+1},

features ``(h1, h2)`` drawn uniformly from the box, label 1 for the symmetry-protected
topological (cluster) phase and 0 otherwise. The label comes from the string order parameter
``S = <Z_0 X_1 X_3 ... X_{2k-1} Z_{2k}>`` (``2k = L/2``) in the ground state of a periodic chain
of ``label_sites`` spins: ``S = 1`` in the cluster state and ``-> 0`` in the paramagnetic and
(anti)ferromagnetic phases. The threshold is ``S`` at the exactly known transition
``(h1, h2) = (1, 0)`` on the same finite chain, so finite-size effects shift the boundary as
little as possible. Everything is a deterministic function of the seed; nothing is downloaded.

Registered by the ``physlearn.datasets`` entry point ``cluster_ising_phases`` (pyproject.toml).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from physlearn.datasets import Dataset, DatasetConfigBase


def cluster_ising_string_order(h1: np.ndarray, h2: np.ndarray, sites: int) -> np.ndarray:
    """String order parameter of the periodic cluster-Ising ground state for each (h1, h2)."""
    from physlearn.simulators.quantum.lanczos import SolverOptions
    from physlearn.simulators.quantum.pauli import PauliBasis
    from physlearn.simulators.quantum.states import ground_state

    n = sites
    half = n // 2 - (n // 2) % 2
    cluster = [f"Z{(i - 1) % n} X{i} Z{(i + 1) % n}" for i in range(n)]
    xs = [f"X{i}" for i in range(n)]
    xxs = [f"X{i} X{(i + 1) % n}" for i in range(n)]
    string = " ".join(["Z0"] + [f"X{k}" for k in range(1, half, 2)] + [f"Z{half}"])
    basis = PauliBasis.from_labels(cluster + xs + xxs + [string], n)
    v_cluster = basis.vector([(-1.0, lab) for lab in cluster])
    v_x = basis.vector([(-1.0, lab) for lab in xs])
    v_xx = basis.vector([(-1.0, lab) for lab in xxs])
    s_idx = np.array([basis.index(string)])
    opts = SolverOptions(tol=1e-8, gap_tol=0.0)
    out = np.empty(len(h1))
    for k, (a, b) in enumerate(zip(h1, h2, strict=True)):
        gs = ground_state(
            basis.operator(v_cluster + a * v_x + b * v_xx), None, opts, check_gap=False
        )
        out[k] = basis.expectations(gs.vector, s_idx)[0]
    return out


class ClusterIsingPhasesConfig(DatasetConfigBase):
    """Phase classification of the cluster-Ising chain: features (h1, h2), labels SPT (1) or not."""

    kind: Literal["cluster_ising_phases"] = "cluster_ising_phases"
    train_size: int = Field(
        200,
        ge=2,
        le=100_000,
        description="training points (at most 100 000: each is the exact ground state of the "
        "label ring, computed when the dataset is made)",
    )
    test_size: int = Field(200, ge=1, le=100_000, description="held-out points (as train_size)")
    h1_range: tuple[float, float] = Field((0.0, 1.6), description="transverse field h1 range")
    h2_range: tuple[float, float] = Field((-1.6, 1.6), description="Ising coupling h2 range")
    label_sites: int = Field(12, ge=6, le=16, description="ring used for the labels (even)")

    @model_validator(mode="after")
    def _check(self) -> ClusterIsingPhasesConfig:
        if self.label_sites % 2:
            raise ValueError("label_sites must be even")
        for name, (lo, hi) in (("h1_range", self.h1_range), ("h2_range", self.h2_range)):
            if not lo < hi:
                raise ValueError(f"{name}: lower must be < upper")
        return self

    def n_features(self) -> int:
        return 2

    def n_classes(self) -> int | None:
        return 2

    def n_targets(self) -> int | None:
        return None

    def n_train(self) -> int:
        return self.train_size

    def load(self, seed: int) -> Dataset:
        rng = np.random.default_rng([seed, 17])
        n = self.train_size + self.test_size
        x = np.column_stack([rng.uniform(*self.h1_range, n), rng.uniform(*self.h2_range, n)])
        s = cluster_ising_string_order(x[:, 0], x[:, 1], self.label_sites)
        threshold = cluster_ising_string_order(np.array([1.0]), np.array([0.0]), self.label_sites)[
            0
        ]
        y = (s > threshold).astype(np.int64)
        k = self.train_size
        return Dataset("cluster_ising_phases", x[:k], y[:k], x[k:], y[k:], 2)
