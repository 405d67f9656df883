"""Ground states, thermal states and static linear response of a sparse Hamiltonian.

Energies are in the unit of the Hamiltonian (hbar = 1). Conventions (PHYSICS.md, quantum EP):

* Ground state: sparse Lanczos (ARPACK through ``scipy.sparse.linalg.eigsh``). A cold solve asks
  for the two lowest eigenvalues and refuses a ground state degenerate within ``gap_tol``
  (:class:`DegenerateGroundStateError`); a warm solve (nudged phases) starts the Lanczos
  iteration from the free ground state (``v0``) and asks for one. Cold starts use a fixed
  pseudo-random start vector, so results never depend on ARPACK's internal seed.
* Tracked solve (the free phase of the next training step, from the previous step's two lowest
  states ``v0`` and ``excited``): two eigenvalues and the same gap check as a cold solve, the
  Lanczos iteration started from ``v0 + excited/2 + TRACK_ADMIXTURE * r`` (``r`` the cold start
  vector, normalised). The previous pair carries every level of their symmetry sectors with
  amplitude O(parameter change); the admixture gives every other level an amplitude of about
  ``TRACK_ADMIXTURE / sqrt(dim)``. A level w below the lowest Ritz value theta keeps at least that
  relative amplitude through every Lanczos step and restart (the Ritz and filter polynomials have
  their roots above w, so they grow at w), so ARPACK cannot report theta converged (residual
  ``<= tol |theta|``) while w is unresolved unless ``amplitude * (theta - E_w) <= tol |theta|``
  (a level between the two Ritz values: times ``(E_w - theta_1) / (theta_2 - theta_1)``). A cold
  solve rests on the same argument with amplitude ``1/sqrt(dim)``. Both find a level of another
  sector that came down and refuse a near-degeneracy across sectors; an *exact* degeneracy
  across sectors escapes both (a single Lanczos vector sees one vector per eigenvalue).
* Thermal state at temperature ``T > 0`` (same energy unit, k_B = 1): ``rho = exp(-H/T)/Z`` by
  dense diagonalisation (small systems); the free energy is ``F = -T ln Z``, and
  ``<A> = dF/dtheta`` for ``H = ... + theta A``.
* Linear response at T = 0 (``H -> H + nu V``): the first-order state change is
  ``dpsi/dnu = (E0 - H)^-1 Q V psi``, ``Q = 1 - |psi><psi|``; at T > 0 the Kubo--Mori response
  ``d<B>/dnu = Tr(B R_V)`` with ``R_V`` from :func:`thermal_response_operator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import scipy.linalg as sla_dense
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from numpy.typing import NDArray

from physlearn.system import FloatArray, PhysicsError

Vector: TypeAlias = NDArray[Any]  # float64 or complex128 state vectors

_START_SEED = 0x5EED0F
#: Weight of the fixed pseudo-random vector in a tracked solve's start (see the module docstring).
TRACK_ADMIXTURE = 1e-2


class DegenerateGroundStateError(PhysicsError):
    """The ground state is (numerically) degenerate, so EP's free phase is ill-defined."""


