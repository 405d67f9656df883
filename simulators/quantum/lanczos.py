"""The sparse ground-state solver of the quantum simulator: plain Lanczos, certified, else ARPACK.

Energies are in the unit of the Hamiltonian (hbar = 1). Conventions (see ``docs/physics.md``,
§Quantum EP); the public entry point is :func:`physlearn.simulators.quantum.states.ground_state`,
which solves small registers densely and hands larger ones to :func:`sparse_ground_state`.

* Ground state: sparse Lanczos. A cold solve asks for the two lowest eigenvalues and refuses a
  ground state degenerate within ``gap_tol`` (:class:`DegenerateGroundStateError`); a warm solve
  (nudged phases) starts the Lanczos iteration from the free ground state (``v0``) and asks for
  one. Cold starts use a fixed pseudo-random start vector, so results never depend on a solver's
  internal seed.
* Solver (``SolverOptions.method = "lanczos"``, the default): one plain, non-restarted Lanczos
  run from the start vector with the basis stored, the Ritz pairs checked after every product
  (ARPACK checks only at its restarts, every ``ncv - k`` products, and spends most of a product's
  time again on reorthogonalising inside its window). No reorthogonalisation: the basis loses
  orthogonality only along Ritz vectors that have converged (Paige), which can duplicate a
  converged eigenvalue but never invent one, so each result is certified instead: the ground
  state by its true residual ``||H psi - E0 psi|| <= tol max(|E0|, eps^(2/3))`` (``E0`` its
  Rayleigh quotient; the product ``H psi`` is kept, ``GroundState.hvector``, and a nudged solve
  from ``psi`` starts from it instead of recomputing it), a second pair by its Lanczos residual
  (ARPACK's test) and ``|<psi|excited>| <= 1e-6`` (a duplicate of the ground state fails it). A
  residual above ``tol`` resumes the run; a run that does not certify (duplicate, breakdown of
  a two-pair run on an invariant Krylov space, memory budget ``lanczos_memory`` full) hands
  over to ARPACK (``scipy.sparse.linalg.eigsh``, the ``method = "arpack"`` path), whose products
  are counted on top.
* Tracked solve (the free phase of the next training step, from the previous step's two lowest
  states ``v0`` and ``excited``): two eigenvalues and the same gap check as a cold solve, the
  Lanczos iteration started from ``v0 + excited/2 + TRACK_ADMIXTURE * r`` (``r`` the cold start
  vector, normalised). The previous pair carries every level of their symmetry sectors with
  amplitude O(parameter change); the admixture gives every other level an amplitude of about
  ``TRACK_ADMIXTURE / sqrt(dim)``. A level w below the lowest Ritz value theta keeps at least that
  relative amplitude through every Lanczos step (and ARPACK restart): the Ritz and filter
  polynomials have their roots above w, so they grow at w. The solver therefore cannot report
  theta converged (residual ``<= tol |theta|``) while w is unresolved unless
  ``amplitude * (theta - E_w) <= tol |theta|`` (a level between the two Ritz values: times
  ``(E_w - theta_1) / (theta_2 - theta_1)``). A cold solve rests on the same argument with
  amplitude ``1/sqrt(dim)``. The argument holds for the plain Lanczos run as for ARPACK (both
  build Krylov polynomials in H from the same start). Both find a level of another sector that
  came down and refuse a near-degeneracy across sectors; an *exact* degeneracy across sectors
  escapes both (a single Lanczos vector sees one vector per eigenvalue).
* Products: from ``parallel_from`` (2^17) states on, the sparse products run as blocks of rows
  on ``threads`` threads (:class:`RowBlocks`; scipy's product releases the GIL): the same
  products bit for bit, so every result is the same as on one thread.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg as sla_dense
import scipy.sparse.linalg as sla
from numpy.typing import NDArray

from physlearn.simulators.quantum.operators import (
    CountingOperator,
    Matrix,
    RowBlocks,
    Vector,
    stored_entries,
)
from physlearn.system import FloatArray, PhysicsError

_START_SEED = 0x5EED0F
#: Weight of the fixed pseudo-random vector in a tracked solve's start (see the module docstring).
TRACK_ADMIXTURE = 1e-2


class DegenerateGroundStateError(PhysicsError):
    """The ground state is (numerically) degenerate, so EP's free phase is ill-defined."""


