"""XY oscillator relaxation throughput: physlearn's batched FIRE + Newton vs per-sample solve_ivp.

For N oscillators on a square lattice (nearest neighbours) and all-to-all, a batch of random
input phases is relaxed from random initial phases to a stable fixed point with residual
``max |dE/dphi| <= tol`` over free nodes (default 1e-6):

* physlearn: one :meth:`XYNetwork.equilibrate` call for the whole batch (restarts = 1);
* reference: the overdamped equations ``dphi/dt = -dE/dphi`` integrated sample by sample with
  ``scipy.integrate.solve_ivp`` (RK45, what the published XY code does), stopped by a terminal
  event when the residual reaches ``tol``. Its right-hand side is vectorised numpy (a dense
  coupling matrix for all-to-all, incidence products for the lattice), i.e. faster than the
  published double loop. Because it is slow, it runs on ``--ref-samples`` samples of the batch
  and its time is scaled per sample.

BLAS runs single-threaded for both unless ``OPENBLAS_NUM_THREADS`` is set. Network parameters
are the ``xy`` config defaults (couplings normal with std 1/sqrt(mean degree), bias amplitudes
uniform in [0, 0.1], directions uniform); cold starts are from random phases (not the default
zeros), the same for both contestants. Prints a table
and, as the last line, the headline ratio (geometric mean over the configurations, with the
median and the minimum: one slow reference sample can dominate a geometric mean).

Usage::

    python benchmarks/xy_relaxation.py                 # N = 25, 100, 400; lattice and dense
    python benchmarks/xy_relaxation.py --sizes 25 100 --ref-samples 4
"""

from __future__ import annotations

import os

# Single-threaded BLAS for both contestants (set the variables yourself to compare otherwise):
# on a small shared box, threaded OpenBLAS on small matrices mostly measures contention.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from physlearn.simulators.xy.config import XYConfig  # noqa: E402
from physlearn.simulators.xy.system import XYNetwork  # noqa: E402


@dataclass
class Row:
    graph: str
    n: int
    edges: int
    ours_rate: float
    ours_residual: float
    ours_iters: float
    ref_rate: float
    ref_residual: float
    ref_samples: int
    ref_evals: float

    @property
    def ratio(self) -> float:
        return self.ours_rate / self.ref_rate


def build(kind: str, n: int, seed: int, tol: float) -> XYNetwork:
    if kind == "lattice":
        side = math.isqrt(n)
        if side * side != n:
            raise SystemExit(f"lattice sizes must be squares, got N = {n}")
        graph = {
            "type": "lattice",
            "rows": side,
            "cols": side,
            "inputs": min(side, 4),
            "outputs": 2,
        }
    else:
        graph = {"type": "all_to_all", "n_nodes": n, "inputs": 4, "outputs": 2}
    cfg = XYConfig.model_validate(
        {"kind": "xy", "graph": graph, "relaxation": {"tol": tol}, "init_phases": "random"}
    )
    net = cfg.build(seed)
    net.relax_settings = replace(net.relax_settings, tol=tol)
    return net


def reference_rhs(net: XYNetwork) -> Callable[[float, np.ndarray], np.ndarray]:
    """-dE/dphi on free nodes (0 on clamped inputs) for one sample, vectorised numpy."""
    p = net.all_parameters()
    h, psi = p["bias_amplitude"], p["bias_direction"]
    clamped = np.zeros(net.n_nodes, dtype=bool)
    clamped[net.graph.input_nodes] = True
    e = net.graph.edges
    if net.topo.backend == "dense":
        w = net.topo.dense_matrix(p["coupling"])

        def rhs(_t: float, phi: np.ndarray) -> np.ndarray:
            c, s = np.cos(phi), np.sin(phi)
            f = -(s * (w @ c) - c * (w @ s)) - h * np.sin(phi - psi)
            f[clamped] = 0.0
            return f
    else:
        inc = sp.csr_array(net.topo.incidence)
        inc_t = sp.csr_array(inc.T)
        wc = p["coupling"]

        def rhs(_t: float, phi: np.ndarray) -> np.ndarray:
            d = phi[e[:, 0]] - phi[e[:, 1]]
            f = -(inc_t @ (wc * np.sin(d))) - h * np.sin(phi - psi)
            f[clamped] = 0.0
            return f

    return rhs