@dataclass(frozen=True)
class SolverOptions:
    """Numerical settings of the ground-state solver.

    Attributes:
        tol: ARPACK relative tolerance: Ritz residual ``||H v - E v|| <= tol * |E|``.
        gap_tol: smallest accepted gap ``E1 - E0`` of a cold solve (energy unit); below it the
            ground state counts as degenerate and the solve raises.
        ncv: Lanczos basis size of a cold solve (None: ARPACK's default, ``max(2k + 1, 20)``).
        warm_ncv: Lanczos basis size of a warm solve; a start vector close to the answer
            needs few Lanczos vectors, and a small basis makes each restart cheap. A tracked
            solve (two eigenpairs) uses ``warm_ncv + 2``.
        maxiter: ARPACK restart limit (None: ``10 * dim``).
        dense_below: Hilbert-space dimension up to which a dense ``eigh`` is used instead.
    """

    tol: float = 1e-10
    gap_tol: float = 1e-6
    ncv: int | None = None
    warm_ncv: int | None = 10
    maxiter: int | None = None
    dense_below: int = 64

    def __post_init__(self) -> None:
        if self.tol < 0 or self.gap_tol < 0:
            raise ValueError("tol and gap_tol must be >= 0")


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
    """

    energy: float
    vector: Vector
    gap: float
    matvecs: int
    residual: float
    excited: Vector | None = None


@dataclass(frozen=True)
class ThermalState:
    """``rho = sum_m weights_m |v_m><v_m|`` with ``weights = exp(-E_m/T)/Z``."""

    energies: FloatArray
    vectors: NDArray[Any]
    weights: FloatArray
    temperature: float
    free_energy: float


def start_vector(dim: int, dtype: np.dtype[np.generic] | type = np.float64) -> Vector:
    """Deterministic pseudo-random start vector for cold Lanczos solves."""
    v = np.random.default_rng(_START_SEED).standard_normal(dim)
    return np.asarray(v, dtype=dtype)


class SumOperator:
    """``a + b`` applied lazily: a nudged Hamiltonian as the free one plus a small nudge term,
    without assembling a new sparse matrix."""

    def __init__(self, a: sp.csr_matrix, b: sp.csr_matrix) -> None:
        if a.shape != b.shape:
            raise ValueError("SumOperator needs operands of one shape")
        self.a, self.b = a, b
        self.shape = a.shape
        self.dtype = np.result_type(a.dtype, b.dtype)

    def __matmul__(self, v: Vector) -> Vector:
        out = np.asarray(self.a @ v)
        if np.result_type(out.dtype, self.b.dtype) == out.dtype:
            out += self.b @ v  # in place: one temporary per product instead of two
            return out
        return np.asarray(out + self.b @ v)

    def toarray(self) -> NDArray[Any]:
        return np.asarray(self.a.toarray() + self.b.toarray())


#: A Hermitian operator: sparse matrix, dense array, or a lazy :class:`SumOperator`.
Matrix: TypeAlias = "sp.csr_matrix | NDArray[Any] | SumOperator"


def to_dense(h: Matrix) -> NDArray[Any]:
    """Dense copy of an operator (small systems only)."""
    return np.asarray(h) if isinstance(h, np.ndarray) else np.asarray(h.toarray())


class _Counting(sla.LinearOperator):
    """Wraps a sparse matrix and counts products (ARPACK reports no iteration count)."""

    def __init__(self, mat: Matrix) -> None:
        super().__init__(dtype=mat.dtype, shape=mat.shape)
        self.mat = mat
        self.count = 0

    def _matvec(self, v: Vector) -> Vector:
        self.count += 1
        return np.asarray(self.mat @ v)

    def _matmat(self, v: Vector) -> Vector:
        self.count += v.shape[1]
        return np.asarray(self.mat @ v)


def _cast_start(v0: Vector, dtype: np.dtype[np.generic]) -> Vector:
    v0 = np.asarray(v0)
    if np.iscomplexobj(v0) and not np.issubdtype(dtype, np.complexfloating):
        k = int(np.argmax(np.abs(v0)))
        v0 = (v0 * np.exp(-1j * np.angle(v0[k]))).real
    return np.asarray(v0, dtype=dtype)


def _gap_error(gap: float, gap_tol: float, e0: float) -> DegenerateGroundStateError:
    return DegenerateGroundStateError(
        f"degenerate ground state: E1 - E0 = {gap:.3g} <= gap_tol = {gap_tol:.3g} "
        f"(E0 = {e0:.10g}). EP needs a unique ground state: break the symmetry (e.g. a small "
        "field or coupling), change the parameters, or use a temperature T > 0."
    )


def ground_state(
    h: Matrix,
    v0: Vector | None = None,
    options: SolverOptions | None = None,
    *,
    check_gap: bool | None = None,
    excited: Vector | None = None,
) -> GroundState:
    """Lowest eigenpair of the Hermitian matrix ``h``.

    ``v0`` given: warm Lanczos from ``v0`` (no gap check unless ``check_gap``). ``v0`` None:
    cold solve from a fixed start vector with the gap check (unless ``check_gap=False``).
    ``v0`` and ``excited`` given (the two lowest states of a nearby Hamiltonian): tracked solve
    with the gap check, see the module docstring.
    """
    opts = options or SolverOptions()
    tracked = v0 is not None and excited is not None
    check = (v0 is None or tracked) if check_gap is None else check_gap
    dim = int(h.shape[0])
    if dim <= opts.dense_below or dim < 3:
        dense = to_dense(h)
        w, v = np.linalg.eigh(dense)
        psi = v[:, 0]
        gap = float(w[1] - w[0]) if dim > 1 else np.inf
        if check and gap <= opts.gap_tol:
            raise _gap_error(gap, opts.gap_tol, float(w[0]))
        res = float(np.linalg.norm(dense @ psi - w[0] * psi))
        second = v[:, 1] if check and dim > 1 else None
        return GroundState(float(w[0]), psi, gap if check else np.nan, 0, res, second)
    op = _Counting(h)
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
        raise _gap_error(gap, opts.gap_tol, e0)
    res = float(np.linalg.norm(h @ psi - e0 * psi))
    second = v[:, 1] / np.linalg.norm(v[:, 1]) if check else None
    return GroundState(e0, psi, gap, op.count + 1, res, second)


def thermal_state(h: Matrix, temperature: float) -> ThermalState:
    """Gibbs state ``exp(-H/T)/Z`` by dense diagonalisation (``T > 0``, energy units)."""
    if temperature <= 0:
        raise ValueError("thermal_state needs a temperature T > 0")
    dense = to_dense(h)
    e, v = sla_dense.eigh(dense)
    x = -(e - e[0]) / temperature
    w = np.exp(x)
    z = w.sum()
    free = float(e[0] - temperature * np.log(z))
    return ThermalState(e, v, w / z, temperature, free)


def ground_response(
    h: Matrix, gs: GroundState, rhs: Vector, *, rtol: float = 1e-12, dense_below: int = 4096
) -> Vector:
    """``delta = (E0 - H)^-1 Q rhs`` with ``delta`` orthogonal to the ground state.

    Solved on the positive-definite operator ``H - E0 + c |psi><psi|`` (``c`` = the energy scale)
    by a dense solve up to ``dense_below`` states, else by conjugate gradients.
    """
    psi = gs.vector
    b = rhs - psi * np.vdot(psi, rhs)
    dim = int(h.shape[0])
    scale = max(1.0, abs(gs.energy))
    if dim <= dense_below:
        dense = to_dense(h)
        m = dense - gs.energy * np.eye(dim) + scale * np.outer(psi, np.conj(psi))
        y = np.linalg.solve(m, b)
    else:

        def mv(x: Vector) -> Vector:
            return np.asarray(h @ x - gs.energy * x + scale * psi * np.vdot(psi, x))

        dtype = np.result_type(h.dtype, b.dtype)
        op = sla.LinearOperator((dim, dim), matvec=mv, dtype=dtype)
        y, info = sla.cg(op, b.astype(dtype), rtol=rtol, atol=0.0, maxiter=20 * dim)
        if info != 0:
            raise RuntimeError(f"linear-response solve did not converge (cg info = {info})")
    y = y - psi * np.vdot(psi, y)
    return np.asarray(-y)


def thermal_response_operator(state: ThermalState, v: Matrix) -> NDArray[np.complex128]:
    """Dense ``R`` with ``d<B>/dnu = Tr(B R)`` for ``H -> H + nu V`` at temperature T.

    In the eigenbasis ``R_mn = V_mn (w_m - w_n)/(E_m - E_n)`` for ``E_m != E_n`` and
    ``-V_mn w_m / T`` on degenerate pairs (``w`` the Gibbs weights), plus ``<V> rho / T``
    from the normalisation: the Kubo--Mori susceptibility, which differs from ``-Cov/T`` unless
    ``[V, H] = 0``.
    """
    e, vec, w, t = state.energies, state.vectors, state.weights, state.temperature
    vdense = to_dense(v)
    v_eig = np.conj(vec.T) @ vdense @ vec
    de = e[:, None] - e[None, :]
    dw = w[:, None] - w[None, :]
    close = np.abs(de) <= 1e-12 * max(1.0, float(np.abs(e).max()))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(close, -0.5 * (w[:, None] + w[None, :]) / t, dw / np.where(close, 1.0, de))
    mean_v = float(np.real(np.sum(w * np.diag(v_eig))))
    r_eig = v_eig * f + np.diag(w) * (mean_v / t)
    return np.asarray(vec @ r_eig @ np.conj(vec.T), dtype=np.complex128)
