"""Quasi-degenerate ground manifolds: the zero-temperature state over the lowest levels.

``SolverOptions.degenerate = "manifold"`` (see ``docs/physics.md``, §Quantum EP). A finite open
chain splits a doublet that is degenerate in the thermodynamic limit (edge modes, a broken Z2)
by an exponentially small amount, far below any meaningful ``gap_tol``; the ground state is then
ill-conditioned, but the T -> 0 limit of the thermal state restricted to the quasi-degenerate
levels is not. The machine's state is

    rho = P / d,    P = sum_{i < d} |i><i|,

with ``d`` the number of levels within ``manifold_tol`` of ``E0`` (the free phase decides ``d``).
Its energy is the manifold's mean ``E = Tr(P H)/d``; as long as level ``d`` is separated from
level ``d - 1`` by a real gap, ``dE/dtheta = Tr(rho dH/dtheta)`` (Hellmann--Feynman for a spectral
projector), so EP is exact for it: a nudged phase keeps the free phase's ``d`` and the gradient is
``d Tr(rho O_eps)/dtheta``. A *level crossing* is reported (:class:`DegenerateGroundStateError`)
when the manifold's gap to the next level is ``<= gap_tol`` in any phase, or when a nudged
manifold overlaps the free one by less than half (``Tr(P_free P_nudged)/d < 1/2``: the nudge
swapped a level into it).

Solver: a dense ``eigh`` up to ``dense_below`` states, else ARPACK (``eigsh``, ``k = d + 1``
eigenpairs, ``k`` doubled from 2 until a level leaves the window), tolerance ``tol``; no
certified Lanczos path and no carried states (every free phase is a cold solve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse.linalg as sla
from numpy.typing import NDArray

from physlearn.simulators.quantum.lanczos import (
    DegenerateGroundStateError,
    SolverOptions,
    start_vector,
)
from physlearn.simulators.quantum.operators import Matrix, to_dense
from physlearn.system import FloatArray

#: a nudged manifold must keep at least this share of the free one (``Tr(P0 P)/d``)
MIN_OVERLAP = 0.5


@dataclass(frozen=True)
class GroundManifold:
    """The ``d`` lowest levels of ``H`` and the level above them.

    Attributes:
        energies: ``(d,)`` manifold energies, ascending.
        vectors: ``(dim, d)`` orthonormal eigenvectors.
        gap: ``E_d - E_{d-1}`` (inf when the manifold is the whole space).
        residual: largest ``||H v - E v||`` of the manifold's vectors.
    """

    energies: FloatArray
    vectors: NDArray[Any]
    gap: float
    residual: float

    @property
    def size(self) -> int:
        return int(self.energies.size)

    @property
    def energy(self) -> float:
        """Mean energy ``Tr(P H)/d``: the manifold's free energy as T -> 0."""
        return float(self.energies.mean())

    @property
    def weights(self) -> FloatArray:
        return np.full(self.size, 1.0 / self.size)


def _lowest(h: Matrix, k: int, opts: SolverOptions) -> tuple[FloatArray, NDArray[Any]]:
    """The ``k`` lowest eigenpairs (ascending): dense ``eigh`` or ARPACK."""
    dim = int(h.shape[0])
    if dim <= max(opts.dense_below, 2) or k >= dim - 1:
        w, v = np.linalg.eigh(to_dense(h))
        return w[:k], v[:, :k]
    w, v = sla.eigsh(
        h, k=k, which="SA", v0=start_vector(dim, h.dtype), tol=opts.tol, maxiter=opts.maxiter
    )
    order = np.argsort(w)
    return np.asarray(w[order]), v[:, order]


def ground_manifold(
    h: Matrix,
    opts: SolverOptions,
    size: int | None = None,
    reference: NDArray[Any] | None = None,
) -> GroundManifold:
    """The quasi-degenerate ground manifold of ``h``.

    ``size`` None (free phase): the levels within ``opts.manifold_tol`` of ``E0``; else the
    ``size`` lowest levels (a nudged phase keeps the free phase's manifold size). ``reference``:
    the free manifold's vectors, which the result must overlap (see the module docstring).
    Raises :class:`DegenerateGroundStateError` on a level crossing.
    """
    dim = int(h.shape[0])
    k = min(dim, 2 if size is None else size + 1)
    while True:
        w, v = _lowest(h, k, opts)
        d = int(np.count_nonzero(w - w[0] <= opts.manifold_tol)) if size is None else size
        if d < k or k == dim:
            break
        k = min(dim, 2 * k)
    gap = float(w[d] - w[d - 1]) if d < dim else np.inf
    if gap <= opts.gap_tol:
        raise DegenerateGroundStateError(
            f"level crossing: the ground manifold of {d} level(s) (E0 = {w[0]:.10g}, split "
            f"{w[d - 1] - w[0]:.3g}) is {gap:.3g} <= gap_tol = {opts.gap_tol:.3g} from the "
            "next level. Change the parameters or widen solver.manifold_tol."
        )
    vec = v[:, :d]
    if reference is not None:
        overlap = float(np.linalg.norm(np.conj(reference.T) @ vec) ** 2) / d
        if overlap < MIN_OVERLAP:
            raise DegenerateGroundStateError(
                f"level crossing: the nudged ground manifold overlaps the free one by "
                f"{overlap:.3g} < {MIN_OVERLAP} (a level crossed it). Use a smaller beta."
            )
    hv = np.asarray(h @ vec)
    res = float(np.max(np.linalg.norm(hv - vec * w[:d], axis=0)))
    return GroundManifold(np.asarray(w[:d]), vec, gap, res)


def manifold_response_operator(h: Matrix, size: int, v: Matrix) -> NDArray[np.complex128]:
    """Dense ``R`` with ``d Tr(rho B)/dnu = Tr(B R)`` for ``rho = P/d`` over the ``size`` lowest
    levels of ``h`` and ``H -> H + nu V`` (first-order perturbation of the spectral projector):
    ``R = (1/d) sum_{i<d, n>=d} (|n><n|V|i><i| + h.c.)/(E_i - E_n)``. Dense: a diagnostic for
    registers of at most a few thousand states."""
    e, vec = np.linalg.eigh(to_dense(h))
    v_eig = np.conj(vec.T) @ to_dense(v) @ vec
    d = size
    block = v_eig[d:, :d] / (e[None, :d] - e[d:, None])  # (n >= d, i < d)
    r_eig = np.zeros_like(v_eig, dtype=np.complex128)
    r_eig[d:, :d] = block
    r_eig[:d, d:] = np.conj(block.T)
    return np.asarray(vec @ r_eig @ np.conj(vec.T) / d, dtype=np.complex128)
