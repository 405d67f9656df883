"""Factorisations of the XY Hessian over the free nodes, for a batch of copies.

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

The conventions (signs, units, what is free) are those of ``docs/physics.md`` (§XY oscillators)
and of :mod:`physlearn.simulators.xy.field`, whose
:meth:`~physlearn.simulators.xy.field.XYField.factor` builds these factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg.lapack import dpotrf as potrf
from scipy.linalg.lapack import dpotrs as potrs
from scipy.sparse.linalg import splu

if TYPE_CHECKING:
    from physlearn.simulators.xy.field import XYField, XYTopology

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class Factor:
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


class DenseFactor(Factor):
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
    ) -> DenseFactor:
        assert field.wdense is not None
        fi = field.free_idx
        z = np.stack([np.cos(phi[:, fi]), np.sin(phi[:, fi])], axis=2)
        h = np.matmul(z, z.transpose(0, 2, 1))  # cos(phi_k - phi_l)
        h *= field.wdense[np.ix_(fi, fi)]
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
class BlockPattern:
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
    def build(cls, topo: XYTopology, free: BoolArray) -> BlockPattern:
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


class SparseFactor(Factor):
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
        cls, pat: BlockPattern, w: FloatArray, df: FloatArray, gf: FloatArray, shift: FloatArray
    ) -> SparseFactor:
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
