"""A conformance kit for :class:`~physlearn.system.PhysicalSystem`: the contract as checks.

Whoever writes a machine (physlearn's own simulators, a bench behind qcodes, a third party's
plugin) tests it against the rules of :mod:`physlearn.system` with one call, as scikit-learn's
``check_estimator`` does for estimators. Give :func:`check_system` a *factory*, a zero-argument
callable returning a fresh, unopened system, built the same way every time (same seed): the kit
builds independent copies from it (a fresh copy plays the resumed run of the carried-state check).
Each check opens its copy as a context manager, so an instrument bench is connected and made
safe as in a run. A failed check raises :class:`AssertionError` naming the check and what was
wrong; a check that does not apply (e.g. finite differences of an energy the system does not
report) is skipped and says why. In a pytest suite, :func:`iter_checks` yields ``(name, check)``
to parametrise over, one test per check::

    from physlearn.testing import check_system

    def test_my_machine_conforms():
        report = check_system(lambda: MyMachine(n=4, seed=0), beta=0.05)
        assert report["set_parameters"] == "passed"

Options (keywords of both functions) size the probes to the machine: ``input_range`` (input
unit), ``beta`` (energy unit per output unit, a nudge clearly above the solver's noise),
``target_offset`` (output unit), ``batch``, ``seed``, ``rtol`` (closeness of results the contract
calls equal, relative to each array's largest magnitude), ``hold_rtol`` (how far a continuous
group may hold a value from the request, e.g. a potentiometer's tap grid) and ``skip`` (names).
The checks never need pytest; only numpy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from physlearn.system import Equilibrium, FloatArray, Nudge, Params, PhysicalSystem

Factory = Callable[[], PhysicalSystem]
_NAME = re.compile(r"^[a-z_]+$")
_KINDS = frozenset({"target", "error", "clamp"})


class SkipCheck(Exception):
    """Raised by a check that does not apply to this system; the message says why."""


@dataclass(frozen=True)
class KitOptions:
    """How the checks probe a system (see the module docstring)."""

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


def _rng(opts: KitOptions, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([opts.seed, salt])


def _inputs(s: PhysicalSystem, opts: KitOptions, batch: int | None = None) -> FloatArray:
    lo, hi = opts.input_range
    return _rng(opts, 1).uniform(lo, hi, (batch or opts.batch, s.inputs.size))


def _eq(s: PhysicalSystem, x: FloatArray, opts: KitOptions, nudge: Nudge | None = None,
        warm: Any = None) -> Equilibrium:  # fmt: skip
    """One equilibrate call with a generator seeded the same way every time."""
    return s.equilibrate(x, nudge, warm, _rng(opts, 2))


def _deterministic(s: PhysicalSystem, eq: Equilibrium) -> str | None:
    """Why results of this system are estimates (None: exact, repeatable)."""
    if eq.shots > 0:
        return f"outputs are {eq.shots}-shot estimates"
    if s.thermal or eq.samples is not None:
        return "outputs are thermal averages"
    return None


def _assert_close(what: str, got: Any, want: Any, rtol: float) -> None:
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


def _compare_records(what: str, a: Equilibrium, b: Equilibrium, rtol: float) -> None:
    """Outputs, conjugates, energy and residual of two records agree (``rtol``, 0 = exact)."""
    _assert_close(f"{what}: outputs", a.outputs, b.outputs, rtol)
    assert set(a.conjugates) == set(b.conjugates), f"{what}: conjugate groups differ"
    for name in b.conjugates:
        _assert_close(f"{what}: conjugate {name!r}", a.conjugates[name], b.conjugates[name], rtol)
    if rtol > 0:  # equal to a tolerance: what was measured
        if a.energy is not None and b.energy is not None:
            _assert_close(f"{what}: energy", a.energy, b.energy, rtol)
        return
    for attr in ("energy", "residual", "iterations", "converged"):  # bit-identical: everything
        va, vb = getattr(a, attr), getattr(b, attr)
        assert (va is None) == (vb is None), f"{what}: {attr} present in only one record"
        if vb is not None:
            _assert_close(f"{what}: {attr}", va, vb, 0.0)


def _move(s: PhysicalSystem, params: Params, frac: float, rng: np.random.Generator) -> Params:
    """Parameters moved by about ``frac`` of each group's range, inside the bounds, on the grid."""
    out: Params = {}
    for g in s.parameter_groups:
        step = frac * (g.upper - g.lower) * rng.standard_normal(g.shape)
        out[g.name] = g.quantise(np.clip(params[g.name] + step, g.lower, g.upper))
    return out


