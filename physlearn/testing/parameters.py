"""Checks of the description (parameter groups, ports, class attributes) and of
``set_parameters`` (held values, bounds, resolution, refusals)."""

from __future__ import annotations

import numpy as np

from physlearn.system import Params, PhysicalSystem
from physlearn.testing.probes import (
    KINDS,
    NAME,
    Factory,
    KitOptions,
    assert_close,
    kit_rng,
)


def check_description(factory: Factory, opts: KitOptions) -> None:
    """Parameter groups, ports and class attributes are well formed."""
    with factory() as s:
        groups = s.parameter_groups
        assert groups, "no parameter groups"
        names = [g.name for g in groups]
        assert len(set(names)) == len(names), f"group names repeat: {names}"
        for g in groups:
            assert NAME.match(g.name), f"group name {g.name!r} is not [a-z_]+"
            assert all(isinstance(n, int) and n >= 1 for n in g.shape), f"{g.name}: shape {g.shape}"
            assert len(g.dims) == len(g.shape), f"{g.name}: dims {g.dims} vs shape {g.shape}"
            assert np.isfinite([g.lower, g.upper]).all() and g.lower < g.upper, (
                f"{g.name}: bounds [{g.lower}, {g.upper}] not finite and ordered"
            )
            assert np.isfinite(g.resolution) and g.resolution >= 0, f"{g.name}: resolution"
            assert g.resolution < g.upper - g.lower, f"{g.name}: resolution exceeds the range"
            for attr in ("unit", "energy_unit"):
                val = getattr(g, attr)
                assert isinstance(val, str) and val, f"{g.name}: {attr} {val!r} is not a unit"
        for label, port in (("inputs", s.inputs), ("outputs", s.outputs)):
            assert isinstance(port.size, int) and port.size >= (label == "outputs"), (
                f"{label}: size {port.size!r}"
            )
            assert isinstance(port.unit, str) and port.unit, f"{label}: unit {port.unit!r}"
            assert not port.labels or len(port.labels) == port.size, (
                f"{label}: {len(port.labels)} labels for {port.size} channels"
            )
        assert isinstance(s.max_batch, int) and s.max_batch >= 1, f"max_batch {s.max_batch!r}"
        assert s.supported_nudges and s.supported_nudges <= KINDS, (
            f"supported_nudges {sorted(s.supported_nudges)} not a non-empty subset of {KINDS}"
        )
        assert "target" not in s.supported_nudges or s.native_cost, (
            "a target nudge is supported but native_cost names no cost"
        )
        assert isinstance(s.energy_unit, str) and s.energy_unit, "energy_unit is not a unit"
        for name in s.carried_shapes(opts.batch):
            assert NAME.match(name) and name != "valid", f"carried array name {name!r}"


def _assert_held(s: PhysicalSystem, held: Params, request: Params, opts: KitOptions) -> None:
    """What is held lies in the bounds, on the grid, near the request; reading back agrees."""
    back = s.get_parameters()
    for g in s.parameter_groups:
        h = np.asarray(held[g.name])
        assert h.shape == g.shape, f"{g.name}: held shape {h.shape}, expected {g.shape}"
        assert np.all((h >= g.lower) & (h <= g.upper)), f"{g.name}: held values leave the bounds"
        assert_close(f"{g.name}: held values off the resolution grid", h, g.quantise(h), 1e-12)
        want = g.quantise(np.asarray(request[g.name]))
        tol = 1e-9 * g.resolution if g.resolution > 0 else opts.hold_rtol
        assert_close(f"{g.name}: held values vs the request on the grid", h, want, tol)
        assert np.array_equal(np.asarray(back[g.name]), h), (
            f"{g.name}: get_parameters() differs from what set_parameters() returned"
        )


def check_set_parameters(factory: Factory, opts: KitOptions) -> None:
    """Random in-bounds requests (and the bounds themselves) are held; bad ones are refused
    with ValueError and leave the held values unchanged."""
    rng = kit_rng(opts, 3)
    with factory() as s:
        groups = s.parameter_groups
        for case in ("uniform", "bounds"):
            req: Params = {}
            for g in groups:
                v = rng.uniform(g.lower, g.upper, g.shape)
                if case == "bounds":
                    v = np.where(rng.random(g.shape) < 0.5, g.lower, g.upper)
                req[g.name] = g.quantise(v) if case == "bounds" else v
            _assert_held(s, s.set_parameters(req), req, opts)
        before = s.get_parameters()
        copy = s.get_parameters()
        for v in copy.values():
            v[...] = np.nan
        assert all(np.array_equal(v, s.get_parameters()[k]) for k, v in before.items()), (
            "get_parameters() returns views: writing into them changes what is held"
        )
        for g in groups:
            width = g.upper - g.lower
            bad_values = {
                "above the upper bound": g.upper + 0.25 * width,
                "below the lower bound": g.lower - 0.25 * width,
                "NaN": np.nan,
            }
            for what, value in bad_values.items():
                bad = {k: v.copy() for k, v in before.items()}
                bad[g.name].reshape(-1)[rng.integers(g.size)] = value
                _refused(s, bad, f"{g.name} {what}", before)
            wrong = {k: v.copy() for k, v in before.items()}
            wrong[g.name] = np.zeros((*g.shape, 2))
            _refused(s, wrong, f"{g.name} of a wrong shape", before)
            _refused(
                s, {k: v for k, v in before.items() if k != g.name}, f"{g.name} missing", before
            )


def _refused(s: PhysicalSystem, params: Params, what: str, before: Params) -> None:
    try:
        s.set_parameters(params)
    except ValueError:
        pass
    else:
        raise AssertionError(f"set_parameters accepted {what} (the contract: ValueError)")
    after = s.get_parameters()
    for k, v in before.items():
        assert np.array_equal(after[k], v), f"refusing {what} changed the held {k!r}"
