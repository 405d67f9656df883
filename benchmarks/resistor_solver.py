"""Resistor-network solver: one sparse factorisation per update vs a per-sample dense solve.

One EP step's physics on a square lattice of N nodes (inputs on the whole first row, up to 10
outputs spread along the last row), batch B: the free phase plus two target-nudged phases
(centred EP, +-beta).

* ours: :class:`~physlearn.simulators.resistor.linear.LinearResistorNetwork` -- a fresh SuperLU
  factorisation of the free-node Laplacian (timed: parameters are rewritten before each
  repeat), one multi-RHS solve for the batch, nudges by a k x k low-rank (Woodbury) correction.
* baseline: what a naive code does -- per phase build the dense free-node Laplacian (with beta on
  the output diagonal when nudged) and call ``numpy.linalg.solve`` once per sample.

Both compute the per-sample conjugates 1/2 dV^2. For large N the dense baseline is timed on a
few samples per phase and scaled to the full batch (marked in the table); its outputs are
checked against ours. Times: ours, best of ``--repeats`` runs (``fact+Z``: its share spent
factorising and forming the k transfer columns Z); baseline, the better of
multi-threaded BLAS (numpy's default) and single-threaded BLAS -- on a shared, loaded machine
OpenBLAS threads can make LAPACK several times slower, and the baseline should not be
handicapped by that.

    python benchmarks/resistor_solver.py [--sizes 100 1000 10000] [--batch 64]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from physlearn.simulators.graphs.generators import lattice
from physlearn.simulators.resistor.linear import LinearResistorNetwork
from physlearn.system import FloatArray, Nudge


def lattice_shape(n: int) -> tuple[int, int]:
    """rows x cols = n, as square as possible (rows <= cols)."""
    rows = int(math.isqrt(n))
    while n % rows:
        rows -= 1
    return rows, n // rows


def build(n: int, seed: int) -> LinearResistorNetwork:
    rows, cols = lattice_shape(n)
    graph = lattice(rows, cols, n_outputs=min(10, cols))
    return LinearResistorNetwork(graph, bounds=(1e-5, 1e-2), init=(1e-4, 1e-3), seed=seed)


def time_ours(
    net: LinearResistorNetwork, x: FloatArray, t: FloatArray, beta: float, repeats: int
) -> tuple[float, float, FloatArray]:
    """Best wall-clock seconds of (factorise + free + 2 nudged phases), factorisation share,
    and the free outputs."""
    g = net.get_parameters()["conductance"]
    net.equilibrate(x[:1])  # one-time set-up (BLAS thread-pool discovery), not per update
    best, best_factor = math.inf, 0.0
    outputs = np.empty(0)
    for _ in range(repeats):
        net.set_parameters({"conductance": g})  # invalidates the factorisation
        t0 = time.perf_counter()
        net.output_resistance()  # factorise (+ transfer matrix), timed separately as a share
        t1 = time.perf_counter()
        free = net.equilibrate(x)
        for b in (beta, -beta):
            net.equilibrate(x, Nudge(beta=b, target=t), free.state)
        t2 = time.perf_counter()
        if t2 - t0 < best:
            best, best_factor, outputs = t2 - t0, t1 - t0, free.outputs
    return best, best_factor, outputs


def dense_free_block(net: LinearResistorNetwork) -> tuple[FloatArray, FloatArray, np.ndarray]:
    """Dense L_FF, L_FS and the free-node indices, as a naive code would build them."""
    g = net.get_parameters()["conductance"]
    n = net.graph.n_nodes
    i, j = net.graph.edges[:, 0], net.graph.edges[:, 1]
    lap = np.zeros((n, n))
    np.add.at(lap, (i, i), g)
    np.add.at(lap, (j, j), g)
    lap[i, j] -= g
    lap[j, i] -= g
    src = net.graph.input_nodes
    free = np.setdiff1d(np.arange(n), src)
    return lap[np.ix_(free, free)], lap[np.ix_(free, src)], free


def time_baseline(
    net: LinearResistorNetwork, x: FloatArray, t: FloatArray, beta: float, samples: int
) -> tuple[float, FloatArray]:
    """Seconds for 3 phases x ``samples`` per-sample dense solves, and the free outputs."""
    n = net.graph.n_nodes
    i, j = net.graph.edges[:, 0], net.graph.edges[:, 1]
    src, outs = net.graph.input_nodes, net.graph.output_nodes
    t0 = time.perf_counter()
    a0, b0, free = dense_free_block(net)
    pos = np.searchsorted(free, outs)
    outputs = np.empty((samples, outs.size))
    for phase_beta in (0.0, beta, -beta):
        a = a0.copy()
        a[pos, pos] += phase_beta
        for s in range(samples):
            rhs = -b0 @ x[s]
            rhs[pos] += phase_beta * t[s]
            v = np.zeros(n)
            v[free] = np.linalg.solve(a, rhs)
            v[src] = x[s]
            conj = 0.5 * (v[i] - v[j]) ** 2  # noqa: F841 - the conjugates a step needs
            if phase_beta == 0.0:
                outputs[s] = v[outs]
    return time.perf_counter() - t0, outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100, 1000, 10000], help="lattice sizes N (nodes)"
    )
    parser.add_argument("--batch", type=int, default=64, help="samples per batch")
    parser.add_argument("--beta", type=float, default=1e-5, help="nudge conductance (S)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of ours (best taken)")
    parser.add_argument(
        "--dense-full-up-to",
        type=int,
        default=2000,
        help="largest N whose dense baseline runs on the whole batch",
    )
    parser.add_argument(
        "--dense-samples",
        type=int,
        default=1,
        help="samples per phase timed for the dense baseline above that N "
        "(then scaled to the batch)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(
        f"batch {args.batch}, phases: free + 2 target-nudged (beta = +-{args.beta:g} S); "
        "lattice graphs; times in ms"
    )
    header = (
        f"{'N':>6} {'edges':>6} {'ours':>9} {'(fact+Z)':>9} {'baseline':>11} {'ratio':>8}  note"
    )
    print(header)
    print("-" * len(header))
    headline = None
    for n in args.sizes:
        net = build(n, args.seed)
        rng = np.random.default_rng(args.seed)
        x = rng.uniform(-1.0, 1.0, (args.batch, net.inputs.size))
        t = rng.uniform(-1.0, 1.0, (args.batch, net.outputs.size))
        ours, factor, out_ours = time_ours(net, x, t, args.beta, args.repeats)
        samples = args.batch if n <= args.dense_full_up_to else min(args.dense_samples, args.batch)
        base, out_base = time_baseline(net, x, t, args.beta, samples)
        with threadpool_limits(limits=1, user_api="blas"):
            base_1, _ = time_baseline(net, x, t, args.beta, samples)
        base = min(base, base_1)
        base_full = base * args.batch / samples
        err = float(np.abs(out_base - out_ours[:samples]).max())
        note = f"outputs agree to {err:.1e} V"
        if samples < args.batch:
            note += f"; baseline timed on {samples}/{args.batch} samples per phase, scaled"
        ratio = base_full / ours
        print(
            f"{n:>6} {net.n_edges:>6} {ours * 1e3:>9.2f} {factor * 1e3:>9.2f} "
            f"{base_full * 1e3:>11.1f} {ratio:>7.0f}x  {note}"
        )
        headline = (n, ratio)
    if headline is not None:
        n, ratio = headline
        print(
            f"headline: {n} nodes, batch {args.batch}: {ratio:.0f}x faster than per-sample "
            "dense solve"
        )


if __name__ == "__main__":
    main()
