"""Numerical core of the XY oscillator simulator: energy, forces, Hessian, relaxation, Langevin.

Everything here is physics on arrays, vectorised over a batch of ``B`` independent copies of
one network (samples x restarts) and over its edges; :mod:`physlearn.simulators.xy.system` wraps it
into a :class:`~physlearn.system.PhysicalSystem`.

Conventions (see ``docs/physics.md``, §XY oscillators)
------------------------------------------------------
* Phases ``phi`` ``(B, n)`` in rad. Energy (dimensionless, unit ``"1"``)::

      E(phi) = - sum_e W_e cos(phi_i - phi_j) - sum_k h_k cos(phi_k - psi_k)

  over the edges ``e = (i, j)`` of the graph, W the couplings, h the bias amplitudes and psi the
  bias directions (rad).
* The relaxed function is ``F = E + beta * C``: for a ``target`` nudge
  ``C = -sum_o ln[1 + cos(phi_o - tau_o)]`` on the output nodes (the ``xy_log`` cost); for an
  ``error`` nudge ``C = sum_o eps_o phi_o`` (a constant torque ``beta * eps_o`` on output ``o``).
  A ``clamp`` nudge is realised by clamping the output nodes instead (see :class:`XYField`).
* The *force* on node k is ``-dF/dphi_k``; clamped nodes (inputs, clamped outputs) feel none.
* Time is measured in units of the inverse mobility: the overdamped dynamics is
  ``dphi/dt = -dF/dphi`` on free nodes, and Langevin dynamics at temperature T (energy units,
  k_B = 1) adds ``sqrt(2 T) dW_t``, whose stationary law is ``p(phi) ~ exp(-F/T)``.

Linear algebra
--------------
The Hessian over the free nodes is a weighted graph Laplacian plus a diagonal,
``H = D_f^T diag(W cos dphi) D_f + diag(h cos(phi - psi) + nudge curvature)`` (``D`` the
edge-node incidence matrix). Two interchangeable back ends build and factor it:

* ``dense``: the ``(B, n_f, n_f)`` stack, one LAPACK Cholesky per copy (the stability proof
  and the factor of the solve; LU for an indefinite copy); energies and forces by BLAS with a
  dense coupling matrix. Right for small or densely connected networks (all-to-all, layered).
* ``sparse``: one block-diagonal sparse matrix for the batch, factored by a single SuperLU call
  with symmetric diagonal pivoting, whose pivots give each block's inertia (Sylvester's law):
  a Cholesky test without a Cholesky code. Energies and forces by edge gathers and a sparse
  incidence product, so a 100 x 100 lattice costs O(edges), not O(n^2).

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
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg.lapack import dpotrf as potrf
from scipy.linalg.lapack import dpotrs as potrs
from scipy.sparse.linalg import splu

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

Backend = Literal["dense", "sparse"]
NudgeTerm = Literal["none", "target", "error"]

_EPS = float(np.finfo(np.float64).eps)


def wrap(phi: FloatArray) -> FloatArray:
    """Phases mapped to ``[-pi, pi)`` (rad)."""
    return np.asarray(np.mod(phi + np.pi, 2.0 * np.pi) - np.pi)


def circular_mean(phi: FloatArray, axis: int) -> FloatArray:
    """Angle of the mean unit vector ``exp(i phi)`` along ``axis``, in ``[-pi, pi]`` (rad)."""
    return np.asarray(np.arctan2(np.sin(phi).mean(axis=axis), np.cos(phi).mean(axis=axis)))


# --------------------------------------------------------------------------------------------
# Topology


@dataclass(frozen=True, eq=False)
class XYTopology:
    """The coupling graph in the forms the numerics need.

    Attributes:
        n_nodes: number of oscillators.
        edges: ``(E, 2)`` node pairs ``(i, j)``, ``i != j``, no duplicates.
        incidence: ``(E, n)`` CSR, ``+1`` at ``(e, i)`` and ``-1`` at ``(e, j)``, so that
            ``phi @ incidence.T`` is ``phi_i - phi_j`` per edge.
        abs_incidence: ``|incidence|`` (sums edge quantities onto both end nodes).
        backend: ``"dense"`` or ``"sparse"`` (see the module docstring).
    """

    n_nodes: int
    edges: IntArray
    incidence: sp.csr_array
    abs_incidence: sp.csr_array
    backend: Backend

    @classmethod
    def build(
        cls, n_nodes: int, edges: IntArray, backend: Literal["auto", "dense", "sparse"] = "auto"
    ) -> XYTopology:
        """Topology of ``n_nodes`` oscillators coupled along ``edges``.

        ``backend="auto"`` picks ``dense`` for at most 128 nodes or an edge density above 10 %,
        ``sparse`` otherwise.
        """
        e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        n_e = e.shape[0]
        rows = np.repeat(np.arange(n_e, dtype=np.int64), 2)
        vals = np.tile(np.array([1.0, -1.0]), n_e)
        inc = sp.csr_array((vals, (rows, e.reshape(-1))), shape=(n_e, n_nodes))
        absinc = sp.csr_array((np.abs(vals), (rows, e.reshape(-1))), shape=(n_e, n_nodes))
        if backend == "auto":
            density = 2.0 * n_e / max(1, n_nodes * (n_nodes - 1))
            backend = "dense" if n_nodes <= 128 or density > 0.1 else "sparse"
        return cls(n_nodes, e, inc, absinc, backend)

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    def dense_matrix(self, weights: FloatArray) -> FloatArray:
        """Symmetric ``(n, n)`` matrix with ``weights[e]`` at ``(i, j)`` and ``(j, i)``."""
        m = np.zeros((self.n_nodes, self.n_nodes))
        m[self.edges[:, 0], self.edges[:, 1]] = weights
        m[self.edges[:, 1], self.edges[:, 0]] = weights
        return m


# --------------------------------------------------------------------------------------------
# The relaxed function F = E + beta * C


@dataclass(frozen=True)
class Nudging:
    """The nudge term of ``F``: ``kind`` ``"none"``, ``"target"`` (``values`` = target phases
    tau, rad) or ``"error"`` (``values`` = error signal eps, 1/rad), ``(B, n_out)``; ``beta`` in
    units of 1/cost."""

    kind: NudgeTerm = "none"
    beta: float = 0.0
    values: FloatArray | None = None


class XYField:
    """``F(phi) = E(phi) + beta C(phi)`` for a batch of ``B`` copies, with derivatives.

    ``free`` ``(n,)`` marks the nodes that move; the others (inputs, and outputs under a clamp
    nudge) hold the values of ``phi`` they are given. Every method takes ``rows``, the indices
    of the copies (into ``0..B-1``) that ``phi`` holds, so the relaxation can work on the copies
    that have not converged yet.
    """

    def __init__(
        self,
        topo: XYTopology,
        coupling: FloatArray,
        bias_amplitude: FloatArray,
        bias_direction: FloatArray,
        free: BoolArray,
        output_nodes: IntArray,
        nudging: Nudging | None = None,
    ) -> None:
        self.topo = topo
        self.coupling = np.asarray(coupling, dtype=np.float64)
        self.h = np.asarray(bias_amplitude, dtype=np.float64)
        self.psi = np.asarray(bias_direction, dtype=np.float64)
        self.free = np.asarray(free, dtype=bool)
        self.free_idx = np.flatnonzero(self.free).astype(np.int64)
        self.output_nodes = np.asarray(output_nodes, dtype=np.int64)
        self.nudging = nudging if nudging is not None else Nudging()
        if self.nudging.kind != "none" and self.nudging.values is None:
            raise ValueError("a target/error nudge needs values")
        self._wdense = topo.dense_matrix(self.coupling) if topo.backend == "dense" else None
        # Scale of |F| for the round-off allowance of the line search.
        self.scale = float(np.abs(self.coupling).sum() + np.abs(self.h).sum() + 1.0)
        self._sparse_pattern: _BlockPattern | None = None

    @property
    def n_free(self) -> int:
        return int(self.free_idx.size)

    # -- pieces ------------------------------------------------------------------------------
    def _nudge_vals(self, rows: IntArray) -> FloatArray:
        assert self.nudging.values is not None
        return self.nudging.values[rows]

    def _nudge_energy(self, phi: FloatArray, rows: IntArray) -> FloatArray:
        nd = self.nudging
        if nd.kind == "none" or nd.beta == 0.0:
            return np.zeros(phi.shape[0])
        y = phi[:, self.output_nodes]
        v = self._nudge_vals(rows)
        if nd.kind == "target":
            with np.errstate(divide="ignore"):
                c = -np.sum(np.log1p(np.cos(y - v)), axis=1)
            return np.asarray(nd.beta * c)
        return np.asarray(nd.beta * np.sum(v * y, axis=1))

    def _nudge_grad_curv(self, phi: FloatArray, rows: IntArray) -> tuple[FloatArray, FloatArray]:
        """dC/dphi_o * beta and d2C/dphi_o^2 * beta on the outputs, ``(b, n_out)`` each."""
        nd = self.nudging
        b = phi.shape[0]
        n_out = self.output_nodes.size
        if nd.kind == "none" or nd.beta == 0.0:
            z = np.zeros((b, n_out))
            return z, z
        v = self._nudge_vals(rows)
        if nd.kind == "target":
            d = phi[:, self.output_nodes] - v
            with np.errstate(divide="ignore"):
                return nd.beta * np.tan(0.5 * d), nd.beta / (1.0 + np.cos(d))
        return nd.beta * v, np.zeros((b, n_out))

    def _pair_terms(self, phi: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Pair energy ``(b,)``, pair gradient ``(b, n)`` and the diagonal of the pair Hessian
        ``sum_j W_kj cos(phi_k - phi_j)`` ``(b, n)``."""
        if self._wdense is not None:
            c, s = np.cos(phi), np.sin(phi)
            wc, ws = c @ self._wdense, s @ self._wdense
            diag = c * wc + s * ws
            return -0.5 * diag.sum(axis=1), s * wc - c * ws, diag
        e = self.topo.edges
        dphi = phi[:, e[:, 0]] - phi[:, e[:, 1]]
        wcos = self.coupling * np.cos(dphi)
        grad = (self.coupling * np.sin(dphi)) @ self.topo.incidence
        diag = wcos @ self.topo.abs_incidence
        return -wcos.sum(axis=1), np.asarray(grad), np.asarray(diag)

    # -- public API --------------------------------------------------------------------------
    def physical_energy(self, phi: FloatArray) -> FloatArray:
        """``E`` per copy without the nudge term, ``(b,)``."""
        bias = -np.sum(self.h * np.cos(phi - self.psi), axis=1)
        if self._wdense is not None:
            c, s = np.cos(phi), np.sin(phi)
            pair = -0.5 * np.sum(c * (c @ self._wdense) + s * (s @ self._wdense), axis=1)
        else:
            e = self.topo.edges
            pair = -(np.cos(phi[:, e[:, 0]] - phi[:, e[:, 1]]) @ self.coupling)
        return np.asarray(pair + bias)

    def energy(self, phi: FloatArray, rows: IntArray) -> FloatArray:
        """``F`` per copy, ``(b,)`` (``E`` alone when there is no nudge)."""
        return np.asarray(self.physical_energy(phi) + self._nudge_energy(phi, rows))

    def gradient(self, phi: FloatArray, rows: IntArray) -> FloatArray:
        """``dF/dphi`` on every node (clamped ones included), ``(b, n)``."""
        return self.energy_gradient(phi, rows)[1]

    def energy_gradient(self, phi: FloatArray, rows: IntArray) -> tuple[FloatArray, FloatArray]:
        """``F`` ``(b,)`` and ``dF/dphi`` ``(b, n)`` sharing the trigonometry."""
        pair_e, pair_g, _ = self._pair_terms(phi)
        d = phi - self.psi
        en = pair_e - np.sum(self.h * np.cos(d), axis=1) + self._nudge_energy(phi, rows)
        g = pair_g + self.h * np.sin(d)
        ng, _ = self._nudge_grad_curv(phi, rows)
        g[:, self.output_nodes] += ng
        return np.asarray(en), np.asarray(g)

    def force(self, phi: FloatArray, rows: IntArray) -> FloatArray:
        """``-dF/dphi`` with zeros on clamped nodes, ``(b, n)``."""
        f = -self.gradient(phi, rows)
        f[:, ~self.free] = 0.0
        return f

    def edge_weights_and_diag(
        self, phi: FloatArray, rows: IntArray
    ) -> tuple[FloatArray | None, FloatArray, FloatArray]:
        """Pieces of the Hessian: ``(edge weights W cos dphi (b, E) or None for dense,
        diagonal d (b, n), gradient (b, n))``."""
        pair_e, pair_g, diag = self._pair_terms(phi)
        d = phi - self.psi
        g = pair_g + self.h * np.sin(d)
        diag = diag + self.h * np.cos(d)
        ng, nc = self._nudge_grad_curv(phi, rows)
        g[:, self.output_nodes] += ng
        diag[:, self.output_nodes] += nc
        w = None
        if self._wdense is None:
            e = self.topo.edges
            w = self.coupling * np.cos(phi[:, e[:, 0]] - phi[:, e[:, 1]])
        return w, diag, g

    def factor(self, phi: FloatArray, rows: IntArray, shift: FloatArray) -> _Factor:
        """Factor ``H_ff + diag(shift)`` per copy (``shift`` ``(b,)``, energy/rad^2); see
        :class:`_Factor`."""
        w, diag, g = self.edge_weights_and_diag(phi, rows)
        gf = g[:, self.free_idx]
        df = diag[:, self.free_idx]
        if self._wdense is not None:
            return _DenseFactor.build(self, phi, df, gf, shift)
        assert w is not None
        if self._sparse_pattern is None:
            self._sparse_pattern = _BlockPattern.build(self.topo, self.free)
        return _SparseFactor.build(self._sparse_pattern, w, df, gf, shift)

    def hess_vec(self, phi: FloatArray, rows: IntArray, v: FloatArray) -> FloatArray:
        """``H_ff v`` per copy without forming ``H`` (``v`` ``(b, n_f)``, energy/rad^2 x v)."""
        w, diag, _ = self.edge_weights_and_diag(phi, rows)
        fi = self.free_idx
        out = diag[:, fi] * v
        if self._wdense is not None:
            c, s = np.cos(phi[:, fi]), np.sin(phi[:, fi])
            wff = self._wdense[np.ix_(fi, fi)]
            out -= c * ((c * v) @ wff) + s * ((s * v) @ wff)
            return np.asarray(out)
        assert w is not None
        u = np.zeros_like(phi)
        u[:, fi] = v
        e = self.topo.edges
        off = (w * (u[:, e[:, 0]] - u[:, e[:, 1]])) @ self.topo.incidence  # D^T diag(w) D u
        off = np.asarray(off)[:, fi] - (w @ self.topo.abs_incidence)[:, fi] * v
        return np.asarray(out + off)

    def solve(
        self, phi: FloatArray, rows: IntArray, rhs: FloatArray
    ) -> tuple[FloatArray, BoolArray]:
        """``H_ff^{-1} rhs`` per copy (``rhs`` ``(b, n_f)``) and whether ``H_ff`` is positive
        definite (a stable fixed point)."""
        f = self.factor(phi, rows, np.zeros(phi.shape[0]))
        return f.solve(rhs, np.ones(phi.shape[0], dtype=bool)), f.pd


