"""Masked linear solves of the non-linear resistor network's Newton and active-set steps.

Per sample k the solvers need ``M_k d = rhs_k`` with ``M_k`` the free part of ``Q + C diag(w_k)
C^T`` (Q: the Kron-reduced port admittance, or the network's own Laplacian block A; w_k: diode
conductances, S) and the clamped or active rows replaced by the identity. Three ways, chosen per
batch: a batched dense solve (dense backend), low-rank updates of one factorisation of A per
parameter set with cached columns of A^-1 (sparse backend, samples with few conducting diodes),
and one block-diagonal sparse LU of the whole batch (the remaining samples).

With many ports (diodes on thousands of nodes) the ``sparse`` backend keeps every free node as a
variable. Its Newton matrices differ from the network's own A only on the nodes whose diodes
conduct (and on clamped or active nodes): with A factorised once per parameter update and the
columns A^-1 e_p of those nodes cached, each sample's Newton step is one shared multi-RHS solve
plus a small dense system on its own conducting nodes (a low-rank update; diodes conducting less
than 1e-4 of their node's conductance are left out of the step, never out of the energy or the
KCL test). Samples with too many conducting nodes are solved together by one block-diagonal
sparse LU of the batch (one SuperLU call, no per-sample Python loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from physlearn.simulators.resistor.circuit import BoolArray, Circuit, LinearPart, splu_symmetric
from physlearn.system import FloatArray, IntArray


class LinearSolver:
    """The linear algebra of one circuit: its :class:`LinearPart` for the current parameter
    version (cached) and the masked solves on it. :attr:`factorizations` counts the sparse LU
    factorisations performed so far."""

    #: Sparse backend: diodes whose conductance is below this fraction of their node's own
    #: conductance are left out of the Newton step (never out of the energy or the KCL test).
    lowrank_threshold: float = 1e-4

    def __init__(self, ckt: Circuit) -> None:
        self.ckt = ckt
        self.factorizations = 0
        self._cache: LinearPart | None = None

    def linear(self, version: int, conductances: Callable[[], FloatArray]) -> LinearPart:
        """The linear part at parameter ``version``; ``conductances()`` (S, every linear edge) is
        called only when the cached part belongs to another version."""
        c = self._cache
        if c is not None and c.version == version:
            return c
        c = self.ckt.kron_reduce(conductances(), version)
        if c.lu_ii is not None:
            self.factorizations += 1
        self._cache = c
        return c

    def forget(self) -> None:
        """Drop the cached linear part (the parameters changed)."""
        self._cache = None

    def solve(
        self,
        lin: LinearPart,
        q: Any,
        w: FloatArray | None,
        fixed: BoolArray,
        rhs: FloatArray,
        beta: float = 0.0,
        lowrank: bool = True,
    ) -> FloatArray:
        """Per sample k: solve M_k d = rhs_k, M_k = free part of (Q + C diag(w_k) C^T) with the
        fixed rows/columns replaced by the identity (so d = rhs on fixed variables). ``Q``
        includes a target nudge's ``beta`` on the output diagonal (passed separately for the
        low-rank path, which works from the factorisation of the un-nudged network)."""
        nv, nb = rhs.shape
        if nv == 0:
            return rhs.copy()
        if self.ckt.backend == "sparse" and lowrank:
            sel, x_low = self.solve_lowrank(lin, w, fixed, rhs, beta)
            if sel.size == nb:
                return x_low
            if sel.size:
                return self._solve_rest(lin, q, w, fixed, rhs, beta, sel, x_low)
        free = ~fixed
        wpos = (
            None if w is None or self.ckt.n_diodes == 0 else np.asarray(self.ckt.w_map @ w)
        )  # (K, b)
        if self.ckt.backend == "dense":
            return self._solve_dense(q, wpos, free, rhs)
        return self._solve_block(q, wpos, free, fixed, rhs)

    def _solve_rest(
        self,
        lin: LinearPart,
        q: Any,
        w: FloatArray | None,
        fixed: BoolArray,
        rhs: FloatArray,
        beta: float,
        sel: IntArray,
        x_low: FloatArray,
    ) -> FloatArray:
        """The low-rank solutions ``x_low`` of samples ``sel``, the others by block LU."""
        nb = rhs.shape[1]
        rest = np.setdiff1d(np.arange(nb), sel)
        out = np.empty_like(rhs)
        out[:, sel] = x_low
        out[:, rest] = self.solve(
            lin,
            q,
            None if w is None else w[:, rest],
            fixed[:, rest],
            rhs[:, rest],
            beta,
            False,
        )
        return out

    def _solve_dense(
        self, q: Any, wpos: FloatArray | None, free: BoolArray, rhs: FloatArray
    ) -> FloatArray:
        """Dense backend: batched dense solves, in chunks of at most ~2e7 matrix entries."""
        nv, nb = rhs.shape
        out = np.empty_like(rhs)
        chunk = max(1, int(2e7 // (nv * nv)))
        for s0 in range(0, nb, chunk):
            sl = slice(s0, min(nb, s0 + chunk))
            k = sl.stop - sl.start
            mat = np.repeat(q[None, :, :], k, axis=0)
            if wpos is not None:
                mat[:, self.ckt.w_rows, self.ckt.w_cols] += wpos[:, sl].T
            fr = free[:, sl].T  # (k, nv)
            mat *= fr[:, :, None]
            mat *= fr[:, None, :]
            di = np.arange(nv)
            mat[:, di, di] += ~fr
            out[:, sl] = np.linalg.solve(mat, rhs[:, sl].T[:, :, None])[:, :, 0].T
        return out

    def _solve_block(
        self, q: Any, wpos: FloatArray | None, free: BoolArray, fixed: BoolArray, rhs: FloatArray
    ) -> FloatArray:
        """Sparse backend: one block-diagonal matrix for the whole batch, one sparse LU."""
        nv, nb = rhs.shape
        qc = sp.coo_array(q)
        off = np.arange(nb, dtype=np.int64) * nv
        parts_r, parts_c, parts_v = [], [], []
        keep = free[qc.row] & free[qc.col]  # (nnz, b)
        kk = np.nonzero(keep)
        parts_r.append(qc.row[kk[0]] + off[kk[1]])
        parts_c.append(qc.col[kk[0]] + off[kk[1]])
        parts_v.append(qc.data[kk[0]])
        if wpos is not None:
            keep_w = free[self.ckt.w_rows] & free[self.ckt.w_cols]
            kw = np.nonzero(keep_w)
            parts_r.append(self.ckt.w_rows[kw[0]] + off[kw[1]])
            parts_c.append(self.ckt.w_cols[kw[0]] + off[kw[1]])
            parts_v.append(wpos[kw])
        fx = np.nonzero(fixed)
        parts_r.append(fx[0] + off[fx[1]])
        parts_c.append(fx[0] + off[fx[1]])
        parts_v.append(np.ones(fx[0].size))
        n = nv * nb
        mat = sp.csc_array(
            (np.concatenate(parts_v), (np.concatenate(parts_r), np.concatenate(parts_c))),
            shape=(n, n),
        )
        lu = splu_symmetric(mat)
        sol = np.asarray(lu.solve(np.ascontiguousarray(rhs.T).reshape(-1)))
        return np.ascontiguousarray(sol.reshape(nb, nv).T)

    def columns(self, lin: LinearPart, nodes: IntArray) -> IntArray:
        """Make sure the columns ``A^-1 e_p`` (ohm) of free slots ``nodes`` are cached (per
        parameter version, in ``lin.z``); return their positions there."""
        nf = self.ckt.free.size
        if lin.lu_a is None:
            lin.lu_a = splu_symmetric(lin.a)
            self.factorizations += 1
            lin.z_nodes = np.zeros(0, dtype=np.int64)
            lin.z = np.empty((nf, 64), order="F")
            lin.z_pos = np.full(nf, -1, dtype=np.int64)
        assert lin.z_nodes is not None and lin.z is not None and lin.z_pos is not None
        new = np.unique(nodes[lin.z_pos[nodes] < 0])
        if new.size:
            have = lin.z_nodes.size
            if have + new.size > lin.z.shape[1]:  # grow the cache (amortised doubling)
                z = np.empty((nf, max(2 * lin.z.shape[1], have + new.size)), order="F")
                z[:, :have] = lin.z[:, :have]
                lin.z = z
            e = np.zeros((nf, new.size))
            e[new, np.arange(new.size)] = 1.0
            lin.z[:, have : have + new.size] = np.asarray(lin.lu_a.solve(e)).reshape(nf, -1)
            lin.z_pos[new] = have + np.arange(new.size)
            lin.z_nodes = np.concatenate([lin.z_nodes, new])
        return lin.z_pos[nodes]

    def solve_lowrank(
        self, lin: LinearPart, w: FloatArray | None, fixed: BoolArray, rhs: FloatArray, beta: float
    ) -> tuple[IntArray, FloatArray]:
        """Sparse backend: the masked Newton systems as low-rank changes of the network's own
        Laplacian block A, factorised once per parameter version.

        Per sample k the changes sit on a few nodes S_k: terminals of the diodes that conduct
        (weight w above ``lowrank_threshold`` of the node's own conductance; the others are left
        out of the Newton matrix -- an inexact Newton step, while the line search and the
        convergence test use the exact energy and KCL), the fixed (clamped
        or active) nodes and, for a target nudge, the outputs. With Z = A^-1 E_S (columns cached
        per parameter version) and R = E_S^T Z: x = A^-1 r0 + Z j, the port currents j solving
        a dense |S_k| system. Returns the samples it solved (those with few ports, while the
        union of their ports stays small) and their solutions; the caller solves the others by
        block LU.
        """
        nv, nb = rhs.shape
        aa, cc, ww, kk = self._port_elements(lin, w, beta, nb)
        mem = fixed.copy()  # (nv, nb): node is a port of sample k
        mem[aa[aa >= 0], kk[aa >= 0]] = True
        mem[cc[cc >= 0], kk[cc >= 0]] = True
        sel = _select_samples(mem, nv)
        if sel.size == 0:
            return sel, np.zeros((nv, 0))
        keep_t = np.zeros(nb, dtype=bool)
        keep_t[sel] = True
        remap = np.cumsum(keep_t) - 1
        t = keep_t[kk]
        aa, cc, ww, kk = aa[t], cc[t], ww[t], remap[kk[t]]
        nb = sel.size
        fixed, rhs, mem = fixed[:, sel], rhs[:, sel], mem[:, sel]
        union = np.flatnonzero(mem.any(axis=1))
        smax = int(mem.sum(axis=0).max(initial=0))
        # r0: right-hand side with fixed rows replaced by their coupling (M has none)
        dfix = np.where(fixed, rhs, 0.0)
        r0 = np.where(fixed, 0.0, rhs + np.asarray(lin.a @ dfix)) if fixed.any() else rhs
        zp = self.columns(lin, union)  # cached columns of A^-1; factorises on first use
        assert lin.lu_a is not None and lin.z is not None and lin.z_nodes is not None
        x0 = np.asarray(lin.lu_a.solve(r0)).reshape(nv, nb)
        if smax == 0:
            return sel, x0
        x = self._port_correction(lin, x0, (aa, cc, ww, kk), fixed, dfix, mem, union, zp, smax)
        x[fixed] = rhs[fixed]
        return sel, x

    def _port_elements(
        self, lin: LinearPart, w: FloatArray | None, beta: float, nb: int
    ) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
        """The port conductances of the low-rank changes: terminals (variables, -1 = a
        source), weight (S) and sample of each -- the conducting diodes and, for a target
        nudge, ``beta`` from each output to its source."""
        out = self.ckt.out_var
        # port conductances: terminals (variables, -1 = a source), weight (S), sample
        a_n: list[IntArray] = []
        c_n: list[IntArray] = []
        w_v: list[FloatArray] = []
        smp: list[IntArray] = []
        if w is not None and self.ckt.n_diodes:
            ja_v, jc_v = self.ckt.ja_var, self.ckt.jc_var
            diag = lin.a.diagonal()
            scale = np.minimum(
                np.where(ja_v >= 0, diag[np.maximum(ja_v, 0)], np.inf),
                np.where(jc_v >= 0, diag[np.maximum(jc_v, 0)], np.inf),
            )
            d_idx, k_idx = np.nonzero(w > self.lowrank_threshold * scale[:, None])
            a_n.append(ja_v[d_idx])
            c_n.append(jc_v[d_idx])
            w_v.append(w[d_idx, k_idx])
            smp.append(k_idx)
        if beta != 0.0:
            a_n.append(np.repeat(out, nb))
            c_n.append(np.full(out.size * nb, -1, dtype=np.int64))
            w_v.append(np.full(out.size * nb, beta))
            smp.append(np.tile(np.arange(nb), out.size))
        aa = np.concatenate(a_n) if a_n else np.zeros(0, dtype=np.int64)
        cc = np.concatenate(c_n) if c_n else np.zeros(0, dtype=np.int64)
        ww = np.concatenate(w_v) if w_v else np.zeros(0)
        kk = np.concatenate(smp) if smp else np.zeros(0, dtype=np.int64)
        return aa, cc, ww, kk

    def _port_correction(
        self,
        lin: LinearPart,
        x0: FloatArray,
        ports: tuple[IntArray, IntArray, FloatArray, IntArray],
        fixed: BoolArray,
        dfix: FloatArray,
        mem: BoolArray,
        union: IntArray,
        zp: IntArray,
        smax: int,
    ) -> FloatArray:
        """x = x0 + Z j: the port currents j of every sample from its dense ``|S_k|`` system
        (port resistances R from the cached columns Z, port conductances from ``ports``)."""
        assert lin.z is not None and lin.z_nodes is not None
        aa, cc, ww, kk = ports
        nv, nb = x0.shape
        upos = np.full(nv, -1, dtype=np.int64)
        upos[union] = np.arange(union.size)
        memu = mem[union]  # (U, nb)
        order = np.argsort(~memu, axis=0, kind="stable")[:smax]  # (smax, nb) union positions
        valid = np.take_along_axis(memu, order, axis=0)  # (smax, nb)
        nodes = union[order]  # (smax, nb) free slots
        inv = np.full((union.size, nb), -1, dtype=np.int64)
        np.put_along_axis(inv, order, np.broadcast_to(np.arange(smax)[:, None], order.shape), 0)
        inv = np.where(memu, inv, -1)
        ru = lin.z[np.ix_(union, zp)]  # (U, U) port resistances (ohm)
        rb = ru[order.T[:, :, None], order.T[:, None, :]]  # (nb, smax, smax)
        lw = np.zeros((nb, smax, smax))  # port conductance matrices (S)
        if ww.size:
            pa = np.where(aa >= 0, inv[upos[np.maximum(aa, 0)], kk], -1)
            pc = np.where(cc >= 0, inv[upos[np.maximum(cc, 0)], kk], -1)
            for p1, p2, sgn in ((pa, pa, 1.0), (pc, pc, 1.0), (pa, pc, -1.0), (pc, pa, -1.0)):
                ok = (p1 >= 0) & (p2 >= 0)
                np.add.at(lw, (kk[ok], p1[ok], p2[ok]), sgn * ww[ok])
        x0s = np.take_along_axis(x0, nodes, axis=0).T  # (nb, smax)
        fx = np.take_along_axis(fixed, nodes, axis=0).T & valid.T
        dfs = np.take_along_axis(dfix, nodes, axis=0).T
        eye = np.eye(smax)[None]
        pad = ~valid.T
        mat = np.where(fx[:, :, None], rb, eye + lw @ rb)
        mat = np.where(pad[:, :, None] | pad[:, None, :], eye, mat)
        rhs_j = np.where(fx, dfs - x0s, -np.einsum("kij,kj->ki", lw, x0s))
        rhs_j = np.where(pad, 0.0, rhs_j)
        j = np.linalg.solve(mat, rhs_j[:, :, None])[:, :, 0]  # (nb, smax) port currents (A)
        kq = np.broadcast_to(np.arange(nb), (smax, nb))
        n_cached = lin.z_nodes.size
        jj = sp.csr_array((j.T[valid], (kq[valid], zp[order[valid]])), shape=(nb, n_cached))
        x = x0 + np.asarray(jj @ lin.z[:, :n_cached].T).T  # each sample's own ports: sparse
        return x


def _select_samples(mem: BoolArray, nv: int) -> IntArray:
    """The samples the low-rank path solves: by port count (at most 400 each), the longest
    prefix whose ports' union stays small (``mem`` ``(nv, nb)``: node is a port of sample k)."""
    counts = mem.sum(axis=0)
    # samples by port count; keep the longest prefix whose ports' union stays small
    by = np.argsort(counts, kind="stable")
    by = by[counts[by] <= 400]
    union_sizes = np.cumsum(
        np.diff(np.concatenate([[0], np.logical_or.accumulate(mem[:, by], axis=1).sum(axis=0)]))
    )
    n_keep = int(np.searchsorted(union_sizes, max(256, nv // 4), side="right"))
    sel = np.sort(by[:n_keep])
    return sel
