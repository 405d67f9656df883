"""Ground-state solves of one quantum-EP step: physlearn against QuTiP, warm against cold.

Workload: the open phase-exploration chain H = -(t1 sum X + t2 sum ZZ + 0.5 sum ZXZ) with
t = (1.0, 0.5) on N spins, output O = X0 X4, loss -|<O>| (error nudge eps = -sign<O>), centred
nudging +-beta. One EP step is the free phase (cold solve with the degeneracy check: two
eigenvalues) plus two nudged phases (warm solves, H_free + beta eps O applied lazily: +beta from
the free ground state psi0, -beta from the extrapolation 2 psi0 - psi(+beta); their first
products come from the products that certified psi0 and psi(+beta)). The "warm nudge" column
is the mean of the two nudged solves, both from psi0 (no extrapolation); the "cold nudge" column
the same solves cold (ARPACK, one eigenvalue).

physlearn's solver (``SolverOptions(method="lanczos")``, the default) is a plain Lanczos run with
a convergence check after every product and a certified result, ARPACK when it does not
certify (``simulators/quantum/lanczos.py``).

In training, every step after the first is a *steady-state* step: the parameters moved by one
optimiser update (here one Adam step of ``--lr`` from the first step's EP gradient), and the free
phase is a tracked solve from the previous step's ground and first excited state (two
eigenvalues and the degeneracy check, as a cold solve; the orchestrator carries that state,
``PhysicalSystem.export_state``). The goal of issue 4 is a whole EP step <= 1.2x one cold
ground-state solve. Two references are reported, both in time and in matvecs, for the first and
the steady-state step: physlearn's own cold solve (Lanczos, k = 2, same start vector and gap
check) -- the strict reading, the same solver cold and warm -- and ARPACK's cold solve
(``eigsh``, k = 2, the gap check, fixed start vector: ``SolverOptions(method="arpack")``), the
solver physlearn used when the goal was set, slower per solve than physlearn's Lanczos.

The "floor" line shows what is left of the strict reading without the free phase's checks: the
same steady step with a bare warm free phase (one eigenvalue from the previous ground state: no
gap check, no admixture that finds a level of another symmetry sector) in place of the tracked
solve (its time: the steady step's, less the separately timed tracked solve, plus the bare one).
physlearn never uses such a solve; it is measured only to show the part of the step the two
nudged phases take on their own.

QuTiP solves the same three sparse Hamiltonians (the same CSR matrices wrapped as Qobj) with
``Qobj.groundstate(sparse=True)``: once with its defaults (``safe=True`` = two eigenvalues,
``tol=0`` = machine precision) and once at physlearn's tolerance. Times are the minimum over
``--repeats`` rounds, every round running each measurement once in turn (a shared machine's load
spikes then hit all of them alike); matvec counts are deterministic.

physlearn computes the sparse products of registers of 2^17 states and more in blocks of rows
on several threads (``SolverOptions.threads``: the available CPUs by default; the same products
bit for bit), its Lanczos and its ARPACK reference alike; QuTiP's products are serial.
``--product-threads 1`` compares serial against serial.

QuTiP is a benchmark-only dependency: ``pip install qutip``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _round_robin(tasks: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """Minimum time of every task, the tasks interleaved in each round so that load spikes on a
    shared machine hit all of them alike."""
    best: dict[str, tuple[float, Any]] = {k: (float("inf"), None) for k in tasks}
    for _ in range(repeats):
        for name, fn in tasks.items():
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            if dt < best[name][0]:
                best[name] = (dt, out)
    return best


def measure_size(n: int, args: argparse.Namespace, qutip: Any) -> dict[str, Any]:
    """Time every solve of one EP step on an n-spin chain (see the module docstring)."""
    import numpy as np

    from physlearn.config import OptimizerConfig
    from physlearn.estimators import EquilibriumPropagation, centred
    from physlearn.losses import get_loss
    from physlearn.optim import Optimizer
    from physlearn.simulators.quantum.config import QuantumConfig
    from physlearn.simulators.quantum.lanczos import SolverOptions
    from physlearn.simulators.quantum.operators import SumOperator
    from physlearn.simulators.quantum.states import ground_state
    from physlearn.simulators.quantum.system import QuantumSystem

    cfg = QuantumConfig.model_validate(
        {
            "kind": "quantum",
            "qubits": n,
            "h0": [{"pauli": "Z{i} X{i+1} Z{i+2}", "coeff": -0.5, "range": [0, n - 2]}],
            "trainable": [
                {"terms": [{"pauli": "X{i}", "coeff": -1.0, "range": [0, n]}], "init": 1.0},
                {
                    "terms": [{"pauli": "Z{i} Z{i+1}", "coeff": -1.0, "range": [0, n - 1]}],
                    "init": 0.5,
                },
            ],
            "outputs": [{"label": "X0X4", "terms": [{"pauli": "X0 X4"}]}],
            "solver": {"tol": args.tol, "threads": args.product_threads},
        }
    )
    system = cfg.build(0)
    model, basis = system.model, system.model.basis
    # physlearn's solver (Lanczos), as the system uses it, and the reference cold solve; both
    # compute the sparse products of large registers in row blocks on --product-threads threads
    opts = SolverOptions(tol=args.tol, threads=args.product_threads)
    ref = SolverOptions(tol=args.tol, method="arpack", threads=args.product_threads)
    assert system.solver.method == opts.method
    reps = args.repeats
    coeffs = model.coefficients(system.get_parameters())
    t_build, h = _best(lambda: basis.operator(coeffs), reps)
    gs = ground_state(h, None, ref)
    gs_l = ground_state(h, None, opts)
    assert gs_l.hvector is not None
    eps = -np.sign(basis.expectations(gs.vector) @ model.output_ops[0])
    nudges = [basis.operator(b * eps * model.output_ops[0]) for b in (args.beta, -args.beta)]
    ops = [SumOperator(h, d) for d in nudges]
    est = EquilibriumPropagation(centred(args.beta), nudge="error")
    x, t = np.zeros((1, 0)), np.zeros((1, 1))
    loss = get_loss("neg_abs")
    dims = [[2] * n, [2] * n]
    qobjs = [qutip.Qobj(h, dims=dims)] + [qutip.Qobj(h + d, dims=dims) for d in nudges]
    # steady state: one Adam step from the first step's gradient, then an EP step whose free
    # phase tracks the first step's free state (as the orchestrator's carried state does)
    first = est.estimate(system, x, t, loss, np.random.default_rng(0))
    carried = system.export_state(first.free.state)
    assert carried is not None, "the system carries no free state at this size"
    theta0 = system.get_parameters()
    adam = Optimizer(OptimizerConfig(kind="adam", lr=args.lr), system.parameter_groups)
    steady = QuantumSystem(
        system.model, adam.step(theta0, first.gradient, args.lr), solver=system.solver
    )
    moved = max(float(np.max(np.abs(steady.get_parameters()[k] - theta0[k]))) for k in theta0)
    h1 = basis.operator(model.coefficients(steady.get_parameters()))
    prev = gs_l  # the first step's free state (physlearn's cold solve)
    tasks: dict[str, Callable[[], Any]] = {
        "cold2": partial(ground_state, h, None, ref),
        "cold1": partial(ground_state, h, None, ref, check_gap=False),
        "lcold2": partial(ground_state, h, None, opts),
        "warm+": partial(
            ground_state, ops[0], gs_l.vector, opts, hv0=gs_l.hvector + nudges[0] @ gs_l.vector
        ),
        "warm-": partial(
            ground_state, ops[1], gs_l.vector, opts, hv0=gs_l.hvector + nudges[1] @ gs_l.vector
        ),
        "coldn+": partial(ground_state, ops[0], None, ref, check_gap=False),
        "coldn-": partial(ground_state, ops[1], None, ref, check_gap=False),
        "ep": lambda: est.estimate(system, x, t, loss, np.random.default_rng(0)),
        "tracked": partial(ground_state, h1, prev.vector, opts, excited=prev.excited),
        "bare": partial(ground_state, h1, prev.vector, opts),
        "cold1st": partial(ground_state, h1, None, ref),
        "lcold1st": partial(ground_state, h1, None, opts),
        "steady": lambda: est.estimate(
            steady, x, t, loss, np.random.default_rng(0), warm_start=steady.import_state(carried)
        ),
        "qdef": lambda: [q.groundstate(sparse=True) for q in qobjs],
        "qtol": lambda: [q.groundstate(sparse=True, tol=args.tol) for q in qobjs],
    }
    r = _round_robin(tasks, reps)
    t_cold2, t_cold1, t_ep = r["cold2"][0], r["cold1"][0], r["ep"][0]
    gs1, estimate, q_def = r["cold1"][1], r["ep"][1], r["qdef"][1]
    t_q_def, t_q_tol = r["qdef"][0], r["qtol"][0]
    warm = [r["warm+"], r["warm-"]]
    cold_n = [r["coldn+"], r["coldn-"]]
    mv_ep_phases = [int(p.eq.iterations[0]) for p in estimate.phases]
    mv_ep = sum(mv_ep_phases)
    st = r["steady"][1]
    mv_steady = [int(p.eq.iterations[0]) for p in st.phases]
    return {
        "N": n,
        "dim": 1 << n,
        "nnz": h.nnz,
        "build": t_build,
        "cold2": t_cold2,
        "mv2": gs.matvecs,
        "cold1": t_cold1,
        "mv1": gs1.matvecs,
        "warm": np.mean([w[0] for w in warm]),
        "mvw": np.mean([w[1].matvecs for w in warm]),
        "coldn": np.mean([c[0] for c in cold_n]),
        "mvc": np.mean([c[1].matvecs for c in cold_n]),
        "lcold2": r["lcold2"][0],
        "mvl2": r["lcold2"][1].matvecs,
        "ep": t_ep,
        "mvep": mv_ep,
        "mvep_phases": mv_ep_phases,
        "moved": moved,
        "tracked": r["tracked"][0],
        "mvt": r["tracked"][1].matvecs,
        "bare": r["bare"][0],
        "mvb": r["bare"][1].matvecs,
        "cold1st": r["cold1st"][0],
        "mvc1": r["cold1st"][1].matvecs,
        "lcold1st": r["lcold1st"][0],
        "mvlc1": r["lcold1st"][1].matvecs,
        "steady": r["steady"][0],
        "mvst": sum(mv_steady),
        "mvst_phases": mv_steady,
        "qdef": t_q_def,
        "qtol": t_q_tol,
        "dE": abs(q_def[0][0] - gs_l.energy),
        "ov": abs(np.vdot(q_def[0][1].full().ravel(), gs_l.vector)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Quantum-EP ground-state benchmark: physlearn (sparse Lanczos, warm starts) "
        "vs QuTiP's groundstate on the same sparse Hamiltonians."
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 14, 18], help="spins N")
    ap.add_argument("--beta", type=float, default=0.05, help="nudge strength beta")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (minimum is kept)")
    ap.add_argument("--tol", type=float, default=1e-10, help="physlearn Lanczos tolerance")
    ap.add_argument(
        "--lr", type=float, default=0.02, help="Adam learning rate of the steady-state update"
    )
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (1: fair on shared CPUs)")
    ap.add_argument(
        "--product-threads",
        type=int,
        default=None,
        help="threads for physlearn's sparse products from 2^17 states (default: as a run "
        "uses them, the available CPUs; 1: serial, as QuTiP's)",
    )
    args = ap.parse_args(argv)

    try:
        import qutip
    except ImportError:
        print(
            "qutip is not installed: this benchmark compares against QuTiP's ground-state "
            "solver. Install it into the venv (benchmark-only): pip install qutip",
            file=sys.stderr,
        )
        return 2

    from threadpoolctl import threadpool_limits

    from physlearn.memory import retain_freed_memory
    from physlearn.simulators.quantum.lanczos import SolverOptions

    retain_freed_memory()  # the allocator policy of a campaign process, for every solver alike

    with threadpool_limits(limits=args.threads):
        rows = [measure_size(n, args, qutip) for n in args.sizes]

    print(
        f"quantum-EP ground-state benchmark (beta = {args.beta}, tol = {args.tol:g}, "
        f"{args.threads} BLAS thread(s), best of {args.repeats}; s = seconds, mv = matvecs; "
        "ARPACK = reference cold solve, Lanczos = physlearn's solver; sparse products of "
        f"{SolverOptions().parallel_from} states and more on "
        f"{SolverOptions(threads=args.product_threads).product_threads(1 << 30)} thread(s) for "
        "both, QuTiP's on 1)"
    )
    hdr = (
        f"{'N':>3} {'dim':>7} {'nnz':>8} {'build s':>8} {'ARPACK k=2 s':>12} {'mv':>4} "
        f"{'ARPACK k=1 s':>12} {'mv':>4} {'Lanczos k=2 s':>13} {'mv':>4} {'warm nudge s':>12} "
        f"{'mv':>4} {'cold nudge s':>12} {'mv':>4} {'EP step s':>10} {'mv (free+nudged)':>16} "
        f"{'EP/ARPACK':>9} {'mv ratio':>8} {'EP/Lanczos':>10} {'QuTiP def s':>11} "
        f"{'QuTiP tol s':>11} {'x def':>6} {'x tol':>6} {'|dE0|':>8} {'|<q|p>|':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        mv = "+".join(str(m) for m in r["mvep_phases"])
        print(
            f"{r['N']:>3} {r['dim']:>7} {r['nnz']:>8} {r['build']:>8.4f} {r['cold2']:>12.4f} "
            f"{r['mv2']:>4} {r['cold1']:>12.4f} {r['mv1']:>4} {r['lcold2']:>13.4f} "
            f"{r['mvl2']:>4} {r['warm']:>12.4f} {r['mvw']:>4.0f} {r['coldn']:>12.4f} "
            f"{r['mvc']:>4.0f} {r['ep']:>10.4f} {mv:>16} {r['ep'] / r['cold2']:>9.2f} "
            f"{r['mvep'] / r['mv2']:>8.2f} {r['ep'] / r['lcold2']:>10.2f} {r['qdef']:>11.4f} "
            f"{r['qtol']:>11.4f} {r['qdef'] / r['ep']:>6.2f} {r['qtol'] / r['ep']:>6.2f} "
            f"{r['dE']:>8.1e} {r['ov']:>8.6f}"
        )
    print()
    print(
        f"steady-state training step (one Adam step, lr = {args.lr:g}, then the free phase tracks "
        "the previous free state)"
    )
    hdr2 = (
        f"{'N':>3} {'max|dtheta|':>11} {'ARPACK k=2 s':>12} {'mv':>4} {'Lanczos k=2 s':>13} "
        f"{'mv':>4} {'tracked s':>10} {'mv':>4} {'steady EP s':>11} {'mv (free+nudged)':>17} "
        f"{'EP/ARPACK':>9} {'mv ratio':>8} {'EP/Lanczos':>10}"
    )
    print(hdr2)
    print("-" * len(hdr2))
    for r in rows:
        mv = "+".join(str(m) for m in r["mvst_phases"])
        print(
            f"{r['N']:>3} {r['moved']:>11.4f} {r['cold1st']:>12.4f} {r['mvc1']:>4} "
            f"{r['lcold1st']:>13.4f} {r['mvlc1']:>4} {r['tracked']:>10.4f} {r['mvt']:>4} "
            f"{r['steady']:>11.4f} {mv:>17} {r['steady'] / r['cold1st']:>9.2f} "
            f"{r['mvst'] / r['mvc1']:>8.2f} {r['steady'] / r['lcold1st']:>10.2f}"
        )
    last = rows[-1]
    print(
        f"warm vs cold nudged solve at N = {last['N']}: "
        f"{last['coldn'] / last['warm']:.2f}x faster ({last['mvc']:.0f} -> {last['mvw']:.0f} "
        f"matvecs); first EP step = {last['ep'] / last['cold1']:.2f}x an ARPACK cold solve "
        f"without the gap check, {last['ep'] / last['lcold2']:.2f}x physlearn's own cold solve "
        f"(Lanczos, k=2: {last['mvep']} vs {last['mvl2']} matvecs)"
    )
    first, steady = last["ep"] / last["cold2"], last["steady"] / last["cold1st"]
    mv_first, mv_steady = last["mvep"] / last["mv2"], last["mvst"] / last["mvc1"]

    def verdict(t: float, mv: float) -> str:
        return "met" + ("" if mv <= 1.2 else " in time, not in matvecs") if t <= 1.2 else "NOT met"

    own_first, own_steady = last["ep"] / last["lcold2"], last["steady"] / last["lcold1st"]
    own_mv_first = last["mvep"] / last["mvl2"]
    own_mv_steady = last["mvst"] / last["mvlc1"]
    print(
        f"EP/cold goal (a whole EP step <= 1.2x one cold ground-state solve) at N = {last['N']}: "
        f"against physlearn's own cold solve (Lanczos, k=2, gap check): first step "
        f"{own_first:.2f}x in time, {own_mv_first:.2f}x in matvecs; steady-state step "
        f"{own_steady:.2f}x in time, {own_mv_steady:.2f}x in matvecs: "
        f"{verdict(max(own_first, own_steady), max(own_mv_first, own_mv_steady))}. "
        f"Against ARPACK's cold solve (eigsh, k=2, gap check): first step {first:.2f}x in time, "
        f"{mv_first:.2f}x in matvecs ({last['mvep']} vs {last['mv2']}): "
        f"{verdict(first, mv_first)}; steady-state step {steady:.2f}x in time, "
        f"{mv_steady:.2f}x in matvecs ({last['mvst']} vs {last['mvc1']}): "
        f"{verdict(steady, mv_steady)}"
    )
    nudged_mv = sum(last["mvst_phases"][1:])
    floor_mv = (last["mvb"] + nudged_mv) / last["mvlc1"]
    floor_t = (last["bare"] + last["steady"] - last["tracked"]) / last["lcold1st"]
    print(
        f"floor at N = {last['N']}: were the steady step's free phase a bare warm solve from the "
        f"previous ground state (one eigenvalue: no gap check, no admixture to find a level of "
        f"another symmetry sector; {last['mvb']} matvecs instead of the tracked solve's "
        f"{last['mvt']}), the step would take {last['mvb']}+{nudged_mv} matvecs = {floor_mv:.2f}x "
        f"physlearn's own cold solve, about {floor_t:.2f}x in time"
    )
    print(
        f"headline: one EP step (free + 2 nudged) at N = {last['N']} is "
        f"{last['qdef'] / last['ep']:.2f}x faster than QuTiP groundstate (defaults), "
        f"{last['qtol'] / last['ep']:.2f}x at matched tolerance"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
