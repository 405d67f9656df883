"""The circuit of a non-linear resistor network: node and element bookkeeping, Kron reduction.

A :class:`Circuit` is fixed when the network is built: which extended nodes (graph nodes, bias
sources, internal diode nodes) are sources and which are free, the Laplacian pattern of the
linear edges, the *ports* (free nodes touched by a diode junction, plus the outputs) and the
variables of the non-linear solve, and the junction incidence of the diodes on those variables.
:meth:`Circuit.kron_reduce` turns one set of edge conductances into the matrices the solvers
need (:class:`LinearPart`). Physics and solver: :mod:`physlearn.simulators.resistor.nonlinear`
and ``docs/physics.md`` (§Non-linear resistor networks).

Extended node indices: ``0 .. ng - 1`` graph nodes (including a ground), ``ng .. ng + nb - 1``
bias sources, then one internal node per Shockley diode with a series resistance. Free nodes are
addressed by their *slot* in the free list, sources by their slot in the source list (inputs,
ground, bias sources in that order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.linalg import splu

from physlearn.simulators.graphs.generators import Graph
from physlearn.simulators.resistor.elements import DiodeModel
from physlearn.system import FloatArray, IntArray

Backend = Literal["auto", "dense", "sparse"]
Element = Literal["resistor", "transistor"]
BoolArray = NDArray[np.bool_]


def is_src_ext(nodes: IntArray, ng: int, nb: int, inputs: IntArray) -> BoolArray:
    """Whether extended node indices are sources (graph inputs incl. ground, or bias)."""
    mask = np.zeros(ng + nb, dtype=bool)
    mask[inputs] = True
    mask[ng:] = True
    return np.asarray(mask[nodes])


def splu_symmetric(a: sp.sparray) -> Any:
    """SuperLU of a symmetric (Laplacian-block) matrix, in SuperLU's symmetric mode."""
    return splu(
        sp.csc_array(a),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )


@dataclass
class LinearPart:
    """Everything derived from one set of parameters (keyed by the parameter version)."""

    version: int
    g: FloatArray  # conductances of every linear edge (trainable, then series R_s), S
    a: sp.csr_array  # A = L_FF (S), (n_free, n_free)
    b: sp.csr_array  # B = L_FS (S), (n_free, n_src)
    q: Any  # dense Y (ports) or sparse A (sparse backend), S
    lu_ii: Any = None  # SuperLU of A_II (dense backend, if there is an interior)
    t: FloatArray | None = None  # A_II^-1 A_IP, (n_I, n_port)
    b_p: sp.csr_array | None = None  # rows of B on the ports
    b_i: sp.csr_array | None = None  # rows of B on the interior
    a_pi: sp.csr_array | None = None  # A_PI
    lu_a: Any = None  # SuperLU of A (sparse backend, low-rank solves), made on first use
    z_nodes: IntArray | None = None  # free slots whose columns of A^-1 are cached
    z: FloatArray | None = None  # (n_free, len(z_nodes)) those columns, ohm
    z_pos: IntArray | None = None  # position of each free slot in z_nodes (-1: not cached)


