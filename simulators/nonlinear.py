"""Non-linear resistor networks: resistors or transistor edges, diodes and bias sources, trained by
equilibrium propagation (Kendall et al. arXiv:2006.01981; Scellier, ICML 2024; Dillavou et al.,
PNAS 2024). Element laws and their units are in :mod:`physlearn.simulators.diodes`.

Physics and sign conventions (see ``docs/physics.md``, §Non-linear resistor networks)
-------------------------------------------------------------------------------------
* Nodes carry voltages V (volts). *Source* nodes are ideal voltage sources: the graph's input
  nodes (one per input channel, V), an optional ground (0 V, see
  :func:`~physlearn.simulators.graphs.with_extra_input`) and *bias* sources (fixed voltages, e.g.
  the rails of a deep diode network; not input channels). Every other node is free.
* Edge e = (i, j) of the graph is a trainable two-terminal element of conductance g_e (S):
  a resistor (parameter group ``"conductance"``, S) or a transistor edge whose conductance follows
  its gate voltage, g_e = g(V_G,e) (group ``"gate"``, V; see
  :class:`~physlearn.simulators.diodes.TransistorModel`). Shape ``(n_edges,)``, dims ``("edge",)``.
* Diode d from anode a to cathode c (any nodes, not two sources) with branch voltage
  v_d = V_a - V_c and current i_d from a to c (:class:`~physlearn.simulators.diodes.DiodeModel`).
  A Shockley diode with series resistance R_s gets an internal free node (anode - R_s - internal
  - junction - cathode), exactly as SPICE builds it.
* Energy (co-content, W): E(V) = 1/2 sum_e g_e (V_i - V_j)^2 + sum_d Phi(v_d) (+ 1/2 sum_s
  (V_a - V_int)^2 / R_s). For ideal diodes Phi is the indicator of v_d <= 0: E is minimised
  subject to V_a <= V_c. E is strictly convex in the free voltages (every node reaches a source
  through resistors, which the graph checks), so the equilibrium is unique; its stationarity
  conditions are Kirchhoff's current law with the element laws (and, for ideal diodes,
  complementarity: i_d >= 0, v_d <= 0, i_d v_d = 0).
* Conjugates (per sample): dE/dg_e = 1/2 (V_i - V_j)^2 (V^2 = W/S); dE/dV_G,e =
  1/2 (V_i - V_j)^2 g'(V_G,e) (W/V).
* Outputs: voltages of the output nodes (V). Nudges (beta in S for ``target``, as for the linear
  network): ``target`` adds a conductance beta from each output to a source at the target
  (E + beta * 1/2 sum (V_o - y_o)^2, so ``native_cost = "mse"``); ``error`` injects
  I_o = -beta eps_o (E + beta sum eps_o V_o); ``clamp`` holds the outputs at given voltages
  (coupled learning).

Solver
------
All non-linearity sits on the *port* nodes P: free nodes touched by a diode junction, plus the
outputs (where nudges act). Per parameter update the linear part is Kron-reduced onto P once:
with the interior I = free \\ P, one sparse LU of A_II gives the dense port admittance
Y = A_PP - A_PI A_II^-1 A_IP (S) and T = A_II^-1 A_IP; a batch needs one more multi-RHS solve for
the source terms. The problem on the ports is min_x 1/2 x^T Y x - h^T x + sum_d Phi(C^T x + c)
with one dense Y shared by the whole batch and by every nudge (a target nudge adds beta to Y's
output diagonal). Interior voltages follow exactly: V_I = -T x - A_II^-1 B_I V_src. This is the
``dense`` backend, chosen when the ports are few (<= ``dense_limit``): a deep network's hidden and
output layers, a lattice's outputs.

With many ports (diodes on thousands of nodes) the ``sparse`` backend keeps every free node as a
variable. Its Newton matrices differ from the network's own A only on the nodes whose diodes
conduct (and on clamped or active nodes): with A factorised once per parameter update and the
columns A^-1 e_p of those nodes cached, each sample's Newton step is one shared multi-RHS solve
plus a small dense system on its own conducting nodes (a low-rank update; diodes conducting less
than 1e-4 of their node's conductance are left out of the step, never out of the energy or the
KCL test). Samples with too many conducting nodes are solved together by one block-diagonal
sparse LU of the batch (one SuperLU call, no per-sample Python loop).

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

``exact_gradient`` is the implicit gradient: with H the Hessian of E at the free equilibrium (for
ideal diodes restricted to the inactive set -- defined away from kinks, where the active set is
locally constant), the adjoint lambda = H^-1 dL/dV_O and dL/dtheta = -mean_b lambda^T d2E/dV dtheta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.linalg import splu

from physlearn.losses import Loss
from physlearn.simulators.diodes import DiodeModel, TransistorModel
from physlearn.simulators.graphs import (
    Graph,
    input_voltage_port,
    output_voltage_port,
    with_extra_input,
)
from physlearn.system import (
    Equilibrium,
    FloatArray,
    IntArray,
    Nudge,
    NudgeKind,
    ParameterGroup,
    Params,
    PhysicalSystem,
    Port,
    check_parameters,
)
from physlearn.threads import BlasThreads

Backend = Literal["auto", "dense", "sparse"]
Element = Literal["resistor", "transistor"]
BoolArray = NDArray[np.bool_]


def is_src_ext(nodes: IntArray, ng: int, nb: int, inputs: IntArray) -> BoolArray:
    """Whether extended node indices are sources (graph inputs incl. ground, or bias)."""
    mask = np.zeros(ng + nb, dtype=bool)
    mask[inputs] = True
    mask[ng:] = True
    return np.asarray(mask[nodes])


def _splu(a: sp.sparray) -> Any:
    return splu(
        sp.csc_array(a),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )


@dataclass
class _Linear:
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


@dataclass(frozen=True)
class NonlinearState:
    """Warm start of one phase: the variables (port or free voltages) and ideal active sets."""

    version: int
    inputs: FloatArray  # (batch, n_in)
    x: FloatArray  # (n_var, batch) solution of this phase (V)
    u: FloatArray | None  # (n_I, batch) interior source response of the batch (dense backend)
    act_hi: BoolArray | None  # (n_var, batch) ideal diodes holding V at its upper bound
    act_lo: BoolArray | None  # (n_var, batch) ideal diodes holding V at its lower bound


@dataclass
class _Problem:
    """One phase on the variables: min 1/2 x^T Q x - h^T x + sum Phi(C^T x + c), x[fixed] = xfix."""

    q: Any  # (n_var, n_var) dense or sparse, S
    h: FloatArray  # (n_var, batch), A
    c: FloatArray  # (m, batch) junction voltage offsets from sources, V
    fixed: BoolArray  # (n_var, batch) clamped variables
    xfix: FloatArray  # (n_var, batch) their values, V
    lo: FloatArray | None  # ideal bounds (n_var, batch), V
    hi: FloatArray | None
    beta: float = 0.0  # target-nudge conductance at the outputs (S), already inside q


class NonlinearResistorNetwork(PhysicalSystem):
    """A resistor (or transistor-edge) network with diodes and bias sources.

    Args:
        graph: nodes, trainable edges, input (source) nodes in port order, output nodes.
        diode_anode, diode_cathode: ``(m,)`` node indices of each diode's terminals. Indices
            ``< graph.n_nodes`` are graph nodes; ``graph.n_nodes + k`` is bias source ``k``.
        diode_model: the law of every diode (ideal or Shockley, see :class:`DiodeModel`).
        bias: voltages of the bias sources (V).
        element: ``"resistor"`` (trainable conductances, S) or ``"transistor"`` (trainable gate
            voltages, V, through ``transistor``).
        params: initial values of the trainable group (default: uniform in ``init`` with ``seed``).
        bounds: ``(lower, upper)`` the hardware holds (S or V); conductances need ``lower > 0``.
        resolution: quantisation step of the group (0 = continuous).
        init: range of the uniform random initialisation (default: ``bounds``).
        ground: add a 0 V source wired to every non-input neighbour of the inputs.
        backend: ``"auto"`` (dense if the ports number <= ``dense_limit``), ``"dense"`` or
            ``"sparse"``.
        tol: relative KCL tolerance; the absolute one is ``tol * g_max * v_scale`` (A), g_max the
            largest linear conductance and v_scale the largest source voltage (>= 1 mV).
        max_iter: Newton / active-set iteration limit per phase.
        blas_threads: BLAS threads during factorisations and solves (None: leave them alone).

    Refuses non-physical input with ``ValueError``: bounds that allow g <= 0, diodes joining two
    sources or a node to itself, ideal diodes between two free nodes, out-of-range node indices.
    """

    supported_nudges: frozenset[NudgeKind] = frozenset({"target", "error", "clamp"})
    supports_complex_nudge = False
    native_cost = "mse"
    energy_unit = "W"
    #: Sparse backend: diodes whose conductance is below this fraction of their node's own
    #: conductance are left out of the Newton step (never out of the energy or the KCL test).
    lowrank_threshold: float = 1e-4

    def __init__(
        self,
        graph: Graph,
        diode_anode: ArrayLike = (),
        diode_cathode: ArrayLike = (),
        diode_model: DiodeModel | None = None,
        bias: ArrayLike = (),
        *,
        element: Element = "resistor",
        transistor: TransistorModel | None = None,
        params: ArrayLike | None = None,
        bounds: tuple[float, float] = (1e-5, 1e-2),
        resolution: float = 0.0,
        init: tuple[float, float] | None = None,
        seed: int = 0,
        ground: bool = False,
        backend: Backend = "auto",
        dense_limit: int = 600,
        tol: float = 1e-10,
        max_iter: int = 200,
        blas_threads: int | None = 1,
    ) -> None:
        if element not in ("resistor", "transistor"):
            raise ValueError(f"element must be 'resistor' or 'transistor', got {element!r}")
        if backend not in ("auto", "dense", "sparse"):
            raise ValueError(f"backend must be 'auto', 'dense' or 'sparse', got {backend!r}")
        if not (math.isfinite(tol) and 0 < tol < 1e-3):
            raise ValueError(f"tol must be a relative tolerance in (0, 1e-3), got {tol!r}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        lower, upper = float(bounds[0]), float(bounds[1])
        if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
            raise ValueError(f"bounds need finite lower < upper, got {bounds}")
        if element == "resistor" and lower <= 0:
            raise ValueError(
                f"conductance bounds need 0 < lower (a resistor's conductance is positive), "
                f"got {bounds} S"
            )
        self.element: Element = element
        self.transistor = transistor if transistor is not None else TransistorModel()
        self.model = diode_model if diode_model is not None else DiodeModel()
        self.ground = bool(ground)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self._blas = BlasThreads(blas_threads)

        n_user = graph.n_nodes
        self.graph = with_extra_input(graph, "ground") if ground else graph
        g = self.graph
        self._n_in = int(graph.input_nodes.size)
        self.bias = np.asarray(bias, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(self.bias)):
            raise ValueError("bias source voltages must be finite (V)")
        nb = self.bias.size
        if self._n_in + int(ground) + nb < 2:
            raise ValueError(
                "a network with a single source node holds every node at that source's voltage "
                "(no current flows, nothing to learn): give at least 2 input nodes, a ground or "
                "a bias source"
            )
        ng = g.n_nodes

        # -- diodes: user indices -> extended node indices [graph | bias | internal] ---------
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

        an, ca = ext(an), ext(ca)
        m = an.size
        self.n_diodes = m
        series = self.model.kind == "shockley" and self.model.series_resistance > 0 and m > 0
        ni = m if series else 0
        n_ext = ng + nb + ni
        self._n_ext = n_ext
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
        if self.model.kind == "ideal":
            ff = np.flatnonzero(~is_src[an] & ~is_src[ca])
            if ff.size:
                d = int(ff[0])
                raise ValueError(
                    f"ideal diode {d} joins two free nodes; the exact ideal-diode solver needs one "
                    "terminal on a source (rail, input or ground): use a Shockley model instead"
                )
        # Junction terminals, and the linear edges: trainable graph edges then series resistors.
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
            fixed_g = np.full(m, 1.0 / self.model.series_resistance)
        else:
            ja, jc = an, ca
            fixed_edges = np.zeros((0, 2), dtype=np.int64)
            fixed_g = np.zeros(0)
        self._diode_anode, self._diode_cathode = an, ca
        self._ja, self._jc = ja, jc
        self._edges = np.concatenate([g.edges, fixed_edges]).astype(np.int64)
        self._fixed_g = fixed_g
        self._n_train = g.n_edges

        # -- node bookkeeping -------------------------------------------------------------
        self._src = src
        self._free = np.flatnonzero(~is_src).astype(np.int64)
        n_free = self._free.size
        slot = np.full(n_ext, -1, dtype=np.int64)
        slot[self._free] = np.arange(n_free)
        slot[src] = np.arange(src.size)
        self._slot, self._is_src = slot, is_src
        self._out_free = slot[g.output_nodes]  # outputs within the free list

        # Laplacian pattern (free-free A, free-source B), data = signed edge conductances.
        i, j = self._edges[:, 0], self._edges[:, 1]
        fi, fj = ~is_src[i], ~is_src[j]
        bb = np.flatnonzero(fi & fj)
        mx = np.flatnonzero(fi ^ fj)
        mx_free = np.where(fi[mx], i[mx], j[mx])
        mx_src = np.where(fi[mx], j[mx], i[mx])
        diag_e = np.concatenate([bb, bb, mx])
        diag_n = np.concatenate([i[bb], j[bb], mx_free])
        self._a_rows = slot[np.concatenate([diag_n, i[bb], j[bb]])]
        self._a_cols = slot[np.concatenate([diag_n, j[bb], i[bb]])]
        self._a_edges = np.concatenate([diag_e, bb, bb])
        self._a_sign = np.concatenate([np.ones(diag_e.size), -np.ones(2 * bb.size)])
        self._b_rows, self._b_cols, self._b_edges = slot[mx_free], slot[mx_src], mx

        # -- ports and variables ----------------------------------------------------------
        touched = np.concatenate([ja[~is_src[ja]], jc[~is_src[jc]]])
        ports = np.union1d(slot[touched], self._out_free).astype(np.int64)  # free slots
        n_ports = ports.size
        self.dense_limit = int(dense_limit)
        if backend == "auto":
            backend = "dense" if n_ports <= self.dense_limit else "sparse"
        self.backend: Literal["dense", "sparse"] = "dense" if backend == "dense" else "sparse"
        var = ports if self.backend == "dense" else np.arange(n_free, dtype=np.int64)
        self._var = var  # free slots of the variables
        nv = var.size
        pos = np.full(n_free, -1, dtype=np.int64)
        pos[var] = np.arange(nv)
        self._var_pos = pos
        interior = np.setdiff1d(np.arange(n_free), var)
        self._interior = interior
        self._out_var = pos[self._out_free]

        # Junction incidence on the variables (C, (n_var, m)) and on the sources (m, n_src).
        a_var = np.where(is_src[ja], -1, pos[np.where(is_src[ja], 0, slot[ja])])
        c_var = np.where(is_src[jc], -1, pos[np.where(is_src[jc], 0, slot[jc])])
        d_idx = np.arange(m)
        rows = np.concatenate([a_var[a_var >= 0], c_var[c_var >= 0]])
        cols = np.concatenate([d_idx[a_var >= 0], d_idx[c_var >= 0]])
        vals = np.concatenate([np.ones(int((a_var >= 0).sum())), -np.ones(int((c_var >= 0).sum()))])
        self._c = sp.csr_array((vals, (rows, cols)), shape=(nv, m))
        self._ct = sp.csr_array(self._c.T)
        s_rows = np.concatenate([d_idx[is_src[ja]], d_idx[is_src[jc]]])
        s_cols = np.concatenate([slot[ja[is_src[ja]]], slot[jc[is_src[jc]]]])
        s_vals = np.concatenate([np.ones(int(is_src[ja].sum())), -np.ones(int(is_src[jc].sum()))])
        self._csrc = sp.csr_array((s_vals, (s_rows, s_cols)), shape=(m, src.size))
        # Aggregated positions of C diag(w) C^T in the (n_var, n_var) matrix: entries (r, c) and
        # a (K, m) map from diode weights to their values.
        pr = np.concatenate([a_var, c_var, a_var, c_var])
        pc = np.concatenate([a_var, c_var, c_var, a_var])
        pv = np.concatenate([np.ones(m), np.ones(m), -np.ones(m), -np.ones(m)])
        pd = np.concatenate([d_idx] * 4)
        keep = (pr >= 0) & (pc >= 0)
        keys = pr[keep] * max(nv, 1) + pc[keep]
        uniq, inv = np.unique(keys, return_inverse=True)
        self._w_rows, self._w_cols = uniq // max(nv, 1), uniq % max(nv, 1)
        self._w_map = sp.csr_array((pv[keep], (inv, pd[keep])), shape=(uniq.size, m))
        # Ideal diodes: box constraints. Anode free (var p), cathode source s: V_p <= V_s.
        up = ~is_src[ja] & is_src[jc]
        dn = is_src[ja] & ~is_src[jc]
        self._ja_var, self._jc_var = a_var, c_var
        self._hi_var, self._hi_src = a_var[up], slot[jc[up]]
        self._lo_var, self._lo_src = c_var[dn], slot[ja[dn]]
        self._box = bool(np.all(up | dn))

        # -- parameters ---------------------------------------------------------------------
        name, unit, long_name, e_unit = (
            ("conductance", "S", "edge conductance", "W")
            if element == "resistor"
            else ("gate", "V", "transistor gate voltage", "W")
        )
        self._gname = name
        self._group = ParameterGroup(
            name=name,
            shape=(g.n_edges,),
            dims=("edge",),
            lower=lower,
            upper=upper,
            unit=unit,
            resolution=float(resolution),
            long_name=long_name,
            energy_unit=e_unit,
        )
        if resolution < 0 or not math.isfinite(resolution):
            raise ValueError(f"resolution must be finite and >= 0, got {resolution!r}")
        self._version = 0
        self._cache: _Linear | None = None
        #: Sparse LU factorisations of the linear part performed so far.
        self.factorizations = 0
        if params is None:
            params = self._group.uniform(init, seed)
        self._theta = np.zeros(g.n_edges)
        self.set_parameters({name: np.asarray(params, dtype=np.float64)})

    # -- description ---------------------------------------------------------------------
    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return (self._group,)

    @property
    def inputs(self) -> Port:
        return input_voltage_port(self.graph, self._n_in)

    @property
    def outputs(self) -> Port:
        return output_voltage_port(self.graph)

    @property
    def n_ports(self) -> int:
        """Variables of the non-linear solve (ports if dense, every free node if sparse)."""
        return int(self._var.size)

    # -- parameters ----------------------------------------------------------------------
    def set_parameters(self, params: Params) -> Params:
        """Write the trainable group (S or V); returns what the network holds.

        Refuses unknown or missing groups, a wrong shape, non-finite values and values outside
        the bounds (the orchestrator projects; this system never clips). With a resolution the
        values are held on the grid ``lower + k * resolution``.
        """
        name, grp = self._gname, self._group
        v = check_parameters((grp,), params)[name]
        if grp.resolution > 0:
            v = self._group.quantise(v)
        self._theta = v
        self._version += 1
        self._cache = None
        return self.get_parameters()

    def get_parameters(self) -> Params:
        return {self._gname: self._theta.copy()}

    def edge_conductance(self) -> FloatArray:
        """Conductance of every trainable edge (S): g_e, or g(V_G,e) for transistor edges."""
        if self.element == "resistor":
            return self._theta.copy()
        return self.transistor.conductance(self._theta)

    # -- linear algebra ------------------------------------------------------------------
    def _linear(self) -> _Linear:
        c = self._cache
        if c is not None and c.version == self._version:
            return c
        g = np.concatenate([self.edge_conductance(), self._fixed_g])
        nf, ns = self._free.size, self._src.size
        a = sp.csr_array(
            (self._a_sign * g[self._a_edges], (self._a_rows, self._a_cols)), shape=(nf, nf)
        )
        b = sp.csr_array((-g[self._b_edges], (self._b_rows, self._b_cols)), shape=(nf, ns))
        if self.backend == "sparse":
            c = _Linear(self._version, g, a, b, q=a)
        else:
            p, ii = self._var, self._interior
            a_pp = a[p][:, p].toarray()
            if ii.size:
                a_ii = a[ii][:, ii]
                a_ip = a[ii][:, p]
                a_pi = sp.csr_array(a[p][:, ii])
                lu = _splu(a_ii)
                self.factorizations += 1
                t = np.asarray(lu.solve(a_ip.toarray())).reshape(ii.size, p.size)
                y = a_pp - a_pi @ t
                y = 0.5 * (y + y.T)
                c = _Linear(
                    self._version,
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
            else:
                c = _Linear(self._version, g, a, b, q=a_pp, b_p=sp.csr_array(b[p]))
        self._cache = c
        return c

    def _source_values(self, x: FloatArray) -> FloatArray:
        """Source voltages ``(n_src, batch)`` (V): inputs, ground (0 V), bias sources."""
        vs = np.zeros((self._src.size, x.shape[0]))
        vs[: self._n_in] = x.T
        if self.bias.size:
            vs[self._src.size - self.bias.size :] = self.bias[:, None]
        return vs

    def _matvec(self, q: Any, x: FloatArray) -> FloatArray:
        return np.asarray(q @ x)

    def _solve(
        self,
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
        if self.backend == "sparse" and lowrank:
            sel, x_low = self._solve_lowrank(w, fixed, rhs, beta)
            if sel.size == nb:
                return x_low
            if sel.size:
                rest = np.setdiff1d(np.arange(nb), sel)
                out = np.empty_like(rhs)
                out[:, sel] = x_low
                out[:, rest] = self._solve(
                    q, None if w is None else w[:, rest], fixed[:, rest], rhs[:, rest], beta, False
                )
                return out
        free = ~fixed
        wpos = None if w is None or self.n_diodes == 0 else np.asarray(self._w_map @ w)  # (K, b)
        if self.backend == "dense":
            out = np.empty_like(rhs)
            chunk = max(1, int(2e7 // (nv * nv)))
            for s0 in range(0, nb, chunk):
                sl = slice(s0, min(nb, s0 + chunk))
                k = sl.stop - sl.start
                mat = np.repeat(q[None, :, :], k, axis=0)
                if wpos is not None:
                    mat[:, self._w_rows, self._w_cols] += wpos[:, sl].T
                fr = free[:, sl].T  # (k, nv)
                mat *= fr[:, :, None]
                mat *= fr[:, None, :]
                di = np.arange(nv)
                mat[:, di, di] += ~fr
                out[:, sl] = np.linalg.solve(mat, rhs[:, sl].T[:, :, None])[:, :, 0].T
            return out
        # sparse: one block-diagonal matrix for the whole batch
        qc = sp.coo_array(q)
        off = np.arange(nb, dtype=np.int64) * nv
        parts_r, parts_c, parts_v = [], [], []
        keep = free[qc.row] & free[qc.col]  # (nnz, b)
        kk = np.nonzero(keep)
        parts_r.append(qc.row[kk[0]] + off[kk[1]])
        parts_c.append(qc.col[kk[0]] + off[kk[1]])
        parts_v.append(qc.data[kk[0]])
        if wpos is not None:
            keep_w = free[self._w_rows] & free[self._w_cols]
            kw = np.nonzero(keep_w)
            parts_r.append(self._w_rows[kw[0]] + off[kw[1]])
            parts_c.append(self._w_cols[kw[0]] + off[kw[1]])
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
        lu = _splu(mat)
        sol = np.asarray(lu.solve(np.ascontiguousarray(rhs.T).reshape(-1)))
        return np.ascontiguousarray(sol.reshape(nb, nv).T)

    def _columns(self, lin: _Linear, nodes: IntArray) -> IntArray:
        """Make sure the columns ``A^-1 e_p`` (ohm) of free slots ``nodes`` are cached (per
        parameter version, in ``lin.z``); return their positions there."""
        nf = self._free.size
        if lin.lu_a is None:
            lin.lu_a = _splu(lin.a)
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

    def _solve_lowrank(
        self, w: FloatArray | None, fixed: BoolArray, rhs: FloatArray, beta: float
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
        lin = self._linear()
        nv, nb = rhs.shape
        out = self._out_var
        # port conductances: terminals (variables, -1 = a source), weight (S), sample
        a_n: list[IntArray] = []
        c_n: list[IntArray] = []
        w_v: list[FloatArray] = []
        smp: list[IntArray] = []
        if w is not None and self.n_diodes:
            ja_v, jc_v = self._ja_var, self._jc_var
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
        mem = fixed.copy()  # (nv, nb): node is a port of sample k
        mem[aa[aa >= 0], kk[aa >= 0]] = True
        mem[cc[cc >= 0], kk[cc >= 0]] = True
        counts = mem.sum(axis=0)
        # samples by port count; keep the longest prefix whose ports' union stays small
        by = np.argsort(counts, kind="stable")
        by = by[counts[by] <= 400]
        union_sizes = np.cumsum(
            np.diff(np.concatenate([[0], np.logical_or.accumulate(mem[:, by], axis=1).sum(axis=0)]))
        )
        n_keep = int(np.searchsorted(union_sizes, max(256, nv // 4), side="right"))
        sel = np.sort(by[:n_keep])
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
        zp = self._columns(lin, union)  # cached columns of A^-1; factorises on first use
        assert lin.lu_a is not None and lin.z is not None and lin.z_nodes is not None
        x0 = np.asarray(lin.lu_a.solve(r0)).reshape(nv, nb)
        if smax == 0:
            return sel, x0
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
        x[fixed] = rhs[fixed]
        return sel, x

    # -- checks --------------------------------------------------------------------------
    def _check_inputs(self, inputs: ArrayLike) -> FloatArray:
        x = np.asarray(inputs)
        if x.ndim != 2 or x.shape[1] != self._n_in or x.shape[0] < 1:
            raise ValueError(
                f"inputs must have shape (batch, {self._n_in}) with batch >= 1, got {x.shape}"
            )
        if np.iscomplexobj(x) or not np.all(np.isfinite(x)):
            raise ValueError("inputs must be real and finite (volts)")
        return x.astype(np.float64)

    def _check_nudge(self, nudge: Nudge, batch: int) -> tuple[float, FloatArray]:
        v = nudge.checked_values(batch, self._out_free.size)
        beta = complex(nudge.beta)
        if beta.imag != 0:
            raise ValueError(f"{type(self).__name__} does not support complex (holomorphic) nudges")
        return beta.real, v

    # -- the phases ----------------------------------------------------------------------
    def _problem(
        self, lin: _Linear, vs: FloatArray, u: FloatArray | None, nudge: Nudge | None
    ) -> _Problem:
        nv, nb = self._var.size, vs.shape[1]
        if self.backend == "dense":
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
            beta, vals = self._check_nudge(nudge, nb)
            o = self._out_var
            if nudge.kind == "target":
                if self.backend == "dense":
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
        c = np.asarray(self._csrc @ vs) if self.n_diodes else np.zeros((0, nb))
        lo = hi = None
        if self.model.kind == "ideal" and self.n_diodes:
            lo = np.full((nv, nb), -np.inf)
            hi = np.full((nv, nb), np.inf)
            np.minimum.at(hi, self._hi_var, vs[self._hi_src])
            np.maximum.at(lo, self._lo_var, vs[self._lo_src])
            bad = np.argwhere(lo > hi)
            if bad.size:
                p, k = int(bad[0, 0]), int(bad[0, 1])
                node = int(self._free[self._var[p]])
                raise ValueError(
                    f"ideal diodes short-circuit sources at node {node} (sample {k}): they need "
                    f"V >= {lo[p, k]:g} V and V <= {hi[p, k]:g} V at once (infinite current)"
                )
            # a clamped output keeps its clamp; bounds do not act on it
            lo[fixed] = -np.inf
            hi[fixed] = np.inf
        beta_t = float(nudge.beta.real) if nudge is not None and nudge.kind == "target" else 0.0
        return _Problem(q, h, c, fixed, xfix, lo, hi, beta_t)

    def _tol_abs(self, lin: _Linear, vs: FloatArray) -> float:
        vmax = float(np.max(np.abs(vs))) if vs.size else 0.0
        return self.tol * float(np.max(lin.g)) * max(vmax, 1e-3)

    def _gradient(self, pr: _Problem, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Gradient of the phase energy (A, = KCL imbalance on the variables) and junction v."""
        grad = self._matvec(pr.q, x) - pr.h
        v = np.asarray(self._ct @ x) + pr.c
        if self.n_diodes and self.model.kind == "shockley":
            grad += np.asarray(self._c @ self.model.current(v))
        grad[pr.fixed] = 0.0
        return grad, v

    def _newton(
        self, pr: _Problem, x: FloatArray, tol_a: float
    ) -> tuple[FloatArray, IntArray, BoolArray]:
        """Damped Newton with exact line search for Shockley (or no) diodes."""
        nb = x.shape[1]
        iters = np.zeros(nb, dtype=np.int64)
        conv = np.zeros(nb, dtype=bool)
        model = self.model
        shockley = self.n_diodes > 0
        for _ in range(self.max_iter + 1):
            grad, v = self._gradient(pr, x)
            res = np.abs(grad).max(axis=0) if grad.shape[0] else np.zeros(nb)
            conv = np.isfinite(res) & (res <= tol_a)
            act = np.flatnonzero(~conv)
            if act.size == 0 or iters.max(initial=0) >= self.max_iter:
                break
            ga = grad[:, act]
            w = model.conductance(v[:, act]) if shockley else None
            d = -self._solve(pr.q, w, pr.fixed[:, act], ga, pr.beta)
            alpha = self._line_search(pr, x[:, act], v[:, act], ga, d)
            x[:, act] += alpha * d
            iters[act] += 1
        return x, iters, conv

    def _line_search(
        self, pr: _Problem, x: FloatArray, v: FloatArray, grad: FloatArray, d: FloatArray
    ) -> FloatArray:
        """Step lengths (per sample) minimising the phase energy along d (exact line search).

        phi'(a) = g.d + a d^T Q d + dv . [i(v + a dv) - i(v)] with dv = C^T d; phi is convex.
        Steps never exceed the Newton step (a <= 1) nor push a junction more than 20 n V_T
        beyond max(knee + 1 V, its voltage) (a trust region for the exponential, inactive near
        a solution): the cap is taken when phi still decreases there or phi' is already small
        (quadratic convergence), else safeguarded Newton/bisection on phi' below the cap.
        """
        g0 = np.einsum("ib,ib->b", grad, d)  # < 0
        qd = self._matvec(pr.q, d)
        qdd = np.einsum("ib,ib->b", d, qd)
        if self.n_diodes == 0 or self.model.kind != "shockley":
            return np.where(qdd > 0, -g0 / np.where(qdd > 0, qdd, 1.0), 1.0)
        dv = np.asarray(self._ct @ d)
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
        vmax = np.maximum(self._knee() + 1.0, v) + 20.0 * self.model.vte
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

    def _pdas(
        self,
        pr: _Problem,
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
        qdiag = np.diag(pr.q) if self.backend == "dense" else pr.q.diagonal()
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
            grad = self._matvec(pr.q, xs) - pr.h[:, todo]
            rhs = np.where(fixed, dfix, -grad - self._matvec(pr.q, dfix))
            xs = xs + self._solve(pr.q, None, fixed, rhs, pr.beta)
            xs = np.where(fixed, target, xs)  # exact on the active set
            x[:, todo] = xs
            iters[todo] += 1
            y = pr.h[:, todo] - self._matvec(pr.q, xs)  # current the diodes must carry away
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

    def _expand(self, lin: _Linear, x: FloatArray, u: FloatArray | None) -> FloatArray:
        """Free-node voltages ``(n_free, batch)`` from the variables."""
        if self.backend == "sparse":
            return x
        vf = np.empty((self._free.size, x.shape[1]))
        vf[self._var] = x
        if self._interior.size:
            assert lin.t is not None and u is not None
            vf[self._interior] = -(lin.t @ x) - u
        return vf

    def _full(self, vf: FloatArray, vs: FloatArray) -> FloatArray:
        full = np.empty((self._n_ext, vf.shape[1]))
        full[self._free] = vf
        full[self._src] = vs
        return full

    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Relax the batch ``inputs`` ``(batch, n_in)`` (V), optionally nudged; see the module
        docstring for the solver and the diagnostics. ``rng`` is unused (deterministic).

        ``energy`` is E (W) of the network alone, without the nudge term. ``observables`` holds
        ``diode_current`` ``(batch, m)`` (A, anode to cathode; for ideal diodes the current of
        the diode holding an active bound, 0 for the others when several share one bound).
        """
        with self._blas.limit():
            return self._equilibrate(inputs, nudge, warm_start)

    def _equilibrate(self, inputs: FloatArray, nudge: Nudge | None, warm_start: Any) -> Equilibrium:
        xin = self._check_inputs(inputs)
        nb = xin.shape[0]
        lin = self._linear()
        vs = self._source_values(xin)
        ws = (
            warm_start
            if isinstance(warm_start, NonlinearState)
            and warm_start.version == self._version
            and warm_start.inputs.shape == xin.shape
            and np.array_equal(warm_start.inputs, xin)
            else None
        )
        u: FloatArray | None = None
        if self.backend == "dense" and self._interior.size:
            assert lin.lu_ii is not None and lin.b_i is not None
            if ws is not None and ws.u is not None:
                u = ws.u
            else:
                u = np.asarray(lin.lu_ii.solve(np.asarray(lin.b_i @ vs))).reshape(-1, nb)
        pr = self._problem(lin, vs, u, nudge)
        tol_a = self._tol_abs(lin, vs)
        ideal = self.model.kind == "ideal" and self.n_diodes > 0
        act_hi = act_lo = None
        if ws is not None:
            x = ws.x.copy()
            x[pr.fixed] = pr.xfix[pr.fixed]
            if ideal and ws.act_hi is not None and ws.act_lo is not None:
                act_hi, act_lo = ws.act_hi.copy(), ws.act_lo.copy()
                act_hi &= ~pr.fixed
                act_lo &= ~pr.fixed
            elif self.n_diodes and not ideal:
                # values the phase fixes (clamped outputs) can drive a junction of the warm
                # start far beyond its knee, where the exponential's overflow leaves Newton no
                # usable step: those samples start cold (junctions below their knees) instead
                vj = np.asarray(self._ct @ x) + pr.c  # junction voltages (V)
                far = ~(vj <= self._knee() + 1.0).all(axis=0)
                if far.any():
                    x[:, far] = self._initial(pr)[:, far]
        else:
            x = self._initial(pr)
        if ideal:
            assert pr.lo is not None and pr.hi is not None
            if act_hi is None or act_lo is None:
                act_hi = x > pr.hi
                act_lo = x < pr.lo
            x, act_hi, act_lo, iters, conv = self._pdas(pr, x, act_hi, act_lo, tol_a)
        else:
            x, iters, conv = self._newton(pr, x, tol_a)
        vf = self._expand(lin, x, u)
        full = self._full(vf, vs)

        # -- diagnostics on the full network ----------------------------------------------
        e0, e1 = self._edges[:, 0], self._edges[:, 1]
        dv_all = full[e0] - full[e1]  # (E_all, batch)
        r = np.asarray(lin.a @ vf + lin.b @ vs)  # current leaving each free node via edges
        vj = full[self._ja] - full[self._jc]
        currents = np.zeros((self.n_diodes, nb))
        if self.n_diodes and self.model.kind == "shockley":
            currents = self.model.current(vj)
            np.add.at(
                r, self._slot[self._ja[~self._is_src[self._ja]]], currents[~self._is_src[self._ja]]
            )
            np.subtract.at(
                r, self._slot[self._jc[~self._is_src[self._jc]]], currents[~self._is_src[self._jc]]
            )
        o = self._out_free
        clamped = np.zeros(nb, dtype=bool)
        if nudge is not None:
            beta, vals = self._check_nudge(nudge, nb)
            if nudge.kind == "target":
                r[o] += beta * (vf[o] - vals.T)
            elif nudge.kind == "error":
                r[o] += beta * vals.T
            else:
                r[o] = 0.0
                clamped[:] = True
        residual = np.abs(r).max(axis=0) if r.shape[0] else np.zeros(nb)
        if ideal:
            assert act_hi is not None and act_lo is not None and pr.lo is not None
            assert pr.hi is not None
            act_free_hi = np.zeros_like(r, dtype=bool)
            act_free_lo = np.zeros_like(r, dtype=bool)
            act_free_hi[self._var] = act_hi
            act_free_lo[self._var] = act_lo
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
            currents = self._ideal_currents(y, act_free_hi, act_free_lo)
        else:
            conv = conv & (residual <= 10 * tol_a)
        if nudge is not None and nudge.kind == "target" and not self._convex(pr):
            conv[:] = False

        g_lin = lin.g
        conj_sq = 0.5 * dv_all[: self._n_train] ** 2  # (E, batch)
        conj = (
            conj_sq
            if self.element == "resistor"
            else conj_sq * self.transistor.dconductance(self._theta)[:, None]
        )
        energy = 0.5 * (g_lin @ (dv_all**2))
        if self.n_diodes and self.model.kind == "shockley":
            energy = energy + self.model.cocontent(vj).sum(axis=0)
        state = NonlinearState(
            self._version,
            xin.copy(),
            x.copy(),
            u,
            None if act_hi is None else act_hi.copy(),
            None if act_lo is None else act_lo.copy(),
        )
        return Equilibrium(
            outputs=np.ascontiguousarray(vf[o].T),
            conjugates={self._gname: np.ascontiguousarray(conj.T)},
            state=state,
            residual=np.asarray(residual, dtype=np.float64),
            iterations=iters,
            shots=0,
            settle_time=0.0,
            energy=np.asarray(energy, dtype=np.float64),
            observables={"diode_current": np.ascontiguousarray(currents.T)},
            converged=conv,
        )

    def _ideal_currents(self, y: FloatArray, hi: BoolArray, lo: BoolArray) -> FloatArray:
        """Ideal diode currents (A) from the net current y each active node sheds."""
        m, nb = self.n_diodes, y.shape[1]
        cur = np.zeros((m, nb))
        is_src = self._is_src
        up = np.flatnonzero(~is_src[self._ja] & is_src[self._jc])
        dn = np.flatnonzero(is_src[self._ja] & ~is_src[self._jc])
        # the first diode of each node carries the node's current (non-unique when shared)
        for idx, node_of, mask, sign in (
            (up, self._slot[self._ja[up]], hi, 1.0),
            (dn, self._slot[self._jc[dn]], lo, -1.0),
        ):
            if idx.size == 0:
                continue
            _, first = np.unique(node_of, return_index=True)
            sel, nodes = idx[first], node_of[first]
            cur[sel] = np.where(mask[nodes], sign * y[nodes], 0.0)
        return cur

    def _convex(self, pr: _Problem) -> bool:
        """Whether the nudged resistor part is positive definite. A negative target beta can make
        it a saddle (1 + beta * max eig K <= 0, K the output resistance); the diodes' convex terms
        may restore convexity, but the solver does not certify it, so such phases are reported
        as not converged."""
        if pr.beta >= 0:
            return True
        if self.backend == "dense":
            try:
                np.linalg.cholesky(pr.q)
            except np.linalg.LinAlgError:
                return False
            return True
        lin = self._linear()
        out = self._out_var
        zp = self._columns(lin, out)
        assert lin.z is not None
        k = lin.z[np.ix_(out, zp)]
        return bool(1.0 + pr.beta * float(np.linalg.eigvalsh(0.5 * (k + k.T))[-1]) > 0)

    def _initial(self, pr: _Problem) -> FloatArray:
        """Starting point: the linear solution (diodes removed) clipped to the diodes' knees."""
        nv, nb = pr.h.shape
        if nv == 0:
            return np.zeros((0, nb))
        zero = np.zeros((self.n_diodes, nb))
        fixed0 = pr.fixed
        rhs = np.where(fixed0, pr.xfix, pr.h - self._matvec(pr.q, np.where(fixed0, pr.xfix, 0.0)))
        x = self._solve(pr.q, None if self.n_diodes == 0 else zero, fixed0, rhs, pr.beta)
        if self.n_diodes == 0 or self.model.kind == "ideal":
            return x
        # Shockley: bring every forward junction below its knee (where the diode carries about
        # 1 mA): clip nodes bounded by a source; for junctions between two free nodes, a few
        # passes moving both ends towards each other.
        knee = self._knee()
        hi = np.full((nv, nb), np.inf)
        lo = np.full((nv, nb), -np.inf)
        vs_hi = pr.c[np.flatnonzero(~self._is_src[self._ja] & self._is_src[self._jc])]
        vs_lo = pr.c[np.flatnonzero(self._is_src[self._ja] & ~self._is_src[self._jc])]
        # c = -V_cathode for an anode-free junction; c = V_anode for a cathode-free one
        np.minimum.at(hi, self._hi_var, -vs_hi + knee)
        np.maximum.at(lo, self._lo_var, vs_lo - knee)
        lo = np.minimum(lo, hi)
        x = np.clip(x, lo, hi)
        x[fixed0] = pr.xfix[fixed0]
        ff = np.flatnonzero((self._ja_var >= 0) & (self._jc_var >= 0))
        if ff.size:
            fa, fc = self._ja_var[ff], self._jc_var[ff]
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

    def _knee(self) -> float:
        """Junction voltage (V) at which a Shockley diode carries 1 mA."""
        return self.model.vte * math.log1p(1e-3 / self.model.saturation_current)

    # -- exact gradient ------------------------------------------------------------------
    def exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        """Batch-mean dL/dtheta of ``loss(outputs(inputs), targets)`` by implicit
        differentiation at the free equilibrium (ideal diodes: on the active set, away from
        kinks). dL/dg_e = -mean (lambda_i - lambda_j)(V_i - V_j); for gates times g'(V_G)."""
        with self._blas.limit():
            xin = self._check_inputs(inputs)
            t = np.asarray(targets, dtype=np.float64)
            k = self._out_free.size
            if t.shape != (xin.shape[0], k):
                raise ValueError(f"targets must have shape ({xin.shape[0]}, {k}), got {t.shape}")
            free = self.equilibrate(xin)
            st = free.state
            assert isinstance(st, NonlinearState)
            lin = self._linear()
            eps = np.asarray(loss.grad(free.outputs, t))  # (batch, k)
            nv, nb = self._var.size, xin.shape[0]
            rhs = np.zeros((nv, nb))
            rhs[self._out_var] = eps.T
            fixed = np.zeros((nv, nb), dtype=bool)
            w = None
            if self.n_diodes and self.model.kind == "shockley":
                vs = self._source_values(xin)
                v = np.asarray(self._ct @ st.x) + np.asarray(self._csrc @ vs)
                w = self.model.conductance(v)
            elif self.n_diodes:
                assert st.act_hi is not None and st.act_lo is not None
                fixed = st.act_hi | st.act_lo
                rhs[fixed] = 0.0
            lam = self._solve(lin.q, w, fixed, rhs)
            lam_f = np.empty((self._free.size, nb))
            lam_f[self._var] = lam
            if self.backend == "dense" and self._interior.size:
                assert lin.t is not None
                lam_f[self._interior] = -(lin.t @ lam)
            lam_full = np.zeros((self._n_ext, nb))
            lam_full[self._free] = lam_f
            vs = self._source_values(xin)
            full = self._full(self._expand(lin, st.x, st.u), vs)
            e = self.graph.edges
            dv = full[e[:, 0]] - full[e[:, 1]]
            dl = lam_full[e[:, 0]] - lam_full[e[:, 1]]
            grad = -np.einsum("eb,eb->e", dl, dv) / nb
            if self.element == "transistor":
                grad = grad * self.transistor.dconductance(self._theta)
            return {self._gname: np.asarray(grad)}

    # -- description for plots, logs and export ------------------------------------------
    def graph_layout(self) -> dict[str, Any]:
        g = self.graph
        return {
            "positions": np.asarray(g.positions).copy(),
            "edges": np.asarray(g.edges).copy(),
            "edge_group": self._gname,
            "node_roles": list(g.roles),
        }

    def snapshot(self) -> dict[str, Any]:
        g = self.graph
        return {
            "class": type(self).__name__,
            "n_nodes": g.n_nodes,
            "n_edges": g.n_edges,
            "n_diodes": self.n_diodes,
            "diode_model": {
                "kind": self.model.kind,
                "saturation_current_A": self.model.saturation_current,
                "emission": self.model.emission,
                "temperature_K": self.model.temperature,
                "series_resistance_ohm": self.model.series_resistance,
            },
            "bias_V": self.bias.tolist(),
            "element": self.element,
            "backend": self.backend,
            "n_ports": self.n_ports,
            "ground": self.ground,
        }

    def circuit(self) -> dict[str, Any]:
        """The circuit as plain arrays, for :mod:`physlearn.simulators.spice`.

        ``n_nodes`` extended nodes (graph nodes incl. ground, bias sources, internal diode nodes
        -- internal nodes are left to SPICE's ``RS``); ``resistors`` ``(E, 2)`` with
        ``conductance`` (S) -- the trainable edges only; ``sources`` node indices with
        ``input_channels`` (the first ``n_in``), the ground (0 V) and ``bias`` (V);
        ``diodes`` ``(m, 2)`` anode/cathode and ``diode_model``.
        """
        return {
            "n_nodes": int(self.graph.n_nodes + self.bias.size),
            "resistors": np.asarray(self.graph.edges).copy(),
            "conductance": self.edge_conductance(),
            "input_nodes": np.asarray(self.graph.input_nodes[: self._n_in]).copy(),
            "ground_nodes": np.asarray(self.graph.input_nodes[self._n_in :]).copy(),
            "bias_nodes": self.graph.n_nodes + np.arange(self.bias.size),
            "bias": self.bias.copy(),
            "diodes": np.stack([self._diode_anode, self._diode_cathode], axis=1),
            "diode_model": self.model,
            "output_nodes": np.asarray(self.graph.output_nodes).copy(),
        }

    def node_voltages(self, eq: Equilibrium, inputs: FloatArray) -> FloatArray:
        """Voltages ``(batch, n_nodes)`` of graph nodes then bias sources (V) of an equilibrium
        returned by :meth:`equilibrate` for ``inputs``."""
        st = eq.state
        if not isinstance(st, NonlinearState) or st.version != self._version:
            raise ValueError("node_voltages needs the state of an equilibrium at these parameters")
        with self._blas.limit():
            xin = self._check_inputs(inputs)
            full = self._full(self._expand(self._linear(), st.x, st.u), self._source_values(xin))
        return np.ascontiguousarray(full[: self.graph.n_nodes + self.bias.size].T)


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

    Returns ``(diode_anode, diode_cathode, bias)`` for :class:`NonlinearResistorNetwork`.
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
    edges between adjacent layers (:func:`~physlearn.simulators.graphs.layered`), and on every
    hidden node the diodes of :func:`clipping_diodes` with rails per hidden layer (one pair for
    all, or one per hidden layer). Layer 0 are the input sources, the last layer the (linear)
    outputs.

    Returns ``(graph, diode_anode, diode_cathode, bias)`` for :class:`NonlinearResistorNetwork`.
    """
    from physlearn.simulators.graphs import layered

    graph = layered(sizes)
    if len(sizes) < 3:
        raise ValueError("a deep diode network needs at least one hidden layer")
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    groups = [np.arange(starts[k], starts[k + 1], dtype=np.int64) for k in range(1, len(sizes) - 1)]
    an, ca, bias = clipping_diodes(graph, groups, rails, direction)
    return graph, an, ca, bias
