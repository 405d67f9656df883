"""Configs of the graphs the network simulators are built on (``system.graph``).

``type: layered`` (dense layers, optional skip layers), ``type: lattice`` (square lattice, nearest
and next-nearest neighbours, skip edges), ``type: edges`` (any graph, edge by edge) and
``type: all_to_all`` (every pair; the XY network's dense graph). :data:`GraphConfig` is the union
the resistor, diode-resistor, elastic and station configs accept; the XY config adds
:class:`AllToAllGraph`. Each config checks its node and edge budget by arithmetic and builds its
:class:`~physlearn.simulators.graphs.generators.Graph` lazily (validation imports no numpy-heavy
module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from physlearn.configbase import MAX_EDGES, MAX_NODES, StrictModel

if TYPE_CHECKING:
    from physlearn.simulators.graphs.generators import Graph


class LayeredGraph(StrictModel):
    """Layers, each node joined to every node of the next layer."""

    type: Literal["layered"] = Field(description="graph generator: dense layers")
    sizes: list[Annotated[int, Field(ge=1, le=MAX_NODES)]] = Field(
        min_length=2,
        max_length=10_000,
        description="nodes per layer (count); the first layer are the input (source) nodes, "
        f"the last layer the output nodes. At most {MAX_NODES:,} nodes in all and "
        f"{MAX_EDGES:,} edges (memory: 8 bytes per node or edge per pattern and copy)",
    )
    skip: bool = Field(
        False, description="also join every node of layer l to every node of layer l + 2"
    )

    @model_validator(mode="after")
    def _budget(self) -> LayeredGraph:
        _check_counts("sizes", *self.counts())
        return self

    def counts(self) -> tuple[int, int]:
        """(nodes, edges), by arithmetic (nothing is built)."""
        s = self.sizes
        n_edges = sum(a * b for a, b in zip(s, s[1:], strict=False))
        if self.skip:
            n_edges += sum(a * b for a, b in zip(s, s[2:], strict=False))
        return sum(s), n_edges

    def n_inputs(self) -> int:
        return self.sizes[0]

    def n_outputs(self) -> int:
        return self.sizes[-1]

    def build(self) -> Graph:
        from physlearn.simulators.graphs.generators import layered

        return layered(self.sizes, skip=self.skip)


class LatticeGraph(StrictModel):
    """Square lattice with open boundaries; node index = row * cols + col."""

    type: Literal["lattice"] = Field(description="graph generator: square lattice")
    rows: int = Field(
        ge=2, le=MAX_NODES, description=f"lattice rows (count; rows x cols <= {MAX_NODES:,})"
    )
    cols: int = Field(
        ge=1, le=MAX_NODES, description=f"lattice columns (count; rows x cols <= {MAX_NODES:,})"
    )
    neighbours: Literal[1, 2] = Field(
        1, description="1: nearest neighbours; 2: also next-nearest (diagonal) neighbours"
    )
    skips: list[Annotated[int, Field(ge=2, le=MAX_NODES)]] = Field(
        default_factory=list,
        max_length=64,
        description="extra edges between sites k apart along rows and columns, for each k "
        "(sites, each >= 2)",
    )
    inputs: int | list[int] | None = Field(
        None,
        description="input nodes: a count (evenly spaced along the first row) or explicit node "
        "indices; default: the whole first row",
    )
    outputs: int | list[int] | None = Field(
        None,
        description="output nodes: a count (evenly spaced along the last row) or explicit node "
        "indices; default: the whole last row",
    )

    @model_validator(mode="after")
    def _check(self) -> LatticeGraph:
        _check_counts("rows x cols", *self.counts())
        n = self.rows * self.cols
        for k in self.skips:
            if k >= self.rows and k >= self.cols:
                raise ValueError(f"skip {k} is longer than the lattice ({self.rows} x {self.cols})")
        if len(set(self.skips)) != len(self.skips):
            raise ValueError(f"skips must be distinct, got {self.skips}")
        for name, spec in (("inputs", self.inputs), ("outputs", self.outputs)):
            if isinstance(spec, int) and not 1 <= spec <= self.cols:
                raise ValueError(f"{name} = {spec}: a row holds between 1 and {self.cols} nodes")
            if isinstance(spec, list):
                if not spec:
                    raise ValueError(f"{name} must list at least one node")
                _check_node_list(name, spec, n)
        if isinstance(self.inputs, list) and isinstance(self.outputs, list):
            both = set(self.inputs) & set(self.outputs)
            if both:
                raise ValueError(f"node {min(both)} is both an input and an output node")
        return self

    def counts(self) -> tuple[int, int]:
        """(nodes, an upper bound of the edges): each site has at most 2 neighbours along rows
        and columns, 2 diagonal ones, and 2 per skip (counted from one end of each edge)."""
        n = self.rows * self.cols
        return n, n * (2 * self.neighbours + 2 * len(self.skips))

    def n_inputs(self) -> int:
        return _count(self.inputs, self.cols)

    def n_outputs(self) -> int:
        return _count(self.outputs, self.cols)

    def build(self) -> Graph:
        from physlearn.simulators.graphs.generators import lattice

        return lattice(
            self.rows,
            self.cols,
            neighbours=self.neighbours,
            skips=self.skips,
            n_inputs=self.inputs if isinstance(self.inputs, int) else None,
            n_outputs=self.outputs if isinstance(self.outputs, int) else None,
            input_nodes=self.inputs if isinstance(self.inputs, list) else None,
            output_nodes=self.outputs if isinstance(self.outputs, list) else None,
        )


class EdgeListGraph(StrictModel):
    """Any graph, given edge by edge."""

    type: Literal["edges"] = Field(description="graph given as an explicit edge list")
    n_nodes: int = Field(
        ge=2,
        le=MAX_NODES,
        description="number of nodes (count), indexed 0 .. n_nodes - 1 (memory bound)",
    )
    edges: list[tuple[int, int]] = Field(
        min_length=1,
        max_length=MAX_EDGES,
        description="edges as [i, j] node pairs; edge e has conductance e",
    )
    input_nodes: list[int] = Field(min_length=1, description="input (source) nodes in port order")
    output_nodes: list[int] = Field(min_length=1, description="output nodes in port order")

    @model_validator(mode="after")
    def _check(self) -> EdgeListGraph:
        n = self.n_nodes
        _check_node_list("input_nodes", self.input_nodes, n)
        _check_node_list("output_nodes", self.output_nodes, n)
        both = set(self.input_nodes) & set(self.output_nodes)
        if both:
            raise ValueError(f"node {min(both)} is both an input and an output node")
        seen: dict[tuple[int, int], int] = {}
        parent = list(range(n))

        def root(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for e, (i, j) in enumerate(self.edges):
            for node in (i, j):
                if not 0 <= node < n:
                    raise ValueError(
                        f"edge {e} = [{i}, {j}] refers to node {node}, outside 0..{n - 1}"
                    )
            if i == j:
                raise ValueError(f"edge {e} is a self-loop on node {i}")
            key = (min(i, j), max(i, j))
            if key in seen:
                raise ValueError(f"edges {seen[key]} and {e} both join nodes {key[0]} and {key[1]}")
            seen[key] = e
            parent[root(i)] = root(j)
        driven = {root(i) for i in self.input_nodes}
        lonely = [a for a in range(n) if root(a) not in driven]
        if lonely:
            raise ValueError(
                f"node {lonely[0]} is not connected to any input node "
                f"({len(lonely)} such nodes); every node must have a path to an input"
            )
        return self

    def counts(self) -> tuple[int, int]:
        """(nodes, edges)."""
        return self.n_nodes, len(self.edges)

    def n_inputs(self) -> int:
        return len(self.input_nodes)

    def n_outputs(self) -> int:
        return len(self.output_nodes)

    def build(self) -> Graph:
        from physlearn.simulators.graphs.generators import from_edge_list

        return from_edge_list(self.n_nodes, self.edges, self.input_nodes, self.output_nodes)


def _check_counts(field: str, n_nodes: int, n_edges: int) -> None:
    """Refuse a graph beyond the memory bounds (:data:`MAX_NODES`, :data:`MAX_EDGES`)."""
    if n_nodes > MAX_NODES:
        raise ValueError(
            f"{field}: {n_nodes:,} nodes, more than the {MAX_NODES:,} a network may have"
        )
    if n_edges > MAX_EDGES:
        raise ValueError(
            f"{field}: {n_edges:,} edges, more than the {MAX_EDGES:,} a network may have"
        )


def _count(spec: int | list[int] | None, default: int) -> int:
    if spec is None:
        return default
    return spec if isinstance(spec, int) else len(spec)


def _check_node_list(name: str, nodes: list[int], n: int) -> None:
    bad = [a for a in nodes if not 0 <= a < n]
    if bad:
        raise ValueError(f"{name} refers to node {bad[0]}, outside 0..{n - 1}")
    if len(set(nodes)) != len(nodes):
        dup = next(a for a in nodes if nodes.count(a) > 1)
        raise ValueError(f"{name} lists node {dup} more than once")


GraphConfig = Annotated[LayeredGraph | LatticeGraph | EdgeListGraph, Field(discriminator="type")]


class AllToAllGraph(StrictModel):
    """Every pair of nodes coupled (n (n - 1) / 2 edges)."""

    type: Literal["all_to_all"] = Field(description="graph generator: all-to-all (dense)")
    n_nodes: int = Field(
        ge=2,
        le=4_096,
        description="number of oscillators (count; at most 4 096: n (n - 1) / 2 couplings and a "
        "dense n x n Hessian per pattern, 134 MB of float64 at the bound)",
    )
    inputs: int | list[int] = Field(
        description="input nodes: a count (the first nodes) or explicit node indices"
    )
    outputs: int | list[int] = Field(
        description="output nodes: a count (the last nodes) or explicit node indices"
    )

    @model_validator(mode="after")
    def _check(self) -> AllToAllGraph:
        n = self.n_nodes
        ins, outs = self.input_nodes(), self.output_nodes()
        for name, spec, nodes in (("inputs", self.inputs, ins), ("outputs", self.outputs, outs)):
            if isinstance(spec, int) and not 1 <= spec < n:
                raise ValueError(f"{name} = {spec}: need between 1 and {n - 1} nodes")
            if isinstance(spec, list):
                if not spec:
                    raise ValueError(f"{name} must list at least one node")
                _check_node_list(name, nodes, n)
        both = set(ins) & set(outs)
        if both:
            raise ValueError(f"node {min(both)} is both an input and an output node")
        return self

    def counts(self) -> tuple[int, int]:
        """(nodes, edges)."""
        return self.n_nodes, self.n_nodes * (self.n_nodes - 1) // 2

    def input_nodes(self) -> list[int]:
        return list(range(self.inputs)) if isinstance(self.inputs, int) else list(self.inputs)

    def output_nodes(self) -> list[int]:
        if isinstance(self.outputs, int):
            return list(range(self.n_nodes - self.outputs, self.n_nodes))
        return list(self.outputs)

    def n_inputs(self) -> int:
        return len(self.input_nodes())

    def n_outputs(self) -> int:
        return len(self.output_nodes())

    def build(self) -> Graph:
        from physlearn.simulators.graphs.generators import all_to_all

        return all_to_all(self.n_nodes, self.input_nodes(), self.output_nodes())
