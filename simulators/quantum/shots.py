"""Finite-shot measurement of Pauli strings: qubit-wise commuting groups share bitstrings.

A *measurement setting* assigns a basis (X, Y or Z) to every measured qubit. Strings that are
qubit-wise commuting (on every qubit they carry the same letter or the identity) are estimated
from the same ``M`` bitstrings of one setting. Each setting rotates the state so that its basis
becomes Z (X: Hadamard; Y: Hadamard after S^dagger), samples ``M`` bitstrings from the Born
probabilities with the caller's ``rng``, and estimates every member string as the shot mean of
the product of its qubits' outcomes, ``(-1)**popcount(b & support)``.

Estimates are unbiased; their variance is ``(1 - <P>^2) / M``. The identity needs no shots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.system import FloatArray

_SQ2 = 1.0 / np.sqrt(2.0)
#: the single-qubit rotations that make X or Y the measured Z: X: H; Y: H @ diag(1, -i)
#: (U^dagger Z U = Y), applied by :meth:`MeasurementPlan._rotate`
ROTATION = {
    "X": np.array([[_SQ2, _SQ2], [_SQ2, -_SQ2]], dtype=np.complex128),
    "Y": np.array([[_SQ2, -1j * _SQ2], [_SQ2, 1j * _SQ2]], dtype=np.complex128),
}


def _letters(basis: PauliBasis, t: int) -> dict[int, str]:
    n = basis.n_qubits
    x, z = int(basis.x[t]), int(basis.z[t])
    out = {}
    for q in range(n):
        bit = 1 << (n - 1 - q)
        if x & bit or z & bit:
            out[q] = ("Y" if z & bit else "X") if x & bit else "Z"
    return out


@dataclass(frozen=True)
class Setting:
    """One measurement setting: per-qubit basis letters and the strings it estimates."""

    bases: dict[int, str]
    members: NDArray[np.int64]  # positions in MeasurementPlan.strings
    supports: NDArray[np.uint64]  # x | z of each member


class MeasurementPlan:
    """Greedy qubit-wise-commuting grouping of ``strings`` (indices into ``basis``).

    Strings are visited heaviest first and put into the first compatible setting.
    """

    def __init__(self, basis: PauliBasis, strings: NDArray[np.int64]) -> None:
        self.basis = basis
        self.strings = np.asarray(strings, dtype=np.int64)
        letters = [_letters(basis, int(t)) for t in self.strings]
        order = sorted(range(len(letters)), key=lambda k: -len(letters[k]))
        groups: list[tuple[dict[int, str], list[int]]] = []
        for k in order:
            if not letters[k]:
                continue  # identity: exact
            for bases, members in groups:
                if all(bases.get(q, a) == a for q, a in letters[k].items()):
                    bases.update(letters[k])
                    members.append(k)
                    break
            else:
                groups.append((dict(letters[k]), [k]))
        supp = basis.x | basis.z
        self.settings = tuple(
            Setting(b, np.array(sorted(m), dtype=np.int64), supp[self.strings[sorted(m)]])
            for b, m in groups
        )
        self._identity = np.array([not lt for lt in letters], dtype=bool)

    @property
    def n_settings(self) -> int:
        return len(self.settings)

    def _rotate(self, vectors: NDArray[np.complex128], bases: dict[int, str]) -> NDArray:
        """``vectors`` ``(dim, m)`` with :data:`ROTATION` applied to every X or Y qubit of
        ``bases``: a butterfly on that qubit's bit (rows ``r`` and ``r + 2**(n-1-q)``), in place
        on a copy, without building the rotation's Kronecker product."""
        n = self.basis.n_qubits
        m = vectors.shape[1]
        t = np.array(vectors, dtype=np.complex128, order="C")  # reshapes below are views
        for q, letter in bases.items():
            if letter == "Z":
                continue
            pair = t.reshape(1 << q, 2, (1 << (n - 1 - q)) * m)
            low, high = pair[:, 0, :], pair[:, 1, :]
            if letter == "Y":
                high = high * -1j  # diag(1, -i) first
            plus = (low + high) * _SQ2
            pair[:, 1, :] = (low - high) * _SQ2
            pair[:, 0, :] = plus
        return t

    def sample(
        self,
        vectors: NDArray[np.float64] | NDArray[np.complex128],
        weights: FloatArray,
        shots: int,
        rng: np.random.Generator,
    ) -> FloatArray:
        """Shot estimates of ``<P_t>`` for ``rho = sum_m w_m |v_m><v_m|`` (``vectors`` (dim, m)).

        Returns one estimate per entry of :attr:`strings`.
        """
        if shots < 1:
            raise ValueError("shots must be >= 1")
        out = np.where(self._identity, 1.0, 0.0)
        vec = np.asarray(vectors, dtype=np.complex128)
        dim = vec.shape[0]
        for s in self.settings:
            rot = self._rotate(vec, s.bases)
            p = (np.abs(rot) ** 2) @ weights
            p = np.clip(p, 0.0, None)
            p /= p.sum()
            outcomes = rng.choice(dim, size=shots, p=p).astype(np.uint64)
            par = np.bitwise_count(outcomes[None, :] & s.supports[:, None]) & np.uint8(1)
            out[s.members] = 1.0 - 2.0 * par.mean(axis=1)
        return out
