"""Graphs for network simulators: which nodes exist, which are coupled, which are ports.

Physics-free and shared by every network-shaped system (resistor networks, XY oscillators). A
:class:`Graph` is an undirected simple graph with designated *input* nodes (clamped by the
system: voltage sources, clamped phases) and *output* nodes (measured); every other node is
*hidden*. Edge order is meaningful: a system's edge parameters are indexed like ``Graph.edges``.

Generators are vectorised with numpy (no per-edge Python loops): a 100 x 100 lattice builds,
validation included, in a few milliseconds.

* :func:`from_edge_list` -- any graph from an explicit edge list.
* :func:`layered` -- dense between adjacent layers (optionally also layer l to l + 2).
* :func:`all_to_all` -- every pair of nodes joined.
* :func:`lattice` -- square lattice, open boundaries, nearest / next-nearest (diagonal)
  neighbours and longer skip edges along rows and columns.
* :func:`with_extra_input` -- append one extra input node (e.g. a ground) wired to every
  non-input neighbour of the existing inputs.

Every graph is validated on construction: node indices in range, no self-loops, no duplicate
edges (in either orientation), inputs and outputs disjoint and unique, and every node connected
to at least one input node (otherwise a resistor network's Laplacian is singular and an
oscillator block is not driven by the data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from physlearn.system import Port

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

ROLE_INPUT = "input"
ROLE_OUTPUT = "output"
ROLE_HIDDEN = "hidden"


def _frozen(a: NDArray[np.generic]) -> NDArray[np.generic]:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Graph:
    """An undirected simple graph with input and output nodes.

    Attributes:
        n_nodes: number of nodes, indexed ``0 .. n_nodes - 1``.
        edges: ``(E, 2)`` int64 node pairs, each with ``edges[e, 0] < edges[e, 1]``; row ``e`` is
            edge ``e`` of the system's edge parameters.
        input_nodes: ``(n_in,)`` input nodes in port order (clamped by the system).
        output_nodes: ``(n_out,)`` output nodes in port order (measured).
        positions: ``(n_nodes, 2)`` float coordinates for plotting (arbitrary units).
        roles: per-node role string: ``"input"``, ``"output"``, ``"hidden"``, or a more specific
            label given by a generator (e.g. ``"ground"`` for an input added by
            :func:`with_extra_input`).

    Arrays are read-only; construction validates the graph (see the module docstring) and raises
    ``ValueError`` naming the offending node or edge.
    """

    n_nodes: int
    edges: IntArray
    input_nodes: IntArray
    output_nodes: IntArray
    positions: FloatArray
    roles: tuple[str, ...]

    def __post_init__(self) -> None:
        n = int(self.n_nodes)
        if n < 2:
            raise ValueError(f"a graph needs at least 2 nodes, got n_nodes={n}")
        edges = np.asarray(self.edges)
        if edges.size == 0:
            edges = edges.reshape(0, 2)
        if edges.ndim != 2 or edges.shape[1] != 2:
            raise ValueError(f"edges must have shape (E, 2), got {edges.shape}")
        if edges.size and not np.issubdtype(edges.dtype, np.integer):
            raise ValueError(f"edges must be integer node indices, got dtype {edges.dtype}")
        edges = edges.astype(np.int64)
        _check_nodes("edges", edges.reshape(-1), n)
        loops = np.flatnonzero(edges[:, 0] == edges[:, 1])
        if loops.size:
            e = int(loops[0])
            raise ValueError(f"edge {e} is a self-loop on node {int(edges[e, 0])}")
        edges = np.sort(edges, axis=1)
        keys = edges[:, 0] * n + edges[:, 1]
        order = np.argsort(keys, kind="stable")
        dup = np.flatnonzero(np.diff(keys[order]) == 0)
        if dup.size:
            a, b = int(order[dup[0]]), int(order[dup[0] + 1])
            raise ValueError(
                f"duplicate edge: edges {a} and {b} both join nodes "
                f"{int(edges[a, 0])} and {int(edges[a, 1])}"
            )
        inputs = np.asarray(self.input_nodes, dtype=np.int64).reshape(-1)
        outputs = np.asarray(self.output_nodes, dtype=np.int64).reshape(-1)
        if inputs.size == 0:
            raise ValueError("a graph needs at least one input node")
        if outputs.size == 0:
            raise ValueError("a graph needs at least one output node")
        _check_nodes("input_nodes", inputs, n)
        _check_nodes("output_nodes", outputs, n)
        for name, nodes in (("input_nodes", inputs), ("output_nodes", outputs)):
            uniq, counts = np.unique(nodes, return_counts=True)
            if np.any(counts > 1):
                raise ValueError(f"{name} lists node {int(uniq[counts > 1][0])} more than once")
        both = np.intersect1d(inputs, outputs)
        if both.size:
            raise ValueError(f"node {int(both[0])} is both an input and an output node")
        positions = np.asarray(self.positions, dtype=np.float64)
        if positions.shape != (n, 2):
            raise ValueError(f"positions must have shape ({n}, 2), got {positions.shape}")
        roles = tuple(str(r) for r in self.roles)
        if len(roles) != n:
            raise ValueError(f"roles must name all {n} nodes, got {len(roles)}")
        _check_connected(n, edges, inputs, roles)
        object.__setattr__(self, "n_nodes", n)
        object.__setattr__(self, "edges", _frozen(edges))
        object.__setattr__(self, "input_nodes", _frozen(inputs))
        object.__setattr__(self, "output_nodes", _frozen(outputs))
        object.__setattr__(self, "positions", _frozen(positions))
        object.__setattr__(self, "roles", roles)

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def hidden_nodes(self) -> IntArray:
        """Nodes that are neither inputs nor outputs, ascending."""
        mask = np.ones(self.n_nodes, dtype=bool)
        mask[self.input_nodes] = False
        mask[self.output_nodes] = False
        return np.flatnonzero(mask).astype(np.int64)

    def degree(self) -> IntArray:
        """Number of edges at each node, ``(n_nodes,)``."""
        return np.bincount(self.edges.reshape(-1), minlength=self.n_nodes).astype(np.int64)


def _check_nodes(name: str, nodes: IntArray, n: int) -> None:
    bad = np.flatnonzero((nodes < 0) | (nodes >= n))
    if bad.size:
        raise ValueError(f"{name} refers to node {int(nodes[bad[0]])}, outside 0..{n - 1}")


def _check_connected(n: int, edges: IntArray, inputs: IntArray, roles: Sequence[str]) -> None:
    adj = coo_array(
        (np.ones(edges.shape[0], dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n)
    )
    _, labels = connected_components(adj, directed=False)
    driven = np.zeros(int(labels.max()) + 1, dtype=bool)
    driven[labels[inputs]] = True
    lonely = np.flatnonzero(~driven[labels])
    if lonely.size:
        node = int(lonely[0])
        more = f" ({lonely.size} such nodes: {lonely[:10].tolist()}...)" if lonely.size > 1 else ""
        raise ValueError(
            f"node {node} ({roles[node]}) is not connected to any input node{more}; "
            "every node must have a path to an input"
        )


def default_roles(n_nodes: int, input_nodes: ArrayLike, output_nodes: ArrayLike) -> tuple[str, ...]:
    """``"input"`` / ``"output"`` / ``"hidden"`` for each node."""
    roles = np.full(n_nodes, ROLE_HIDDEN, dtype=object)
    roles[np.asarray(input_nodes, dtype=np.int64)] = ROLE_INPUT
    roles[np.asarray(output_nodes, dtype=np.int64)] = ROLE_OUTPUT
    return tuple(str(r) for r in roles)


def circle_positions(n_nodes: int) -> FloatArray:
    """Nodes evenly spaced on the unit circle, ``(n_nodes, 2)``."""
    t = 2.0 * np.pi * np.arange(n_nodes) / n_nodes
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def from_edge_list(
    n_nodes: int,
    edges: ArrayLike,
    input_nodes: ArrayLike,
    output_nodes: ArrayLike,
    positions: ArrayLike | None = None,
    roles: Sequence[str] | None = None,
) -> Graph:
    """A graph from explicit edges ``(E, 2)`` (either orientation; stored with i < j).

    ``positions`` default to a circle; ``roles`` default to input / output / hidden.
    """
    e = np.asarray(edges)
    if e.size == 0:
        e = np.zeros((0, 2), dtype=np.int64)
    pos = circle_positions(n_nodes) if positions is None else np.asarray(positions, dtype=float)
    if roles is None:
        _check_nodes("input_nodes", np.asarray(input_nodes, dtype=np.int64).reshape(-1), n_nodes)
        _check_nodes("output_nodes", np.asarray(output_nodes, dtype=np.int64).reshape(-1), n_nodes)
        roles = default_roles(n_nodes, input_nodes, output_nodes)
    return Graph(
        n_nodes=n_nodes,
        edges=e,
        input_nodes=np.asarray(input_nodes, dtype=np.int64),
        output_nodes=np.asarray(output_nodes, dtype=np.int64),
        positions=pos,
        roles=tuple(roles),
    )


def _dense_bipartite(a: IntArray, b: IntArray) -> IntArray:
    """All pairs (a_i, b_j), row-major in a, as an (len(a) * len(b), 2) array."""
    return np.stack([np.repeat(a, b.size), np.tile(b, a.size)], axis=1)


def layered(sizes: Sequence[int], skip: bool = False) -> Graph:
    """Layers of ``sizes[l]`` nodes, every node of layer l joined to every node of layer l + 1.

    Nodes are numbered layer by layer. The first layer is the input nodes, the last layer the
    output nodes. ``skip=True`` also joins every node of layer l to every node of layer l + 2
    (one-layer skip connections). Edges are ordered by layer pair, then row-major.
    Positions: x = layer index, y = node index centred within its layer.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"a layered graph needs at least 2 layers, got sizes={sizes}")
    if min(sizes) < 1:
        raise ValueError(f"every layer needs at least one node, got sizes={sizes}")
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    layers = [np.arange(starts[i], starts[i + 1], dtype=np.int64) for i in range(len(sizes))]
    blocks = [_dense_bipartite(layers[i], layers[i + 1]) for i in range(len(sizes) - 1)]
    if skip:
        blocks += [_dense_bipartite(layers[i], layers[i + 2]) for i in range(len(sizes) - 2)]
    n = int(starts[-1])
    layer_of = np.repeat(np.arange(len(sizes)), sizes)
    within = np.arange(n) - starts[layer_of]
    size_of = np.asarray(sizes)[layer_of]
    pos = np.stack([layer_of.astype(float), within - (size_of - 1) / 2.0], axis=1)
    return from_edge_list(n, np.concatenate(blocks), layers[0], layers[-1], pos)


