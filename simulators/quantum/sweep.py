"""Time evolution along a linear sweep of a Pauli Hamiltonian: finite-time preparation
(issue 24, item 3 groundwork; the system option and its use in training come later).

``H(s) = (1 - s) H_start + s H_end`` with coefficient vectors over a
:class:`~physlearn.simulators.quantum.pauli.PauliBasis` (rad/us). A sweep of ``duration_us`` is
cut into ``samples`` equal steps on Pulser's grid: a ``RampWaveform`` has one sample per ns,
sample ``k`` at ``s = k / (samples - 1)`` (start and stop both included), and pulser-simulation
integrates the Hamiltonian interpolated between samples. Step ``k`` therefore holds ``H`` at
its midpoint, ``s = (k + 1/2) / (samples - 1)`` (capped at 1); with ``samples`` = the duration
in ns the states are pulser-simulation's on the sequence
:func:`~physlearn.simulators.quantum.pulser_bridge.sweep_sequence` writes (to ~1e-9 in
fidelity, up to its last ns, where the emulator interpolates towards zero drive); fewer samples
trade that agreement for speed. Each step applies ``exp(-i H dt)``: a dense matrix exponential
up to :data:`DENSE_BELOW` states, else :func:`scipy.sparse.linalg.expm_multiply` (Al-Mohy &
Higham's truncated Taylor series) on the sparse Hamiltonian.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from physlearn.simulators.quantum.pauli import ComplexArray, PauliBasis
from physlearn.system import FloatArray

#: Registers with fewer basis states than this step with a dense matrix exponential.
DENSE_BELOW = 257


def evolve_sweep(
    basis: PauliBasis,
    start: FloatArray,
    end: FloatArray,
    psi0: ComplexArray,
    duration_us: float,
    *,
    samples: int | None = None,
    stop: int | None = None,
) -> ComplexArray:
    """The state after the first ``stop`` (default all) of ``samples`` steps (default one per
    ns) of the linear sweep from coefficients ``start`` to ``end`` over ``duration_us``, from
    ``psi0`` (see the module docstring)."""
    if not duration_us > 0:
        raise ValueError(f"duration_us must be positive, got {duration_us}")
    n = max(2, round(1000.0 * duration_us)) if samples is None else samples
    if n < 2:
        raise ValueError(f"samples must be at least 2, got {n}")
    k_stop = n if stop is None else stop
    if not 0 <= k_stop <= n:
        raise ValueError(f"stop must be in 0..{n}, got {stop}")
    c0 = np.asarray(start, dtype=np.float64)
    c1 = np.asarray(end, dtype=np.float64)
    h0, dh = basis.operator(c0), basis.operator(c1 - c0)
    dense = h0.shape[0] < DENSE_BELOW
    if dense:
        h0, dh = h0.toarray(), dh.toarray()
    dt = duration_us / n
    psi = np.asarray(psi0, dtype=np.complex128).copy()
    for k in range(k_stop):
        h = h0 + min(1.0, (k + 0.5) / (n - 1)) * dh
        psi = sla.expm((-1j * dt) * h) @ psi if dense else spla.expm_multiply((-1j * dt) * h, psi)
    return np.asarray(psi)


def ground_state(basis: PauliBasis, coeffs: FloatArray) -> tuple[float, ComplexArray, float]:
    """``(E_0, |E_0>, gap)`` of the Hamiltonian with ``coeffs`` (dense: for small registers)."""
    h = basis.operator(np.asarray(coeffs, dtype=np.float64)).toarray()
    w, v = np.linalg.eigh(h)
    return float(w[0]), np.asarray(v[:, 0], dtype=np.complex128), float(w[1] - w[0])


def fidelity(a: ComplexArray, b: ComplexArray) -> float:
    """``|<a|b>|^2`` of two normalised states."""
    return float(abs(np.vdot(a, b)) ** 2)


def sample_bitstrings(psi: ComplexArray, shots: int, rng: np.random.Generator) -> dict[str, int]:
    """``shots`` bitstrings drawn from the Born probabilities of ``psi``, counted, in Pulser's
    convention for the ground-rydberg basis: character ``i`` is atom (qubit ``q{i}``) ``i``,
    ``"1"`` is ``|r>`` -- physlearn's basis index written in binary, atom 0 first."""
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    p = np.abs(np.asarray(psi)) ** 2
    n = int(p.size).bit_length() - 1
    draws = np.bincount(rng.choice(p.size, size=shots, p=p / p.sum()), minlength=p.size)
    return {format(b, f"0{n}b"): int(c) for b, c in enumerate(draws) if c}


def outputs_from_counts(
    counts: dict[str, int],
    output_atoms: tuple[int, ...] | list[int],
    correlators: tuple[tuple[int, int], ...] | list[tuple[int, int]] = (),
) -> FloatArray:
    """A Rydberg machine's outputs estimated from counted bitstrings (a QPU's or an emulator's
    result, Pulser's convention as :func:`sample_bitstrings`): the shot means of ``n_i`` on the
    output atoms, then of ``n_i n_j`` on the correlator pairs."""
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no shots to estimate the outputs from")
    bits = np.array([[c == "1" for c in s] for s in counts], dtype=np.float64)
    weights = np.array(list(counts.values()), dtype=np.float64) / total
    means = [weights @ bits[:, a] for a in output_atoms]
    means += [weights @ (bits[:, i] * bits[:, j]) for i, j in correlators]
    return np.asarray(means)