# -- the checks -----------------------------------------------------------------------------
def check_description(factory: Factory, opts: KitOptions) -> None:
    """Parameter groups, ports and class attributes are well formed."""
    with factory() as s:
        groups = s.parameter_groups
        assert groups, "no parameter groups"
        names = [g.name for g in groups]
        assert len(set(names)) == len(names), f"group names repeat: {names}"
        for g in groups:
            assert _NAME.match(g.name), f"group name {g.name!r} is not [a-z_]+"
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
        assert s.supported_nudges and s.supported_nudges <= _KINDS, (
            f"supported_nudges {sorted(s.supported_nudges)} not a non-empty subset of {_KINDS}"
        )
        assert "target" not in s.supported_nudges or s.native_cost, (
            "a target nudge is supported but native_cost names no cost"
        )
        assert isinstance(s.energy_unit, str) and s.energy_unit, "energy_unit is not a unit"
        for name in s.carried_shapes(opts.batch):
            assert _NAME.match(name) and name != "valid", f"carried array name {name!r}"


def _assert_held(s: PhysicalSystem, held: Params, request: Params, opts: KitOptions) -> None:
    """What is held lies in the bounds, on the grid, near the request; reading back agrees."""
    back = s.get_parameters()
    for g in s.parameter_groups:
        h = np.asarray(held[g.name])
        assert h.shape == g.shape, f"{g.name}: held shape {h.shape}, expected {g.shape}"
        assert np.all((h >= g.lower) & (h <= g.upper)), f"{g.name}: held values leave the bounds"
        _assert_close(f"{g.name}: held values off the resolution grid", h, g.quantise(h), 1e-12)
        want = g.quantise(np.asarray(request[g.name]))
        tol = 1e-9 * g.resolution if g.resolution > 0 else opts.hold_rtol
        _assert_close(f"{g.name}: held values vs the request on the grid", h, want, tol)
        assert np.array_equal(np.asarray(back[g.name]), h), (
            f"{g.name}: get_parameters() differs from what set_parameters() returned"
        )


def check_set_parameters(factory: Factory, opts: KitOptions) -> None:
    """Random in-bounds requests (and the bounds themselves) are held; bad ones are refused
    with ValueError and leave the held values unchanged."""
    rng = _rng(opts, 3)
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
            _refused(s, {k: v for k, v in before.items() if k != g.name}, f"{g.name} missing",
                     before)  # fmt: skip


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


def check_equilibrate_shapes(factory: Factory, opts: KitOptions) -> None:
    """A record holds outputs (batch, n_out), conjugates (batch, *shape) of every group and
    per-sample diagnostics; the inputs are not modified; a wrong input width is refused."""
    with factory() as s:
        x = _inputs(s, opts)
        x0 = x.copy()
        eq = _eq(s, x, opts)
        assert np.array_equal(x, x0), "equilibrate modified its inputs"
        b, n_out = opts.batch, s.outputs.size
        out = np.asarray(eq.outputs)
        assert out.shape == (b, n_out), f"outputs shape {out.shape}, expected {(b, n_out)}"
        assert np.isrealobj(out) and np.isfinite(out).all(), "outputs not real and finite"
        assert set(eq.conjugates) == {g.name for g in s.parameter_groups}, (
            f"conjugates for {sorted(eq.conjugates)}, groups {[g.name for g in s.parameter_groups]}"
        )
        for g in s.parameter_groups:
            c = np.asarray(eq.conjugates[g.name])
            assert c.shape == (b, *g.shape), f"conjugate {g.name!r} shape {c.shape}"
            assert np.isfinite(c).all(), f"conjugate {g.name!r} not finite"
        for attr in ("residual", "iterations", "energy", "converged"):
            v = getattr(eq, attr)
            assert v is None or np.shape(v) == (b,), f"{attr} shape {np.shape(v)}, expected ({b},)"
        for name, v in eq.observables.items():
            assert np.shape(v)[:1] == (b,), f"observable {name!r} shape {np.shape(v)}"
        assert eq.shots >= 0 and eq.settle_time >= 0, "negative shots or settle_time"
        try:
            _eq(s, np.zeros((b, s.inputs.size + 1)), opts)
        except ValueError:
            pass
        else:
            raise AssertionError("equilibrate accepted inputs one channel too wide")


