"""Relaxation of the XY oscillator network to a stable fixed point of ``F = E + beta C``.

Everything here is physics on arrays, vectorised over a batch of ``B`` independent copies of
one network; :mod:`physlearn.simulators.xy.system` wraps it into a
:class:`~physlearn.system.PhysicalSystem`. ``F`` and its derivatives are
:class:`~physlearn.simulators.xy.field.XYField` (conventions there and in ``docs/physics.md``,
§XY oscillators), its Hessian factorisations :mod:`physlearn.simulators.xy.factor`, thermal
sampling :mod:`physlearn.simulators.xy.langevin`.

Relaxation (:func:`relax`): cold starts first run FIRE (inertial descent, O(edges) per step)
down to a residual of ``newton_switch``; then a damped Newton method. Levenberg-Marquardt shifts
per sample make the step matrix positive definite (the shift is raised until the factorisation
proves it, with a Gershgorin shift as a guaranteed last resort), and a backtracking Armijo line
search on ``F`` makes every accepted Newton step a descent step (up to the floating-point
resolution of ``F``). A copy is converged when its residual ``max_k |dF/dphi_k|`` over free
nodes is at most ``tol`` *and* its unshifted Hessian is positive definite, i.e. a stable fixed
point; saddles are left by a small random kick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physlearn.simulators.xy.field import BoolArray, FloatArray, IntArray, XYField

_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class RelaxSettings:
    """Tolerances of :func:`relax`.

    Attributes:
        tol: residual target, ``max_k |dF/dphi_k|`` over free nodes (energy/rad).
        max_iter: Newton iterations at most.
        max_backtracks: halvings of the step in one line search.
        armijo: sufficient-decrease constant of the line search.
        kick: standard deviation (rad) of the random kick that moves a copy off a saddle.
        newton_switch: residual (energy/rad) below which a copy leaves the FIRE phase for
            Newton; 0 skips FIRE (pure damped Newton).
        fire_max_steps: FIRE steps at most (per relaxation).
        fire_dt_max: largest FIRE time step in units of ``1/sqrt(L)``, ``L`` the Gershgorin
            bound on the Hessian (2 is the stability limit of the integrator at curvature L).
    """

    tol: float = 1e-8
    max_iter: int = 100
    max_backtracks: int = 40
    armijo: float = 1e-4
    kick: float = 1e-2
    newton_switch: float = 1e-3
    fire_max_steps: int = 20000
    fire_dt_max: float = 1.5


@dataclass
class RelaxResult:
    """Outcome of :func:`relax` per copy: ``phi`` ``(B, n)`` (not wrapped), ``energy`` F,
    ``residual`` max |dF/dphi| over free nodes, ``iterations``, ``stable`` (Hessian over free
    nodes positive definite), ``converged`` (residual <= tol and stable), ``kicks``."""

    phi: FloatArray
    energy: FloatArray
    residual: FloatArray
    iterations: IntArray
    stable: BoolArray
    converged: BoolArray
    kicks: IntArray


def _curvature_bound(field: XYField) -> float:
    """Upper bound on the largest Hessian eigenvalue of ``E`` (energy/rad^2), by Gershgorin:
    ``max_k 2 sum_{e at k} |W_e| + |h_k|``."""
    deg = np.abs(field.coupling) @ field.topo.abs_incidence if field.topo.n_edges else 0.0
    return float(np.max(2.0 * deg + np.abs(field.h))) + 1e-12


def _curvature_estimate(field: XYField, phi: FloatArray, iters: int = 12) -> float:
    """Largest |Hessian eigenvalue| over the copies at ``phi``, by power iteration with
    Hessian-vector products (a deterministic start vector; a lower estimate, refined by the
    caller's safety factor)."""
    fi = field.free_idx
    rows = np.arange(phi.shape[0], dtype=np.int64)
    v = np.broadcast_to(1.0 + 0.5 * np.cos(1.7 * np.arange(fi.size)), (phi.shape[0], fi.size))
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    lam = np.zeros(phi.shape[0])
    for _ in range(iters):
        hv = field.hess_vec(phi, rows, v)
        lam = np.abs(np.sum(v * hv, axis=1))
        v = hv / np.maximum(np.linalg.norm(hv, axis=1, keepdims=True), 1e-300)
    return float(lam.max())


def _fire(field: XYField, phi: FloatArray, settings: RelaxSettings) -> tuple[FloatArray, IntArray]:
    """FIRE (Bitzek et al., PRL 97, 170201, 2006) on the free nodes, per copy, until the
    residual is below ``settings.newton_switch``: inertial descent with velocity mixing
    towards the force and a restart (half step back, v = 0, dt halved) whenever ``F . v < 0``.
    Unit masses; ``dt_max = fire_dt_max/sqrt(L)`` with ``L`` a curvature scale (see below);
    instabilities show up as ``F . v < 0`` and reset the step. Returns the new phases and the
    FIRE steps per copy."""
    n_b = phi.shape[0]
    fi = field.free_idx
    steps = np.zeros(n_b, dtype=np.int64)
    if settings.newton_switch <= 0 or fi.size == 0 or settings.fire_max_steps <= 0:
        return phi, steps
    # Curvature scale: the power-iteration estimate at the start (x 1.5 for the way curvature
    # grows as phases align), never above the Gershgorin bound. The Gershgorin bound alone is
    # up to ~10x too large for dense random couplings, whose signs cancel.
    bound = _curvature_bound(field) + abs(field.nudging.beta)
    curv = min(bound, 1.5 * _curvature_estimate(field, phi) + 1e-12)
    dt_max = settings.fire_dt_max / np.sqrt(curv)
    alpha0, f_alpha, f_inc, f_dec, n_delay = 0.1, 0.99, 1.1, 0.5, 5
    dt = np.full(n_b, 0.25 * dt_max)
    alpha = np.full(n_b, alpha0)
    n_pos = np.zeros(n_b, dtype=np.int64)
    vel = np.zeros((n_b, fi.size))
    active = np.arange(n_b, dtype=np.int64)
    x = phi[:, fi].copy()
    for _ in range(settings.fire_max_steps):
        full = phi[active]
        full[:, fi] = x[active]
        force = -field.gradient(full, active)[:, fi]
        res = np.max(np.abs(force), axis=1)
        keep = res > settings.newton_switch
        if not np.all(keep):
            active, force = active[keep], force[keep]
            if active.size == 0:
                break
        steps[active] += 1
        v = vel[active]
        power = np.sum(force * v, axis=1)
        up = power > 0
        n_pos[active] = np.where(up, n_pos[active] + 1, 0)
        grow = up & (n_pos[active] > n_delay)
        dt[active] = np.where(grow, np.minimum(dt[active] * f_inc, dt_max), dt[active])
        alpha[active] = np.where(grow, alpha[active] * f_alpha, alpha[active])
        down = ~up
        if np.any(down):
            back = active[down]
            x[back] -= 0.5 * dt[back, None] * v[down]
            v[down] = 0.0
            dt[back] *= f_dec
            alpha[back] = alpha0
        d = dt[active, None]
        v += d * force
        fn = np.linalg.norm(force, axis=1, keepdims=True)
        vn = np.linalg.norm(v, axis=1, keepdims=True)
        a = alpha[active, None]
        v = (1.0 - a) * v + a * vn * force / np.maximum(fn, 1e-300)
        x[active] += d * v
        vel[active] = v
    out = phi.copy()
    out[:, fi] = x
    return out, steps


def _shifted_steps(
    field: XYField,
    p_act: FloatArray,
    active: IntArray,
    g: FloatArray,
    gersh_all: FloatArray,
    step: FloatArray,
    need: IntArray,
) -> None:
    """Fill ``step[need]`` (copies whose Hessian is indefinite away from a saddle) in place with
    Levenberg-Marquardt steps ``-(H + lam I)^{-1} g``: ``lam`` from ``1e-3`` of the Gershgorin
    shift, x10 per attempt, the full Gershgorin shift last, until the factorisation proves
    ``H + lam I`` positive definite; a scaled gradient step where even that fails."""
    lam = 1e-3 * gersh_all[need]
    for attempt in range(4):  # Levenberg-Marquardt shifts, proved positive definite
        if need.size == 0:
            break
        lam_try = gersh_all[need] if attempt == 3 else lam
        f2 = field.factor(p_act[need], active[need], lam_try)
        ok = f2.pd
        step[need[ok]] = -f2.solve(g[need], ok)[ok]
        need, lam = need[~ok], lam[~ok] * 10.0
    if need.size:  # round-off defeated even the Gershgorin shift: scaled gradient step
        step[need] = -g[need] / np.maximum(gersh_all[need], 1e-12)[:, None]


def _line_search(
    field: XYField,
    p_act: FloatArray,
    active: IntArray,
    g: FloatArray,
    step: FloatArray,
    res: FloatArray,
    saddle: BoolArray,
    settings: RelaxSettings,
    slack: float,
) -> FloatArray:
    """The new phases of the copies ``active`` (``(b, n)``): kicks (``saddle``) taken as they
    are, other steps by a backtracking Armijo line search on ``F``.

    Where the predicted decrease |g.p| is below the resolution of F (round-off, ``slack`` ~1e3
    eps |F|), F cannot tell a step apart; there the merit is the residual max|g| instead (a
    Newton step on a positive definite H shrinks it quadratically)."""
    fi = field.free_idx
    e0 = field.energy(p_act, active)
    slope = np.sum(g * step, axis=1)
    alpha = np.ones(active.size)
    new = p_act.copy()
    ks = np.flatnonzero(saddle)
    new[np.ix_(ks, fi)] += step[ks]  # kicks are taken as they are
    todo = np.flatnonzero(~saddle)
    flat = np.abs(slope) <= slack
    for _bt in range(settings.max_backtracks):
        if todo.size == 0:
            break
        trial = p_act[todo]
        trial[:, fi] += alpha[todo, None] * step[todo]
        et, gt = field.energy_gradient(trial, active[todo])
        bound = e0[todo] + settings.armijo * alpha[todo] * slope[todo]
        ok = np.isfinite(et) & (et <= bound)
        fl = flat[todo]
        if np.any(fl):
            shrink = np.max(np.abs(gt[:, fi]), axis=1) < res[todo]
            ok |= fl & np.isfinite(et) & (et <= e0[todo] + slack) & shrink
        new[todo[ok]] = trial[ok]
        todo = todo[~ok]
        alpha[todo] *= 0.5
    return new


def relax(
    field: XYField,
    phi0: FloatArray,
    settings: RelaxSettings,
    rng: np.random.Generator,
    fire: bool = True,
) -> RelaxResult:
    """Minimise ``F`` over the free nodes from ``phi0`` ``(B, n)`` (clamped nodes keep their
    values), to a stable fixed point with residual ``<= settings.tol``.

    Damped Newton: per copy, the Hessian shift ``lam`` (energy/rad^2) starts at 0 each
    iteration and is raised (x10 from ``1e-3`` of the Hessian scale, finally to the Gershgorin
    bound) until the factorisation proves ``H + lam I`` positive definite; then a backtracking
    Armijo line search along ``p = -(H + lam I)^{-1} g`` accepts only steps that lower ``F``;
    once the predicted decrease is below ``F``'s round-off (``1e3 eps sum|W| + |h|``), a step
    is accepted if it keeps ``F`` within that round-off and lowers the residual. Copies whose
    unshifted Hessian is indefinite while the residual is below ``10 tol`` sit near a saddle and
    get a random kick of ``settings.kick`` rad. No Python loop runs over edges, nor over copies
    except the dense back end's one-LAPACK-call-per-copy factorisation.

    With ``fire`` (cold starts) a FIRE phase (:func:`_fire`) first brings every copy to a
    residual below ``settings.newton_switch``; warm starts (nudged phases starting at the free
    equilibrium) go straight to Newton, whose descent steps cannot overshoot into another basin
    the way an inertial method can (a negative-beta ``xy_log`` nudge has a well at the
    antipode of the target).
    """
    phi = np.array(phi0, dtype=np.float64, copy=True)
    if fire:
        phi, iterations = _fire(field, phi, settings)
    else:
        iterations = np.zeros(phi.shape[0], dtype=np.int64)
    n_b = phi.shape[0]
    fi = field.free_idx
    residual = np.full(n_b, np.inf)
    stable = np.zeros(n_b, dtype=bool)
    newton_iter = np.zeros(n_b, dtype=np.int64)
    kicks = np.zeros(n_b, dtype=np.int64)
    active = np.arange(n_b, dtype=np.int64)
    slack = 1e3 * _EPS * field.scale
    while active.size:
        p_act = phi[active]
        fac = field.factor(p_act, active, np.zeros(active.size))
        g, pd0 = fac.grad, fac.pd
        res = np.max(np.abs(g), axis=1) if fi.size else np.zeros(active.size)
        residual[active] = res
        stable[active] = pd0
        keep = ~(pd0 & (res <= settings.tol)) & (newton_iter[active] < settings.max_iter)
        if not np.any(keep):
            break
        # -- step directions: Newton where H is PD, shifted Newton elsewhere ----------------
        newton = fac.solve(g, keep & pd0)
        gersh_all = np.zeros(active.size)
        if np.any(keep & ~pd0):
            gersh_all = fac.gershgorin()
        active, p_act, g, res, pd0 = active[keep], p_act[keep], g[keep], res[keep], pd0[keep]
        gersh_all, step = gersh_all[keep], -newton[keep]
        newton_iter[active] += 1
        saddle = ~pd0 & (res <= 10.0 * settings.tol)
        _shifted_steps(field, p_act, active, g, gersh_all, step, np.flatnonzero(~pd0 & ~saddle))
        if np.any(saddle):  # a random kick moves a copy off a saddle
            step[saddle] = rng.normal(0.0, settings.kick, size=(int(saddle.sum()), fi.size))
            kicks[active[saddle]] += 1
        phi[active] = _line_search(field, p_act, active, g, step, res, saddle, settings, slack)
    energy = field.energy(phi, np.arange(n_b, dtype=np.int64))
    converged = stable & (residual <= settings.tol)
    return RelaxResult(phi, energy, residual, iterations + newton_iter, stable, converged, kicks)