def all_to_all(n_nodes: int, input_nodes: ArrayLike, output_nodes: ArrayLike) -> Graph:
    """Every pair of nodes joined (edges (i, j), i < j, in row-major order); nodes on a circle."""
    i, j = np.triu_indices(int(n_nodes), k=1)
    return from_edge_list(n_nodes, np.stack([i, j], axis=1), input_nodes, output_nodes)


def _spread(n: int, width: int, what: str) -> IntArray:
    if not 1 <= n <= width:
        raise ValueError(f"{what}: need between 1 and {width} nodes on the row, got {n}")
    return np.round(np.linspace(0, width - 1, n)).astype(np.int64)


def lattice(
    rows: int,
    cols: int,
    neighbours: int = 1,
    skips: Sequence[int] = (),
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    input_nodes: ArrayLike | None = None,
    output_nodes: ArrayLike | None = None,
) -> Graph:
    """A ``rows x cols`` square lattice with open boundaries; node ``r * cols + c``.

    Args:
        neighbours: 1 = nearest neighbours (along rows and columns); 2 = also next-nearest
            neighbours (both diagonals of every plaquette).
        skips: extra edges joining nodes ``k`` sites apart along rows and along columns, for each
            ``k`` in ``skips`` (each ``k >= 2``).
        n_inputs: inputs evenly spaced along the first row (default: the whole first row).
        n_outputs: outputs evenly spaced along the last row (default: the whole last row).
        input_nodes, output_nodes: explicit node lists, overriding the row placement.

    Edge order: horizontal, vertical, diagonal (down-right), anti-diagonal (down-left), then each
    skip (horizontal, vertical). Positions: x = column, y = -row.
    """
    rows, cols = int(rows), int(cols)
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise ValueError(f"a lattice needs at least 2 sites, got rows={rows}, cols={cols}")
    if neighbours not in (1, 2):
        raise ValueError(f"neighbours must be 1 (nearest) or 2 (with diagonals), got {neighbours}")
    skips = [int(k) for k in skips]
    if any(k < 2 for k in skips) or len(set(skips)) != len(skips):
        raise ValueError(f"skips must be distinct distances >= 2, got {skips}")
    idx = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)

    def pairs(a: IntArray, b: IntArray) -> IntArray:
        return np.stack([a.reshape(-1), b.reshape(-1)], axis=1)

    blocks = [pairs(idx[:, :-1], idx[:, 1:]), pairs(idx[:-1, :], idx[1:, :])]
    if neighbours == 2:
        blocks += [pairs(idx[:-1, :-1], idx[1:, 1:]), pairs(idx[:-1, 1:], idx[1:, :-1])]
    for k in skips:
        if k >= rows and k >= cols:
            raise ValueError(f"skip {k} is longer than the lattice ({rows} x {cols})")
        blocks += [pairs(idx[:, :-k], idx[:, k:]), pairs(idx[:-k, :], idx[k:, :])]
    edges = np.concatenate(blocks)
    if input_nodes is None:
        inputs = idx[0, _spread(cols if n_inputs is None else n_inputs, cols, "n_inputs")]
    else:
        inputs = np.asarray(input_nodes, dtype=np.int64)
    if output_nodes is None:
        outputs = idx[-1, _spread(cols if n_outputs is None else n_outputs, cols, "n_outputs")]
    else:
        outputs = np.asarray(output_nodes, dtype=np.int64)
    r, c = np.divmod(np.arange(rows * cols), cols)
    pos = np.stack([c.astype(float), -r.astype(float)], axis=1)
    return from_edge_list(rows * cols, edges, inputs, outputs, pos)


