"""Optimisers, learning-rate schedules and the projection onto what hardware can hold.

Training keeps *continuous* parameters (the "shadow" values, clipped to the bounds) and writes their
projection onto each group's resolution grid to the machine; quantisation therefore never freezes
slow learning. Every projection is recorded (:class:`Projection`): how many elements a bound
stopped and the largest distance between the requested and the held value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from physlearn.config import LRSchedule, OptimizerConfig
from physlearn.system import FloatArray, ParameterGroup, Params


@dataclass(frozen=True)
class Projection:
    """Per group: elements clipped at a bound, and max |requested - held| (parameter unit)."""

    clipped: dict[str, int]
    max_deviation: dict[str, float]


def project(
    groups: tuple[ParameterGroup, ...], requested: Params
) -> tuple[Params, Params, Projection]:
    """Return (shadow, held, record): shadow = requested inside the bounds (wrapped for periodic
    groups); held = shadow on the resolution grid ``lower + k * resolution``."""
    shadow: Params = {}
    held: Params = {}
    clipped: dict[str, int] = {}
    dev: dict[str, float] = {}
    for g in groups:
        r = np.asarray(requested[g.name], dtype=float)
        if not np.isfinite(r).all():
            raise FloatingPointError(f"non-finite update for parameter group {g.name!r}")
        if g.periodic:
            period = g.upper - g.lower
            s = g.lower + np.mod(r - g.lower, period)
            clipped[g.name] = 0
        else:
            s = r.clip(g.lower, g.upper)  # np.clip's own path, without its dispatch layers
            clipped[g.name] = int(np.count_nonzero(s != r))
        h = g.quantise(s)
        shadow[g.name] = s
        held[g.name] = h
        if not g.periodic and g.resolution <= 0 and not clipped[g.name]:
            dev[g.name] = 0.0  # held == shadow == requested: every |h - r| is 0.0
            continue
        d = np.abs(h - r)
        if g.periodic:
            d = np.minimum(d, g.upper - g.lower - d)
        dev[g.name] = float(d.max()) if d.size else 0.0
    return shadow, held, Projection(clipped, dev)


def lr_factor(sched: LRSchedule, step: int, total: int) -> float:
    if sched.warmup and step < sched.warmup:
        return (step + 1) / sched.warmup
    if sched.kind == "constant":
        return 1.0
    if sched.kind == "cosine":
        frac = step / max(1, total - 1)
        return sched.min_factor + (1 - sched.min_factor) * 0.5 * (1 + math.cos(math.pi * frac))
    if sched.kind == "step":
        return float(sched.gamma ** (step // sched.every))
    return float(sched.gamma**step)


class Optimizer:
    """SGD, heavy-ball momentum or Adam on a dict of parameter groups.

    ``step`` returns the requested new values ``theta - lr * direction``; frozen groups are left
    unchanged. State is a flat dict of arrays (checkpointed with every committed step).
    """

    def __init__(self, config: OptimizerConfig, groups: tuple[ParameterGroup, ...]) -> None:
        unknown = set(config.frozen) | set(config.lr_scale)
        unknown -= {g.name for g in groups}
        if unknown:
            raise ValueError(
                f"optimizer names unknown parameter groups {sorted(unknown)}; "
                f"this system has {[g.name for g in groups]}"
            )
        self.config = config
        self.groups = groups
        self.state: dict[str, FloatArray] = {}
        for g in groups:
            if config.kind == "momentum":
                self.state[f"velocity/{g.name}"] = np.zeros(g.shape)
            elif config.kind == "adam":
                self.state[f"m/{g.name}"] = np.zeros(g.shape)
                self.state[f"v/{g.name}"] = np.zeros(g.shape)
        if config.kind == "adam":
            self.state["t"] = np.zeros(())

    def step(self, params: Params, grad: Params, lr: float) -> Params:
        c = self.config
        out: Params = {}
        if c.kind == "adam":
            self.state["t"] = self.state["t"] + 1.0
            t = float(self.state["t"])
        for g in self.groups:
            p = params[g.name]
            if g.name in c.frozen:
                out[g.name] = p.copy()
                continue
            gr = grad[g.name]
            eta = lr * c.lr_scale.get(g.name, 1.0)
            if c.kind == "sgd":
                d = gr
            elif c.kind == "momentum":
                v = c.momentum * self.state[f"velocity/{g.name}"] + gr
                self.state[f"velocity/{g.name}"] = v
                d = v
            else:
                m = c.beta1 * self.state[f"m/{g.name}"] + (1 - c.beta1) * gr
                v = c.beta2 * self.state[f"v/{g.name}"] + (1 - c.beta2) * gr**2
                self.state[f"m/{g.name}"], self.state[f"v/{g.name}"] = m, v
                mh = m / (1 - c.beta1**t)
                vh = v / (1 - c.beta2**t)
                d = mh / (np.sqrt(vh) + c.eps)
            out[g.name] = p - eta * d
        return out

    def load_state(self, state: dict[str, FloatArray]) -> None:
        missing = set(self.state) - set(state)
        if missing:
            raise ValueError(f"checkpoint lacks optimiser state {sorted(missing)}")
        self.state = {k: np.array(state[k], dtype=float) for k in self.state}