@dataclass(frozen=True)
class SolverOptions:
    """Numerical settings of the ground-state solver.

    Attributes:
        tol: relative tolerance: residual ``||H v - E v|| <= tol * |E|`` of every returned
            eigenpair (0: ARPACK to machine precision).
        gap_tol: smallest accepted gap ``E1 - E0`` of a cold solve (energy unit); below it the
            ground state counts as degenerate and the solve raises.
        method: ``"lanczos"``: plain (non-restarted) Lanczos with a stored basis, convergence
            checked after every product, every result certified, ARPACK whenever it does not
            certify (see the module docstring); ``"arpack"``: ARPACK only.
        lanczos_memory: bytes the stored Lanczos basis may take; registers for which fewer than
            ``min(dim, 64)`` vectors fit go straight to ARPACK, and a run that fills the budget
            without converging hands over to ARPACK.
        ncv: ARPACK Lanczos basis size of a cold solve (None: ARPACK's default,
            ``max(2k + 1, 20)``).
        warm_ncv: ARPACK Lanczos basis size of a warm solve; a start vector close to the answer
            needs few Lanczos vectors, and a small basis makes each restart cheap. A tracked
            solve (two eigenpairs) uses ``warm_ncv + 2``.
        maxiter: ARPACK restart limit (None: ``10 * dim``).
        dense_below: Hilbert-space dimension up to which a dense ``eigh`` is used instead.
        threads: threads computing the sparse products of a large register, each a block of
            rows (:class:`RowBlocks`; the same products bit for bit). None: the CPUs this
            process may use, at most ``OMP_NUM_THREADS`` if set (a sweep's Dask workers set it
            to 1); 1: serial.
        parallel_from: Hilbert-space dimension from which the products are split (below it a
            product is too short to pay for handing half of it to another thread).
        degenerate: ``"fail"``: a ground state split from the next level by ``<= gap_tol``
            raises; ``"manifold"``: the levels within ``manifold_tol`` of ``E0`` form a
            quasi-degenerate manifold and the state is its equal mixture (the T -> 0 limit of
            the thermal state over it; :mod:`physlearn.simulators.quantum.manifold`).
        manifold_tol: energy window of a ``"manifold"`` ground manifold (energy unit).
    """

    tol: float = 1e-10
    gap_tol: float = 1e-6
    method: Literal["lanczos", "arpack"] = "lanczos"
    lanczos_memory: int = 1 << 30
    ncv: int | None = None
    warm_ncv: int | None = 10
    maxiter: int | None = None
    dense_below: int = 64
    threads: int | None = None
    parallel_from: int = 1 << 17
    degenerate: Literal["fail", "manifold"] = "fail"
    manifold_tol: float = 1e-4

    def __post_init__(self) -> None:
        if self.tol < 0 or self.gap_tol < 0 or self.manifold_tol < 0:
            raise ValueError("tol, gap_tol and manifold_tol must be >= 0")
        if self.degenerate not in ("fail", "manifold"):
            raise ValueError(f"unknown degenerate policy {self.degenerate!r} (fail or manifold)")
        if self.method not in ("lanczos", "arpack"):
            raise ValueError(f"unknown solver method {self.method!r} (lanczos or arpack)")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 (or None: the available CPUs)")

    def product_threads(self, dim: int) -> int:
        """Threads for the sparse products of a ``dim``-dimensional register (see ``threads``)."""
        if dim < self.parallel_from:
            return 1
        if self.threads is not None:
            return self.threads
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        limit = os.environ.get("OMP_NUM_THREADS", "")
        budget = int(limit) if limit.isdigit() and int(limit) > 0 else (cpus or 1)
        return max(1, min(cpus or 1, budget))


@dataclass(frozen=True)
class GroundState:
    """Result of a ground-state solve.

    Attributes:
        energy: E0.
        vector: normalised ground state (float64 for a real Hamiltonian).
        gap: E1 - E0 (NaN for a warm solve, which does not compute E1).
        matvecs: Hamiltonian-vector products used (0 for a dense solve).
        residual: ``||H psi - E0 psi||``.
        excited: normalised eigenvector of E1 when the solve computed it (cold and tracked
            solves with the gap check), else None; with ``vector`` it seeds the next tracked
            solve.
        hvector: ``H @ vector``, the product that certified the residual (None for a dense
            solve); a warm solve from ``vector`` on ``H + D`` starts from it (``hv0``) and
            saves its first product.
    """

    energy: float
    vector: Vector
    gap: float
    matvecs: int
    residual: float
    excited: Vector | None = None
    hvector: Vector | None = None


