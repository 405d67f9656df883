"""The relaxed function of the XY oscillator simulator: topology, energy, forces, Hessian.

:class:`XYField` evaluates ``F = E + beta C`` and its derivatives for a batch of ``B`` independent
copies of one network (samples x restarts), vectorised over the copies and the edges;
:mod:`physlearn.simulators.xy.factor` factors its Hessian, :mod:`physlearn.simulators.xy.relax`
minimises it and :mod:`physlearn.simulators.xy.langevin` samples ``exp(-F/T)``. The sign
conventions and units are those of ``docs/physics.md`` (§XY oscillators).

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from physlearn.simulators.xy.factor import BlockPattern, DenseFactor, Factor, SparseFactor

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

Backend = Literal["dense", "sparse"]
NudgeTerm = Literal["none", "target", "error"]


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
        self.wdense = topo.dense_matrix(self.coupling) if topo.backend == "dense" else None
        # Scale of |F| for the round-off allowance of the line search.
        self.scale = float(np.abs(self.coupling).sum() + np.abs(self.h).sum() + 1.0)
        self._sparse_pattern: BlockPattern | None = None

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
        if self.wdense is not None:
            c, s = np.cos(phi), np.sin(phi)
            wc, ws = c @ self.wdense, s @ self.wdense
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
        if self.wdense is not None:
            c, s = np.cos(phi), np.sin(phi)
            pair = -0.5 * np.sum(c * (c @ self.wdense) + s * (s @ self.wdense), axis=1)
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
        if self.wdense is None:
            e = self.topo.edges
            w = self.coupling * np.cos(phi[:, e[:, 0]] - phi[:, e[:, 1]])
        return w, diag, g

    def factor(self, phi: FloatArray, rows: IntArray, shift: FloatArray) -> Factor:
        """Factor ``H_ff + diag(shift)`` per copy (``shift`` ``(b,)``, energy/rad^2); see
        :class:`~physlearn.simulators.xy.factor.Factor`."""
        w, diag, g = self.edge_weights_and_diag(phi, rows)
        gf = g[:, self.free_idx]
        df = diag[:, self.free_idx]
        if self.wdense is not None:
            return DenseFactor.build(self, phi, df, gf, shift)
        assert w is not None
        if self._sparse_pattern is None:
            self._sparse_pattern = BlockPattern.build(self.topo, self.free)
        return SparseFactor.build(self._sparse_pattern, w, df, gf, shift)

    def hess_vec(self, phi: FloatArray, rows: IntArray, v: FloatArray) -> FloatArray:
        """``H_ff v`` per copy without forming ``H`` (``v`` ``(b, n_f)``, energy/rad^2 x v)."""
        w, diag, _ = self.edge_weights_and_diag(phi, rows)
        fi = self.free_idx
        out = diag[:, fi] * v
        if self.wdense is not None:
            c, s = np.cos(phi[:, fi]), np.sin(phi[:, fi])
            wff = self.wdense[np.ix_(fi, fi)]
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
