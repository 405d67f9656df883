"""Ground states, thermal states and static linear response of a sparse Hamiltonian.

Energies are in the unit of the Hamiltonian (hbar = 1). Conventions (see ``docs/physics.md``,
§Quantum EP):

* Ground state: :func:`ground_state`, by a dense ``eigh`` up to ``SolverOptions.dense_below``
  states, else by the certified sparse Lanczos solver of
  :mod:`physlearn.simulators.quantum.lanczos` (cold, warm and tracked solves, the gap check,
  threaded products: see that module).
* Thermal state at temperature ``T > 0`` (same energy unit, k_B = 1): ``rho = exp(-H/T)/Z`` by
  dense diagonalisation (small systems); the free energy is ``F = -T ln Z``, and
  ``<A> = dF/dtheta`` for ``H = ... + theta A``.
* Linear response at T = 0 (``H -> H + nu V``): the first-order state change is
  ``dpsi/dnu = (E0 - H)^-1 Q V psi``, ``Q = 1 - |psi><psi|``; at T > 0 the Kubo--Mori response
  ``d<B>/dnu = Tr(B R_V)`` with ``R_V`` from :func:`thermal_response_operator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla_dense
import scipy.sparse.linalg as sla
from numpy.typing import NDArray

from physlearn.simulators.quantum.lanczos import (
    GroundState,
    SolverOptions,
    gap_error,
    sparse_ground_state,
)
from physlearn.simulators.quantum.operators import Matrix, Vector, to_dense
from physlearn.system import FloatArray


@dataclass(frozen=True)
class ThermalState:
    """``rho = sum_m weights_m |v_m><v_m|`` with ``weights = exp(-E_m/T)/Z``."""

    energies: FloatArray
    vectors: NDArray[Any]
    weights: FloatArray
    temperature: float
    free_energy: float


def ground_state(
    h: Matrix,
    v0: Vector | None = None,
    options: SolverOptions | None = None,
    *,
    check_gap: bool | None = None,
    excited: Vector | None = None,
    hv0: Vector | None = None,
) -> GroundState:
    """Lowest eigenpair of the Hermitian matrix ``h``.

    ``v0`` given: warm solve from ``v0`` (no gap check unless ``check_gap``). ``v0`` None:
    cold solve from a fixed start vector with the gap check (unless ``check_gap=False``).
    ``v0`` and ``excited`` given (the two lowest states of a nearby Hamiltonian): tracked solve
    with the gap check, see the module docstring. ``hv0``: ``h @ v0`` if already known (a warm
    Lanczos solve then saves its first product).
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
            raise gap_error(gap, opts.gap_tol, float(w[0]))
        res = float(np.linalg.norm(dense @ psi - w[0] * psi))
        second = v[:, 1] if check and dim > 1 else None
        return GroundState(float(w[0]), psi, gap if check else np.nan, 0, res, second)
    return sparse_ground_state(h, v0, opts, check, tracked, excited, hv0)


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
