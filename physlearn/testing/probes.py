"""What the checks share: options, how a system is probed (inputs, seeded equilibrate
calls) and how results are compared."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from physlearn.system import Equilibrium, FloatArray, Nudge, Params, PhysicalSystem

Factory = Callable[[], PhysicalSystem]
NAME = re.compile(r"^[a-z_]+$")
KINDS = frozenset({"target", "error", "clamp"})


class SkipCheck(Exception):
    """Raised by a check that does not apply to this system; the message says why."""


@dataclass(frozen=True)
class KitOptions:
    """How the checks probe a system (see :mod:`physlearn.testing`)."""

    seed: int = 0
    batch: int = 3
    input_range: tuple[float, float] = (-1.0, 1.0)
    beta: float = 0.05
    target_offset: float = 0.5
    rtol: float = 1e-7
    hold_rtol: float = 1e-12
    fd_step: float = 1e-3
    fd_elements: int = 2
    skip: tuple[str, ...] = ()


def kit_rng(opts: KitOptions, salt: int = 0) -> np.random.Generator:
    """The generator of probe ``salt``: the same for every call with the same options."""
    return np.random.default_rng([opts.seed, salt])


def kit_inputs(s: PhysicalSystem, opts: KitOptions, batch: int | None = None) -> FloatArray:
    """Random inputs ``(batch, n_in)`` in ``opts.input_range``, the same every call."""
    lo, hi = opts.input_range
    return kit_rng(opts, 1).uniform(lo, hi, (batch or opts.batch, s.inputs.size))


def relax(
    s: PhysicalSystem, x: FloatArray, opts: KitOptions, nudge: Nudge | None = None, warm: Any = None
) -> Equilibrium:
    """One equilibrate call with a generator seeded the same way every time."""
    return s.equilibrate(x, nudge, warm, kit_rng(opts, 2))


def estimated(s: PhysicalSystem, eq: Equilibrium) -> str | None:
    """Why results of this system are estimates (None: exact, repeatable)."""
    if eq.shots > 0:
        return f"outputs are {eq.shots}-shot estimates"
    if s.thermal or eq.samples is not None:
        return "outputs are thermal averages"
    return None


def assert_close(what: str, got: Any, want: Any, rtol: float) -> None:
    """``|got - want| <= rtol * max|want|`` elementwise (exact equality when ``rtol == 0``)."""
    a, b = np.asarray(got), np.asarray(want)
    assert a.shape == b.shape, f"{what}: shape {a.shape}, expected {b.shape}"
    if rtol == 0:
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{what}: not bit-identical"
        return
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = np.abs(a - b)
    tol = rtol * scale
    if not np.all(err <= tol):
        worst = float(np.max(err))
        raise AssertionError(f"{what}: differs by up to {worst:.3g} (allowed {tol:.3g})")


def compare_records(what: str, a: Equilibrium, b: Equilibrium, rtol: float) -> None:
    """Outputs, conjugates, energy and residual of two records agree (``rtol``, 0 = exact)."""
    assert_close(f"{what}: outputs", a.outputs, b.outputs, rtol)
    assert set(a.conjugates) == set(b.conjugates), f"{what}: conjugate groups differ"
    for name in b.conjugates:
        assert_close(f"{what}: conjugate {name!r}", a.conjugates[name], b.conjugates[name], rtol)
    if rtol > 0:  # equal to a tolerance: what was measured
        if a.energy is not None and b.energy is not None:
            assert_close(f"{what}: energy", a.energy, b.energy, rtol)
        return
    for attr in ("energy", "residual", "iterations", "converged"):  # bit-identical: everything
        va, vb = getattr(a, attr), getattr(b, attr)
        assert (va is None) == (vb is None), f"{what}: {attr} present in only one record"
        if vb is not None:
            assert_close(f"{what}: {attr}", va, vb, 0.0)


def moved_parameters(
    s: PhysicalSystem, params: Params, frac: float, rng: np.random.Generator
) -> Params:
    """Parameters moved by about ``frac`` of each group's range, inside the bounds, on the grid."""
    out: Params = {}
    for g in s.parameter_groups:
        step = frac * (g.upper - g.lower) * rng.standard_normal(g.shape)
        out[g.name] = g.quantise(np.clip(params[g.name] + step, g.lower, g.upper))
    return out


def delta(s: PhysicalSystem, a: FloatArray, b: FloatArray) -> FloatArray:
    """``a - b``, for phase outputs (unit ``rad``) the shortest way round the circle."""
    d = np.asarray(a - b, dtype=np.float64)
    return np.angle(np.exp(1j * d)) if s.outputs.unit == "rad" else d


def make_nudge(kind: str, beta: float, values: FloatArray) -> Nudge:
    """A nudge of ``kind`` with ``values``."""
    return Nudge(beta=beta, **{kind: values})
