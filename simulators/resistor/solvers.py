"""The non-linear solvers of a resistor network with diodes: damped Newton with an exact line
search (Shockley diodes, or none) and the primal-dual active-set method (ideal diodes).

Each phase is a :class:`Problem` on the variables (ports for the dense backend, every free node
for the sparse one): ``min_x 1/2 x^T Q x - h^T x + sum_d Phi(C^T x + c)`` with clamped variables
held fixed. The network and its energy are described in
:mod:`physlearn.simulators.resistor.nonlinear` and ``docs/physics.md`` (§Non-linear resistor
networks); the linear solves inside each step are :mod:`physlearn.simulators.resistor.linsolve`.

* Shockley diodes: damped Newton on the convex energy, with an exact line search along the Newton
  direction (safeguarded 1-D Newton/bisection on the directional derivative, which tames the
  exponential: no SPICE-style voltage limiting is needed), from the linear solution clipped to
  the diodes' knees; stops when the largest KCL imbalance is below ``tol`` (relative to the
  network's current scale).
* Ideal diodes (each with one terminal on a source: a box constraint lo <= V <= hi on the other
  terminal): the primal-dual active-set method (Hintermueller, Ito & Kunisch 2003), a semismooth
  Newton method that solves the KKT system exactly and terminates finitely for the M-matrix Y of
  a resistor network. Every iteration is one masked linear solve for the whole batch. Diodes
  between two free nodes need the Shockley model.
* Warm start: nudged phases start from the free equilibrium (and its active set).
* Diagnostics: ``residual`` = max |KCL imbalance| (A) over the free nodes, computed on the full
  sparse network from the final voltages (for ideal diodes also any wrong-sign diode current);
  ``iterations`` = Newton or active-set iterations; ``converged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from physlearn.simulators.resistor.circuit import BoolArray, Circuit, LinearPart
from physlearn.simulators.resistor.elements import DiodeModel
from physlearn.simulators.resistor.linsolve import LinearSolver
from physlearn.system import FloatArray, IntArray, Nudge


@dataclass
class Problem:
    """One phase on the variables: min 1/2 x^T Q x - h^T x + sum Phi(C^T x + c), x[fixed] = xfix."""

    lin: LinearPart  # the linear part of the parameters this phase is solved at
    q: Any  # (n_var, n_var) dense or sparse, S
    h: FloatArray  # (n_var, batch), A
    c: FloatArray  # (m, batch) junction voltage offsets from sources, V
    fixed: BoolArray  # (n_var, batch) clamped variables
    xfix: FloatArray  # (n_var, batch) their values, V
    lo: FloatArray | None  # ideal bounds (n_var, batch), V
    hi: FloatArray | None
    beta: float = 0.0  # target-nudge conductance at the outputs (S), already inside q


class EquilibriumSolver:
    """Solves the phases of one circuit.

    Args:
        ckt: the circuit (bookkeeping, see :class:`~physlearn.simulators.resistor.circuit.Circuit`).
        model: the diodes' law.
        tol: relative KCL tolerance (see :meth:`tol_abs`).
        max_iter: Newton / active-set iteration limit per phase.
    """

    def __init__(self, ckt: Circuit, model: DiodeModel, tol: float, max_iter: int) -> None:
        self.ckt = ckt
        self.model = model
        self.tol = tol
        self.max_iter = max_iter
        self.lins = LinearSolver(ckt)

    @staticmethod
    def matvec(q: Any, x: FloatArray) -> FloatArray:
        """``q @ x`` for a dense or sparse q, as an array."""
        return np.asarray(q @ x)

    def problem(
        self,
        lin: LinearPart,
        vs: FloatArray,
        u: FloatArray | None,
        nudge: Nudge | None,
        checked: tuple[float, FloatArray] | None,
    ) -> Problem:
        """One phase on the variables for source voltages ``vs`` (V); ``checked`` is the
        nudge's real beta and values ``(batch, n_out)`` from the network's nudge check."""
        nv, nb = self.ckt.var.size, vs.shape[1]
        if self.ckt.backend == "dense":
            assert lin.b_p is not None
            h = -np.asarray(lin.b_p @ vs)
            if u is not None and lin.a_pi is not None:
                h += np.asarray(lin.a_pi @ u)
        else:
            h = -np.asarray(lin.b @ vs)
        q = lin.q
        fixed = np.zeros((nv, nb), dtype=bool)
        xfix = np.zeros((nv, nb))
        if nudge is not None:
            assert checked is not None
            beta, vals = checked
            o = self.ckt.out_var
            if nudge.kind == "target":
                if self.ckt.backend == "dense":
                    q = q.copy()
                    q[o, o] += beta
                else:
                    q = sp.csr_array(
                        q + sp.csr_array((np.full(o.size, beta), (o, o)), shape=q.shape)
                    )
                h[o] += beta * vals.T
            elif nudge.kind == "error":
                h[o] -= beta * vals.T
            else:
                fixed[o] = True
                xfix[o] = vals.T
        c = np.asarray(self.ckt.csrc @ vs) if self.ckt.n_diodes else np.zeros((0, nb))
        lo = hi = None
        if self.model.kind == "ideal" and self.ckt.n_diodes:
            lo = np.full((nv, nb), -np.inf)
            hi = np.full((nv, nb), np.inf)
            np.minimum.at(hi, self.ckt.hi_var, vs[self.ckt.hi_src])
            np.maximum.at(lo, self.ckt.lo_var, vs[self.ckt.lo_src])
            bad = np.argwhere(lo > hi)
            if bad.size:
                p, k = int(bad[0, 0]), int(bad[0, 1])
                node = int(self.ckt.free[self.ckt.var[p]])
                raise ValueError(
                    f"ideal diodes short-circuit sources at node {node} (sample {k}): they need "
                    f"V >= {lo[p, k]:g} V and V <= {hi[p, k]:g} V at once (infinite current)"
                )
            # a clamped output keeps its clamp; bounds do not act on it
            lo[fixed] = -np.inf
            hi[fixed] = np.inf
        beta_t = float(nudge.beta.real) if nudge is not None and nudge.kind == "target" else 0.0
        return Problem(lin, q, h, c, fixed, xfix, lo, hi, beta_t)

    def tol_abs(self, lin: LinearPart, vs: FloatArray) -> float:
        vmax = float(np.max(np.abs(vs))) if vs.size else 0.0
        return self.tol * float(np.max(lin.g)) * max(vmax, 1e-3)

    def gradient(self, pr: Problem, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Gradient of the phase energy (A, = KCL imbalance on the variables) and junction v."""
        grad = self.matvec(pr.q, x) - pr.h
        v = np.asarray(self.ckt.ct @ x) + pr.c
        if self.ckt.n_diodes and self.model.kind == "shockley":
            grad += np.asarray(self.ckt.c @ self.model.current(v))
        grad[pr.fixed] = 0.0
        return grad, v

    def newton(
        self, pr: Problem, x: FloatArray, tol_a: float
    ) -> tuple[FloatArray, IntArray, BoolArray]:
        """Damped Newton with exact line search for Shockley (or no) diodes."""
        nb = x.shape[1]
        iters = np.zeros(nb, dtype=np.int64)
        conv = np.zeros(nb, dtype=bool)
        model = self.model
        shockley = self.ckt.n_diodes > 0
        for _ in range(self.max_iter + 1):
            grad, v = self.gradient(pr, x)
            res = np.abs(grad).max(axis=0) if grad.shape[0] else np.zeros(nb)
            conv = np.isfinite(res) & (res <= tol_a)
            act = np.flatnonzero(~conv)
            if act.size == 0 or iters.max(initial=0) >= self.max_iter:
                break
            ga = grad[:, act]
            w = model.conductance(v[:, act]) if shockley else None
            d = -self.lins.solve(pr.lin, pr.q, w, pr.fixed[:, act], ga, pr.beta)
            alpha = self.line_search(pr, x[:, act], v[:, act], ga, d)
            x[:, act] += alpha * d
            iters[act] += 1
        return x, iters, conv

    def line_search(
        self, pr: Problem, x: FloatArray, v: FloatArray, grad: FloatArray, d: FloatArray
    ) -> FloatArray:
        """Step lengths (per sample) minimising the phase energy along d (exact line search).

        phi'(a) = g.d + a d^T Q d + dv . [i(v + a dv) - i(v)] with dv = C^T d; phi is convex.
        Steps never exceed the Newton step (a <= 1) nor push a junction more than 20 n V_T
        beyond max(knee + 1 V, its voltage) (a trust region for the exponential, inactive near
        a solution): the cap is taken when phi still decreases there or phi' is already small
        (quadratic convergence), else safeguarded Newton/bisection on phi' below the cap.
        """
        g0 = np.einsum("ib,ib->b", grad, d)  # < 0
        qd = self.matvec(pr.q, d)
        qdd = np.einsum("ib,ib->b", d, qd)
        if self.ckt.n_diodes == 0 or self.model.kind != "shockley":
            return np.where(qdd > 0, -g0 / np.where(qdd > 0, qdd, 1.0), 1.0)
        dv = np.asarray(self.ckt.ct @ d)
        i0 = self.model.current(v)
        model = self.model

        def dphi(a: FloatArray) -> tuple[FloatArray, FloatArray]:
            vv = v + a * dv
            with np.errstate(invalid="ignore", over="ignore"):
                cur = model.current(vv) - i0
                gd = model.conductance(vv)
                p1 = g0 + a * qdd + np.einsum("ib,ib->b", dv, cur)
                p2 = qdd + np.einsum("ib,ib->b", dv * dv, gd)
            p1 = np.where(np.isnan(p1), np.inf, p1)
            return p1, p2

        nb = x.shape[1]
        # trust region for the exponential: no junction is pushed beyond max(knee + 1 V, v) +
        # 20 n V_T in one step (the cap never binds near a solution)
        vmax = np.maximum(self.knee() + 1.0, v) + 20.0 * self.model.vte
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(dv > 0, (vmax - v) / dv, np.inf)
        cap = np.minimum(1.0, room.min(axis=0, initial=np.inf))
        a = cap.copy()
        lo = np.zeros(nb)
        hi = cap.copy()
        target = 1e-3 * np.abs(g0)
        p1, p2 = dphi(a)
        # the full Newton step when phi is still decreasing at a = 1 (never beyond it)
        ok = (p1 <= target) | ~np.isfinite(g0)
        for _ in range(200):
            if ok.all():
                break
            lo = np.where(~ok & (p1 < 0), a, lo)
            hi = np.where(~ok & (p1 > 0), a, hi)
            with np.errstate(invalid="ignore", divide="ignore"):
                newton = a - p1 / np.where(p2 > 0, p2, np.inf)
            inside = np.isfinite(newton) & (newton > lo) & (newton < hi) & np.isfinite(p2)
            a = np.where(ok, a, np.where(inside, newton, 0.5 * (lo + hi)))
            p1, p2 = dphi(a)
            ok = ok | (np.abs(p1) <= target) | (hi - lo <= 1e-12 * hi)
        return np.where(np.isfinite(a) & (a > 0), a, 0.0)

    def pdas(
        self,
        pr: Problem,
        x: FloatArray,
        act_hi: BoolArray,
        act_lo: BoolArray,
        tol_a: float,
    ) -> tuple[FloatArray, BoolArray, BoolArray, IntArray, BoolArray]:
        """Primal-dual active set method for ideal diodes (box constraints lo <= x <= hi).

        The set update of Hintermueller, Ito & Kunisch with a hysteresis of ``tol_a`` (A): an
        active node leaves only when its diode current is wrong by more than ``tol_a``, an
        inactive one enters only when it violates its bound by more than ``tol_a / c`` (V), so
        that rounding at a degenerate node (on its bound with zero current) cannot cycle."""
        assert pr.lo is not None and pr.hi is not None
        nb = x.shape[1]
        iters = np.zeros(nb, dtype=np.int64)
        conv = np.zeros(nb, dtype=bool)
        qdiag = np.diag(pr.q) if self.ckt.backend == "dense" else pr.q.diagonal()
        cscale = np.maximum(np.asarray(qdiag), 1e-300)[:, None]
        todo = np.arange(nb)
        for _ in range(self.max_iter):
            if todo.size == 0:
                break
            xs = x[:, todo]
            hi_s, lo_s = act_hi[:, todo], act_lo[:, todo]
            fixed = pr.fixed[:, todo] | hi_s | lo_s
            target = np.where(hi_s, pr.hi[:, todo], np.where(lo_s, pr.lo[:, todo], xs))
            target = np.where(pr.fixed[:, todo], pr.xfix[:, todo], target)
            dfix = np.where(fixed, target - xs, 0.0)
            grad = self.matvec(pr.q, xs) - pr.h[:, todo]
            rhs = np.where(fixed, dfix, -grad - self.matvec(pr.q, dfix))
            xs = xs + self.lins.solve(pr.lin, pr.q, None, fixed, rhs, pr.beta)
            xs = np.where(fixed, target, xs)  # exact on the active set
            x[:, todo] = xs
            iters[todo] += 1
            y = pr.h[:, todo] - self.matvec(pr.q, xs)  # current the diodes must carry away
            y[pr.fixed[:, todo]] = 0.0
            with np.errstate(invalid="ignore"):
                new_hi = (y + cscale * (xs - pr.hi[:, todo])) > np.where(hi_s, -tol_a, tol_a)
                new_lo = (y + cscale * (xs - pr.lo[:, todo])) < np.where(lo_s, tol_a, -tol_a)
            same = np.all((new_hi == hi_s) & (new_lo == lo_s), axis=0)
            act_hi[:, todo] = new_hi
            act_lo[:, todo] = new_lo
            conv[todo[same]] = True
            todo = todo[~same]
        return x, act_hi, act_lo, iters, conv

    def initial(self, pr: Problem) -> FloatArray:
        """Starting point: the linear solution (diodes removed) clipped to the diodes' knees."""
        nv, nb = pr.h.shape
        if nv == 0:
            return np.zeros((0, nb))
        zero = np.zeros((self.ckt.n_diodes, nb))
        fixed0 = pr.fixed
        rhs = np.where(fixed0, pr.xfix, pr.h - self.matvec(pr.q, np.where(fixed0, pr.xfix, 0.0)))
        x = self.lins.solve(
            pr.lin, pr.q, None if self.ckt.n_diodes == 0 else zero, fixed0, rhs, pr.beta
        )
        if self.ckt.n_diodes == 0 or self.model.kind == "ideal":
            return x
        # Shockley: bring every forward junction below its knee (where the diode carries about
        # 1 mA): clip nodes bounded by a source; for junctions between two free nodes, a few
        # passes moving both ends towards each other.
        knee = self.knee()
        hi = np.full((nv, nb), np.inf)
        lo = np.full((nv, nb), -np.inf)
        vs_hi = pr.c[np.flatnonzero(~self.ckt.is_src[self.ckt.ja] & self.ckt.is_src[self.ckt.jc])]
        vs_lo = pr.c[np.flatnonzero(self.ckt.is_src[self.ckt.ja] & ~self.ckt.is_src[self.ckt.jc])]
        # c = -V_cathode for an anode-free junction; c = V_anode for a cathode-free one
        np.minimum.at(hi, self.ckt.hi_var, -vs_hi + knee)
        np.maximum.at(lo, self.ckt.lo_var, vs_lo - knee)
        lo = np.minimum(lo, hi)
        x = np.clip(x, lo, hi)
        x[fixed0] = pr.xfix[fixed0]
        ff = np.flatnonzero((self.ckt.ja_var >= 0) & (self.ckt.jc_var >= 0))
        if ff.size:
            fa, fc = self.ckt.ja_var[ff], self.ckt.jc_var[ff]
            for _ in range(50):
                v = x[fa] - x[fc]
                excess = np.maximum(v - knee, 0.0)
                if not excess.any():
                    break
                down = np.zeros_like(x)
                up = np.zeros_like(x)
                np.minimum.at(down, fa, -0.5 * excess)
                np.maximum.at(up, fc, 0.5 * excess)
                x = np.clip(x + down + up, lo, hi)
                x[fixed0] = pr.xfix[fixed0]
        return x

    def convex(self, pr: Problem) -> bool:
        """Whether the nudged resistor part is positive definite. A negative target beta can make
        it a saddle (1 + beta * max eig K <= 0, K the output resistance); the diodes' convex terms
        may restore convexity, but the solver does not certify it, so such phases are reported
        as not converged."""
        if pr.beta >= 0:
            return True
        if self.ckt.backend == "dense":
            try:
                np.linalg.cholesky(pr.q)
            except np.linalg.LinAlgError:
                return False
            return True
        lin = pr.lin
        out = self.ckt.out_var
        zp = self.lins.columns(lin, out)
        assert lin.z is not None
        k = lin.z[np.ix_(out, zp)]
        return bool(1.0 + pr.beta * float(np.linalg.eigvalsh(0.5 * (k + k.T))[-1]) > 0)

    def knee(self) -> float:
        """Junction voltage (V) at which a Shockley diode carries 1 mA."""
        return self.model.vte * math.log1p(1e-3 / self.model.saturation_current)

    def run(
        self,
        pr: Problem,
        tol_a: float,
        warm_x: FloatArray | None = None,
        warm_hi: BoolArray | None = None,
        warm_lo: BoolArray | None = None,
    ) -> tuple[FloatArray, BoolArray | None, BoolArray | None, IntArray, BoolArray]:
        """Solve one phase from a warm start (the previous phase's variables and, for ideal
        diodes, active sets) or cold (:meth:`initial`). Returns the variables, the ideal active
        sets (None without ideal diodes), iterations and convergence per sample."""
        ideal = self.model.kind == "ideal" and self.ckt.n_diodes > 0
        act_hi = act_lo = None
        if warm_x is not None:
            x = warm_x.copy()
            x[pr.fixed] = pr.xfix[pr.fixed]
            if ideal and warm_hi is not None and warm_lo is not None:
                act_hi, act_lo = warm_hi.copy(), warm_lo.copy()
                act_hi &= ~pr.fixed
                act_lo &= ~pr.fixed
            elif self.ckt.n_diodes and not ideal:
                # values the phase fixes (clamped outputs) can drive a junction of the warm
                # start far beyond its knee, where the exponential's overflow leaves Newton no
                # usable step: those samples start cold (junctions below their knees) instead
                vj = np.asarray(self.ckt.ct @ x) + pr.c  # junction voltages (V)
                far = ~(vj <= self.knee() + 1.0).all(axis=0)
                if far.any():
                    x[:, far] = self.initial(pr)[:, far]
        else:
            x = self.initial(pr)
        if ideal:
            assert pr.lo is not None and pr.hi is not None
            if act_hi is None or act_lo is None:
                act_hi = x > pr.hi
                act_lo = x < pr.lo
            return self.pdas(pr, x, act_hi, act_lo, tol_a)
        x, iters, conv = self.newton(pr, x, tol_a)
        return x, act_hi, act_lo, iters, conv

    def diagnostics(
        self,
        pr: Problem,
        lin: LinearPart,
        x: FloatArray,
        vf: FloatArray,
        vs: FloatArray,
        full: FloatArray,
        nudge: Nudge | None,
        checked: tuple[float, FloatArray] | None,
        act_hi: BoolArray | None,
        act_lo: BoolArray | None,
        tol_a: float,
        conv: BoolArray,
    ) -> tuple[FloatArray, BoolArray, FloatArray]:
        """Residual (A), convergence and diode currents (A) of a phase, checked on the full
        sparse network from the final voltages (see the module docstring)."""
        nb = vf.shape[1]
        r, currents = self.kcl(lin, vf, vs, full, nudge, checked)
        residual = np.abs(r).max(axis=0) if r.shape[0] else np.zeros(nb)
        if self.model.kind == "ideal" and self.ckt.n_diodes > 0:
            assert act_hi is not None and act_lo is not None and pr.lo is not None
            assert pr.hi is not None
            act_free_hi = np.zeros_like(r, dtype=bool)
            act_free_lo = np.zeros_like(r, dtype=bool)
            act_free_hi[self.ckt.var] = act_hi
            act_free_lo[self.ckt.var] = act_lo
            y = -r  # current the diodes carry away from each free node
            inactive = ~(act_free_hi | act_free_lo)
            kcl = np.where(inactive, np.abs(r), 0.0).max(axis=0) if r.shape[0] else residual
            wrong = np.maximum(
                np.where(act_free_hi, -y, 0.0).max(axis=0, initial=0.0),
                np.where(act_free_lo, y, 0.0).max(axis=0, initial=0.0),
            )
            residual = np.maximum(kcl, wrong)
            viol = np.maximum(x - pr.hi, pr.lo - x)
            viol = np.where(np.isfinite(viol), viol, 0.0).max(axis=0, initial=0.0)
            tol_v = self.tol * max(float(np.max(np.abs(vs))) if vs.size else 0.0, 1e-3)
            conv = conv & (residual <= 10 * tol_a) & (viol <= 10 * tol_v)
            currents = self.ideal_currents(y, act_free_hi, act_free_lo)
        else:
            conv = conv & (residual <= 10 * tol_a)
        if nudge is not None and nudge.kind == "target" and not self.convex(pr):
            conv[:] = False
        return residual, conv, currents

    def kcl(
        self,
        lin: LinearPart,
        vf: FloatArray,
        vs: FloatArray,
        full: FloatArray,
        nudge: Nudge | None,
        checked: tuple[float, FloatArray] | None,
    ) -> tuple[FloatArray, FloatArray]:
        """Current ``(n_free, batch)`` (A) leaving each free node through its edges, Shockley
        diodes and nudge (0 on clamped outputs) -- the KCL imbalance -- and the Shockley diode
        currents ``(m, batch)`` (A; zeros for ideal diodes, see :meth:`ideal_currents`)."""
        ckt = self.ckt
        r = np.asarray(lin.a @ vf + lin.b @ vs)  # current leaving each free node via edges
        currents = np.zeros((ckt.n_diodes, vf.shape[1]))
        if ckt.n_diodes and self.model.kind == "shockley":
            currents = self.model.current(full[ckt.ja] - full[ckt.jc])
            a_free, c_free = ~ckt.is_src[ckt.ja], ~ckt.is_src[ckt.jc]
            np.add.at(r, ckt.slot[ckt.ja[a_free]], currents[a_free])
            np.subtract.at(r, ckt.slot[ckt.jc[c_free]], currents[c_free])
        o = ckt.out_free
        if nudge is not None:
            assert checked is not None
            beta, vals = checked
            if nudge.kind == "target":
                r[o] += beta * (vf[o] - vals.T)
            elif nudge.kind == "error":
                r[o] += beta * vals.T
            else:
                r[o] = 0.0
        return r, currents

    def ideal_currents(self, y: FloatArray, hi: BoolArray, lo: BoolArray) -> FloatArray:
        """Ideal diode currents (A) from the net current y each active node sheds."""
        m, nb = self.ckt.n_diodes, y.shape[1]
        cur = np.zeros((m, nb))
        is_src = self.ckt.is_src
        up = np.flatnonzero(~is_src[self.ckt.ja] & is_src[self.ckt.jc])
        dn = np.flatnonzero(is_src[self.ckt.ja] & ~is_src[self.ckt.jc])
        # the first diode of each node carries the node's current (non-unique when shared)
        for idx, node_of, mask, sign in (
            (up, self.ckt.slot[self.ckt.ja[up]], hi, 1.0),
            (dn, self.ckt.slot[self.ckt.jc[dn]], lo, -1.0),
        ):
            if idx.size == 0:
                continue
            _, first = np.unique(node_of, return_index=True)
            sel, nodes = idx[first], node_of[first]
            cur[sel] = np.where(mask[nodes], sign * y[nodes], 0.0)
        return cur
