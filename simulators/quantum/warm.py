"""Warm starts of the quantum machine: the state a phase hands to the next one.

A free phase leaves a :class:`QuantumState` (ground states, the assembled free Hamiltonians and
the products that certified them); a nudged phase of the same batch solves ``H_free + D`` lazily
from it (:func:`warm_hamiltonian`, :func:`nudged_start`), and a free state carried to the next
training step is a :class:`QuantumCarry`. The start changes only a solve's cost, never its
certified result (``docs/physics.md``, §Quantum EP;
:mod:`physlearn.simulators.quantum.lanczos`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from physlearn.simulators.quantum.operators import SumOperator
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.system import FloatArray


@dataclass(frozen=True)
class QuantumState:
    """Warm-start state of one batch.

    ``vectors``: the ground state of every sample (None at T > 0). ``hamiltonians`` and
    ``coefficients``: an assembled sparse Hamiltonian per sample and its coefficient vector, so
    that a nudged phase applies ``H_free + beta O_eps`` without assembling a new matrix.
    """

    vectors: tuple[NDArray[np.float64] | NDArray[np.complex128], ...] | None
    hamiltonians: tuple[sp.csr_matrix, ...] = ()
    coefficients: FloatArray | None = None
    #: first excited state of every sample (free phases, which run the gap check), else None
    excited: tuple[NDArray[np.float64] | NDArray[np.complex128], ...] | None = None
    #: the clamped inputs ``(batch, n_in)``
    inputs: FloatArray | None = None
    #: ``hamiltonians[b] @ vectors[b]`` of every sample (free phases: the product that certified
    #: the ground state), else None; a nudged phase from this state starts its Lanczos run
    #: from it and saves one product
    products: tuple[NDArray[np.float64] | NDArray[np.complex128], ...] | None = None
    #: nudged solves warm-started from this state, per sample: ``(delta, psi, (H + D) psi)`` with
    #: ``delta`` the coefficient change of the nudge, ``D`` its operator; a later nudge along the
    #: same direction starts from the linear extrapolation (see :meth:`QuantumSystem.equilibrate`)
    nudged: dict[int, list[tuple[FloatArray, Any, Any]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    #: ``solver.degenerate = "manifold"``: every sample's ground-manifold vectors ``(dim, d)``
    #: (a nudged phase keeps ``d`` and must overlap them), else None
    manifolds: tuple[NDArray[Any], ...] | None = None


@dataclass(frozen=True)
class QuantumCarry:
    """A free state carried to the next training step (:meth:`QuantumSystem.import_state`).

    ``inputs``: ``(batch, n_in)`` inputs it was solved for; ``vectors``: ``(batch, 2, dim)``
    ground and first excited state of every sample (float64, or complex128 for a machine whose
    Hamiltonian can be complex).
    """

    inputs: FloatArray
    vectors: NDArray[np.float64] | NDArray[np.complex128]


def nudged_start(
    done: Any, delta: FloatArray, d_op: sp.csr_matrix, psi0: Any, h_psi0: Any
) -> tuple[Any, Any]:
    """Start vector of a nudged solve on ``H + D`` (``D = d_op``, coefficients ``delta``) from the
    free ground state ``psi0`` (``h_psi0 = H psi0`` or None), and its product with ``H + D``.

    ``done``: earlier nudged solves ``(delta_1, psi_1, (H + D_1) psi_1)`` from the same free
    state. If one of them nudged along the same direction, ``delta = c delta_1`` (the centred
    estimator's ``-beta`` after ``+beta``: ``c = -1``), the start is the linear extrapolation
    ``psi0 + c (psi_1 - psi0)`` (``psi_1`` phase-aligned to ``psi0``): off the nudged ground state
    by O(beta^2) instead of O(beta), which saves a few Lanczos products; the solve itself (its
    tolerance and certification) is the same from any start. Otherwise ``psi0``.
    """
    best: tuple[float, Any, Any] | None = None
    norm = float(np.linalg.norm(delta))
    for d1, psi1, h_psi1 in done:
        c = float(np.dot(d1, delta) / np.dot(d1, d1))
        parallel = np.linalg.norm(delta - c * d1) <= 1e-9 * norm
        if parallel and c != 0 and (best is None or abs(c - 1) < abs(best[0] - 1)):
            best = (c, psi1, h_psi1)
    h_start = None if h_psi0 is None else h_psi0 + d_op @ psi0
    if best is None:
        return psi0, h_start
    c, psi1, h_psi1 = best
    overlap = complex(np.vdot(psi1, psi0))
    phase = overlap / abs(overlap) if overlap != 0 else 1.0
    align = phase if np.iscomplexobj(psi1) else np.sign(phase.real)
    start = psi0 + c * (psi1 * align - psi0)
    if h_start is None or h_psi1 is None:
        return start, None
    # (H + D) psi_1 = (H + D_1) psi_1 + (1 - 1/c) D psi_1, as D - D_1 = (1 - 1/c) D
    h_aligned = (h_psi1 + (1.0 - 1.0 / c) * (d_op @ psi1)) * align
    return start, (1.0 - c) * h_start + c * h_aligned


def warm_hamiltonian(
    basis: PauliBasis,
    ws: QuantumState,
    b: int,
    coeffs: FloatArray,
    v0: Any,
    dense_below: int,
) -> tuple[sp.csr_matrix | SumOperator, Any, Any, FloatArray | None]:
    """Sample ``b``'s Hamiltonian with coefficients ``coeffs`` as the warm state's free one plus
    the change ``D`` (lazily, :class:`SumOperator`), the start vector from ``v0`` and its product
    with it when known (``hv0``), and the coefficient change ``delta`` to record with the solve
    (None when the solve is not a Lanczos-sized nudged solve from ``v0``)."""
    assert ws.coefficients is not None
    delta = coeffs - ws.coefficients[b]
    known = None if ws.products is None else ws.products[b]
    if not np.any(delta):
        return ws.hamiltonians[b], v0, known, None
    d_op = basis.operator(delta)
    h = SumOperator(ws.hamiltonians[b], d_op)
    if v0 is not None and basis.dim > dense_below:
        v0, hv0 = nudged_start(ws.nudged.get(b, ()), delta, d_op, v0, known)
        return h, v0, hv0, delta
    return h, v0, None, None