def with_extra_input(graph: Graph, role: str = "ground") -> Graph:
    """Append one input node (index ``graph.n_nodes``) joined to every non-input neighbour of
    the existing inputs.

    In a layered graph this is one more node of the input layer (dense to the second layer).
    The new edges come after the existing ones, so existing edge indices are unchanged; the new
    node is the last input. Its position sits just beyond the inputs, away from the graph centre.
    """
    n = graph.n_nodes
    e = graph.edges
    is_input = np.zeros(n, dtype=bool)
    is_input[graph.input_nodes] = True
    touches = is_input[e[:, 0]] ^ is_input[e[:, 1]]
    other = np.where(is_input[e[touches, 0]], e[touches, 1], e[touches, 0])
    targets = np.unique(other)
    if targets.size == 0:
        raise ValueError("the inputs have no non-input neighbours to connect an extra input to")
    new_edges = np.stack([targets, np.full(targets.size, n, dtype=np.int64)], axis=1)
    centre_in = graph.positions[graph.input_nodes].mean(axis=0)
    away = centre_in - graph.positions.mean(axis=0)
    norm = float(np.hypot(*away))
    direction = away / norm if norm > 1e-12 else np.array([0.0, 1.0])
    pos = np.vstack([graph.positions, centre_in + direction])
    return Graph(
        n_nodes=n + 1,
        edges=np.concatenate([e, new_edges]),
        input_nodes=np.append(graph.input_nodes, n),
        output_nodes=graph.output_nodes,
        positions=pos,
        roles=(*graph.roles, role),
    )


def input_voltage_port(graph: Graph, n_inputs: int) -> Port:
    """The first ``n_inputs`` input nodes as voltage sources (V)."""
    return Port(
        size=n_inputs,
        unit="V",
        labels=tuple(f"node{n}" for n in graph.input_nodes[:n_inputs]),
        long_name="input source voltages",
    )


def output_voltage_port(graph: Graph) -> Port:
    """The output nodes' voltages (V)."""
    return Port(
        size=int(graph.output_nodes.size),
        unit="V",
        labels=tuple(f"node{n}" for n in graph.output_nodes),
        long_name="output node voltages",
    )