# --------------------------------------------------------------------------------------------
# Factorisations


class _Factor:
    """A factorised shifted Hessian ``H_ff + diag(shift)`` for ``b`` copies.

    Attributes:
        grad: ``(b, n_f)`` dF/dphi over the free nodes at the factorisation point.
        pd: ``(b,)`` the shifted Hessian is positive definite, proved by the factorisation.
    """

    grad: FloatArray
    pd: BoolArray

    def gershgorin(self) -> FloatArray:
        """``(b,)`` a shift that makes the *unshifted* Hessian strictly diagonally dominant
        with a positive diagonal, hence positive definite."""
        raise NotImplementedError

    def solve(self, rhs: FloatArray, mask: BoolArray) -> FloatArray:
        """``(H + shift)^{-1} rhs`` for the copies in ``mask`` (``rhs`` ``(b, n_f)``); other
        rows are zero."""
        raise NotImplementedError


def _gershgorin(diag: FloatArray, offsum: FloatArray) -> FloatArray:
    need = np.max(offsum - diag, axis=1) if diag.shape[1] else np.zeros(diag.shape[0])
    scale = np.max(np.abs(diag) + offsum, axis=1) if diag.shape[1] else np.ones(diag.shape[0])
    return np.asarray(np.maximum(need, 0.0) + 1e-3 * np.maximum(scale, 1e-12))


