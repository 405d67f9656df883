"""Fixed diodes and bias rails on the virtual-lab bench (a bench mirroring a ``diode_resistor``
system).

A lab config's ``diodes`` section has the fields of the simulator's
:class:`~physlearn.simulators.resistor.config.DiodesConfig`: with ``placement: hidden`` every
hidden node gets its clipping diodes to per-layer rails, with explicit placement each
``[anode, cathode]`` pair names graph nodes or (indices ``>= n_nodes``) the bias ``sources``. The
rails are ideal voltage sources *inside* the bench: they are not instrument channels, nothing
switches them off, and no source channel or relay may be wired to a node a diode touches (an
ideal diode between a rail and a node held by a channel would be a short between two sources).

The diodes are laid out by the simulator itself (the ``diode_resistor`` config's ``build`` and
:meth:`~physlearn.simulators.resistor.nonlinear.NonlinearResistorNetwork.circuit`), so a bench
and the simulator it mirrors have the same diodes by construction; the bench's equilibrium is
solved exactly by :class:`~physlearn.simulators.resistor.nonlinear.NonlinearResistorNetwork` on
the bench's internal graph (network, relay terminals, leakage ground; see
:mod:`physlearn.drivers.virtual_lab.bench`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.system import FloatArray, Nudge

if TYPE_CHECKING:
    from physlearn.drivers.virtual_lab.config import LabConfig
    from physlearn.simulators.graphs.generators import Graph
    from physlearn.simulators.resistor.elements import DiodeModel


@dataclass(frozen=True)
class BenchDiodes:
    """The bench's diodes: terminals (graph node ``< n_nodes``, else bias rail ``k`` as
    ``n_nodes + k``), the rail voltages (V) and the diode law."""

    n_nodes: int
    anode: np.ndarray
    cathode: np.ndarray
    bias: FloatArray
    model: DiodeModel

    @classmethod
    def from_config(cls, config: LabConfig) -> BenchDiodes | None:
        """The diodes of ``config`` (None without a ``diodes`` section), laid out by the
        ``diode_resistor`` simulator on the same graph."""
        if config.diodes is None:
            return None
        from physlearn.simulators.resistor.config import DiodeResistorConfig

        sim = DiodeResistorConfig(
            kind="diode_resistor", graph=config.graph, diodes=config.diodes
        ).build(0)
        c = sim.circuit()
        d = np.asarray(c["diodes"], dtype=np.int64).reshape(-1, 2)
        return cls(config.n_nodes(), d[:, 0].copy(), d[:, 1].copy(), c["bias"], sim.model)

    def graph_nodes(self) -> set[int]:
        """Graph nodes a diode touches."""
        ends = np.concatenate([self.anode, self.cathode])
        return {int(k) for k in ends if k < self.n_nodes}

    def network(self, graph: Graph, g0: FloatArray) -> Any:
        """A :class:`NonlinearResistorNetwork` on the internal ``graph`` (the bench's nodes
        first, then relay terminals and the ground) with these diodes, the rails renumbered
        after the internal nodes, conductances ``g0`` (S)."""
        from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork

        shift = graph.n_nodes - self.n_nodes

        def renumber(ends: np.ndarray) -> np.ndarray:
            return np.where(ends >= self.n_nodes, ends + shift, ends)

        return NonlinearResistorNetwork(
            graph,
            renumber(self.anode),
            renumber(self.cathode),
            self.model,
            self.bias,
            params=g0,
            bounds=(1e-300, 1e300),
            blas_threads=None,
        )


def solve_free(net: Any, vs: FloatArray, outputs: np.ndarray, inj: dict[int, float]) -> FloatArray:
    """Voltages (V) of every internal node of ``net`` (a diode network from
    :meth:`BenchDiodes.network`) with source values ``vs`` and currents ``inj`` (A, into the
    node) injected at ``outputs`` -- the simulator's ``error`` nudge with ``beta = 1``."""
    nudge = None
    if outputs.size and inj:
        cur = np.array([inj.get(int(k), 0.0) for k in outputs])
        nudge = Nudge(beta=1.0, error=-cur[None, :])
    eq = net.equilibrate(vs[None, :], nudge)
    if not bool(np.all(eq.converged)):
        raise RuntimeError("virtual lab: the diode network's equilibrium did not converge")
    return np.asarray(net.node_voltages(eq, vs[None, :])[0, : net.graph.n_nodes])