class Circuit:
    """Node and element bookkeeping of a network (see the module docstring).

    Args:
        graph: the network's graph, ground already appended (its last input) if there is one.
        n_user: node count of the user's graph (without the ground): diode indices
            ``>= n_user`` name bias sources.
        n_in: input channels (the first ``n_in`` inputs of ``graph``; the rest is the ground).
        bias: voltages of the bias sources (V).
        diode_anode, diode_cathode: user indices of each diode's terminals.
        model: the diodes' law (its kind and series resistance shape the circuit).
        backend: ``"auto"``, ``"dense"`` or ``"sparse"``; ``"auto"`` picks dense when the
            ports number at most ``dense_limit``.

    Refuses with ``ValueError`` non-finite bias voltages, a single source, diodes with
    out-of-range terminals, joining a node to itself or two sources, and ideal diodes between
    two free nodes.
    """

    def __init__(
        self,
        graph: Graph,
        n_user: int,
        n_in: int,
        bias: ArrayLike,
        diode_anode: ArrayLike,
        diode_cathode: ArrayLike,
        model: DiodeModel,
        backend: Backend,
        dense_limit: int,
    ) -> None:
        self.graph = graph
        self.n_in = n_in
        self.bias = np.asarray(bias, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(self.bias)):
            raise ValueError("bias source voltages must be finite (V)")
        nb = self.bias.size
        n_ground = graph.input_nodes.size - n_in
        if n_in + n_ground + nb < 2:
            raise ValueError(
                "a network with a single source node holds every node at that source's voltage "
                "(no current flows, nothing to learn): give at least 2 input nodes, a ground or "
                "a bias source"
            )
        an, ca = self._diode_terminals(diode_anode, diode_cathode, n_user)
        self._junctions(an, ca, model)
        self._laplacian_pattern()
        self._variables(backend, dense_limit)
        self._incidence()

    def _diode_terminals(
        self, diode_anode: ArrayLike, diode_cathode: ArrayLike, n_user: int
    ) -> tuple[IntArray, IntArray]:
        """Check the user's diode terminals; map them to extended node indices."""
        nb, ng = self.bias.size, self.graph.n_nodes
        an = np.asarray(diode_anode, dtype=np.int64).reshape(-1)
        ca = np.asarray(diode_cathode, dtype=np.int64).reshape(-1)
        if an.shape != ca.shape:
            raise ValueError(
                f"diode_anode and diode_cathode need the same length, got {an.size} and {ca.size}"
            )
        for name, idx in (("diode_anode", an), ("diode_cathode", ca)):
            bad = np.flatnonzero((idx < 0) | (idx >= n_user + nb))
            if bad.size:
                raise ValueError(
                    f"{name}[{int(bad[0])}] = {int(idx[bad[0]])} is not a node: graph nodes are "
                    f"0..{n_user - 1}, bias sources {n_user}..{n_user + nb - 1}"
                )
        loops = np.flatnonzero(an == ca)
        if loops.size:
            raise ValueError(f"diode {int(loops[0])} joins node {int(an[loops[0]])} to itself")

        def ext(idx: IntArray) -> IntArray:
            return np.where(idx >= n_user, idx - n_user + ng, idx)

        return ext(an), ext(ca)

    def _junctions(self, an: IntArray, ca: IntArray, model: DiodeModel) -> None:
        """Sources and free nodes, the junction terminals and the linear edges (trainable graph
        edges, then the diodes' series resistors with their internal nodes)."""
        g, nb, ng = self.graph, self.bias.size, self.graph.n_nodes
        m = an.size
        self.n_diodes = m
        series = model.kind == "shockley" and model.series_resistance > 0 and m > 0
        ni = m if series else 0
        n_ext = ng + nb + ni
        self.n_ext = n_ext
        src = np.concatenate([g.input_nodes, ng + np.arange(nb)]).astype(np.int64)
        is_src = np.zeros(n_ext, dtype=bool)
        is_src[src] = True
        both = np.flatnonzero(is_src[an] & is_src[ca])
        if both.size:
            d = int(both[0])
            raise ValueError(
                f"diode {d} joins two sources (nodes {int(an[d])} and {int(ca[d])}): it would "
                "short them or carry no information; connect diodes to at least one free node"
            )
        if model.kind == "ideal":
            ff = np.flatnonzero(~is_src[an] & ~is_src[ca])
            if ff.size:
                d = int(ff[0])
                raise ValueError(
                    f"ideal diode {d} joins two free nodes; the exact ideal-diode solver needs one "
                    "terminal on a source (rail, input or ground): use a Shockley model instead"
                )
        if series:
            # Series elements commute: the junction goes on the source side when the anode is
            # a source (junction from the source, so its voltage is a box constraint-like bound
            # of one free node), else SPICE's order (R_s on the anode side).
            internal = ng + nb + np.arange(m, dtype=np.int64)
            src_anode = is_src_ext(an, ng, nb, g.input_nodes)
            ja = np.where(src_anode, an, internal)
            jc = np.where(src_anode, internal, ca)
            fixed_edges = np.stack(
                [np.where(src_anode, internal, an), np.where(src_anode, ca, internal)], axis=1
            )
            fixed_g = np.full(m, 1.0 / model.series_resistance)
        else:
            ja, jc = an, ca
            fixed_edges = np.zeros((0, 2), dtype=np.int64)
            fixed_g = np.zeros(0)
        self.diode_anode, self.diode_cathode = an, ca
        self.ja, self.jc = ja, jc
        self.edges = np.concatenate([g.edges, fixed_edges]).astype(np.int64)
        self.fixed_g = fixed_g
        self.n_train = g.n_edges
        self.src = src
        self.free = np.flatnonzero(~is_src).astype(np.int64)
        n_free = self.free.size
        slot = np.full(n_ext, -1, dtype=np.int64)
        slot[self.free] = np.arange(n_free)
        slot[src] = np.arange(src.size)
        self.slot, self.is_src = slot, is_src
        self.out_free = slot[g.output_nodes]  # outputs within the free list

    def _laplacian_pattern(self) -> None:
        """Laplacian pattern (free-free A, free-source B); data = signed edge conductances."""
        is_src, slot = self.is_src, self.slot
        i, j = self.edges[:, 0], self.edges[:, 1]
        fi, fj = ~is_src[i], ~is_src[j]
        bb = np.flatnonzero(fi & fj)
        mx = np.flatnonzero(fi ^ fj)
        mx_free = np.where(fi[mx], i[mx], j[mx])
        mx_src = np.where(fi[mx], j[mx], i[mx])
        diag_e = np.concatenate([bb, bb, mx])
        diag_n = np.concatenate([i[bb], j[bb], mx_free])
        self.a_rows = slot[np.concatenate([diag_n, i[bb], j[bb]])]
        self.a_cols = slot[np.concatenate([diag_n, j[bb], i[bb]])]
        self.a_edges = np.concatenate([diag_e, bb, bb])
        self.a_sign = np.concatenate([np.ones(diag_e.size), -np.ones(2 * bb.size)])
        self.b_rows, self.b_cols, self.b_edges = slot[mx_free], slot[mx_src], mx

    def _variables(self, backend: Backend, dense_limit: int) -> None:
        """The ports, the backend and the variables of the non-linear solve (free slots)."""
        is_src, slot, ja, jc = self.is_src, self.slot, self.ja, self.jc
        n_free = self.free.size
        touched = np.concatenate([ja[~is_src[ja]], jc[~is_src[jc]]])
        ports = np.union1d(slot[touched], self.out_free).astype(np.int64)  # free slots
        n_ports = ports.size
        self.dense_limit = int(dense_limit)
        if backend == "auto":
            backend = "dense" if n_ports <= self.dense_limit else "sparse"
        self.backend: Literal["dense", "sparse"] = "dense" if backend == "dense" else "sparse"
        var = ports if self.backend == "dense" else np.arange(n_free, dtype=np.int64)
        self.var = var  # free slots of the variables
        nv = var.size
        pos = np.full(n_free, -1, dtype=np.int64)
        pos[var] = np.arange(nv)
        self.var_pos = pos
        self.interior = np.setdiff1d(np.arange(n_free), var)
        self.out_var = pos[self.out_free]

    def _incidence(self) -> None:
        """Junction incidence on the variables (C, (n_var, m)) and on the sources (m, n_src),
        the positions of C diag(w) C^T, and the ideal diodes' box constraints."""
        is_src, slot, ja, jc = self.is_src, self.slot, self.ja, self.jc
        pos, nv, m = self.var_pos, self.var.size, self.n_diodes
        a_var = np.where(is_src[ja], -1, pos[np.where(is_src[ja], 0, slot[ja])])
        c_var = np.where(is_src[jc], -1, pos[np.where(is_src[jc], 0, slot[jc])])
        d_idx = np.arange(m)
        rows = np.concatenate([a_var[a_var >= 0], c_var[c_var >= 0]])
        cols = np.concatenate([d_idx[a_var >= 0], d_idx[c_var >= 0]])
        vals = np.concatenate([np.ones(int((a_var >= 0).sum())), -np.ones(int((c_var >= 0).sum()))])
        self.c = sp.csr_array((vals, (rows, cols)), shape=(nv, m))
        self.ct = sp.csr_array(self.c.T)
        s_rows = np.concatenate([d_idx[is_src[ja]], d_idx[is_src[jc]]])
        s_cols = np.concatenate([slot[ja[is_src[ja]]], slot[jc[is_src[jc]]]])
        s_vals = np.concatenate([np.ones(int(is_src[ja].sum())), -np.ones(int(is_src[jc].sum()))])
        self.csrc = sp.csr_array((s_vals, (s_rows, s_cols)), shape=(m, self.src.size))
        # Aggregated positions of C diag(w) C^T in the (n_var, n_var) matrix: entries (r, c) and
        # a (K, m) map from diode weights to their values.
        pr = np.concatenate([a_var, c_var, a_var, c_var])
        pc = np.concatenate([a_var, c_var, c_var, a_var])
        pv = np.concatenate([np.ones(m), np.ones(m), -np.ones(m), -np.ones(m)])
        pd = np.concatenate([d_idx] * 4)
        keep = (pr >= 0) & (pc >= 0)
        keys = pr[keep] * max(nv, 1) + pc[keep]
        uniq, inv = np.unique(keys, return_inverse=True)
        self.w_rows, self.w_cols = uniq // max(nv, 1), uniq % max(nv, 1)
        self.w_map = sp.csr_array((pv[keep], (inv, pd[keep])), shape=(uniq.size, m))
        # Ideal diodes: box constraints. Anode free (var p), cathode source s: V_p <= V_s.
        up = ~is_src[ja] & is_src[jc]
        dn = is_src[ja] & ~is_src[jc]
        self.ja_var, self.jc_var = a_var, c_var
        self.hi_var, self.hi_src = a_var[up], slot[jc[up]]
        self.lo_var, self.lo_src = c_var[dn], slot[ja[dn]]
        self.box = bool(np.all(up | dn))

    # -- per parameter set ------------------------------------------------------------------
    def kron_reduce(self, g: FloatArray, version: int) -> LinearPart:
        """The linear part for conductances ``g`` of every linear edge (S): A and B, and for the
        dense backend the port admittance Y = A_PP - A_PI A_II^-1 A_IP (one sparse LU of A_II
        when there is an interior)."""
        nf, ns = self.free.size, self.src.size
        a = sp.csr_array(
            (self.a_sign * g[self.a_edges], (self.a_rows, self.a_cols)), shape=(nf, nf)
        )
        b = sp.csr_array((-g[self.b_edges], (self.b_rows, self.b_cols)), shape=(nf, ns))
        if self.backend == "sparse":
            return LinearPart(version, g, a, b, q=a)
        p, ii = self.var, self.interior
        a_pp = a[p][:, p].toarray()
        if not ii.size:
            return LinearPart(version, g, a, b, q=a_pp, b_p=sp.csr_array(b[p]))
        a_ii = a[ii][:, ii]
        a_ip = a[ii][:, p]
        a_pi = sp.csr_array(a[p][:, ii])
        lu = splu_symmetric(a_ii)
        t = np.asarray(lu.solve(a_ip.toarray())).reshape(ii.size, p.size)
        y = a_pp - a_pi @ t
        y = 0.5 * (y + y.T)
        return LinearPart(
            version,
            g,
            a,
            b,
            q=y,
            lu_ii=lu,
            t=t,
            b_p=sp.csr_array(b[p]),
            b_i=sp.csr_array(b[ii]),
            a_pi=a_pi,
        )

    def source_values(self, x: FloatArray) -> FloatArray:
        """Source voltages ``(n_src, batch)`` (V): inputs, ground (0 V), bias sources."""
        vs = np.zeros((self.src.size, x.shape[0]))
        vs[: self.n_in] = x.T
        if self.bias.size:
            vs[self.src.size - self.bias.size :] = self.bias[:, None]
        return vs

    def expand(self, lin: LinearPart, x: FloatArray, u: FloatArray | None) -> FloatArray:
        """Free-node voltages ``(n_free, batch)`` from the variables."""
        if self.backend == "sparse":
            return x
        vf = np.empty((self.free.size, x.shape[1]))
        vf[self.var] = x
        if self.interior.size:
            assert lin.t is not None and u is not None
            vf[self.interior] = -(lin.t @ x) - u
        return vf

    def full(self, vf: FloatArray, vs: FloatArray) -> FloatArray:
        """Voltages ``(n_ext, batch)`` of every extended node from free and source voltages."""
        full = np.empty((self.n_ext, vf.shape[1]))
        full[self.free] = vf
        full[self.src] = vs
        return full


