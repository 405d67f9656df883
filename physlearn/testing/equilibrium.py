"""Checks of ``equilibrate``: record shapes, conjugates as derivatives of the energy,
``equilibrate_many`` against separate calls and batch-size invariance."""

from __future__ import annotations

import numpy as np

from physlearn.system import Equilibrium, FloatArray, Params, PhysicalSystem
from physlearn.testing.nudges import nudge_phases
from physlearn.testing.probes import (
    Factory,
    KitOptions,
    SkipCheck,
    compare_records,
    estimated,
    kit_inputs,
    kit_rng,
    relax,
)


def check_equilibrate_shapes(factory: Factory, opts: KitOptions) -> None:
    """A record holds outputs (batch, n_out), conjugates (batch, *shape) of every group and
    per-sample diagnostics; the inputs are not modified; a wrong input width is refused."""
    with factory() as s:
        x = kit_inputs(s, opts)
        x0 = x.copy()
        eq = relax(s, x, opts)
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
            relax(s, np.zeros((b, s.inputs.size + 1)), opts)
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
    rng = kit_rng(opts, 4)
    with factory() as s:
        x = kit_inputs(s, opts)
        base = s.get_parameters()
        probe = relax(s, x, opts)
        if probe.energy is None:
            raise SkipCheck("the system reports no energy (Equilibrium.energy is None)")
        why = estimated(s, probe)
        if why:
            raise SkipCheck(f"{why}: the energy is not differentiable sample by sample")
        for g in s.parameter_groups:
            h = opts.fd_step * (g.upper - g.lower)
            if g.resolution > 0:
                h = max(1, round(h / g.resolution)) * g.resolution
            for e in rng.choice(g.size, min(opts.fd_elements, g.size), replace=False):
                _fd_element(s, x, base, g.name, int(e), h, opts)


def _fd_element(
    s: PhysicalSystem, x: FloatArray, base: Params, name: str, e: int, h: float, opts: KitOptions
) -> None:
    g = s.group(name)
    params = {k: v.copy() for k, v in base.items()}
    flat = params[name].reshape(-1)
    flat[e] = float(g.quantise(np.clip(flat[e], g.lower + 2 * h, g.upper - 2 * h)))
    held = s.set_parameters(params)
    at = relax(s, x, opts)
    conj = np.asarray(at.conjugates[name]).reshape(x.shape[0], -1)[:, e]
    e_scale = float(np.max(np.abs(np.asarray(at.energy, dtype=np.float64))))

    def slope(step: float) -> FloatArray:
        energies, where = [], []
        for sign in (1.0, -1.0):
            moved = {k: v.copy() for k, v in held.items()}
            moved[name].reshape(-1)[e] += sign * step
            now = s.set_parameters(moved)
            energies.append(np.asarray(relax(s, x, opts).energy))
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


def check_equilibrate_many(factory: Factory, opts: KitOptions) -> None:
    """``equilibrate_many`` gives what separate ``equilibrate`` calls give, in order."""
    with factory() as s:
        x = kit_inputs(s, opts)
        free = relax(s, x, opts)
        phases = nudge_phases(s, np.asarray(free.outputs), opts)
        many = s.equilibrate_many(x, phases, free.state, kit_rng(opts, 5))
        assert len(many) == len(phases), f"{len(many)} records for {len(phases)} phases"
        rng = kit_rng(opts, 5)
        for k, (n, got) in enumerate(zip(phases, many, strict=True)):
            want = s.equilibrate(x, n, free.state, rng)
            compare_records(f"phase {k} ({n.kind if n else 'free'})", got, want, opts.rtol)


def check_batch_invariance(factory: Factory, opts: KitOptions) -> None:
    """A batch gives, sample by sample, what each sample gives alone (to ``rtol``)."""
    with factory() as s:
        x = kit_inputs(s, opts)
        batch = relax(s, x, opts)
        why = estimated(s, batch)
        if why:
            raise SkipCheck(f"{why}: samples differ by their noise")
        for i in range(x.shape[0]):
            alone = relax(s, x[i : i + 1], opts)
            row = Equilibrium(
                outputs=batch.outputs[i : i + 1],
                conjugates={k: v[i : i + 1] for k, v in batch.conjugates.items()},
                energy=None if batch.energy is None else batch.energy[i : i + 1],
            )
            compare_records(f"sample {i} of the batch vs alone", row, alone, opts.rtol)
