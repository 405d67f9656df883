"""Non-linear resistor networks: resistors or transistor edges, diodes and bias sources, trained by
equilibrium propagation (Kendall et al. arXiv:2006.01981; Scellier, ICML 2024; Dillavou et al.,
PNAS 2024). Element laws and their units are in :mod:`physlearn.simulators.resistor.elements`.

Physics and sign conventions (see ``docs/physics.md``, §Non-linear resistor networks)
-------------------------------------------------------------------------------------
* Nodes carry voltages V (volts). *Source* nodes are ideal voltage sources: the graph's input
  nodes (one per input channel, V), an optional ground (0 V, see
  :func:`~physlearn.simulators.graphs.generators.with_extra_input`) and *bias* sources (fixed
  voltages, e.g. the rails of a deep diode network; not input channels). Every other node is free.
* Edge e = (i, j) of the graph is a trainable two-terminal element of conductance g_e (S):
  a resistor (parameter group ``"conductance"``, S) or a transistor edge whose conductance follows
  its gate voltage, g_e = g(V_G,e) (group ``"gate"``, V; see
  :class:`~physlearn.simulators.resistor.elements.TransistorModel`). Shape ``(n_edges,)``,
  dims ``("edge",)``.
* Diode d from anode a to cathode c (any nodes, not two sources) with branch voltage
  v_d = V_a - V_c and current i_d from a to c
  (:class:`~physlearn.simulators.resistor.elements.DiodeModel`).
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

With many ports the ``sparse`` backend keeps every free node as a variable and solves each
Newton step by low-rank updates of one factorisation per parameter update
(:mod:`~physlearn.simulators.resistor.linsolve`). Shockley diodes: damped Newton with an exact
line search; ideal diodes: the primal-dual active-set method; nudged phases start from the
free equilibrium; ``residual`` is the KCL imbalance on the full network
(:mod:`~physlearn.simulators.resistor.solvers` describes each).

``exact_gradient`` is the implicit gradient: with H the Hessian of E at the free equilibrium (for
ideal diodes restricted to the inactive set -- defined away from kinks, where the active set is
locally constant), the adjoint lambda = H^-1 dL/dV_O and dL/dtheta = -mean_b lambda^T d2E/dV dtheta.

Code: this module holds the system (parameters, phases, diagnostics, exact gradient); the
circuit's bookkeeping and Kron reduction are :mod:`~physlearn.simulators.resistor.circuit`, the
Newton, line-search and active-set solvers :mod:`~physlearn.simulators.resistor.solvers`, their
masked linear solves :mod:`~physlearn.simulators.resistor.linsolve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from physlearn.losses import Loss
from physlearn.simulators.graphs.generators import (
    Graph,
    input_voltage_port,
    output_voltage_port,
    with_extra_input,
)
from physlearn.simulators.resistor.circuit import (
    Backend,
    BoolArray,
    Circuit,
    Element,
    LinearPart,
)
from physlearn.simulators.resistor.conjugates import (
    checked_values,
    checked_voltages,
    diode_energy,
    half_square_drops,
)
from physlearn.simulators.resistor.elements import DiodeModel, TransistorModel
from physlearn.simulators.resistor.settings import check_settings, parameter_group
from physlearn.simulators.resistor.solvers import EquilibriumSolver
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


@dataclass(frozen=True)
class NonlinearState:
    """Warm start of one phase: the variables (port or free voltages) and ideal active sets."""

    version: int
    inputs: FloatArray  # (batch, n_in)
    x: FloatArray  # (n_var, batch) solution of this phase (V)
    u: FloatArray | None  # (n_I, batch) interior source response of the batch (dense backend)
    act_hi: BoolArray | None  # (n_var, batch) ideal diodes holding V at its upper bound
    act_lo: BoolArray | None  # (n_var, batch) ideal diodes holding V at its lower bound


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
    residual_unit = "A"  # max |KCL current imbalance| over the network

    def observable_meta(self, name: str) -> tuple[str, tuple[str, ...], str] | None:
        if name == "diode_current":
            return "A", ("diode",), "current through each diode, anode to cathode"
        return None

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
        lower, upper = check_settings(element, backend, tol, max_iter, bounds)
        self.element: Element = element
        self.transistor = transistor if transistor is not None else TransistorModel()
        self.model = diode_model if diode_model is not None else DiodeModel()
        self.ground = bool(ground)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self._blas = BlasThreads(blas_threads)
        self.graph = with_extra_input(graph, "ground") if ground else graph
        self.ckt = Circuit(
            self.graph,
            graph.n_nodes,
            int(graph.input_nodes.size),
            bias,
            diode_anode,
            diode_cathode,
            self.model,
            backend,
            dense_limit,
        )
        self.bias = self.ckt.bias
        self.n_diodes = self.ckt.n_diodes
        self.dense_limit = self.ckt.dense_limit
        self.backend: Literal["dense", "sparse"] = self.ckt.backend
        self._solver = EquilibriumSolver(self.ckt, self.model, self.tol, self.max_iter)
        self._group = parameter_group(element, lower, upper, resolution, self.graph.n_edges)
        self._gname = self._group.name
        self._version = 0
        if params is None:
            params = self._group.uniform(init, seed)
        self._theta = np.zeros(self.graph.n_edges)
        self.set_parameters({self._gname: np.asarray(params, dtype=np.float64)})

    @property
    def factorizations(self) -> int:
        """Sparse LU factorisations of the linear part performed so far."""
        return self._solver.lins.factorizations

    # -- description ---------------------------------------------------------------------
    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return (self._group,)

    @property
    def inputs(self) -> Port:
        return input_voltage_port(self.graph, self.ckt.n_in)

    @property
    def outputs(self) -> Port:
        return output_voltage_port(self.graph)

    @property
    def n_ports(self) -> int:
        """Variables of the non-linear solve (ports if dense, every free node if sparse)."""
        return int(self.ckt.var.size)

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
        self._solver.lins.forget()
        return self.get_parameters()

    def get_parameters(self) -> Params:
        return {self._gname: self._theta.copy()}

    def conjugates_from_voltages(
        self, voltages: ArrayLike, params: Params | None = None
    ) -> tuple[Params, FloatArray]:
        """Conjugates ``(batch, E)`` of the trainable group and energy ``(batch,)`` (W) of graph
        node voltages ``(batch, n_nodes)`` measured elsewhere -- a bench mirroring this network,
        the bias rails at their voltages -- at ``params`` (default: the held values; not
        bound-checked). See :mod:`~physlearn.simulators.resistor.conjugates`."""
        v = checked_voltages(voltages, self.graph.n_nodes)
        th = self._theta
        if params is not None:
            th = checked_values(params.get(self._gname), th.size, self._gname)
        half = half_square_drops(np.asarray(self.graph.edges), v)
        resistor = self.element == "resistor"
        g = th if resistor else self.transistor.conductance(th)
        conj = half if resistor else half * self.transistor.dconductance(th)
        ext = np.concatenate([v, np.broadcast_to(self.bias, (v.shape[0], self.bias.size))], 1)
        vd = ext[:, self.ckt.diode_anode] - ext[:, self.ckt.diode_cathode]
        return {self._gname: conj}, np.asarray(half @ g + diode_energy(self.model, vd))

    def edge_conductance(self) -> FloatArray:
        """Conductance of every trainable edge (S): g_e, or g(V_G,e) for transistor edges."""
        if self.element == "resistor":
            return self._theta.copy()
        return self.transistor.conductance(self._theta)

    # -- linear algebra ------------------------------------------------------------------
    def _linear(self) -> LinearPart:
        """The linear part at the current parameters (Kron-reduced once per update)."""
        return self._solver.lins.linear(
            self._version, lambda: np.concatenate([self.edge_conductance(), self.ckt.fixed_g])
        )

    # -- checks --------------------------------------------------------------------------
    def _check_inputs(self, inputs: ArrayLike) -> FloatArray:
        x = np.asarray(inputs)
        if x.ndim != 2 or x.shape[1] != self.ckt.n_in or x.shape[0] < 1:
            raise ValueError(
                f"inputs must have shape (batch, {self.ckt.n_in}) with batch >= 1, got {x.shape}"
            )
        if np.iscomplexobj(x) or not np.all(np.isfinite(x)):
            raise ValueError("inputs must be real and finite (volts)")
        return x.astype(np.float64)

    def _check_nudge(self, nudge: Nudge, batch: int) -> tuple[float, FloatArray]:
        v = nudge.checked_values(batch, self.ckt.out_free.size)
        beta = complex(nudge.beta)
        if beta.imag != 0:
            raise ValueError(f"{type(self).__name__} does not support complex (holomorphic) nudges")
        return beta.real, v

    # -- the phases ----------------------------------------------------------------------
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
        vs = self.ckt.source_values(xin)
        ws = self._usable(warm_start, xin)
        u = self._interior_response(lin, vs, ws, nb)
        checked = None if nudge is None else self._check_nudge(nudge, nb)
        pr = self._solver.problem(lin, vs, u, nudge, checked)
        tol_a = self._solver.tol_abs(lin, vs)
        x, act_hi, act_lo, iters, conv = self._solver.run(
            pr,
            tol_a,
            None if ws is None else ws.x,
            None if ws is None else ws.act_hi,
            None if ws is None else ws.act_lo,
        )
        vf = self.ckt.expand(lin, x, u)
        full = self.ckt.full(vf, vs)
        residual, conv, currents = self._solver.diagnostics(
            pr, lin, x, vf, vs, full, nudge, checked, act_hi, act_lo, tol_a, conv
        )
        conj, energy = self._conjugates_energy(lin, full)
        state = NonlinearState(
            self._version,
            xin.copy(),
            x.copy(),
            u,
            None if act_hi is None else act_hi.copy(),
            None if act_lo is None else act_lo.copy(),
        )
        return Equilibrium(
            outputs=np.ascontiguousarray(vf[self.ckt.out_free].T),
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

    def _usable(self, warm_start: Any, xin: FloatArray) -> NonlinearState | None:
        """``warm_start`` if it is a state of these parameters and these inputs, else None."""
        return (
            warm_start
            if isinstance(warm_start, NonlinearState)
            and warm_start.version == self._version
            and warm_start.inputs.shape == xin.shape
            and np.array_equal(warm_start.inputs, xin)
            else None
        )

    def _interior_response(
        self, lin: LinearPart, vs: FloatArray, ws: NonlinearState | None, nb: int
    ) -> FloatArray | None:
        """Dense backend: the interior's response A_II^-1 B_I V_src to the sources ``(n_I,
        batch)`` (reused from a warm start of the same inputs); None without an interior."""
        u: FloatArray | None = None
        if self.ckt.backend == "dense" and self.ckt.interior.size:
            assert lin.lu_ii is not None and lin.b_i is not None
            if ws is not None and ws.u is not None:
                u = ws.u
            else:
                u = np.asarray(lin.lu_ii.solve(np.asarray(lin.b_i @ vs))).reshape(-1, nb)
        return u

    def _conjugates_energy(self, lin: LinearPart, full: FloatArray) -> tuple[FloatArray, Any]:
        """Conjugates ``(E, batch)`` of the trainable group and the energy E ``(batch,)`` (W)
        at the node voltages ``full`` ``(n_ext, batch)``."""
        e0, e1 = self.ckt.edges[:, 0], self.ckt.edges[:, 1]
        dv_all = full[e0] - full[e1]  # (E_all, batch)
        conj_sq = 0.5 * dv_all[: self.ckt.n_train] ** 2  # (E, batch)
        conj = (
            conj_sq
            if self.element == "resistor"
            else conj_sq * self.transistor.dconductance(self._theta)[:, None]
        )
        energy = 0.5 * (lin.g @ (dv_all**2))
        if self.ckt.n_diodes and self.model.kind == "shockley":
            vj = full[self.ckt.ja] - full[self.ckt.jc]
            energy = energy + self.model.cocontent(vj).sum(axis=0)
        return conj, energy

    # -- exact gradient ------------------------------------------------------------------
    def exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        """Batch-mean dL/dtheta of ``loss(outputs(inputs), targets)`` by implicit
        differentiation at the free equilibrium (ideal diodes: on the active set, away from
        kinks). dL/dg_e = -mean (lambda_i - lambda_j)(V_i - V_j); for gates times g'(V_G)."""
        with self._blas.limit():
            xin = self._check_inputs(inputs)
            t = np.asarray(targets, dtype=np.float64)
            k = self.ckt.out_free.size
            if t.shape != (xin.shape[0], k):
                raise ValueError(f"targets must have shape ({xin.shape[0]}, {k}), got {t.shape}")
            free = self.equilibrate(xin)
            st = free.state
            assert isinstance(st, NonlinearState)
            lin = self._linear()
            eps = np.asarray(loss.grad(free.outputs, t))  # (batch, k)
            nv, nb = self.ckt.var.size, xin.shape[0]
            rhs = np.zeros((nv, nb))
            rhs[self.ckt.out_var] = eps.T
            fixed = np.zeros((nv, nb), dtype=bool)
            w = None
            if self.ckt.n_diodes and self.model.kind == "shockley":
                vs = self.ckt.source_values(xin)
                v = np.asarray(self.ckt.ct @ st.x) + np.asarray(self.ckt.csrc @ vs)
                w = self.model.conductance(v)
            elif self.ckt.n_diodes:
                assert st.act_hi is not None and st.act_lo is not None
                fixed = st.act_hi | st.act_lo
                rhs[fixed] = 0.0
            lam = self._solver.lins.solve(lin, lin.q, w, fixed, rhs)
            lam_f = np.empty((self.ckt.free.size, nb))
            lam_f[self.ckt.var] = lam
            if self.ckt.backend == "dense" and self.ckt.interior.size:
                assert lin.t is not None
                lam_f[self.ckt.interior] = -(lin.t @ lam)
            lam_full = np.zeros((self.ckt.n_ext, nb))
            lam_full[self.ckt.free] = lam_f
            vs = self.ckt.source_values(xin)
            full = self.ckt.full(self.ckt.expand(lin, st.x, st.u), vs)
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
            "n_diodes": self.ckt.n_diodes,
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
        """The circuit as plain arrays, for :mod:`physlearn.simulators.resistor.spice`.

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
            "input_nodes": np.asarray(self.graph.input_nodes[: self.ckt.n_in]).copy(),
            "ground_nodes": np.asarray(self.graph.input_nodes[self.ckt.n_in :]).copy(),
            "bias_nodes": self.graph.n_nodes + np.arange(self.bias.size),
            "bias": self.bias.copy(),
            "diodes": np.stack([self.ckt.diode_anode, self.ckt.diode_cathode], axis=1),
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
            full = self.ckt.full(
                self.ckt.expand(self._linear(), st.x, st.u), self.ckt.source_values(xin)
            )
        return np.ascontiguousarray(full[: self.graph.n_nodes + self.bias.size].T)
