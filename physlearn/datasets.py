"""Datasets that ship with the package or are generated: nothing is downloaded at run time.

* ``xor``: the four patterns of {-1, +1}^2, label = XOR; train and test are the same four.
* ``iris``: scikit-learn's iris (150 x 4, 3 classes), stratified train/test split.
* ``digits``: scikit-learn's 8x8 digits (1797 x 64, pixel values 0..16, 10 classes);
  ``train_per_class`` patterns per class for training and ``test_size`` held out.
* ``regression``: synthetic y = tanh(x A) + noise, x ~ U[-1, 1]^d.
* ``none``: one empty pattern, for unsupervised tasks (e.g. quantum phase exploration).

Every split is a deterministic function of the experiment seed.

A dataset is a :class:`DatasetConfigBase` subclass registered by a ``physlearn.datasets`` entry
point named after its ``kind`` (:mod:`physlearn.registry`); the ones above are physlearn's own,
registered in its pyproject.toml exactly as a plugin's are (the quantum simulators add
``cluster_ising_phases``), so ``task.dataset`` accepts whatever is installed.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from physlearn.arrays import FloatArray
from physlearn.configbase import MAX_BATCH_VALUES, MAX_NODES, StrictModel


@dataclass(frozen=True)
class Dataset:
    """Features ``x_*`` ``(n, n_features)``; labels ``y_*`` int ``(n,)`` for classification or
    float ``(n, n_targets)`` for regression (``n_classes is None``)."""

    name: str
    x_train: FloatArray
    y_train: np.ndarray
    x_test: FloatArray
    y_test: np.ndarray
    n_classes: int | None

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


class DatasetConfigBase(StrictModel):
    """Config of one kind of dataset (``task.dataset``).

    Subclasses add ``kind: Literal["<name>"]`` and their fields; a ``physlearn.datasets`` entry
    point named ``<name>`` registers the subclass. The sizes are known without loading, so an
    experiment checks them against its system before anything is generated or read.
    """

    #: Narrowed by every subclass to ``Literal["<name>"]``.
    kind: str

    @abstractmethod
    def n_features(self) -> int:
        """Columns of ``x``."""

    @abstractmethod
    def n_classes(self) -> int | None:
        """Classes of a classification dataset; None for regression or no labels."""

    @abstractmethod
    def n_targets(self) -> int | None:
        """Columns of ``y`` of a regression dataset; None otherwise."""

    @abstractmethod
    def n_train(self) -> int:
        """Training patterns."""

    @abstractmethod
    def load(self, seed: int) -> Dataset:
        """Read or generate the splits, a deterministic function of ``seed``."""


def _stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class XORConfig(DatasetConfigBase):
    kind: Literal["xor"] = "xor"

    def n_features(self) -> int:
        return 2

    def n_classes(self) -> int | None:
        return 2

    def n_targets(self) -> int | None:
        return None

    def n_train(self) -> int:
        return 4

    def load(self, seed: int) -> Dataset:
        x = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
        y = np.array([0, 1, 1, 0])
        return Dataset("xor", x, y, x.copy(), y.copy(), 2)


class IrisConfig(DatasetConfigBase):
    kind: Literal["iris"] = "iris"
    test_fraction: float = Field(0.3, gt=0, lt=1, description="Share of each class held out.")

    def n_features(self) -> int:
        return 4

    def n_classes(self) -> int | None:
        return 3

    def n_targets(self) -> int | None:
        return None

    def n_train(self) -> int:
        return 150 - 3 * int(round(self.test_fraction * 50))

    def load(self, seed: int) -> Dataset:
        x, y = _sklearn_table("iris.csv", "load_iris", skip_header=1)
        tr, te = _stratified_split(y, self.test_fraction, np.random.default_rng([seed, 7]))
        return Dataset("iris", x[tr], y[tr], x[te], y[te], 3)


class DigitsConfig(DatasetConfigBase):
    kind: Literal["digits"] = "digits"
    train_per_class: int = Field(100, ge=1, le=170, description="Training patterns per class.")
    test_size: int = Field(
        700, ge=1, le=1787, description="Held-out patterns (from the remainder of the 1797)."
    )

    @model_validator(mode="after")
    def _enough_patterns(self) -> DigitsConfig:
        left = 1797 - 10 * self.train_per_class
        if self.test_size > left:
            raise ValueError(f"test_size {self.test_size} exceeds the {left} patterns left")
        return self

    def n_features(self) -> int:
        return 64

    def n_classes(self) -> int | None:
        return 10

    def n_targets(self) -> int | None:
        return None

    def n_train(self) -> int:
        return 10 * self.train_per_class

    def load(self, seed: int) -> Dataset:
        x, y = _sklearn_table("digits.csv.gz", "load_digits", skip_header=0)
        rng = np.random.default_rng([seed, 11])
        train = np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[: self.train_per_class] for c in range(10)]
        )
        rest = np.setdiff1d(np.arange(len(y)), train)
        if self.test_size > len(rest):
            raise ValueError(
                f"digits: test_size {self.test_size} exceeds the {len(rest)} patterns left"
            )
        test = np.sort(rng.permutation(rest)[: self.test_size])
        train = np.sort(train)
        return Dataset("digits", x[train], y[train], x[test], y[test], 10)


class RegressionConfig(DatasetConfigBase):
    kind: Literal["regression"] = "regression"
    features: int = Field(2, ge=1, le=MAX_NODES, description="Input dimension d.")
    targets: int = Field(1, ge=1, le=MAX_NODES, description="Output dimension.")
    train_size: int = Field(
        200,
        ge=1,
        le=MAX_BATCH_VALUES,
        description="Training patterns; (train_size + test_size) x (features + targets) is at "
        f"most {MAX_BATCH_VALUES:,} values (the generated table, 800 MB of float64)",
    )
    test_size: int = Field(100, ge=1, le=MAX_BATCH_VALUES, description="Held-out patterns.")
    noise: float = Field(0.0, ge=0, description="Std of Gaussian noise added to y.")

    def n_features(self) -> int:
        return self.features

    def n_classes(self) -> int | None:
        return None

    def n_targets(self) -> int | None:
        return self.targets

    def n_train(self) -> int:
        return self.train_size

    @model_validator(mode="after")
    def _table_size(self) -> RegressionConfig:
        n = (self.train_size + self.test_size) * (self.features + self.targets)
        if n > MAX_BATCH_VALUES:
            raise ValueError(
                f"the generated table has {n:,} values, more than {MAX_BATCH_VALUES:,}: "
                "fewer patterns, features or targets"
            )
        return self

    def load(self, seed: int) -> Dataset:
        rng = np.random.default_rng([seed, 13])
        a = rng.normal(size=(self.features, self.targets)) / np.sqrt(self.features)
        n = self.train_size + self.test_size
        x = rng.uniform(-1, 1, size=(n, self.features))
        y = np.tanh(x @ a) + self.noise * rng.normal(size=(n, self.targets))
        k = self.train_size
        return Dataset("regression", x[:k], y[:k], x[k:], y[k:], None)


class NoDataConfig(DatasetConfigBase):
    """Unsupervised: a single empty input pattern; the loss needs no targets."""

    kind: Literal["none"] = "none"

    def n_features(self) -> int:
        return 0

    def n_classes(self) -> int | None:
        return None

    def n_targets(self) -> int | None:
        return None

    def n_train(self) -> int:
        return 1

    def load(self, seed: int) -> Dataset:
        x = np.zeros((1, 0))
        return Dataset("none", x, np.zeros((1, 0)), x.copy(), np.zeros((1, 0)), None)


def _sklearn_table(file: str, loader: str, skip_header: int) -> tuple[FloatArray, np.ndarray]:
    """(features, integer labels) of a toy dataset scikit-learn ships as a CSV file (last column:
    the label), read straight from the installed package: importing ``sklearn.datasets`` pulls
    in pandas and pyarrow, over a second per process (every sweep worker pays it). Falls back to
    scikit-learn's own loader if the file is not where this scikit-learn version keeps it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / file
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", skiprows=skip_header)
            return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(np.int64)
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    return np.asarray(bunch.data, float), np.asarray(bunch.target, np.int64)