def check_energy_gradient(factory: Factory, opts: KitOptions) -> None:
    """Conjugates are dE/dtheta: by the envelope theorem the derivative of the free
    equilibrium's energy ``Equilibrium.energy`` (where the system reports it).

    Central differences D(h) on a few elements of every group, with the held values as the
    abscissae. Their truncation error is O(h^2), estimated by Richardson from D(2h) - D(h)
    (D(h) errs by about a third of it); rounding adds about ``4 eps |E| / h`` with eps the
    energy's relative accuracy (1e-9 covers solvers converged to 1e-10). The tolerance is the
    sum of both and ``1e-6`` of the conjugate's scale: a conjugate that is not dE/dtheta (a wrong
    factor or sign) misses it by orders of magnitude."""
    rng = _rng(opts, 4)
    with factory() as s:
        x = _inputs(s, opts)
        base = s.get_parameters()
        probe = _eq(s, x, opts)
        if probe.energy is None:
            raise SkipCheck("the system reports no energy (Equilibrium.energy is None)")
        why = _deterministic(s, probe)
        if why:
            raise SkipCheck(f"{why}: the energy is not differentiable sample by sample")
        for g in s.parameter_groups:
            h = opts.fd_step * (g.upper - g.lower)
            if g.resolution > 0:
                h = max(1, round(h / g.resolution)) * g.resolution
            for e in rng.choice(g.size, min(opts.fd_elements, g.size), replace=False):
                _fd_element(s, x, base, g.name, int(e), h, opts)


def _fd_element(s: PhysicalSystem, x: FloatArray, base: Params, name: str, e: int, h: float,
                opts: KitOptions) -> None:  # fmt: skip
    g = s.group(name)
    params = {k: v.copy() for k, v in base.items()}
    flat = params[name].reshape(-1)
    flat[e] = float(g.quantise(np.clip(flat[e], g.lower + 2 * h, g.upper - 2 * h)))
    held = s.set_parameters(params)
    at = _eq(s, x, opts)
    conj = np.asarray(at.conjugates[name]).reshape(x.shape[0], -1)[:, e]
    e_scale = float(np.max(np.abs(np.asarray(at.energy, dtype=np.float64))))

    def slope(step: float) -> FloatArray:
        energies, where = [], []
        for sign in (1.0, -1.0):
            moved = {k: v.copy() for k, v in held.items()}
            moved[name].reshape(-1)[e] += sign * step
            now = s.set_parameters(moved)
            energies.append(np.asarray(_eq(s, x, opts).energy))
            where.append(float(np.asarray(now[name]).reshape(-1)[e]))
        return (energies[0] - energies[1]) / (where[0] - where[1])

    d1, d2 = slope(h), slope(2 * h)
    tol = np.abs(d2 - d1) + 4e-9 * e_scale / h + 1e-6 * float(np.max(np.abs(conj)))
    err = np.abs(d1 - conj)
    assert np.all(err <= tol), (
        f"conjugate {name!r}[{e}] = {conj} but central differences of the energy give {d1} "
        f"(tolerance {tol})"
    )
    s.set_parameters(base)


def _delta(s: PhysicalSystem, a: FloatArray, b: FloatArray) -> FloatArray:
    """``a - b``, for phase outputs (unit ``rad``) the shortest way round the circle."""
    d = np.asarray(a - b, dtype=np.float64)
    return np.angle(np.exp(1j * d)) if s.outputs.unit == "rad" else d


def _nudge(kind: str, beta: float, values: FloatArray) -> Nudge:
    return Nudge(beta=beta, **{kind: values})


def check_nudges(factory: Factory, opts: KitOptions) -> None:
    """Every declared nudge kind is realised with the sign convention of the contract: an error
    nudge ``beta eps_k O_k`` lowers O_k for beta > 0 and raises it for beta < 0; a target nudge
    lowers the native cost to its target; a clamp holds the outputs at the given values.

    (The nudged state minimises F = E + beta C while the free one minimises E, so
    beta C(nudged) <= beta C(free): the direction is a theorem, not a tolerance.)"""
    with factory() as s:
        x = _inputs(s, opts)
        free = _eq(s, x, opts)
        exact = _deterministic(s, free) is None
        for kind in sorted(s.supported_nudges):
            {"error": _error_nudge, "target": _target_nudge, "clamp": _clamp_nudge}[kind](
                s, x, free, exact, opts
            )


def _error_nudge(s: PhysicalSystem, x: FloatArray, free: Equilibrium, exact: bool,
                 opts: KitOptions) -> None:  # fmt: skip
    y = np.asarray(free.outputs)
    for k in range(min(3, y.shape[1])):
        eps = np.zeros_like(y)
        eps[:, k] = 1.0
        for sign in (1.0, -1.0):
            got = _eq(s, x, opts, _nudge("error", sign * opts.beta, eps), free.state)
            moved = sign * _delta(s, np.asarray(got.outputs)[:, k], y[:, k])
            assert not exact or np.all(moved < 0), (
                f"error nudge beta={sign * opts.beta:g} on output {k} moved it by "
                f"{moved * sign} (expected sign {-sign:+g})"
            )


