"""The nudge check: every declared kind is realised with the contract's sign convention."""

from __future__ import annotations

import numpy as np

from physlearn.system import Equilibrium, FloatArray, Nudge, PhysicalSystem
from physlearn.testing.probes import (
    Factory,
    KitOptions,
    assert_close,
    delta,
    estimated,
    kit_inputs,
    make_nudge,
    relax,
)


def check_nudges(factory: Factory, opts: KitOptions) -> None:
    """Every declared nudge kind is realised with the sign convention of the contract: an error
    nudge ``beta eps_k O_k`` lowers O_k for beta > 0 and raises it for beta < 0; a target nudge
    lowers the native cost to its target; a clamp holds the outputs at the given values.

    (The nudged state minimises F = E + beta C while the free one minimises E, so
    beta C(nudged) <= beta C(free): the direction is a theorem, not a tolerance.)"""
    with factory() as s:
        x = kit_inputs(s, opts)
        free = relax(s, x, opts)
        exact = estimated(s, free) is None
        for kind in sorted(s.supported_nudges):
            {"error": _error_nudge, "target": _target_nudge, "clamp": _clamp_nudge}[kind](
                s, x, free, exact, opts
            )


def _error_nudge(
    s: PhysicalSystem, x: FloatArray, free: Equilibrium, exact: bool, opts: KitOptions
) -> None:
    y = np.asarray(free.outputs)
    for k in range(min(3, y.shape[1])):
        eps = np.zeros_like(y)
        eps[:, k] = 1.0
        for sign in (1.0, -1.0):
            got = relax(s, x, opts, make_nudge("error", sign * opts.beta, eps), free.state)
            moved = sign * delta(s, np.asarray(got.outputs)[:, k], y[:, k])
            assert not exact or np.all(moved < 0), (
                f"error nudge beta={sign * opts.beta:g} on output {k} moved it by "
                f"{moved * sign} (expected sign {-sign:+g})"
            )


def _offsets(y: FloatArray, opts: KitOptions) -> FloatArray:
    """Targets or clamp values: the free outputs moved by +-target_offset, alternating."""
    return y + opts.target_offset * (-1.0) ** np.arange(y.shape[1])


def _target_nudge(
    s: PhysicalSystem, x: FloatArray, free: Equilibrium, exact: bool, opts: KitOptions
) -> None:
    y = np.asarray(free.outputs)
    t = _offsets(y, opts)
    got = relax(s, x, opts, make_nudge("target", opts.beta, t), free.state)
    before, after = s.cost(y, t), s.cost(np.asarray(got.outputs), t)
    assert not exact or np.all(after < before), (
        f"target nudge beta={opts.beta:g}: native cost {before} -> {after}, not lower"
    )


def _clamp_nudge(
    s: PhysicalSystem, x: FloatArray, free: Equilibrium, exact: bool, opts: KitOptions
) -> None:
    c = _offsets(np.asarray(free.outputs), opts)
    held = np.asarray(relax(s, x, opts, make_nudge("clamp", opts.beta, c), free.state).outputs)
    assert_close("clamp nudge: outputs vs clamp values", c + delta(s, held, c), c, 1e-6)


def nudge_phases(s: PhysicalSystem, y: FloatArray, opts: KitOptions) -> list[Nudge | None]:
    """A free phase and one nudge of every declared kind."""
    out: list[Nudge | None] = [None]
    eps = np.zeros_like(y)
    eps[:, 0] = 1.0
    for kind in sorted(s.supported_nudges):
        vals = eps if kind == "error" else y + opts.target_offset
        out.append(make_nudge(kind, opts.beta, vals))
    return out
