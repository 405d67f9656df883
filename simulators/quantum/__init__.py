"""Quantum spin-1/2 machines trained with quantum EP (error nudges ``beta sum_k eps_k O_k``):
:mod:`.pauli` (Pauli strings as bit masks, sparse Hamiltonians), :mod:`.states` (Lanczos ground
states with warm starts and a gap check, Gibbs states, linear response), :mod:`.shots`
(finite-shot measurement), :mod:`.system` (the generic :class:`QuantumSystem`), the devices
:mod:`.rydberg` and :mod:`.ions`, :mod:`.sensitivity` (quantum sensors from two replicas),
:mod:`.datasets` (cluster-Ising phase labels) and :mod:`.config` (``kind: quantum | rydberg |
ions``). Conventions: ``docs/physics.md`` (§Quantum EP, §Rydberg arrays, §Trapped-ion chains).
"""
