"""Hermitian operators of the quantum simulator and their (threaded) products with a vector.

A Hamiltonian is a sparse CSR matrix, a dense array, or a lazy :class:`SumOperator` (the free
Hamiltonian plus a nudge term, never assembled). :class:`RowBlocks` computes a large register's
product as blocks of rows on several threads, bit for bit the product on one thread, so every
result of the solvers (:mod:`physlearn.simulators.quantum.lanczos`) is independent of the thread
count. Energies are in the unit of the Hamiltonian (hbar = 1; ``docs/physics.md``, §Quantum EP).
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from numpy.typing import NDArray

Vector: TypeAlias = NDArray[Any]  # float64 or complex128 state vectors


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


def _row_block(m: sp.csr_matrix, r0: int, r1: int) -> sp.csr_matrix:
    """Rows ``r0:r1`` of a CSR matrix, sharing its data and indices (no copy)."""
    p = m.indptr
    a, b = int(p[r0]), int(p[r1])
    block = sp.csr_matrix(
        (m.data[a:b], m.indices[a:b], p[r0 : r1 + 1] - p[r0]), shape=(r1 - r0, m.shape[1])
    )
    block.has_sorted_indices = m.has_sorted_indices  # never sort the shared indices in place
    return block


class RowBlocks:
    """``mat @ v`` for a CSR matrix (or a :class:`SumOperator` of two) computed as ``k`` blocks
    of rows at once: ``k - 1`` on ``pool``'s threads, one on the caller's. scipy's sparse
    product releases the GIL, so the blocks run in parallel; every row is the same sum in the
    same order as in the whole product, so the result is the same bit for bit. Matrices of
    other kinds, and products with several vectors, are computed whole."""

    def __init__(self, mat: Matrix, pool: Executor, k: int) -> None:
        self.mat, self.pool = mat, pool
        self.shape: tuple[int, ...] = tuple(mat.shape)
        self.dtype: np.dtype[Any] = np.dtype(mat.dtype)
        parts: list[Any] = [mat.a, mat.b] if isinstance(mat, SumOperator) else [mat]
        n = int(mat.shape[0])
        self.blocks: list[tuple[slice, list[sp.csr_matrix]]] = []
        if k > 1 and all(isinstance(m, sp.csr_matrix) for m in parts):
            cuts = [n * i // k for i in range(k + 1)]
            self.blocks = [
                (slice(a, b), [_row_block(m, a, b) for m in parts])
                for a, b in zip(cuts[:-1], cuts[1:], strict=True)
            ]

    @staticmethod
    def _block(rows: slice, parts: list[sp.csr_matrix], v: Vector, out: Vector) -> None:
        r = np.asarray(parts[0] @ v)
        for m in parts[1:]:
            if np.result_type(r.dtype, m.dtype) == r.dtype:
                r += m @ v  # in place, as SumOperator: one temporary fewer per block
            else:
                r = np.asarray(r + m @ v)
        out[rows] = r

    def __matmul__(self, v: Vector) -> Vector:
        if not self.blocks or v.ndim != 1:
            return np.asarray(self.mat @ v)
        out = np.empty(self.shape[0], dtype=np.result_type(self.dtype, v.dtype))
        (rows, parts), *rest = self.blocks
        futures = [self.pool.submit(self._block, r, p, v, out) for r, p in rest]
        try:
            self._block(rows, parts, v, out)
        finally:
            for f in futures:
                f.result()
        return out


#: A Hermitian operator: sparse matrix, dense array, or a lazy :class:`SumOperator`.
Matrix: TypeAlias = "sp.csr_matrix | NDArray[Any] | SumOperator"


def to_dense(h: Matrix) -> NDArray[Any]:
    """Dense copy of an operator (small systems only)."""
    return np.asarray(h) if isinstance(h, np.ndarray) else np.asarray(h.toarray())


class CountingOperator(sla.LinearOperator):
    """Wraps a sparse matrix and counts products (ARPACK reports no iteration count)."""

    def __init__(self, mat: Matrix | RowBlocks) -> None:
        super().__init__(dtype=mat.dtype, shape=mat.shape)
        self.mat = mat
        self.count = 0

    def _matvec(self, v: Vector) -> Vector:
        self.count += 1
        return np.asarray(self.mat @ v)

    def product(self, v: Vector) -> Vector:
        """``mat @ v`` as a new array, counted (without LinearOperator's checks)."""
        self.count += 1
        return np.asarray(self.mat @ v)

    def _matmat(self, v: Vector) -> Vector:
        self.count += v.shape[1]
        return np.asarray(self.mat @ v)


def stored_entries(mat: Any) -> int:
    """Stored entries a product with ``mat`` reads (a dense matrix: all of them)."""
    if isinstance(mat, SumOperator):
        return stored_entries(mat.a) + stored_entries(mat.b)
    if isinstance(mat, RowBlocks):
        return stored_entries(mat.mat)
    return int(mat.nnz) if sp.issparse(mat) else int(np.size(mat))