def clipping_diodes(
    graph: Graph,
    groups: list[IntArray],
    rails: list[tuple[float, float]],
    direction: Literal["both", "up", "down"] = "both",
) -> tuple[IntArray, IntArray, FloatArray]:
    """Diodes giving each node of ``groups[l]`` a clipping non-linearity with rails ``rails[l]``.

    Each group gets two bias sources, its low and high rail (V; source k is node
    ``graph.n_nodes + k``: low rail 2l, high rail 2l + 1). ``"both"``: a diode from the node
    (anode) to the high rail, conducting when V > high (clips from above), and one from the low
    rail (anode) to the node (clips from below): with ideal diodes a node sits at
    clip(weighted average of its neighbours, low, high), a hard-tanh unit. ``"up"``: only the
    upper diode; ``"down"``: only the lower one (a ReLU-like floor at the low rail).

    Returns ``(diode_anode, diode_cathode, bias)`` for
    :class:`~physlearn.simulators.resistor.nonlinear.NonlinearResistorNetwork`.
    """
    if direction not in ("both", "up", "down"):
        raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
    if len(rails) == 1 and len(groups) > 1:
        rails = rails * len(groups)
    if len(rails) != len(groups):
        raise ValueError(f"give one (low, high) rail pair per group of nodes ({len(groups)})")
    an: list[IntArray] = []
    ca: list[IntArray] = []
    bias: list[float] = []
    n = graph.n_nodes
    for layer, ((low, high), nodes) in enumerate(zip(rails, groups, strict=True)):
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"group {layer}: rails need finite low < high V, got {(low, high)}")
        nodes = np.asarray(nodes, dtype=np.int64)
        r_lo, r_hi = n + len(bias), n + len(bias) + 1
        bias += [float(low), float(high)]
        if direction in ("both", "up"):
            an.append(nodes)
            ca.append(np.full(nodes.size, r_hi, dtype=np.int64))
        if direction in ("both", "down"):
            an.append(np.full(nodes.size, r_lo, dtype=np.int64))
            ca.append(nodes)
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.concatenate(an) if an else empty,
        np.concatenate(ca) if ca else empty,
        np.asarray(bias),
    )


def deep_diode_network(
    sizes: list[int],
    rails: list[tuple[float, float]],
    direction: Literal["both", "up", "down"] = "both",
) -> tuple[Graph, IntArray, IntArray, FloatArray]:
    """A deep diode-resistor network (after Scellier, ICML 2024): layers of nodes, trainable
    edges between adjacent layers (:func:`~physlearn.simulators.graphs.generators.layered`), and
    on every hidden node the diodes of :func:`clipping_diodes` with rails per hidden layer (one
    pair for all, or one per hidden layer). Layer 0 are the input sources, the last layer the
    (linear) outputs.

    Returns ``(graph, diode_anode, diode_cathode, bias)`` for
    :class:`~physlearn.simulators.resistor.nonlinear.NonlinearResistorNetwork`.
    """
    from physlearn.simulators.graphs.generators import layered

    graph = layered(sizes)
    if len(sizes) < 3:
        raise ValueError("a deep diode network needs at least one hidden layer")
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    groups = [np.arange(starts[k], starts[k + 1], dtype=np.int64) for k in range(1, len(sizes) - 1)]
    an, ca, bias = clipping_diodes(graph, groups, rails, direction)
    return graph, an, ca, bias