def _offsets(y: FloatArray, opts: KitOptions) -> FloatArray:
    """Targets or clamp values: the free outputs moved by +-target_offset, alternating."""
    return y + opts.target_offset * (-1.0) ** np.arange(y.shape[1])


def _target_nudge(s: PhysicalSystem, x: FloatArray, free: Equilibrium, exact: bool,
                  opts: KitOptions) -> None:  # fmt: skip
    y = np.asarray(free.outputs)
    t = _offsets(y, opts)
    got = _eq(s, x, opts, _nudge("target", opts.beta, t), free.state)
    before, after = s.cost(y, t), s.cost(np.asarray(got.outputs), t)
    assert not exact or np.all(after < before), (
        f"target nudge beta={opts.beta:g}: native cost {before} -> {after}, not lower"
    )


def _clamp_nudge(s: PhysicalSystem, x: FloatArray, free: Equilibrium, exact: bool,
                 opts: KitOptions) -> None:  # fmt: skip
    c = _offsets(np.asarray(free.outputs), opts)
    held = np.asarray(_eq(s, x, opts, _nudge("clamp", opts.beta, c), free.state).outputs)
    _assert_close("clamp nudge: outputs vs clamp values", c + _delta(s, held, c), c, 1e-6)


def _phases(s: PhysicalSystem, y: FloatArray, opts: KitOptions) -> list[Nudge | None]:
    """A free phase and one nudge of every declared kind."""
    out: list[Nudge | None] = [None]
    eps = np.zeros_like(y)
    eps[:, 0] = 1.0
    for kind in sorted(s.supported_nudges):
        vals = eps if kind == "error" else y + opts.target_offset
        out.append(_nudge(kind, opts.beta, vals))
    return out


def check_equilibrate_many(factory: Factory, opts: KitOptions) -> None:
    """``equilibrate_many`` gives what separate ``equilibrate`` calls give, in order."""
    with factory() as s:
        x = _inputs(s, opts)
        free = _eq(s, x, opts)
        phases = _phases(s, np.asarray(free.outputs), opts)
        many = s.equilibrate_many(x, phases, free.state, _rng(opts, 5))
        assert len(many) == len(phases), f"{len(many)} records for {len(phases)} phases"
        rng = _rng(opts, 5)
        for k, (n, got) in enumerate(zip(phases, many, strict=True)):
            want = s.equilibrate(x, n, free.state, rng)
            _compare_records(f"phase {k} ({n.kind if n else 'free'})", got, want, opts.rtol)


def check_carried_state(factory: Factory, opts: KitOptions) -> None:
    """``export_state`` gives the declared arrays, and ``import_state(export_state(s))`` gives
    bit-identical records in the same system as in a fresh one from the factory (a resumed run),
    after the parameters moved by one update as in training."""
    with factory() as a:
        x = _inputs(a, opts)
        free = _eq(a, x, opts)
        moved = a.set_parameters(_move(a, a.get_parameters(), 0.01, _rng(opts, 6)))
        arrays = a.export_state(free.state)
        shapes = a.carried_shapes(opts.batch)
        if arrays is not None:
            assert set(arrays) == set(shapes), (
                f"export_state gave {sorted(arrays)}, carried_shapes declares {sorted(shapes)}"
            )
            for k, v in arrays.items():
                assert np.asarray(v).shape == shapes[k], f"carried {k!r} shape {np.shape(v)}"
                assert np.asarray(v).dtype == np.float64, f"carried {k!r} is not float64"
        stored = None if arrays is None else {k: np.array(v) for k, v in arrays.items()}
        warm = None if arrays is None else a.import_state(arrays)
        here = _eq(a, x, opts, warm=warm)
    with factory() as b:
        b.set_parameters(moved)
        warm_b = None if stored is None else b.import_state(stored)
        resumed = _eq(b, x, opts, warm=warm_b)
    _compare_records("same system vs a fresh one after import_state", resumed, here, 0.0)


class _Failed(Exception):
    """The error a lifecycle check raises inside a ``with`` block."""


