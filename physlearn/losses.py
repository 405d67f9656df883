"""Costs on the outputs of a machine.

A :class:`Loss` maps outputs ``y`` ``(batch, n_out)`` and targets ``t`` (same shape; ignored by
unsupervised losses) to a per-sample value ``(batch,)`` and its gradient ``dL/dy``
``(batch, n_out)``. The gradient is the error signal ``eps`` of an ``error`` nudge
(``beta * sum_k eps_k O_k``).

Names (used in configs):

* ``mse``: ``1/2 sum_k (y_k - t_k)^2``. Realised physically in a resistor network by a
  conductance beta from each output to a source at ``t_k``.
* ``xy_log``: ``-sum_k ln[1 + cos(y_k - t_k)]`` (phases, rad), the XY nudging cost; diverges at
  ``|y - t| = pi`` and so keeps the nudged state off the antipodal fixed point.
* ``xy_cosine``: ``1/2 sum_k (1 - cos(y_k - t_k))``, the XY reported cost.
* ``cross_entropy``: ``-sum_k q_k ln softmax(y / tau)_k`` with ``q = t / sum(t)`` (one-hot targets
  with ``low = 0``) and ``tau`` the softmax temperature in output units (``task.temperature``).
  Realised by current injection (an ``error`` nudge): exact EP for a classification cost.
* ``neg_abs``: ``-sum_k |y_k|`` (unsupervised: maximise the magnitude of an observable).
* ``neg_sq``: ``-1/2 sum_k y_k^2`` (unsupervised, smooth variant of ``neg_abs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from physlearn.arrays import FloatArray


class Loss(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def supervised(self) -> bool: ...

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray: ...

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray: ...


@dataclass(frozen=True)
class MSE:
    name: str = "mse"
    supervised: bool = True

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(0.5 * np.sum((y - t) ** 2, axis=-1))

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(y - t)


@dataclass(frozen=True)
class XYLog:
    name: str = "xy_log"
    supervised: bool = True

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            return np.asarray(-np.sum(np.log1p(np.cos(y - t)), axis=-1))

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray:
        d = y - t
        # d/dy [-ln(1 + cos d)] = sin d / (1 + cos d) = tan(d/2)
        return np.asarray(np.tan(0.5 * d))


@dataclass(frozen=True)
class XYCosine:
    name: str = "xy_cosine"
    supervised: bool = True

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(0.5 * np.sum(1.0 - np.cos(y - t), axis=-1))

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(0.5 * np.sin(y - t))


@dataclass(frozen=True)
class CrossEntropy:
    temperature: float = 1.0
    name: str = "cross_entropy"
    supervised: bool = True

    def _parts(self, y: FloatArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        z = y / self.temperature
        z = z - z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        q = t / t.sum(axis=-1, keepdims=True)
        return logp, q

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray:
        logp, q = self._parts(y, t)
        return np.asarray(-np.sum(q * logp, axis=-1))

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray:
        logp, q = self._parts(y, t)
        return np.asarray((np.exp(logp) - q) / self.temperature)

    def value_and_grad(self, y: FloatArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(value(y, t), grad(y, t))`` from one softmax."""
        logp, q = self._parts(y, t)
        return (
            np.asarray(-np.sum(q * logp, axis=-1)),
            np.asarray((np.exp(logp) - q) / self.temperature),
        )


@dataclass(frozen=True)
class NegAbs:
    name: str = "neg_abs"
    supervised: bool = False

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(-np.sum(np.abs(y), axis=-1))

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(-np.sign(y))


@dataclass(frozen=True)
class NegSquare:
    name: str = "neg_sq"
    supervised: bool = False

    def value(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(-0.5 * np.sum(y**2, axis=-1))

    def grad(self, y: FloatArray, t: FloatArray) -> FloatArray:
        return np.asarray(-y)


LOSSES: dict[str, Loss] = {
    loss.name: loss for loss in (MSE(), XYLog(), XYCosine(), CrossEntropy(), NegAbs(), NegSquare())
}


#: Costs that are +inf somewhere: a target nudge with beta < 0 (``-|beta| C``) has no minimum.
UNBOUNDED_COSTS = frozenset({"xy_log"})


def value_and_grad(loss: Loss, y: FloatArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``(loss.value(y, t), loss.grad(y, t))``; a loss with a ``value_and_grad`` method of its
    own (e.g. :class:`CrossEntropy`, one softmax for both) computes them together."""
    both = getattr(loss, "value_and_grad", None)
    if both is not None:
        value, grad = both(y, t)
        return value, grad
    return loss.value(y, t), loss.grad(y, t)


def get_loss(name: str, temperature: float = 1.0) -> Loss:
    """The loss called ``name``; ``temperature`` parameterises ``cross_entropy``."""
    if name == "cross_entropy":
        return CrossEntropy(temperature)
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None
