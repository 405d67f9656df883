"""Pauli strings on n spin-1/2 sites as bit masks, and sparse Hamiltonians built from them.

Conventions
-----------
* Computational basis state ``|b>``, ``b`` an integer in ``[0, 2**n)``. Qubit ``q`` is bit
  ``n - 1 - q`` of ``b`` (qubit 0 is the most significant bit), so matrices agree with the
  Kronecker product ``P_0 (x) P_1 (x) ... (x) P_{n-1}``.
* Bit value 0 is ``|0>`` (``Z = +1``), bit value 1 is ``|1>`` (``Z = -1``). For Rydberg atoms
  ``|1> = |r>`` so ``n_i = (1 - Z_i) / 2``.
* A Hermitian Pauli string ``P`` is stored as ``(x, z)``: ``x`` marks qubits carrying X or Y,
  ``z`` marks qubits carrying Z or Y; ``ny = popcount(x & z)`` counts the Y's. Then

      P |c> = i**ny (-1)**popcount(c & z) |c ^ x>,
      <r| P |r ^ x> = (-i)**ny s(r),   s(r) = (-1)**popcount(r & z).

  Every matrix element is produced by bit operations on the whole basis at once (no Kronecker
  chains); a sum of strings becomes a CSR matrix with one stored entry per row per distinct
  ``x`` mask.

Labels
------
``"X0 Z3 Y5"`` (sparse: letter + qubit index, any order, whitespace optional), ``"XZIY"``
(dense, one letter per qubit, length ``n``), or ``"I"`` / ``""`` for the identity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from physlearn.system import FloatArray

UIntArray = NDArray[np.uint64]
ComplexArray = NDArray[np.complex128]

_SPARSE_TOKEN = re.compile(r"([IXYZ])(\d+)")
_SPARSE_FULL = re.compile(r"\s*(?:[IXYZ]\d+\s*)*")
#: Largest register the bit-mask representation supports (state vectors are the real limit).
MAX_QUBITS = 30


def parse_pauli(label: str, n_qubits: int) -> tuple[int, int]:
    """Parse a Pauli label into its ``(x, z)`` masks (see the module docstring).

    Raises ``ValueError`` naming the problem (bad letter, qubit out of range, repeated qubit,
    dense label of the wrong length).
    """
    if not 1 <= n_qubits <= MAX_QUBITS:
        raise ValueError(f"n_qubits must be in [1, {MAX_QUBITS}], got {n_qubits}")
    s = label.strip().upper()
    if s in ("", "I"):
        return 0, 0
    letters: dict[int, str] = {}
    if any(ch.isdigit() for ch in s):
        if not _SPARSE_FULL.fullmatch(s):
            raise ValueError(f"bad Pauli label {label!r}: expected tokens like 'X0 Z3 Y5'")
        for m in _SPARSE_TOKEN.finditer(s):
            q = int(m.group(2))
            if q >= n_qubits:
                raise ValueError(f"Pauli label {label!r}: qubit {q} out of range (n = {n_qubits})")
            if q in letters:
                raise ValueError(f"Pauli label {label!r}: qubit {q} appears twice")
            letters[q] = m.group(1)
    else:
        s = s.replace(" ", "")
        if len(s) != n_qubits or any(ch not in "IXYZ" for ch in s):
            raise ValueError(
                f"bad Pauli label {label!r}: a dense label has one of I, X, Y, Z per qubit "
                f"({n_qubits} letters)"
            )
        letters = dict(enumerate(s))
    x = z = 0
    for q, letter in letters.items():
        bit = 1 << (n_qubits - 1 - q)
        if letter in "XY":
            x |= bit
        if letter in "ZY":
            z |= bit
    return x, z


def pauli_label(x: int, z: int, n_qubits: int) -> str:
    """Sparse label of the string ``(x, z)``, e.g. ``"X0 Z3"``; ``"I"`` for the identity."""
    toks = []
    for q in range(n_qubits):
        bit = 1 << (n_qubits - 1 - q)
        xb, zb = bool(x & bit), bool(z & bit)
        if xb or zb:
            toks.append(("Y" if zb else "X") if xb else "Z")
            toks[-1] += str(q)
    return " ".join(toks) or "I"


_CHUNK_ENTRIES = 1 << 22  # int8 -> float64 conversions are done in blocks of this many entries


def _rows_per_chunk(dim: int) -> int:
    return max(1, _CHUNK_ENTRIES // dim)


def signed_dot(signs: NDArray[np.int8], v: FloatArray | ComplexArray) -> FloatArray | ComplexArray:
    """``signs @ v`` for an int8 sign matrix ``(k, dim)``, converted to float in blocks."""
    k, dim = signs.shape
    out = np.zeros(k, dtype=np.result_type(v.dtype, np.float64))
    step = _rows_per_chunk(dim)
    for a in range(0, k, step):
        blk = signs[a : a + step].astype(np.float64)
        if np.iscomplexobj(v):
            out[a : a + step] = blk @ v.real + 1j * (blk @ v.imag)
        else:
            out[a : a + step] = blk @ v
    return out


def signed_combination(
    w: FloatArray | ComplexArray, signs: NDArray[np.int8]
) -> FloatArray | ComplexArray:
    """``w @ signs`` = ``sum_k w_k s_k(r)`` for an int8 sign matrix ``(k, dim)``."""
    k, dim = signs.shape
    out = np.zeros(dim, dtype=np.result_type(w.dtype, np.float64))
    step = _rows_per_chunk(dim)
    for a in range(0, k, step):
        blk = signs[a : a + step]
        if blk.shape[0] == 1:
            out += w[a] * blk[0]
        else:
            out += w[a : a + step] @ blk.astype(np.float64)
    return out


def parity_signs(states: UIntArray, z: int) -> NDArray[np.int8]:
    """``(-1)**popcount(states & z)`` as int8."""
    par = np.bitwise_count(states & np.uint64(z)) & np.uint8(1)
    return (1 - 2 * par.astype(np.int8)).astype(np.int8)


class PauliBasis:
    """A fixed, ordered set of distinct Hermitian Pauli strings on ``n_qubits`` sites.

    Every operator of a quantum system (Hamiltonian terms, inputs, trainable terms, outputs) is a
    real linear combination of the strings of one basis, given as a coefficient vector of length
    :attr:`size`. The basis precomputes the sign pattern ``s_t(r)`` of every string (int8, one
    byte per basis state and string) so that assembling a Hamiltonian is a handful of
    multiply-adds per stored entry.
    """

    def __init__(self, n_qubits: int, strings: Sequence[tuple[int, int]]) -> None:
        if not 1 <= n_qubits <= MAX_QUBITS:
            raise ValueError(f"n_qubits must be in [1, {MAX_QUBITS}], got {n_qubits}")
        keys = [(int(x), int(z)) for x, z in strings]
        if len(set(keys)) != len(keys):
            raise ValueError("PauliBasis strings must be distinct")
        self.n_qubits = n_qubits
        self.dim = 1 << n_qubits
        self.x = np.array([k[0] for k in keys], dtype=np.uint64)
        self.z = np.array([k[1] for k in keys], dtype=np.uint64)
        self.ny = np.bitwise_count(self.x & self.z).astype(np.int64)
        #: (-i)**ny: the phase of <r|P|r^x> (real +-1 for an even number of Y's).
        self.phase = ((-1j) ** self.ny).astype(np.complex128)
        self._index = {k: i for i, k in enumerate(keys)}
        self.states = np.arange(self.dim, dtype=np.uint64)
        self.signs = (
            np.stack([parity_signs(self.states, int(z)) for z in self.z])
            if keys
            else (np.zeros((0, self.dim), dtype=np.int8))
        )
        xs, inverse = np.unique(self.x, return_inverse=True)
        #: distinct x masks; ``group_of[t]`` is the x group of string t.
        self.group_x = xs
        self.group_of = inverse.astype(np.int64)
        self._group_members = [np.flatnonzero(self.group_of == g) for g in range(len(xs))]
        self._group_cols = [(self.states ^ x).astype(np.int32) for x in xs]
        #: CSR column indices of the last set of stored groups (copied into every new matrix)
        self._layout: tuple[tuple[int, ...], NDArray[np.int32]] | None = None

    @classmethod
    def from_labels(cls, labels: Sequence[str], n_qubits: int) -> PauliBasis:
        """Basis of the distinct strings among ``labels`` (first occurrence order)."""
        seen: dict[tuple[int, int], None] = {}
        for lab in labels:
            seen.setdefault(parse_pauli(lab, n_qubits), None)
        return cls(n_qubits, list(seen))

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    def index(self, label_or_masks: str | tuple[int, int]) -> int:
        """Position of a string in the basis (``KeyError`` if absent)."""
        key = (
            parse_pauli(label_or_masks, self.n_qubits)
            if isinstance(label_or_masks, str)
            else (int(label_or_masks[0]), int(label_or_masks[1]))
        )
        return self._index[key]

    def label(self, t: int) -> str:
        return pauli_label(int(self.x[t]), int(self.z[t]), self.n_qubits)

    def vector(self, terms: Sequence[tuple[float, str]]) -> FloatArray:
        """Coefficient vector of ``sum_k c_k P_k`` for ``terms = [(c_k, label_k)]``."""
        v = np.zeros(self.size)
        for c, lab in terms:
            v[self.index(lab)] += c
        return v

    def is_complex(self, coeffs: FloatArray) -> bool:
        """Whether ``sum_t c_t P_t`` has complex matrix elements (an odd number of Y's)."""
        return bool(np.any((coeffs != 0) & (self.ny % 2 == 1)))

    # -- operators -----------------------------------------------------------------------------
    def operator(self, coeffs: FloatArray) -> sp.csr_matrix:
        """CSR matrix of ``sum_t coeffs_t P_t`` (real coefficients give a Hermitian matrix).

        Float64 when every active string has an even number of Y's, else complex128. Groups of
        strings whose coefficients are all zero store nothing.
        """
        coeffs = np.asarray(coeffs, dtype=np.float64)
        if coeffs.shape != (self.size,):
            raise ValueError(f"expected {self.size} coefficients, got shape {coeffs.shape}")
        complex_ = self.is_complex(coeffs)
        dtype = np.complex128 if complex_ else np.float64
        stored = []
        for g, members in enumerate(self._group_members):
            nz = coeffs[members] != 0
            if nz.any():
                stored.append((g, members[nz]))
        if not stored:
            return sp.csr_matrix((self.dim, self.dim), dtype=dtype)
        k = len(stored)
        data = np.empty((self.dim, k), dtype=dtype)  # row r holds its k entries, CSR order
        for j, (_, members) in enumerate(stored):
            w = coeffs[members] * (self.phase[members] if complex_ else self.phase[members].real)
            flat = self.z[members] == 0  # sign pattern +1 everywhere: a constant
            const = w[flat].sum()
            if flat.all():
                data[:, j] = const
            else:
                data[:, j] = signed_combination(w[~flat], self.signs[members[~flat]])
                if const != 0:
                    data[:, j] += const
        groups = tuple(g for g, _ in stored)
        layout = self._layout
        if layout is None or layout[0] != groups:
            layout = (groups, np.stack([self._group_cols[g] for g in groups], axis=1).ravel())
            self._layout = layout
        indptr = np.arange(0, self.dim * k + 1, k, dtype=np.int64)
        if self.dim * k < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        mat = sp.csr_matrix(
            (data.ravel(), layout[1].copy(), indptr),  # a copy: scipy may sort in place
            shape=(self.dim, self.dim),
        )
        mat.has_sorted_indices = False
        return mat

    # -- expectation values --------------------------------------------------------------------
    def _weights(self, strings: NDArray[np.int64] | None) -> NDArray[np.int64]:
        return np.arange(self.size) if strings is None else np.asarray(strings, dtype=np.int64)

    def transition(
        self,
        bra: ComplexArray | FloatArray,
        ket: ComplexArray | FloatArray,
        strings: NDArray[np.int64] | None = None,
    ) -> ComplexArray:
        """``<bra|P_t|ket>`` for the selected strings (all by default); vectors of length dim."""
        idx = self._weights(strings)
        out = np.zeros(idx.size, dtype=np.complex128)
        bra_c = np.conj(bra) if np.iscomplexobj(bra) else bra
        for g in np.unique(self.group_of[idx]):
            sel = np.flatnonzero(self.group_of[idx] == g)
            v: FloatArray | ComplexArray = np.asarray(
                bra_c * (ket if self.group_x[g] == 0 else ket[self._group_cols[g]])
            )
            rows = idx[sel]
            flat = self.z[rows] == 0  # sign pattern +1 everywhere: a plain sum
            dots = np.empty(sel.size, dtype=np.result_type(v.dtype, np.float64))
            if flat.any():
                dots[flat] = v.sum()
            if not flat.all():
                dots[~flat] = signed_dot(self.signs[rows[~flat]], v)
            out[sel] = self.phase[rows] * dots
        return out

    def expectations(
        self, psi: ComplexArray | FloatArray, strings: NDArray[np.int64] | None = None
    ) -> FloatArray:
        """``<psi|P_t|psi>`` (real) for the selected strings of a normalised state vector."""
        return np.ascontiguousarray(self.transition(psi, psi, strings).real)

    def expectations_mixed(
        self,
        vectors: ComplexArray | FloatArray,
        weights: FloatArray,
        strings: NDArray[np.int64] | None = None,
    ) -> FloatArray:
        """``Tr(rho P_t)`` for ``rho = sum_m w_m |v_m><v_m|`` (``vectors`` is ``(dim, m)``)."""
        idx = self._weights(strings)
        keep = weights > 1e-300
        vec, w = vectors[:, keep], weights[keep]
        out = np.zeros(idx.size)
        vec_c = np.conj(vec) * w
        for g in np.unique(self.group_of[idx]):
            sel = np.flatnonzero(self.group_of[idx] == g)
            v = np.einsum("rm,rm->r", vec_c, vec[self._group_cols[g]])
            out[sel] = (self.phase[idx[sel]] * signed_dot(self.signs[idx[sel]], v)).real
        return out

    def traces(
        self, mat: NDArray[np.complex128] | FloatArray, strings: NDArray[np.int64] | None = None
    ) -> ComplexArray:
        """``Tr(mat P_t)`` for a dense ``(dim, dim)`` matrix and the selected strings."""
        idx = self._weights(strings)
        out = np.zeros(idx.size, dtype=np.complex128)
        rows = np.arange(self.dim)
        for g in np.unique(self.group_of[idx]):
            sel = np.flatnonzero(self.group_of[idx] == g)
            v = np.asarray(mat[self._group_cols[g], rows], dtype=np.complex128)
            out[sel] = self.phase[idx[sel]] * signed_dot(self.signs[idx[sel]], v)
        return out