def run_reference(
    net: XYNetwork,
    phi0: np.ndarray,
    tol: float,
    method: str,
    rtol: float,
    atol: float,
    t_max: float,
) -> tuple[float, float, float]:
    """Seconds per sample, worst final residual, mean RHS evaluations."""
    rhs = reference_rhs(net)

    def reached(t: float, phi: np.ndarray) -> float:
        return float(np.max(np.abs(rhs(t, phi))) - tol)

    reached.terminal = True  # type: ignore[attr-defined]
    reached.direction = -1  # type: ignore[attr-defined]
    times, worst, evals = [], 0.0, []
    for y0 in phi0:
        t0 = time.perf_counter()
        sol = solve_ivp(rhs, (0.0, t_max), y0, method=method, rtol=rtol, atol=atol, events=reached)
        times.append(time.perf_counter() - t0)
        final = sol.y[:, -1]
        worst = max(worst, float(np.max(np.abs(rhs(0.0, final)))))
        evals.append(sol.nfev)
    return float(np.mean(times)), worst, float(np.mean(evals))


def measure(kind: str, n: int, args: argparse.Namespace) -> Row:
    net = build(kind, n, args.seed, args.tol)
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-np.pi / 2, np.pi / 2, size=(args.batch, net.inputs.size))
    # warm-up (imports, BLAS threads) on a tiny batch, then the timed batch
    net.equilibrate(x[:2], rng=np.random.default_rng(0))
    t0 = time.perf_counter()
    eq = net.equilibrate(x, rng=np.random.default_rng(args.seed + 1))
    ours = time.perf_counter() - t0
    assert eq.converged is not None and eq.residual is not None and eq.iterations is not None
    if not eq.converged.all():
        raise SystemExit(f"{kind} N={n}: {int((~eq.converged).sum())} samples did not converge")
    # the reference starts from the same random initial phases as our cold start
    init = np.random.default_rng(args.seed + 1).uniform(-np.pi, np.pi, size=(args.batch, n))
    init[:, net.graph.input_nodes] = x
    k = min(args.ref_samples, args.batch)
    sec, res, nfev = run_reference(
        net, init[:k], args.tol, args.ivp_method, args.ivp_rtol, args.ivp_atol, args.t_max
    )
    return Row(
        kind,
        n,
        net.graph.n_edges,
        args.batch / ours,
        float(eq.residual.max()),
        float(eq.iterations.mean()),
        1.0 / sec,
        res,
        k,
        nfev,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 400], help="N oscillators")
    ap.add_argument(
        "--graphs", nargs="+", default=["lattice", "dense"], choices=["lattice", "dense"]
    )
    ap.add_argument("--batch", type=int, default=64, help="samples relaxed together (physlearn)")
    ap.add_argument("--tol", type=float, default=1e-6, help="target residual max|dE/dphi|")
    ap.add_argument("--ref-samples", type=int, default=8, help="samples run through solve_ivp")
    ap.add_argument("--ivp-method", default="RK45", help="solve_ivp method")
    ap.add_argument("--ivp-rtol", type=float, default=1e-8, help="solve_ivp rtol")
    ap.add_argument("--ivp-atol", type=float, default=1e-10, help="solve_ivp atol")
    ap.add_argument("--t-max", type=float, default=1e6, help="solve_ivp time limit")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rows = [measure(k, n, args) for k in args.graphs for n in args.sizes]
    print(
        f"XY relaxation to residual {args.tol:g}: batch {args.batch}, reference = solve_ivp "
        f"{args.ivp_method} (rtol {args.ivp_rtol:g}, atol {args.ivp_atol:g}) per sample on "
        f"{args.ref_samples} samples, time scaled per sample"
    )
    head = (
        f"{'graph':<8}{'N':>6}{'edges':>8}{'ours/s':>11}{'resid':>10}{'iters':>8}"
        f"{'ivp/s':>10}{'resid':>10}{'nfev':>9}{'ratio':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.graph:<8}{r.n:>6}{r.edges:>8}{r.ours_rate:>11.1f}{r.ours_residual:>10.1e}"
            f"{r.ours_iters:>8.0f}{r.ref_rate:>10.2f}{r.ref_residual:>10.1e}{r.ref_evals:>9.0f}"
            f"{r.ratio:>8.0f}x"
        )
    ratios = np.array([r.ratio for r in rows])
    geo = float(np.exp(np.mean(np.log(ratios))))
    print(
        f"headline: batched XY relaxation is {geo:.0f}x faster than per-sample solve_ivp "
        f"(geometric mean over {len(rows)} configurations; median {np.median(ratios):.0f}x, "
        f"minimum {ratios.min():.0f}x)"
    )


if __name__ == "__main__":
    main()