def start_vector(dim: int, dtype: np.dtype[np.generic] | type = np.float64) -> Vector:
    """Deterministic pseudo-random start vector for cold Lanczos solves."""
    v = np.random.default_rng(_START_SEED).standard_normal(dim)
    return np.asarray(v, dtype=dtype)


def _cast_start(v0: Vector, dtype: np.dtype[np.generic]) -> Vector:
    v0 = np.asarray(v0)
    if np.iscomplexobj(v0) and not np.issubdtype(dtype, np.complexfloating):
        k = int(np.argmax(np.abs(v0)))
        v0 = (v0 * np.exp(-1j * np.angle(v0[k]))).real
    return np.asarray(v0, dtype=dtype)


def gap_error(gap: float, gap_tol: float, e0: float) -> DegenerateGroundStateError:
    return DegenerateGroundStateError(
        f"degenerate ground state: E1 - E0 = {gap:.3g} <= gap_tol = {gap_tol:.3g} "
        f"(E0 = {e0:.10g}). EP needs a unique ground state: break the symmetry (e.g. a small "
        "field or coupling), change the parameters, or use a temperature T > 0."
    )


_EPS = float(np.finfo(np.float64).eps)
#: ARPACK's floor on ``|E|`` in its convergence test ``residual <= tol * max(|E|, eps^(2/3))``
_EPS23 = _EPS ** (2.0 / 3.0)
#: a Lanczos residual below this times ``||H||`` is a breakdown (the Krylov space is invariant)
_BREAKDOWN = 1e3 * _EPS
#: certified ground and excited vectors of a two-pair solve must be orthogonal to this accuracy
_ORTHO_TOL = 1e-6
#: Paige's estimate of the Lanczos vectors' overlap with the converged ground Ritz vector at
#: which a two-pair run starts orthogonalising against it (a duplicate needs an overlap of O(1))
_LOCK_OVERLAP = 1e-3
#: Lanczos vectors are stored in blocks of at most this many rows and bytes (no copy when the
#: basis grows). Blocks stay below glibc's largest mmap threshold (32 MiB), so in a campaign
#: process (:func:`physlearn.memory.retain_freed_memory`) the next run reuses a freed block's
#: memory instead of faulting in fresh pages (a page fault per 4 kB costs about a tenth of a
#: sparse product per vector)
_CHUNK = 32
_CHUNK_BYTES = 1 << 24


