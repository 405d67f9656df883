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
from typing import Any

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


#: Sign entries converted from int8 to float64 at once (a 4 MB block: cache-sized scratch
#: instead of a float copy of a whole sign matrix).
BLOCK_ENTRIES = 1 << 19


def _block_states(rows: int, dim: int, block_entries: int) -> int:
    """Basis states per block when ``rows`` sign rows are converted to float64 together."""
    return min(dim, max(1, block_entries // max(rows, 1)))


def signed_dot(
    signs: NDArray[np.int8],
    v: FloatArray | ComplexArray,
    rows: NDArray[np.int64],
    block_entries: int = BLOCK_ENTRIES,
) -> FloatArray | ComplexArray:
    """``signs[rows] @ v`` for an int8 sign matrix ``(k, dim)`` and a contiguous vector ``v``.

    The selected rows are converted to float64 in blocks of basis states (columns), so that
    the float scratch stays in cache and one BLAS product per block does the sums.
    """
    dim = v.shape[0]
    cplx = np.iscomplexobj(v)
    # a complex vector as (dim, 2) real and imaginary parts: one product for both
    rhs: FloatArray = (
        np.ascontiguousarray(v).view(np.float64).reshape(dim, 2)
        if cplx
        else np.asarray(v, dtype=np.float64)
    )
    acc = np.zeros((rows.size, 2) if cplx else rows.size)
    step = _block_states(rows.size, dim, block_entries)
    buf = np.empty((rows.size, step))
    for a in range(0, dim, step):
        b = min(a + step, dim)
        blk = buf[:, : b - a]
        np.copyto(blk, signs[rows, a:b])
        acc += blk @ rhs[a:b]
    return acc[:, 0] + 1j * acc[:, 1] if cplx else acc


def parity_signs(states: UIntArray, z: int) -> NDArray[np.int8]:
    """``(-1)**popcount(states & z)`` as int8."""
    par = np.bitwise_count(states & np.uint64(z)) & np.uint8(1)
    return (1 - 2 * par.astype(np.int8)).astype(np.int8)


def xor_geometry(x: int, n_qubits: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape and flipped axes that turn a state vector ``v`` into the view ``v[r ^ x]``.

    The bits of ``r`` split into runs of adjacent bits that ``x`` all sets or all clears. On a
    run of ``m`` set bits ``r ^ x`` counts down instead of up, so ``v[r ^ x]`` is ``v`` reshaped
    to one axis per run (most significant first) with the set runs reversed: a strided view,
    no index array and no gather.
    """
    shape: list[int] = []
    axes: list[int] = []
    bit = n_qubits - 1
    while bit >= 0:
        on = (x >> bit) & 1
        length = 0
        while bit >= 0 and (x >> bit) & 1 == on:
            length += 1
            bit -= 1
        if on:
            axes.append(len(shape))
        shape.append(1 << length)
    return tuple(shape), tuple(axes)


class PauliBasis:
    """A fixed, ordered set of distinct Hermitian Pauli strings on ``n_qubits`` sites.

    Every operator of a quantum system (Hamiltonian terms, inputs, trainable terms, outputs) is a
    real linear combination of the strings of one basis, given as a coefficient vector of length
    :attr:`size`. The basis precomputes the sign pattern ``s(r) = (-1)**popcount(r & z)`` of
    every distinct non-zero ``z`` mask (int8, one byte per basis state and mask; strings sharing
    a ``z`` share a row, strings without Z or Y need none) so that assembling a Hamiltonian is a
    handful of multiply-adds per stored entry. ``block_entries`` bounds the float64 scratch of
    the int8 -> float conversions (:data:`BLOCK_ENTRIES`, 4 MB).
    """

    def __init__(
        self,
        n_qubits: int,
        strings: Sequence[tuple[int, int]],
        *,
        block_entries: int = BLOCK_ENTRIES,
    ) -> None:
        if not 1 <= n_qubits <= MAX_QUBITS:
            raise ValueError(f"n_qubits must be in [1, {MAX_QUBITS}], got {n_qubits}")
        if block_entries < 1:
            raise ValueError("block_entries must be >= 1")
        keys = [(int(x), int(z)) for x, z in strings]
        if len(set(keys)) != len(keys):
            raise ValueError("PauliBasis strings must be distinct")
        self.n_qubits = n_qubits
        self.dim = 1 << n_qubits
        self.block_entries = int(block_entries)
        self.x = np.array([k[0] for k in keys], dtype=np.uint64)
        self.z = np.array([k[1] for k in keys], dtype=np.uint64)
        self.ny = np.bitwise_count(self.x & self.z).astype(np.int64)
        #: (-i)**ny: the phase of <r|P|r^x> (real +-1 for an even number of Y's).
        self.phase = ((-1j) ** self.ny).astype(np.complex128)
        self._index = {k: i for i, k in enumerate(keys)}
        masks = np.unique(self.z[self.z != 0])
        states = np.arange(self.dim, dtype=np.uint64)
        #: sign patterns of the distinct non-zero z masks, ``(len(masks), dim)`` int8
        self.z_signs = (
            np.stack([parity_signs(states, int(z)) for z in masks])
            if masks.size
            else np.zeros((0, self.dim), dtype=np.int8)
        )
        #: row of ``z_signs`` of every string; -1 for strings without Z or Y (sign +1)
        self.z_row = np.where(self.z != 0, np.searchsorted(masks, self.z), -1).astype(np.int64)
        xs, inverse = np.unique(self.x, return_inverse=True)
        #: distinct x masks; ``group_of[t]`` is the x group of string t.
        self.group_x = xs
        self.group_of = inverse.astype(np.int64)
        self._group_members = [np.flatnonzero(self.group_of == g) for g in range(len(xs))]
        self._xor = [xor_geometry(int(x), n_qubits) for x in xs]
        self._cols32 = np.arange(self.dim, dtype=np.int32)

    @classmethod
    def from_labels(cls, labels: Sequence[str], n_qubits: int, **kwargs: int) -> PauliBasis:
        """Basis of the distinct strings among ``labels`` (first occurrence order)."""
        seen: dict[tuple[int, int], None] = {}
        for lab in labels:
            seen.setdefault(parse_pauli(lab, n_qubits), None)
        return cls(n_qubits, list(seen), **kwargs)

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
    def xor_view(self, v: NDArray[Any], g: int) -> NDArray[Any]:
        """``v[r ^ x_g]`` (rows of a ``(dim, ...)`` array) for x group ``g``, as a view of ``v``
        reshaped to :func:`xor_geometry`'s shape (trailing axes of ``v`` kept)."""
        shape, axes = self._xor[g]
        return np.flip(v.reshape(shape + v.shape[1:]), axes)

    def operator(self, coeffs: FloatArray) -> sp.csr_matrix:
        """CSR matrix of ``sum_t coeffs_t P_t`` (real coefficients give a Hermitian matrix).

        Float64 when every active string has an even number of Y's, else complex128. Groups of
        strings whose coefficients are all zero store nothing. Row ``r`` stores one entry per
        stored group ``g``, ``sum_{t in g} w_t s_t(r)`` at column ``r ^ x_g``; the rows are
        filled in blocks of basis states (a cache-sized int8 -> float64 conversion of the sign
        rows in use, one small product per group, then the block written row-major), never a
        strided pass over the whole matrix per group.
        """
        coeffs = np.asarray(coeffs, dtype=np.float64)
        if coeffs.shape != (self.size,):
            raise ValueError(f"expected {self.size} coefficients, got shape {coeffs.shape}")
        complex_ = self.is_complex(coeffs)
        dtype = np.complex128 if complex_ else np.float64
        parts = 2 if complex_ else 1  # float64 values per stored entry
        stored: list[int] = []
        weights: list[FloatArray] = []  # per stored group: (parts, its signed strings)
        consts: list[FloatArray] = []  # per stored group: (parts,) sum of its unsigned strings
        zrows: list[NDArray[np.int64]] = []
        for g, members in enumerate(self._group_members):
            members = members[coeffs[members] != 0]
            if not members.size:
                continue
            phase = self.phase[members] if complex_ else self.phase[members].real
            w = coeffs[members] * phase
            signed = self.z_row[members] >= 0
            c, ws = w[~signed].sum(), w[signed]
            stored.append(g)
            weights.append(np.stack([ws.real, ws.imag]) if complex_ else ws[None, :])
            consts.append(np.array([c.real, c.imag] if complex_ else [c], dtype=np.float64))
            zrows.append(self.z_row[members[signed]])
        if not stored:
            return sp.csr_matrix((self.dim, self.dim), dtype=dtype)
        k = len(stored)
        data = np.empty((self.dim, k), dtype=dtype)  # row r holds its k entries, CSR order
        self._fill(data.view(np.float64), weights, consts, zrows, parts)
        xs = self.group_x[stored].astype(np.int32)
        indices = np.bitwise_xor(self._cols32[:, None], xs[None, :])  # (dim, k), row-major
        indptr = np.arange(0, self.dim * k + 1, k, dtype=np.int64)
        if self.dim * k < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        mat = sp.csr_matrix((data.ravel(), indices.ravel(), indptr), shape=(self.dim, self.dim))
        mat.has_sorted_indices = False
        return mat

    def _fill(
        self,
        out: FloatArray,
        weights: list[FloatArray],
        consts: list[FloatArray],
        zrows: list[NDArray[np.int64]],
        parts: int,
    ) -> None:
        """``out[r, parts*j : parts*(j+1)] = weights[j] @ s_{zrows[j]}(r) + consts[j]`` for
        every stored group ``j`` (``out``: the ``(dim, k * parts)`` float64 view of the values
        of :meth:`operator`), in blocks of basis states."""
        rows = np.concatenate(zrows)
        spans = np.cumsum([0] + [z.size for z in zrows])
        const = np.concatenate(consts)[:, None]
        width = out.shape[1]
        step = _block_states(max(rows.size, width), self.dim, self.block_entries)
        buf = np.empty((rows.size, step))
        tmp = np.empty((width, step))  # the block transposed: one row per stored value
        for a in range(0, self.dim, step):
            b = min(a + step, self.dim)
            signs, block = buf[:, : b - a], tmp[:, : b - a]
            if rows.size:
                np.copyto(signs, self.z_signs[rows, a:b])
            for j, w in enumerate(weights):
                dst = block[parts * j : parts * (j + 1)]
                if w.shape[1]:
                    np.matmul(w, signs[spans[j] : spans[j + 1]], out=dst)
                    dst += const[parts * j : parts * (j + 1)]
                else:
                    dst[...] = const[parts * j : parts * (j + 1)]
            out[a:b] = block.T

    # -- expectation values --------------------------------------------------------------------
    def _weights(self, strings: NDArray[np.int64] | None) -> NDArray[np.int64]:
        return np.arange(self.size) if strings is None else np.asarray(strings, dtype=np.int64)

    def _signed_sums(
        self, v: FloatArray | ComplexArray, rows: NDArray[np.int64]
    ) -> FloatArray | ComplexArray:
        """``sum_r s_t(r) v(r)`` for the strings ``rows`` (``v`` contiguous, length dim)."""
        zr = self.z_row[rows]
        signed = zr >= 0
        dots = np.empty(rows.size, dtype=np.result_type(v.dtype, np.float64))
        if not signed.all():
            dots[~signed] = v.sum()  # sign pattern +1 everywhere: a plain sum
        if signed.any():
            dots[signed] = signed_dot(self.z_signs, v, zr[signed], self.block_entries)
        return dots

    def transition(
        self,
        bra: ComplexArray | FloatArray,
        ket: ComplexArray | FloatArray,
        strings: NDArray[np.int64] | None = None,
    ) -> ComplexArray:
        """``<bra|P_t|ket>`` for the selected strings (all by default); vectors of length dim.

        Per x group ``g``, ``v(r) = conj(bra(r)) ket(r ^ x_g)`` (``ket`` read through
        :meth:`xor_view`, no gather) is contracted with the sign rows of the group's strings; a
        group of strings without Z or Y needs only the sum, one pass without a temporary.
        ``<psi|P|psi>`` for diagonal strings uses the real ``|psi|^2``.
        """
        idx = self._weights(strings)
        out = np.zeros(idx.size, dtype=np.complex128)
        same = bra is ket
        bra_a: NDArray[Any] = np.ascontiguousarray(bra)
        ket_a: NDArray[Any] = bra_a if same else np.ascontiguousarray(ket)
        bra_c = np.conj(bra_a) if np.iscomplexobj(bra_a) else bra_a
        groups = self.group_of[idx]
        for g in np.unique(groups):
            sel = np.flatnonzero(groups == g)
            rows = idx[sel]
            shape = self._xor[g][0]
            kv, bv = self.xor_view(ket_a, g), bra_c.reshape(shape)
            dots: FloatArray | ComplexArray
            if np.all(self.z_row[rows] < 0):
                axes = list(range(len(shape)))
                dots = np.full(rows.size, np.einsum(bv, axes, kv, axes, []))
            else:
                if self.group_x[g] == 0 and same and np.iscomplexobj(ket_a):
                    v = np.square(ket_a.real) + np.square(ket_a.imag)
                else:
                    v = np.multiply(bv, kv, order="C").reshape(self.dim)
                dots = self._signed_sums(v, rows)
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
        groups = self.group_of[idx]
        for g in np.unique(groups):
            sel = np.flatnonzero(groups == g)
            shape = self._xor[g][0] + (vec.shape[1],)
            v = np.einsum("...m,...m->...", vec_c.reshape(shape), self.xor_view(vec, g))
            v = np.ascontiguousarray(v).reshape(self.dim)
            out[sel] = (self.phase[idx[sel]] * self._signed_sums(v, idx[sel])).real
        return out

    def traces(
        self, mat: NDArray[np.complex128] | FloatArray, strings: NDArray[np.int64] | None = None
    ) -> ComplexArray:
        """``Tr(mat P_t)`` for a dense ``(dim, dim)`` matrix and the selected strings."""
        idx = self._weights(strings)
        out = np.zeros(idx.size, dtype=np.complex128)
        rows = np.arange(self.dim)
        groups = self.group_of[idx]
        for g in np.unique(groups):
            sel = np.flatnonzero(groups == g)
            cols = self.xor_view(rows, g).reshape(self.dim)
            v = np.asarray(mat[cols, rows], dtype=np.complex128)
            out[sel] = self.phase[idx[sel]] * self._signed_sums(v, idx[sel])
        return out
