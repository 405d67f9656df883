"""Linear resistor networks trained by equilibrium propagation (Kendall et al. arXiv:2006.01981).

Physics and sign conventions (see ``docs/physics.md``, §Resistor networks):

* Nodes carry voltages V (volts); edge e = (i, j) has a conductance g_e > 0 (siemens), the
  trainable parameter group ``"conductance"``, shape ``(n_edges,)``, dims ``("edge",)``.
* Source nodes are ideal voltage sources (clamped): the graph's input nodes, one per input
  channel (V), and an optional *ground*, a source at 0 V added by
  :func:`~physlearn.simulators.graphs.generators.with_extra_input` (wired to every non-input
  neighbour of the inputs; not an input channel). All other nodes are free. Differential inputs
  (+x, -x) and bias sources are input channels too: ``task.encoding`` (``differential``,
  ``bias``) in the experiment config produces them, so a network with 4 features x 2 + 2 bias has
  10 input nodes.
* Energy: the co-content E(V) = 1/2 sum_e g_e (V_i - V_j)^2, in watts (half the dissipated
  power). Its minimum over the free nodes is Kirchhoff's current law (KCL).
* Conjugate observable: dE/dg_e = 1/2 (V_i - V_j)^2 per sample (V^2 = W/S), shape
  ``(batch, n_edges)``. With a complex nudge it is computed holomorphically (no conjugation).
* Outputs: the voltages of the output nodes (V).
* Nudges (beta in siemens for ``target``; see :class:`physlearn.system.Nudge`):
    - ``target``: a conductance beta from each output node to a source at the target voltage
      y_o. The nudged state minimises E + beta * 1/2 sum_o (V_o - y_o)^2 = E + beta * C_mse,
      so ``native_cost = "mse"``; the current injected into output o is beta (y_o - V_o).
    - ``error``: current injection I_o = -beta * eps_o into output o (eps in V, beta in S, I in
      A); the nudged state minimises E + beta * sum_o eps_o V_o.
    - ``clamp``: outputs held at the given voltages (coupled learning); beta unused.
  Complex beta (holomorphic EP) gives a complex linear solve.

Numerics. Per parameter update the free-node block A = L_FF of the graph Laplacian (symmetric
positive definite because every node reaches a source) is factorised once with SuperLU
(:func:`scipy.sparse.linalg.splu`, symmetric mode); :attr:`LinearResistorNetwork.factorizations`
counts the factorisations. That factorisation solves the free phase for the whole batch (one
multi-RHS solve) and, with the k output nodes, gives the transfer matrix Z = A^{-1} P^T
(``(n_free, k)``, k more solves, once per update) and the output resistance K = P A^{-1} P^T
(``(k, k)``, ohms). Every nudge only injects currents c at the outputs, so the nudged state is
V = V_free + Z c with a k x k solve:

* target: (I + beta K) c = beta (y - V_free_O)   (Woodbury identity for A + beta P^T P);
* error:  c = -beta eps;
* clamp:  K c = y_clamp - V_free_O                (Schur complement on the outputs).

No factorisation is repeated for nudged phases, batches or :meth:`exact_gradient`.

SuperLU's supernodal kernels call BLAS on small blocks; a multi-threaded OpenBLAS turns these
into thread hand-offs that are pure overhead, and on a loaded machine made a 64-column solve on a
10 000-node lattice 14x slower (420 ms vs 30 ms). ``equilibrate``, ``exact_gradient`` and
factorisations therefore run with BLAS limited to ``blas_threads`` (default 1) threads via
``threadpoolctl``, only for the duration of the call (the limit is process-wide meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.linalg import splu

from physlearn.losses import Loss
from physlearn.simulators.graphs.generators import (
    Graph,
    input_voltage_port,
    output_voltage_port,
    with_extra_input,
)
from physlearn.simulators.resistor.conjugates import (
    checked_values,
    checked_voltages,
    half_square_drops,
)
from physlearn.system import (
    Equilibrium,
    FloatArray,
    Nudge,
    NudgeKind,
    ParameterGroup,
    Params,
    PhysicalSystem,
    Port,
    check_parameters,
)
from physlearn.threads import BlasThreads

GROUP = "conductance"
Array = NDArray[Any]  # float64 or complex128


@dataclass
class _Factor:
    """Everything derived from one set of conductances (keyed by the parameter version)."""

    version: int
    lu: Any  # scipy SuperLU of A = L_FF
    a: sp.csr_array  # L_FF (S), (n_free, n_free)
    b: sp.csr_array  # L_FS (S), (n_free, n_src)
    z: FloatArray | None = None  # A^-1 P^T, (n_free, k), ohms
    k: FloatArray | None = None  # P A^-1 P^T, (k, k), ohms
    k_max: float = 0.0  # largest eigenvalue of K (ohms)


@dataclass(frozen=True)
class ResistorState:
    """Warm-start state of one phase: the free solution it was derived from, and its own."""

    version: int
    inputs: FloatArray  # (batch, n_in) inputs of the phase
    v_free: FloatArray  # (n_free, batch) free-phase voltages of the free nodes (V)
    v: Array  # (n_free, batch) this phase's free-node voltages (V)


class LinearResistorNetwork(PhysicalSystem):
    """A linear resistor network on a :class:`~physlearn.simulators.graphs.generators.Graph`.

    Args:
        graph: nodes, edges, input (source) nodes in port order and output nodes.
        conductance: initial conductances ``(n_edges,)`` in S (``n_edges`` counts the ground's
            edges when ``ground=True``); default: uniform in ``init`` drawn with ``seed``.
        bounds: ``(lower, upper)`` conductances the hardware can hold, S, ``0 < lower < upper``.
        resolution: conductance step in S (0 = continuous); values written are held on the grid
            ``lower + k * resolution`` and :meth:`set_parameters` returns the held values.
        init: ``(low, high)`` range of the uniform random initial conductances, S.
        seed: seed of the random initial conductances.
        ground: add a source node at 0 V wired to every non-input neighbour of the inputs.
        blas_threads: BLAS threads during sparse factorisations and solves (None: leave the
            BLAS thread pools alone).

    The input port has one channel per input node of ``graph`` (V, in ``graph.input_nodes``
    order); the output port has one channel per output node (V).
    """

    supported_nudges: frozenset[NudgeKind] = frozenset({"target", "error", "clamp"})
    supports_complex_nudge = True
    native_cost = "mse"
    energy_unit = "W"
    residual_unit = "A"  # max |KCL current imbalance| over the free nodes

    def __init__(
        self,
        graph: Graph,
        conductance: ArrayLike | None = None,
        *,
        bounds: tuple[float, float] = (1e-5, 1e-2),
        resolution: float = 0.0,
        init: tuple[float, float] | None = None,
        seed: int = 0,
        ground: bool = False,
        blas_threads: int | None = 1,
    ) -> None:
        lower, upper = float(bounds[0]), float(bounds[1])
        if not (np.isfinite(lower) and np.isfinite(upper) and 0 < lower < upper):
            raise ValueError(f"conductance bounds need 0 < lower < upper, got {bounds}")
        self.ground = bool(ground)
        self.graph = with_extra_input(graph, "ground") if ground else graph
        g = self.graph
        self._n_in = int(graph.input_nodes.size)
        if g.input_nodes.size < 2:
            raise ValueError(
                "a resistor network with a single source node holds every node at that source's "
                "voltage (no current flows, nothing to learn): give at least 2 input nodes or "
                "add a ground"
            )
        self._group = _conductance_group(lower, upper, resolution, g.n_edges)
        self._bookkeeping(g)
        self._blas = BlasThreads(blas_threads)
        #: Number of sparse LU factorisations performed so far (one per parameter update used).
        self.factorizations = 0
        self._version = 0
        self._cache: _Factor | None = None
        if conductance is None:
            conductance = self._group.uniform(init, seed)
        self._g = np.zeros(g.n_edges)
        self.set_parameters({GROUP: np.asarray(conductance, dtype=np.float64)})

    def _bookkeeping(self, g: Graph) -> None:
        """Free and source nodes of ``g``, and the sparsity patterns of A = L_FF and B = L_FS
        (which edge's conductance, with which sign, lands on which entry)."""
        # Sources in g.input_nodes order: the input channels, then the ground (if any) at 0 V.
        src = g.input_nodes
        n_src = src.size

        # Node bookkeeping: free nodes ascending; position of every node in the free / source list.
        is_src = np.zeros(g.n_nodes, dtype=bool)
        is_src[src] = True
        self._src = src
        self._free = np.flatnonzero(~is_src).astype(np.int64)
        n_free = self._free.size
        slot = np.empty(g.n_nodes, dtype=np.int64)
        slot[self._free] = np.arange(n_free)
        slot[src] = np.arange(n_src)
        self._out = slot[g.output_nodes]  # outputs within the free list
        i, j = g.edges[:, 0], g.edges[:, 1]
        self._ei, self._ej = i, j

        # Sparsity pattern of A = L_FF and B = L_FS; data = (signed) conductances of edges.
        fi, fj = ~is_src[i], ~is_src[j]
        both = np.flatnonzero(fi & fj)
        mixed = np.flatnonzero(fi ^ fj)
        mixed_free = np.where(fi[mixed], i[mixed], j[mixed])
        mixed_src = np.where(fi[mixed], j[mixed], i[mixed])
        diag_edges = np.concatenate([both, both, mixed])
        diag_nodes = np.concatenate([i[both], j[both], mixed_free])
        self._a_rows = slot[np.concatenate([diag_nodes, i[both], j[both]])]
        self._a_cols = slot[np.concatenate([diag_nodes, j[both], i[both]])]
        self._a_edges = np.concatenate([diag_edges, both, both])
        self._a_sign = np.concatenate([np.ones(diag_edges.size), -np.ones(2 * both.size)])
        self._b_rows = slot[mixed_free]
        self._b_cols = slot[mixed_src]
        self._b_edges = mixed
        self._shape_a = (n_free, n_free)
        self._shape_b = (n_free, n_src)

    # -- description -------------------------------------------------------------------------
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
    def n_edges(self) -> int:
        return self.graph.n_edges

    # -- parameters --------------------------------------------------------------------------
    def set_parameters(self, params: Params) -> Params:
        """Write the conductances (S); returns what the network holds.

        Refuses (``ValueError`` naming the group) missing or unknown groups, a wrong shape,
        non-finite values and values outside ``[lower, upper]``: the orchestrator projects
        first, this system never clips. With ``resolution > 0`` the values are held on the
        grid ``lower + k * resolution`` (nearest point), and the held values are returned.
        Invalidates the cached factorisation.
        """
        grp = self._group
        g = check_parameters((grp,), params)[GROUP]
        if grp.resolution > 0:
            g = self._group.quantise(g)
        self._g = g
        self._version += 1
        self._cache = None
        return self.get_parameters()

    def get_parameters(self) -> Params:
        return {GROUP: self._g.copy()}

    def conjugates_from_voltages(
        self, voltages: ArrayLike, params: Params | None = None
    ) -> tuple[Params, FloatArray]:
        """Conjugates ``{"conductance": (batch, E)}`` (V^2) and energy ``(batch,)`` (W) of node
        voltages ``(batch, n_nodes)`` measured elsewhere -- a bench mirroring this network --
        at ``params`` (default: the held conductances; not bound-checked, a bench holds what it
        holds). See :mod:`~physlearn.simulators.resistor.conjugates`."""
        v = checked_voltages(voltages, self.graph.n_nodes)
        g = self._g if params is None else checked_values(params.get(GROUP), self._g.size, GROUP)
        conj = half_square_drops(np.asarray(self.graph.edges), v)
        return {GROUP: conj}, np.asarray(conj @ g)

    # -- linear algebra ----------------------------------------------------------------------
    def _factor(self) -> _Factor:
        """The factorisation for the current conductances (cached per parameter version)."""
        c = self._cache
        if c is not None and c.version == self._version:
            return c
        g = self._g
        a = sp.csc_array(
            (self._a_sign * g[self._a_edges], (self._a_rows, self._a_cols)), shape=self._shape_a
        )
        b = sp.csr_array((-g[self._b_edges], (self._b_rows, self._b_cols)), shape=self._shape_b)
        with self._blas.limit():
            lu = splu(
                a,
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
        self.factorizations += 1
        c = _Factor(version=self._version, lu=lu, a=a.tocsr(), b=b)
        self._cache = c
        return c

    def _transfer(self, f: _Factor) -> tuple[FloatArray, FloatArray]:
        """Z = A^-1 P^T (ohms, (n_free, k)) and K = P Z (ohms, (k, k)), from the cached LU."""
        if f.z is None or f.k is None:
            n_free, k = self._shape_a[0], self._out.size
            pt = np.zeros((n_free, k))
            pt[self._out, np.arange(k)] = 1.0
            with self._blas.limit():
                z = np.asarray(f.lu.solve(pt)).reshape(n_free, k)
            kk = z[self._out, :]
            kk = 0.5 * (kk + kk.T)
            f.z, f.k = z, kk
            f.k_max = float(np.linalg.eigvalsh(kk)[-1])
        return f.z, f.k

    def _sources(self, inputs: FloatArray) -> FloatArray:
        """Source voltages ``(n_src, batch)`` in V."""
        vs = np.zeros((self._src.size, inputs.shape[0]))
        vs[: self._n_in] = inputs.T
        return vs

    def _free_solve(self, f: _Factor, vs: FloatArray) -> FloatArray:
        """Free-node voltages ``(n_free, batch)`` solving A V_F = -L_FS V_S (KCL)."""
        rhs = np.asarray(-(f.b @ vs), dtype=np.float64)
        with self._blas.limit():
            return np.asarray(f.lu.solve(rhs)).reshape(rhs.shape)

    def _check_inputs(self, inputs: ArrayLike) -> FloatArray:
        x = np.asarray(inputs)
        if x.ndim != 2 or x.shape[1] != self._n_in or x.shape[0] < 1:
            raise ValueError(
                f"inputs must have shape (batch, {self._n_in}) with batch >= 1, got {x.shape}"
            )
        if np.iscomplexobj(x) or not np.all(np.isfinite(x)):
            raise ValueError("inputs must be real and finite (volts)")
        return x.astype(np.float64)

    def _check_nudge_values(self, nudge: Nudge, batch: int) -> FloatArray:
        return nudge.checked_values(batch, self._out.size)

    # -- physics -----------------------------------------------------------------------------
    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Solve KCL for the batch ``inputs`` ``(batch, n_in)`` (V), optionally nudged.

        A ``warm_start`` from an earlier phase with the same inputs and parameters reuses its
        free solution (a direct solve needs no iterate; this only skips one batched solve).
        ``rng`` is unused (the network is deterministic). Complex ``beta`` gives complex
        outputs, conjugates and energy (holomorphic continuation).

        Diagnostics: ``residual`` = max |KCL current imbalance| over free nodes (A), counting the
        nudge currents (and excluding clamped outputs); ``iterations`` = 0; ``converged`` is
        False only for a real negative ``target`` beta so large that the nudged energy is not
        convex (1 + beta * max eig K <= 0: a saddle, not an equilibrium).
        ``energy`` = E (W) of the network alone, without the nudge term.
        """
        with self._blas.limit():
            return self._equilibrate(inputs, nudge, warm_start)

    def _equilibrate(self, inputs: FloatArray, nudge: Nudge | None, warm_start: Any) -> Equilibrium:
        x = self._check_inputs(inputs)
        batch = x.shape[0]
        f = self._factor()
        vs = self._sources(x)
        if (
            isinstance(warm_start, ResistorState)
            and warm_start.version == self._version
            and warm_start.inputs.shape == x.shape
            and np.array_equal(warm_start.inputs, x)
        ):
            v_free = warm_start.v_free
        else:
            v_free = self._free_solve(f, vs)

        converged = np.ones(batch, dtype=bool)
        inj: Array | None = None  # current injected into each output, (k, batch), A
        clamped = False
        v: Array = v_free
        if nudge is not None:
            v, inj, clamped = self._nudged(f, v_free, nudge, batch, converged)
        residual = self._kcl_residual(f, v, vs, inj, clamped, batch)

        # Node-major layout (n_nodes, batch): the edge gathers below read contiguous rows.
        full = np.empty((self.graph.n_nodes, batch), dtype=v.dtype)
        full[self._free] = v
        full[self._src] = vs
        conj = full[self._ei]  # (E, batch): dV = V_i - V_j (V), then 1/2 dV^2 (W/S), in place
        conj -= full[self._ej]
        conj *= conj  # holomorphic: no conjugation for complex states
        conj *= 0.5
        return Equilibrium(
            outputs=np.ascontiguousarray(full[self.graph.output_nodes].T),
            conjugates={GROUP: conj.T},  # (batch, E) view
            state=ResistorState(self._version, x.copy(), v_free, v),
            residual=np.asarray(residual, dtype=np.float64),
            iterations=np.zeros(batch, dtype=np.int64),
            shots=0,
            settle_time=0.0,
            energy=self._g @ conj,
            converged=converged,
        )

    def _nudged(
        self, f: _Factor, v_free: FloatArray, nudge: Nudge, batch: int, converged: NDArray[np.bool_]
    ) -> tuple[Array, Array | None, bool]:
        """The nudged free-node voltages ``(n_free, batch)``, the current injected into each
        output ``(k, batch)`` (A; None when clamped) and whether the outputs are clamped. Marks
        ``converged`` False for a target nudge too negative for a stable equilibrium."""
        inj: Array | None = None
        clamped = False
        values = self._check_nudge_values(nudge, batch).T  # (k, batch)
        beta = complex(nudge.beta)
        is_complex = beta.imag != 0.0
        bval: complex | float = beta if is_complex else beta.real
        z, kk = self._transfer(f)
        vo = v_free[self._out, :]
        c: Array  # current injected into each output, (k, batch), A
        if nudge.kind == "target":
            mat = np.eye(kk.shape[0]) + bval * kk
            c = np.linalg.solve(mat, bval * (values - vo))
            if not is_complex and beta.real < 0 and 1.0 + beta.real * f.k_max <= 0:
                converged[:] = False
        elif nudge.kind == "error":
            c = -bval * values
        else:
            c = scipy.linalg.solve(kk, values - vo, assume_a="pos")
            clamped = True
        v = v_free + z @ c
        if clamped:
            v[self._out, :] = values
        elif nudge.kind == "target":
            inj = bval * (values - v[self._out, :])
        else:
            inj = c
        return v, inj, clamped

    def _kcl_residual(
        self, f: _Factor, v: Array, vs: FloatArray, inj: Array | None, clamped: bool, batch: int
    ) -> FloatArray:
        """Max |KCL imbalance| (A) over the free nodes per sample, counting the nudge currents
        and excluding clamped outputs: the current leaving each free node through the
        resistors minus the injected current."""
        r = f.a @ v + f.b @ vs
        if inj is not None:
            r[self._out, :] -= inj
        if clamped:
            r[self._out, :] = 0.0
        return np.abs(r).max(axis=0) if r.shape[0] else np.zeros(batch)

    def exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        """dL/dg (per S) of the batch-mean ``loss(outputs(inputs), targets)``, by the adjoint.

        With eps = dL/dV_O at the free state, the adjoint lambda = A^-1 P^T eps (= Z eps; A is
        symmetric) and dL/dg_e = -mean_b (lambda_i - lambda_j)(V_i - V_j), lambda = 0 on the
        sources. Uses the cached factorisation (no new one).
        """
        with self._blas.limit():
            return self._exact_gradient(inputs, targets, loss)

    def _exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        x = self._check_inputs(inputs)
        t = np.asarray(targets, dtype=np.float64)
        k = self._out.size
        if t.shape != (x.shape[0], k):
            raise ValueError(f"targets must have shape ({x.shape[0]}, {k}), got {t.shape}")
        f = self._factor()
        vs = self._sources(x)
        v = self._free_solve(f, vs)
        z, _ = self._transfer(f)
        eps = np.asarray(loss.grad(v[self._out, :].T, t))  # (batch, k)
        lam = z @ eps.T  # (n_free, batch)
        batch, n = x.shape[0], self.graph.n_nodes
        vf = np.empty((n, batch))
        vf[self._free] = v
        vf[self._src] = vs
        lf = np.zeros((n, batch))
        lf[self._free] = lam
        dv = vf[self._ei] - vf[self._ej]  # (E, batch), V
        dl = lf[self._ei] - lf[self._ej]  # (E, batch), adjoint differences
        return {GROUP: np.asarray(-np.einsum("eb,eb->e", dl, dv) / batch)}

    def output_resistance(self) -> FloatArray:
        """K = P A^-1 P^T (ohms, ``(k, k)``): output voltage change per current injected at each
        output. A real ``target`` nudge with beta < -1 / max eig K has no stable equilibrium."""
        with self._blas.limit():
            _, kk = self._transfer(self._factor())
        return kk.copy()

    # -- description for plots and logs ------------------------------------------------------
    def graph_layout(self) -> dict[str, Any]:
        g = self.graph
        return {
            "positions": np.asarray(g.positions).copy(),
            "edges": np.asarray(g.edges).copy(),
            "edge_group": GROUP,
            "node_roles": list(g.roles),
        }

    def snapshot(self) -> dict[str, Any]:
        g = self.graph
        return {
            "class": type(self).__name__,
            "n_nodes": g.n_nodes,
            "n_edges": g.n_edges,
            "n_sources": int(self._src.size),
            "n_free": int(self._free.size),
            "n_outputs": int(self._out.size),
            "ground": self.ground,
            "conductance_bounds_S": [self._group.lower, self._group.upper],
            "resolution_S": self._group.resolution,
        }


def _conductance_group(
    lower: float, upper: float, resolution: float, n_edges: int
) -> ParameterGroup:
    """The trainable group: the edge conductances (S)."""
    return ParameterGroup(
        name=GROUP,
        shape=(n_edges,),
        dims=("edge",),
        lower=lower,
        upper=upper,
        unit="S",
        resolution=float(resolution),
        long_name="edge conductance",
        energy_unit="W",
    )
