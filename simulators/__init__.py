"""Physics-backed :class:`physlearn.system.PhysicalSystem` implementations.

Installed as ``physlearn.simulators``: resistor networks (:mod:`physlearn.simulators.resistor`),
graph generators shared by the network simulators (:mod:`physlearn.simulators.graphs`), and
further systems (XY oscillators, quantum emulators) added by their owners.

Quantum machines (trained with quantum EP, error nudges ``beta sum_k eps_k O_k``):
:mod:`~physlearn.simulators.pauli` (Pauli strings as bit masks, sparse Hamiltonians),
:mod:`~physlearn.simulators.quantum_states` (Lanczos ground states with warm starts and a gap
check, Gibbs states, linear response), :mod:`~physlearn.simulators.quantum_shots` (finite-shot
measurement), :mod:`~physlearn.simulators.quantum` (the generic :class:`QuantumSystem`),
:mod:`~physlearn.simulators.rydberg`, :mod:`~physlearn.simulators.ions`,
:mod:`~physlearn.simulators.oscillators` (quantum elastic network),
:mod:`~physlearn.simulators.quantum_config` (their configs) and
:mod:`~physlearn.simulators.quantum_datasets` (cluster-Ising phase labels).
"""
