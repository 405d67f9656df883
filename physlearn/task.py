"""Where data meets the machine: input/target encoding, readout, metrics and data order.

The data order is counter-based: the patterns of step k are a pure function of (seed, k), so a
resumed run draws exactly the batches an uninterrupted run would (the "data position" of a
checkpoint is its step number).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physlearn.config import TaskConfig
from physlearn.datasets import Dataset
from physlearn.losses import Loss
from physlearn.system import FloatArray


@dataclass
class Task:
    """A dataset encoded for one machine."""

    config: TaskConfig
    data: Dataset
    n_outputs: int
    _mean: FloatArray = field(init=False)
    _std: FloatArray = field(init=False)
    # permutations of the last epochs used: a pure function of (seed, epoch), so caching them
    # changes no result; a step spans at most two epochs
    _perms: dict[tuple[int, int], np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        x = self.data.x_train
        self._mean = x.mean(axis=0) if x.size else np.zeros(x.shape[1])
        std = x.std(axis=0) if x.size else np.ones(x.shape[1])
        self._std = np.where(std > 0, std, 1.0)

    @property
    def classification(self) -> bool:
        return self.data.n_classes is not None

    def encode_inputs(self, x: FloatArray) -> FloatArray:
        """Features ``(n, F)`` -> physical inputs ``(n, width)``."""
        enc = self.config.encoding
        z = (x - self._mean) / self._std if enc.standardize else x
        u = enc.scale * z + enc.offset
        parts = [u]
        if enc.differential:
            parts.append(-u)
        if enc.bias:
            parts.append(np.broadcast_to(np.asarray(enc.bias, float), (x.shape[0], len(enc.bias))))
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    def encode_targets(self, y: np.ndarray) -> FloatArray:
        """Labels -> physical targets ``(n, n_outputs)``."""
        t = self.config.target
        n = y.shape[0]
        if self.classification:
            out = np.full((n, self.n_outputs), t.low)
            out[np.arange(n), y.astype(np.int64)] = t.high
            return out
        if y.size == 0:
            return np.zeros((n, self.n_outputs))
        return np.asarray(t.scale * y + t.offset, float)

    def scores(self, outputs: FloatArray) -> FloatArray:
        return np.sin(outputs) if self.config.readout == "sin" else outputs

    def accuracy(self, outputs: FloatArray, y: np.ndarray) -> float:
        """Share of patterns whose argmax score is the label (NaN for regression)."""
        if not self.classification:
            return float("nan")
        hit = np.asarray(self.scores(outputs)).argmax(axis=1) == y
        if not hit.size:
            return float(np.mean(hit))  # NaN, with numpy's warning
        # the count over the size: exactly np.mean of the booleans (both exact integers below
        # 2**53, one correctly rounded division), without np.mean's reduction machinery
        return np.count_nonzero(hit) / hit.size

    def batch_indices(self, seed: int, step: int, batch_size: int) -> np.ndarray:
        """Training-pattern indices of ``step``: consecutive slices of per-epoch permutations."""
        n = self.data.x_train.shape[0]
        if n == 0:
            raise IndexError("no training patterns to draw a batch from")
        first = step * batch_size
        epoch, start = divmod(first, n)
        if start + batch_size <= n:  # the usual case: one epoch, a contiguous slice
            return self._epoch_permutation(seed, epoch)[start : start + batch_size].copy()
        out = np.empty(batch_size, dtype=np.int64)
        done = 0
        while done < batch_size:  # the tail of one epoch, then the head of the next ...
            epoch, start = divmod(first + done, n)
            take = min(n - start, batch_size - done)
            out[done : done + take] = self._epoch_permutation(seed, epoch)[start : start + take]
            done += take
        return out

    def _epoch_permutation(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        perm = self._perms.get(key)
        if perm is None:
            n = self.data.x_train.shape[0]
            perm = np.random.default_rng([seed, 1, epoch]).permutation(n).astype(np.int64)
            if len(self._perms) >= 2:
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = perm
        return perm


def step_rng(seed: int, step: int, stream: int = 2) -> np.random.Generator:
    """The RNG of one step (restarts, thermal noise, shots, SPSA draws): a pure function of
    (seed, step), so resume needs no generator state beyond the step counter."""
    return np.random.default_rng([seed, stream, step])


def evaluate_loss(loss: Loss, outputs: FloatArray, targets: FloatArray) -> float:
    return float(np.mean(loss.value(outputs, targets)))