class _DenseFactor(_Factor):
    """Dense stack: one LAPACK Cholesky (``dpotrf``) per copy proves positive definiteness and
    factors for the solve (``dpotrs``); an indefinite copy is solved by LU. The per-copy calls
    are thin dispatches to compiled LAPACK: numpy's batched Cholesky kernel measured ~5x slower
    on (64, 400, 400) stacks and reports failure only for the stack as a whole."""

    def __init__(self, h: FloatArray, df: FloatArray, shift: FloatArray, grad: FloatArray) -> None:
        self._h = h
        self._df = df
        self._shift = shift
        self.grad = grad
        self._chol = np.empty_like(h)
        self.pd = np.zeros(h.shape[0], dtype=bool)
        for k in range(h.shape[0]):  # LAPACK dispatch, see the class docstring
            c, info = potrf(h[k], lower=True, clean=False)
            self._chol[k] = c
            self.pd[k] = info == 0

    @classmethod
    def build(
        cls, field: XYField, phi: FloatArray, df: FloatArray, gf: FloatArray, shift: FloatArray
    ) -> _DenseFactor:
        assert field._wdense is not None
        fi = field.free_idx
        z = np.stack([np.cos(phi[:, fi]), np.sin(phi[:, fi])], axis=2)
        h = np.matmul(z, z.transpose(0, 2, 1))  # cos(phi_k - phi_l)
        h *= field._wdense[np.ix_(fi, fi)]
        np.negative(h, out=h)
        ar = np.arange(fi.size)
        h[:, ar, ar] = df + shift[:, None]
        return cls(h, df, shift, gf)

    def gershgorin(self) -> FloatArray:
        offsum = np.abs(self._h).sum(axis=2) - np.abs(self._df + self._shift[:, None])
        return _gershgorin(self._df, offsum)

    def solve(self, rhs: FloatArray, mask: BoolArray) -> FloatArray:
        out = np.zeros_like(rhs)
        if rhs.shape[1] == 0:
            return out
        for k in np.flatnonzero(mask & self.pd):  # LAPACK dispatch
            out[k] = potrs(self._chol[k], rhs[k], lower=True)[0]
        rest = np.flatnonzero(mask & ~self.pd)
        if rest.size:
            try:
                out[rest] = np.linalg.solve(self._h[rest], rhs[rest][:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:  # an exactly singular copy: least squares
                x = np.linalg.pinv(self._h[rest], hermitian=True) @ rhs[rest][:, :, None]
                out[rest] = x[:, :, 0]
        return out


@dataclass(frozen=True, eq=False)
class _BlockPattern:
    """Sparsity pattern of ``H_ff`` for one copy, as CSC, plus maps from edge weights and the
    diagonal to its ``nnz`` stored values."""

    n_f: int
    indptr: IntArray
    indices: IntArray
    # values = concat([-w[ff], -w[ff], diag_f])[order]
    ff_edges: IntArray
    order: IntArray
    ff_abs_incidence: sp.csr_array  # (E_ff, n_f) |D| restricted to free-free edges

    @classmethod
    def build(cls, topo: XYTopology, free: BoolArray) -> _BlockPattern:
        pos = np.full(topo.n_nodes, -1, dtype=np.int64)
        fi = np.flatnonzero(free)
        pos[fi] = np.arange(fi.size)
        a, b = pos[topo.edges[:, 0]], pos[topo.edges[:, 1]]
        ff = np.flatnonzero((a >= 0) & (b >= 0)).astype(np.int64)
        a, b = a[ff], b[ff]
        n_f = int(fi.size)
        r = np.concatenate([a, b, np.arange(n_f)])
        c = np.concatenate([b, a, np.arange(n_f)])
        slot = np.arange(r.size, dtype=np.float64) + 1.0  # +1: keep slot 0 from vanishing
        csc = sp.csc_array((slot, (r, c)), shape=(n_f, n_f))
        csc.sort_indices()
        order = (csc.data - 1.0).astype(np.int64)
        m = ff.size
        rows = np.repeat(np.arange(m, dtype=np.int64), 2)
        absinc = sp.csr_array(
            (np.ones(2 * m), (rows, np.stack([a, b], axis=1).reshape(-1))), shape=(m, n_f)
        )
        return cls(
            n_f, csc.indptr.astype(np.int64), csc.indices.astype(np.int64), ff, order, absinc
        )

    def block_diagonal(self, values: FloatArray) -> sp.csc_matrix:
        """Block-diagonal CSC of ``b`` copies from per-copy stored values ``(b, nnz)``."""
        b, nnz = values.shape
        n_f = self.n_f
        indptr = (self.indptr[:-1][None, :] + nnz * np.arange(b)[:, None]).reshape(-1)
        indptr = np.append(indptr, b * nnz)
        indices = (self.indices[None, :] + n_f * np.arange(b)[:, None]).reshape(-1)
        return sp.csc_matrix((values.reshape(-1), indices, indptr), shape=(b * n_f, b * n_f))


class _SparseFactor(_Factor):
    def __init__(
        self, lu: object | None, n_f: int, pd: BoolArray, grad: FloatArray, gersh: FloatArray
    ) -> None:
        self._lu: Any = lu
        self._n_f = n_f
        self.pd = pd
        self.grad = grad
        self._gersh = gersh

    def gershgorin(self) -> FloatArray:
        return self._gersh

    @classmethod
    def build(
        cls, pat: _BlockPattern, w: FloatArray, df: FloatArray, gf: FloatArray, shift: FloatArray
    ) -> _SparseFactor:
        b = w.shape[0]
        wff = w[:, pat.ff_edges]
        gersh = _gershgorin(df, np.asarray(np.abs(wff) @ pat.ff_abs_incidence))
        if pat.n_f == 0:
            return cls(None, 0, np.ones(b, dtype=bool), gf, gersh)
        vals = np.concatenate([-wff, -wff, df + shift[:, None]], axis=1)[:, pat.order]
        mat = pat.block_diagonal(vals)
        try:
            lu = splu(
                mat,
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
        except RuntimeError:  # exactly singular somewhere: prove nothing, let shifts grow
            return cls(None, pat.n_f, np.zeros(b, dtype=bool), gf, gersh)
        if not np.array_equal(lu.perm_r, lu.perm_c):  # off-diagonal pivoting: no inertia
            return cls(lu, pat.n_f, np.zeros(b, dtype=bool), gf, gersh)
        # Symmetric elimination: P A P^T = L D L^T with U = D L^T, so U's diagonal holds the
        # pivots (Sylvester: their signs are the inertia); pivot k belongs to original row
        # argsort(perm_r)[k], i.e. to copy row // n_f.
        piv = lu.U.diagonal()
        owner = np.argsort(lu.perm_r) // pat.n_f
        bad = np.bincount(owner, weights=(piv <= 0).astype(np.float64), minlength=b)
        return cls(lu, pat.n_f, bad == 0, gf, gersh)

    def solve(self, rhs: FloatArray, mask: BoolArray) -> FloatArray:
        out = np.zeros_like(rhs)
        if self._n_f == 0 or self._lu is None or not np.any(mask):
            return out
        x = self._lu.solve(np.ascontiguousarray(rhs, dtype=np.float64).reshape(-1))
        out[mask] = np.asarray(x).reshape(rhs.shape)[mask]
        return out


# --------------------------------------------------------------------------------------------
# Relaxation


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
        need = np.flatnonzero(~pd0 & ~saddle)
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
        if np.any(saddle):  # a random kick moves a copy off a saddle
            step[saddle] = rng.normal(0.0, settings.kick, size=(int(saddle.sum()), fi.size))
            kicks[active[saddle]] += 1
        # -- backtracking line search on F -------------------------------------------------
        # Where the predicted decrease |g.p| is below the resolution of F (round-off, ~1e3 eps
        # |F|), F cannot tell a step apart; there the merit is the residual max|g| instead
        # (a Newton step on a positive definite H shrinks it quadratically).
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
        phi[active] = new
    energy = field.energy(phi, np.arange(n_b, dtype=np.int64))
    converged = stable & (residual <= settings.tol)
    return RelaxResult(phi, energy, residual, iterations + newton_iter, stable, converged, kicks)


# --------------------------------------------------------------------------------------------
# Langevin sampling


@dataclass(frozen=True)
class LangevinSettings:
    """Overdamped Langevin sampling at temperature ``T`` (energy units, k_B = 1).

    Attributes:
        dt: time step (units of inverse mobility).
        burn_in: steps discarded before the first sample.
        n_samples: samples kept per copy.
        thin: steps between kept samples.
        metropolis: accept/reject each Euler-Maruyama step with the Metropolis-Hastings rule
            (MALA), which makes ``exp(-F/T)`` the exact stationary law; ``False`` integrates the
            plain Euler-Maruyama scheme, whose stationary law is biased by O(dt).
    """

    dt: float = 0.05
    burn_in: int = 200
    n_samples: int = 200
    thin: int = 5
    metropolis: bool = True


@dataclass
class LangevinResult:
    """``samples`` ``(B, S, n)`` phases (not wrapped), ``acceptance`` ``(B,)`` share of
    accepted proposals (1 without Metropolis), ``phi`` the last state ``(B, n)``."""

    samples: FloatArray
    acceptance: FloatArray
    phi: FloatArray


def langevin(
    field: XYField,
    phi0: FloatArray,
    temperature: float,
    settings: LangevinSettings,
    rng: np.random.Generator,
) -> LangevinResult:
    """Sample ``p(phi) ~ exp(-F(phi)/T)`` over the free nodes, starting from ``phi0`` ``(B, n)``.

    The proposal is the Euler-Maruyama step of ``dphi = -dF/dphi dt + sqrt(2 T) dW`` on free
    nodes; with ``settings.metropolis`` it is accepted with probability
    ``min(1, exp(-(F' - F)/T) q(phi|phi') / q(phi'|phi))`` (Roberts & Tweedie 1996), all copies
    in parallel.
    """
    if temperature <= 0:
        raise ValueError("Langevin sampling needs T > 0")
    phi = np.array(phi0, dtype=np.float64, copy=True)
    n_b = phi.shape[0]
    rows = np.arange(n_b, dtype=np.int64)
    fi = field.free_idx
    dt = settings.dt
    sig = np.sqrt(2.0 * temperature * dt)
    f_cur, g_full = field.energy_gradient(phi, rows)
    g_cur = g_full[:, fi]
    total = settings.burn_in + settings.n_samples * settings.thin
    out = np.empty((n_b, settings.n_samples, phi.shape[1]))
    accepted = np.zeros(n_b)
    k = 0
    for step in range(total):
        noise = rng.normal(size=(n_b, fi.size))
        prop = phi.copy()
        prop[:, fi] += -dt * g_cur + sig * noise
        f_new, g_new_full = field.energy_gradient(prop, rows)
        g_new = g_new_full[:, fi]
        if settings.metropolis:
            fwd = np.sum(noise**2, axis=1) * 0.5  # -log q(prop|phi) up to a constant
            back_d = phi[:, fi] - prop[:, fi] + dt * g_new
            bwd = np.sum(back_d**2, axis=1) / (4.0 * temperature * dt)
            with np.errstate(invalid="ignore", over="ignore"):
                log_a = -(f_new - f_cur) / temperature - bwd + fwd
            acc = np.isfinite(f_new) & (np.log(rng.random(n_b)) < log_a)
        else:
            acc = np.ones(n_b, dtype=bool)
        phi[acc] = prop[acc]
        f_cur = np.where(acc, f_new, f_cur)
        g_cur[acc] = g_new[acc]
        accepted += acc
        if (
            step >= settings.burn_in
            and (step - settings.burn_in) % settings.thin == settings.thin - 1
        ):
            out[:, k] = phi
            k += 1
    return LangevinResult(out, accepted / max(total, 1), phi)