def check_lifecycle(factory: Factory, opts: KitOptions) -> None:
    """Leaving the ``with`` block -- normally, by an exception of the caller, or by an error of
    the system itself -- calls ``safe_state`` and lets the exception through; ``safe_state`` and
    ``close`` may be called again on a closed system."""
    for how in ("normal", "exception", "system error"):
        s = factory()
        calls: list[int] = []
        original = s.safe_state

        def counted(original: Callable[[], None] = original, calls: list[int] = calls) -> None:
            calls.append(1)
            original()

        setattr(s, "safe_state", counted)  # noqa: B010 - the instance's own hook, observed
        raised: BaseException | None = None
        try:
            with s:
                x = _inputs(s, opts)
                _eq(s, x, opts)
                if how == "exception":
                    raise _Failed("raised by the kit inside the with block")
                if how == "system error":
                    _eq(s, np.full_like(x, np.nan), opts)
        except Exception as exc:  # noqa: BLE001 - whatever left the block is inspected
            raised = exc
        if how == "exception":
            assert isinstance(raised, _Failed), f"the block's exception became {raised!r}"
        elif how == "system error":
            assert isinstance(raised, ValueError), f"NaN inputs raised {raised!r}, not ValueError"
        else:
            assert raised is None, f"a normal block raised {raised!r}"
        assert calls, f"leaving the with block ({how}) did not call safe_state"
        s.safe_state()
        s.close()


def check_batch_invariance(factory: Factory, opts: KitOptions) -> None:
    """A batch gives, sample by sample, what each sample gives alone (to ``rtol``)."""
    with factory() as s:
        x = _inputs(s, opts)
        batch = _eq(s, x, opts)
        why = _deterministic(s, batch)
        if why:
            raise SkipCheck(f"{why}: samples differ by their noise")
        for i in range(x.shape[0]):
            alone = _eq(s, x[i : i + 1], opts)
            row = Equilibrium(
                outputs=batch.outputs[i : i + 1],
                conjugates={k: v[i : i + 1] for k, v in batch.conjugates.items()},
                energy=None if batch.energy is None else batch.energy[i : i + 1],
            )
            _compare_records(f"sample {i} of the batch vs alone", row, alone, opts.rtol)


CHECKS: Mapping[str, Callable[[Factory, KitOptions], None]] = {
    "description": check_description,
    "set_parameters": check_set_parameters,
    "equilibrate_shapes": check_equilibrate_shapes,
    "energy_gradient": check_energy_gradient,
    "nudges": check_nudges,
    "equilibrate_many": check_equilibrate_many,
    "carried_state": check_carried_state,
    "lifecycle": check_lifecycle,
    "batch_invariance": check_batch_invariance,
}
"""Every check by name, in the order :func:`check_system` runs them."""


def _options(kwargs: Mapping[str, Any]) -> KitOptions:
    known = {f.name for f in fields(KitOptions)}
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; known: {sorted(known)}")
    opts = KitOptions(**kwargs)
    bad = set(opts.skip) - set(CHECKS)
    if bad:
        raise ValueError(f"skip names unknown checks {sorted(bad)}; checks: {list(CHECKS)}")
    return opts


def _named(name: str, fn: Callable[[Factory, KitOptions], None], factory: Factory,
           opts: KitOptions) -> Callable[[], None]:  # fmt: skip
    """The check as a zero-argument callable whose AssertionError names the check; an
    unexpected exception of the system is a failure of the check too."""

    def run() -> None:
        try:
            fn(factory, opts)
        except SkipCheck:
            raise
        except AssertionError as exc:
            raise AssertionError(f"check {name!r} failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - reported as this check's failure
            raise AssertionError(f"check {name!r} failed: {type(exc).__name__}: {exc}") from exc

    run.__name__ = f"check_{name}"
    return run


def iter_checks(factory: Factory, **options: Any) -> Iterator[tuple[str, Callable[[], None]]]:
    """``(name, check)`` for every check not in ``skip``; ``check()`` raises AssertionError
    naming the check when the system breaks the contract, :class:`SkipCheck` when the check does
    not apply."""
    opts = _options(options)
    for name, fn in CHECKS.items():
        if name not in opts.skip:
            yield name, _named(name, fn, factory, opts)


def check_system(factory: Factory, **options: Any) -> dict[str, str]:
    """Run every check; the first failure raises AssertionError naming the check and what was
    wrong. Returns ``{name: "passed" | "skipped: <why>"}`` (skipped by ``skip`` or because the
    check does not apply)."""
    opts = _options(options)
    report = {name: "skipped: asked" for name in opts.skip}
    for name, check in iter_checks(factory, **options):
        try:
            check()
        except SkipCheck as why:
            report[name] = f"skipped: {why}"
        else:
            report[name] = "passed"
    return report
