"""DC operating points of resistor networks: physlearn's solvers against ngspice, side by side.

The networks: square lattices of N = side^2 nodes (nearest-neighbour resistors of uniform random
conductance in [1e-4, 1e-3] S), input voltage sources on the first row, outputs on the last row,
64 input patterns uniform in [-1, 1] V. Two variants:

* ``linear``: resistors only. Ours: :class:`LinearResistorNetwork` (one sparse LU, batched
  solve) and :class:`NonlinearResistorNetwork` without diodes (Kron reduction onto the outputs).
* ``diodes``: every hidden node also gets the clipping diodes of a deep diode-resistor network --
  a Shockley diode (SPICE defaults: IS = 1e-14 A, N = 1, 27 degC) from the node to a +0.1 V rail
  and one from a -0.1 V rail to the node -- 2 (N - side) diodes. Ours: the damped-Newton solver of
  :class:`NonlinearResistorNetwork` (backend chosen automatically).

Fairness. Both run on one core (BLAS limited to one thread on our side; ngspice is
single-threaded). ngspice solves all 64 patterns in *one* process and *one* analysis: a ``.dc``
sweep of a dummy source over the pattern index, every input source reading its value from a
piecewise-linear table (each operating point continues from the previous one) -- the fastest batch
SPICE offers (``--spice-mode alter`` runs ``alter`` + ``op`` per pattern instead, in one process).
ngspice's start-up (reading the deck, building the circuit and matrix) is timed separately by
running the same deck without the analysis (launch + parsing), and is subtracted. Our time
includes building the circuit matrices and every factorisation (the parameter cache is cleared
before each repetition). Times are CPU seconds (robust on a shared machine; wall seconds are
printed too).
Both answers are compared node by node: |V_ours - V_spice| <= 1e-6 |V_spice| + 1 nV.

Usage: ``python benchmarks/spice.py`` (N = 100, 1 000, 10 000; several minutes, most of it
ngspice at N = 10 000 with diodes). The last line is the speed ratio at the largest N.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.simulators.graphs.generators import Graph, lattice
from physlearn.simulators.resistor import spice
from physlearn.simulators.resistor.circuit import clipping_diodes
from physlearn.simulators.resistor.elements import DiodeModel
from physlearn.simulators.resistor.linear import LinearResistorNetwork, ResistorState
from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_spice(deck: str, n_nodes: int, n_bias: int) -> tuple[spice.SpiceResult, float, float]:
    """Run a deck; return the result and (wall, CPU) seconds of the ngspice process."""
    c0 = _children_cpu()
    res = spice.run_ngspice(deck, n_nodes, n_bias)
    return res, res.seconds, _children_cpu() - c0


def spice_startup(deck: str) -> tuple[float, float]:
    """Wall and CPU seconds of launching ngspice and reading the deck (no analysis; the matrix
    set-up happens at the analysis and is counted as solve time)."""
    exe = spice.find_ngspice()
    assert exe is not None
    text = "\n".join(ln for ln in deck.splitlines() if not ln.lower().startswith((".dc", ".op")))
    ctl = ".control" in deck
    if ctl:  # alter deck: keep the circuit, drop the script
        head, _, _ = text.partition(".control")
        text = head + ".end"
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "deck.cir"
        p.write_text(text + "\n")
        c0 = _children_cpu()
        t0 = time.perf_counter()
        # without an analysis ngspice exits 1 ("no simulations run") after reading the deck
        proc = subprocess.run([exe, "-b", str(p)], capture_output=True, text=True, cwd=tmp)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
        if "Circuit:" not in proc.stdout + proc.stderr:
            raise RuntimeError(f"ngspice could not read the deck:\n{proc.stderr[-2000:]}")
        return wall, cpu


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """Best-of-``repeats`` (CPU, wall) seconds of ``fn()`` and its last result."""
    best_c, best_w, out = math.inf, math.inf, None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        best_c = min(best_c, time.process_time() - c0)
        best_w = min(best_w, time.perf_counter() - t0)
    return out, best_c, best_w


def network(side: int, diodes: bool, seed: int) -> tuple[Graph, NonlinearResistorNetwork]:
    g = lattice(side, side)
    if not diodes:
        return g, NonlinearResistorNetwork(g, bounds=(1e-4, 1e-3), seed=seed)
    an, ca, bias = clipping_diodes(g, [g.hidden_nodes], [(-0.1, 0.1)])
    net = NonlinearResistorNetwork(g, an, ca, DiodeModel(), bias, bounds=(1e-4, 1e-3), seed=seed)
    return g, net


def ours_nonlinear(net: NonlinearResistorNetwork, x: np.ndarray) -> np.ndarray:
    net.set_parameters(net.get_parameters())  # a fresh parameter version: no cached LU
    eq = net.equilibrate(x)
    if not bool(np.all(eq.converged)):
        raise RuntimeError("our solver did not converge")
    return net.node_voltages(eq, x)[:, : net.graph.n_nodes]


def ours_linear(lin: LinearResistorNetwork, x: np.ndarray) -> np.ndarray:
    lin.set_parameters(lin.get_parameters())
    eq = lin.equilibrate(x)
    st = eq.state
    assert isinstance(st, ResistorState)
    g = lin.graph
    v = np.empty((x.shape[0], g.n_nodes))
    free = np.setdiff1d(np.arange(g.n_nodes), g.input_nodes)  # free nodes, ascending
    v[:, free] = np.asarray(st.v).T.real
    v[:, g.input_nodes] = x
    return v


def agree(ours: np.ndarray, ref: np.ndarray) -> tuple[bool, float]:
    d = np.abs(ours - ref)
    ok = bool(np.all(np.isfinite(ref)) and np.all(d <= 1e-6 * np.abs(ref) + 1e-9))
    return ok, float(d.max())


def slope(ns: list[int], ts: list[float]) -> float:
    if len(ns) < 2:
        return math.nan
    return float(np.polyfit(np.log(ns), np.log(np.maximum(ts, 1e-9)), 1)[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100, 1000, 10000],
        help="node counts N (rounded to side^2)",
    )
    ap.add_argument("--patterns", type=int, default=64, help="input patterns per batch")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions of our solve (best)")
    ap.add_argument(
        "--variants", nargs="+", default=["linear", "diodes"], choices=["linear", "diodes"]
    )
    ap.add_argument(
        "--spice-mode",
        choices=["sweep", "alter"],
        default="sweep",
        help="how ngspice runs the batch in one process",
    )
    ap.add_argument("--klu", action="store_true", help="ngspice: use its KLU matrix solver")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if spice.find_ngspice() is None:
        print("ngspice not found (Debian: apt-get install ngspice)", file=sys.stderr)
        return 2
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    opts = {"klu": 1.0} if args.klu else None
    rows: dict[str, list[tuple[int, float, float]]] = {}
    print(
        f"{'variant':<8} {'N':>6} {'solver':<22} {'cpu s':>9} {'wall s':>9} "
        f"{'spice cpu':>10} {'spice wall':>10} {'startup':>8} {'ratio':>8} {'max|dV| V':>10} ok"
    )
    ratio_last: dict[str, float] = {}  # solver -> ratio at the last (largest) N
    for n in args.sizes:
        side = max(2, round(math.sqrt(n)))
        nn = side * side
        rng = np.random.default_rng([args.seed, nn])
        x = rng.uniform(-1.0, 1.0, (args.patterns, side))
        for variant in args.variants:
            g, net = network(side, variant == "diodes", args.seed)
            deck = spice.to_netlist(net, x, mode=args.spice_mode, options=opts)
            c = spice.circuit_of(net)
            ref, sw, sc = run_spice(deck, c.n_nodes, c.bias.size)
            st_w, st_c = spice_startup(deck)
            s_cpu, s_wall = max(sc - st_c, 1e-9), max(sw - st_w, 1e-9)
            solvers: list[tuple[str, Callable[[], np.ndarray]]] = [
                (f"nonlinear/{net.backend}", partial(ours_nonlinear, net, x))
            ]
            if variant == "linear":
                lin = LinearResistorNetwork(
                    g, net.get_parameters()["conductance"], bounds=(1e-4, 1e-3)
                )
                solvers.insert(0, ("LinearResistorNetwork", partial(ours_linear, lin, x)))
            for name, fn in solvers:
                v, cpu, wall = timed(fn, args.repeats)
                ok, dmax = agree(v, ref.voltages)
                ratio = s_cpu / max(cpu, 1e-9)
                print(
                    f"{variant:<8} {nn:>6} {name:<22} {cpu:>9.4f} {wall:>9.4f} {s_cpu:>10.3f} "
                    f"{s_wall:>10.3f} {st_c:>8.3f} {ratio:>7.0f}x {dmax:>10.2e} {ok}",
                    flush=True,
                )
                key = f"{variant}:{name.split('/')[0]}"
                rows.setdefault(key, []).append((nn, cpu, s_cpu))
                ratio_last[key] = ratio
                if not ok:
                    print(f"  MISMATCH: ours and ngspice differ by {dmax:.3g} V", flush=True)
    print("growth with N (log-log slope of CPU time):")
    for key, r in rows.items():
        ns = [a for a, _, _ in r]
        print(
            f"  {key:<34} ours {slope(ns, [b for _, b, _ in r]):5.2f}   "
            f"ngspice {slope(ns, [s for _, _, s in r]):5.2f}"
        )
    largest = max(nn for r in rows.values() for nn, _, _ in r)
    parts = ", ".join(f"{k} {v:.0f}x" for k, v in ratio_last.items())
    print(f"speed ratio ngspice/ours (CPU) at N = {largest}: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
