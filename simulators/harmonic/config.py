"""Config of the quantum harmonic (elastic) network simulator (``system: kind: elastic``).

Springs k_e (energy/x^2) on the edges of a graph (``system.graph``, see
:mod:`physlearn.simulators.graphs.config`), forces on the input nodes, displacements of the
output nodes read out in the exact Gaussian ground (or thermal) state
(:class:`~physlearn.simulators.harmonic.elastic.ElasticNetwork`). Validation never imports
scipy or the simulator; :meth:`ElasticConfig.build` does, lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from physlearn.configbase import SystemConfigBase
from physlearn.simulators.graphs.config import GraphConfig

if TYPE_CHECKING:
    from physlearn.simulators.harmonic.elastic import ElasticNetwork


#: Largest elastic network: its solve diagonalises a dense n x n matrix (128 MB of float64 and
#: seconds of LAPACK at the bound).
MAX_ELASTIC_NODES = 4_096


class ElasticConfig(SystemConfigBase):
    """Quantum harmonic (elastic) network: springs on a graph, anchors, forces as inputs."""

    kind: Literal["elastic"] = Field("elastic", description="system kind: quantum elastic network")
    graph: GraphConfig = Field(description="springs: layered, lattice or edges")
    spring_min: float = Field(0.05, gt=0, description="smallest spring constant k (energy/x^2)")
    spring_max: float = Field(5.0, gt=0, description="largest spring constant k (energy/x^2)")
    init_range: tuple[float, float] | None = Field(
        None, description="uniform random init of k (default [spring_min, spring_max])"
    )
    temperature: float = Field(0.0, ge=0, description="T (energy unit); 0 = ground state")

    @model_validator(mode="after")
    def _check(self) -> ElasticConfig:
        n_nodes = self.graph.counts()[0]
        if n_nodes > MAX_ELASTIC_NODES:
            raise ValueError(
                f"graph: {n_nodes:,} nodes; an elastic network has at most "
                f"{MAX_ELASTIC_NODES:,} (a dense n x n eigendecomposition per solve)"
            )
        if self.spring_min >= self.spring_max:
            raise ValueError("spring_min must be < spring_max")
        if self.init_range is not None:
            lo, hi = self.init_range
            if not self.spring_min <= lo <= hi <= self.spring_max:
                raise ValueError("init_range must lie inside [spring_min, spring_max]")
        return self

    def values_per_pattern(self) -> int:
        """Node displacements and per-spring conjugates of one pattern (the dense matrix is per
        parameter set, bounded by :data:`MAX_ELASTIC_NODES`)."""
        return sum(self.graph.counts())

    def input_size(self) -> int:
        return self.graph.n_inputs()

    def output_size(self) -> int:
        return self.graph.n_outputs()

    def build(self, seed: int) -> ElasticNetwork:
        from physlearn.simulators.harmonic.elastic import ElasticNetwork

        g = self.graph.build()
        return ElasticNetwork(
            g.n_nodes,
            [tuple(e) for e in g.edges],
            list(g.input_nodes),
            list(g.output_nodes),
            bounds=(self.spring_min, self.spring_max),
            init=self.init_range,
            temperature=self.temperature,
            seed=seed,
        )