def _bound(tol: float, theta: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(tol * np.maximum(np.abs(theta), _EPS23))


class _Lanczos:
    """Plain Lanczos process ``H Q_m = Q_m T_m + b_m q_{m+1} e_m^T`` (``T_m`` tridiagonal with
    ``alpha`` on the diagonal and ``beta`` beside it), basis stored, no reorthogonalisation.
    Vector operations are NumPy's only (no second BLAS library whose threads would compete with
    NumPy's on a loaded machine).

    Without full reorthogonalisation the basis loses orthogonality along converged Ritz vectors
    (Paige): Ritz values stay close to eigenvalues, but a converged one can reappear as a copy
    (a two-pair run prevents that by selective orthogonalisation, :meth:`lock`). Every result is
    certified by the caller (true residual of every returned vector, orthogonality of a second
    pair) instead of trusting ``T_m``.
    """

    def __init__(
        self, op: CountingOperator, start: Vector, max_steps: int, hv0: Vector | None
    ) -> None:
        self.op, self.dim, self.max_steps = op, int(start.shape[0]), max_steps
        self.dtype = start.dtype
        self.stebz, self.stein = sla_dense.get_lapack_funcs(("stebz", "stein"), (np.zeros(1),))
        norm = float(np.linalg.norm(start))
        self.tmp = np.empty_like(start)
        self.rows = max(1, min(_CHUNK, _CHUNK_BYTES // (self.dim * self.dtype.itemsize)))
        self.chunks: list[Vector] = []
        np.multiply(start, 1.0 / norm, out=self._slot(0))
        self.first = None if hv0 is None else np.array(hv0, dtype=self.dtype) / norm
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j]: norm of the Lanczos residual after product j
        self.anorm = 0.0  # running estimate of ||H||
        self.broken = False
        #: normalised ground-state Ritz vector every new Lanczos vector is orthogonalised
        #: against, once converged so far that a duplicate of it could form (:meth:`lock`)
        self.locked: Vector | None = None

    @property
    def m(self) -> int:
        return len(self.alpha)

    def _row(self, j: int) -> Vector:
        return self.chunks[j // self.rows][j % self.rows]

    def _slot(self, j: int) -> Vector:
        if j // self.rows == len(self.chunks):
            self.chunks.append(np.empty((self.rows, self.dim), self.dtype))
        return self._row(j)

    def step(self) -> None:
        """One product: append ``alpha_j``, ``beta_j`` and (unless it broke down) ``q_{j+1}``
        (modified Gram--Schmidt order: ``beta_{j-1} q_{j-1}`` off before ``alpha_j``)."""
        j = self.m
        q, tmp = self._row(j), self.tmp
        if self.first is not None:
            w, self.first = self.first, None
        else:
            w = self.op.product(q)
            if w.dtype != self.dtype:
                w = w.astype(self.dtype)
        if j:
            np.multiply(self._row(j - 1), self.beta[-1], out=tmp)
            w -= tmp
        a = float(np.vdot(q, w).real)
        np.multiply(q, a, out=tmp)
        w -= tmp
        if self.locked is not None:  # selective orthogonalisation against the ground state
            np.multiply(self.locked, np.vdot(self.locked, w), out=tmp)
            w -= tmp
        b = math.sqrt(float(np.vdot(w, w).real))
        self.anorm = max(self.anorm, abs(a) + b + (self.beta[-1] if j else 0.0))
        self.alpha.append(a)
        self.beta.append(b)
        if b <= _BREAKDOWN * self.anorm:
            self.broken = True
        elif j + 1 < self.max_steps:
            np.multiply(w, 1.0 / b, out=self._slot(j + 1))

    def ritz(self, k: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The ``k`` lowest Ritz values, their eigenvectors of ``T_m`` (``m x k``) and the
        residual estimates ``b_m |s_m|`` (LAPACK bisection and inverse iteration)."""
        d = np.asarray(self.alpha)
        if self.m == 1:
            return d.copy(), np.ones((1, 1)), np.array([self.beta[-1]])
        e = np.asarray(self.beta[:-1])
        # range 2: eigenvalues 1..k by index
        n, theta, block, split, info = self.stebz(d, e, 2, 0.0, 1.0, 1, k, 0.0, "E")
        s, info2 = self.stein(d, e, theta[:n], block, split)
        if info or info2 or n != k:
            raise np.linalg.LinAlgError("tridiagonal eigensolver failed")
        return theta[:k], s, self.beta[-1] * np.abs(s[-1, :])

    def lock(self, s0: FloatArray, estimate: float) -> None:
        """Selective orthogonalisation (Parlett and Scott): once the lowest Ritz pair's residual
        estimate is so small that the new Lanczos vectors' overlap with it, about
        ``eps ||H|| / estimate`` (Paige), exceeds ``_LOCK_OVERLAP``, keep them orthogonal to
        its Ritz vector, so that no duplicate of the ground state forms while a second pair
        is still converging."""
        if self.locked is None and _EPS * self.anorm > _LOCK_OVERLAP * estimate:
            y = self.vectors(s0[:, None])[:, 0]
            self.locked = y / np.linalg.norm(y)

    def vectors(self, s: FloatArray) -> NDArray[Any]:
        """``Q_m s``: Ritz vectors as columns (not normalised)."""
        m = s.shape[0]
        y = np.zeros((self.dim, s.shape[1]), self.dtype)
        for c, block in enumerate(self.chunks):
            lo = c * self.rows
            if lo >= m:
                break
            hi = min(m, lo + self.rows)
            y += block[: hi - lo].T @ s[lo:hi]
        return y


def _look_cost(entries: int, dim: int, m: int) -> float:
    """What a look at the Ritz pairs (bisection and inverse iteration on ``T_m``, about
    35 + 0.1 m microseconds) costs in Lanczos steps (a product with ``entries`` stored entries
    plus the vector updates: about 10 + 0.0009 entries + 0.004 dim microseconds). A model, not
    a timing, so that a solve takes the same steps on every run: about 2 steps at 10 qubits,
    0.2 at 14, 0.01 at 18."""
    return (35.0 + 0.1 * m) / (10.0 + 0.0009 * entries + 0.004 * dim)


def _next_check(
    m: int, ratios: FloatArray, last: tuple[int, FloatArray] | None, cost: float
) -> int:
    """Product count at which to look at the Ritz pairs again (``ratios``: residual estimate /
    bound of each pair, ``last``: the previous look, ``cost``: a look's cost in steps,
    :func:`_look_cost`). After the next product when a ratio stopped falling. Before a pair is
    within 1e4 of its bound, half the products the observed rates need to bring the first pair
    there. Within it, where every extra product is one too many, every ``sqrt(2 s cost)``
    products (``s``: the products the slowest pair still needs at the observed rate; the
    spacing that balances the looks against the products run past convergence), at most ``s``:
    every product on a large register, every few on a small one, where a look costs more than a
    product. Never more than ``m // 2`` products ahead: Lanczos convergence stalls now and
    then, and a rate measured across a stall (a ratio that barely fell) would send the next
    look hundreds of products past convergence."""
    if last is None:
        return m + 1
    now, before = ratios.tolist(), last[1].tolist()  # one or two pairs: Python floats
    if any(r >= b for r, b in zip(now, before, strict=True)):
        return m + 1
    span = m - last[0]
    rates = [(math.log(b) - math.log(r)) / span for r, b in zip(now, before, strict=True)]
    if min(now) <= 1e4:
        s = max(math.log(max(r, 1.0)) / k for r, k in zip(now, rates, strict=True))
        jump = min(int(math.sqrt(2.0 * s * cost)), int(s))
    else:
        jump = int(0.5 * min(math.log(r / 1e4) / k for r, k in zip(now, rates, strict=True)))
    return m + max(1, min(jump, m // 2))


def _lanczos_ground_state(
    op: CountingOperator,
    start: Vector,
    k: int,
    opts: SolverOptions,
    max_steps: int,
    hv0: Vector | None,
) -> tuple[GroundState | None, Vector | None]:
    """The ``k`` (1 or 2) lowest eigenpairs by :class:`_Lanczos`, certified.

    Returns ``(result, None)``, or ``(None, hint)`` when the run does not certify (memory budget
    full, breakdown of a two-pair run on an invariant Krylov space, a duplicate of the ground
    state, residual above ``tol`` three times); ``hint`` is the current ground-state Ritz vector
    (a warm start for ARPACK) or None. A certified result has, with ``E`` the Rayleigh quotient
    of each returned vector, the true residual ``||H v - E v|| <= tol max(|E|, eps^(2/3))`` (one
    product per vector beyond the Lanczos run) and, for ``k = 2``, ``|<psi|excited>| <= 1e-6``.
    """
    lz = _Lanczos(op, start, max_steps, hv0)
    entries, dim = stored_entries(op.mat), int(start.shape[0])
    factor, check_at = 1.0, k
    last: tuple[int, FloatArray] | None = None
    psi = None
    for _attempt in range(3):
        while True:
            if lz.m >= max_steps or lz.broken:  # out of budget, or an unconverged breakdown
                if lz.m < k:
                    return None, None
                theta, s, _ = lz.ritz(k)
                return None, lz.vectors(s[:, :1])[:, 0]
            lz.step()
            if lz.m < max(check_at, k) and not lz.broken:
                continue
            theta, s, est = lz.ritz(k)
            ratios = est / _bound(factor * opts.tol, theta)
            if k == 2:
                lz.lock(s[:, 0], float(est[0]))
            if float(np.max(ratios)) <= 1.0:
                break
            check_at = _next_check(lz.m, ratios, last, _look_cost(entries, dim, lz.m))
            last = (lz.m, ratios)
        y = lz.vectors(s)
        vecs = [np.ascontiguousarray(y[:, i]) / np.linalg.norm(y[:, i]) for i in range(k)]
        products = [op.product(v) for v in vecs]
        energies = np.array([np.vdot(v, hv).real for v, hv in zip(vecs, products, strict=True)])
        res = np.array(
            [np.linalg.norm(hv - e * v) for v, hv, e in zip(vecs, products, energies, strict=True)]
        )
        psi = vecs[0]
        if np.any(res > _bound(opts.tol, energies)):
            factor *= 0.25  # the estimate was optimistic: iterate further and certify again
            check_at = lz.m + 1
            continue
        e0, r0 = float(energies[0]), float(res[0])
        if k == 1:
            return GroundState(e0, psi, np.nan, op.count, r0, None, products[0]), None
        if abs(np.vdot(psi, vecs[1])) > _ORTHO_TOL or (lz.broken and lz.m < lz.dim):
            return None, None  # a duplicate; or an invariant Krylov space (ARPACK restarts)
        gap = float(energies[1] - e0)
        return GroundState(e0, psi, gap, op.count, r0, vecs[1], products[0]), None
    return None, psi


def sparse_ground_state(
    h: Matrix,
    v0: Vector | None,
    opts: SolverOptions,
    check: bool,
    tracked: bool,
    excited: Vector | None,
    hv0: Vector | None,
) -> GroundState:
    """The sparse path of :func:`~physlearn.simulators.quantum.states.ground_state` (a register
    too large for a dense solve): plain Lanczos, else ARPACK, with the products on
    ``opts.product_threads`` threads
    (:class:`~physlearn.simulators.quantum.operators.RowBlocks`)."""
    dim = int(h.shape[0])
    threads = opts.product_threads(dim)
    if threads == 1:
        return _sparse_ground_state(h, h, v0, opts, check, tracked, excited, hv0)
    with ThreadPoolExecutor(threads - 1, thread_name_prefix="physlearn-products") as pool:
        mat = RowBlocks(h, pool, threads)
        return _sparse_ground_state(mat, h, v0, opts, check, tracked, excited, hv0)


def _sparse_ground_state(
    mat: Matrix | RowBlocks,
    h: Matrix,
    v0: Vector | None,
    opts: SolverOptions,
    check: bool,
    tracked: bool,
    excited: Vector | None,
    hv0: Vector | None,
) -> GroundState:
    """:func:`ground_state` of a register too large for a dense solve: products with ``mat``
    (``h`` itself, or its :class:`RowBlocks`)."""
    dim = int(h.shape[0])
    op = CountingOperator(mat)
    k = 2 if check else 1
    if v0 is None:
        start = start_vector(dim, h.dtype)
    elif tracked:
        assert excited is not None
        r = start_vector(dim, h.dtype)
        start = (
            _cast_start(v0, h.dtype)
            + 0.5 * _cast_start(excited, h.dtype)
            + (TRACK_ADMIXTURE / float(np.linalg.norm(r))) * r
        )
    else:
        start = _cast_start(v0, h.dtype)
    max_steps = min(dim, opts.lanczos_memory // (dim * start.dtype.itemsize) - 1)
    if opts.method == "lanczos" and opts.tol > 0 and max_steps >= min(dim, 64):
        product = None
        if hv0 is not None and v0 is not None and not tracked:
            if np.iscomplexobj(start) or not np.iscomplexobj(v0):  # start is v0, not rotated
                product = np.asarray(hv0, dtype=start.dtype)
        gs, hint = _lanczos_ground_state(op, start, k, opts, max_steps, product)
        if gs is not None:
            if check and gs.gap <= opts.gap_tol:
                raise gap_error(gs.gap, opts.gap_tol, gs.energy)
            return gs
        if hint is not None and k == 1:
            start = hint  # a warm solve hands its best Ritz vector over
    want = opts.ncv if v0 is None else opts.warm_ncv
    if tracked and want is not None:
        want += 2  # two wanted pairs: as many spare Lanczos vectors as a warm k = 1 solve, + 1
    ncv = None if want is None else min(dim, max(want, 2 * k + 1))
    w, v = sla.eigsh(op, k=k, which="SA", v0=start, tol=opts.tol, ncv=ncv, maxiter=opts.maxiter)
    order = np.argsort(w)
    w, v = w[order], v[:, order]
    psi = v[:, 0] / np.linalg.norm(v[:, 0])
    e0 = float(w[0])
    gap = float(w[1] - w[0]) if check else np.nan
    if check and gap <= opts.gap_tol:
        raise gap_error(gap, opts.gap_tol, e0)
    hpsi = op.product(psi)
    res = float(np.linalg.norm(hpsi - e0 * psi))
    second = v[:, 1] / np.linalg.norm(v[:, 1]) if check else None
    return GroundState(e0, psi, gap, op.count, res, second, hpsi)
