"""Physics-backed :class:`physlearn.system.PhysicalSystem` implementations, one subpackage per
machine family (installed as ``physlearn.simulators``; conventions in ``docs/physics.md``).

* :mod:`~physlearn.simulators.graphs` -- graph generators and graph configs shared by the
  network simulators (and by the instrument station).
* :mod:`~physlearn.simulators.resistor` -- linear and non-linear (diode, transistor) resistor
  networks, their element laws and the SPICE cross-check.
* :mod:`~physlearn.simulators.xy` -- coupled phase oscillators (XY model).
* :mod:`~physlearn.simulators.quantum` -- spin-1/2 machines from Pauli strings, Rydberg arrays,
  trapped ions, finite shots, sensors and the cluster-Ising dataset.
* :mod:`~physlearn.simulators.harmonic` -- the quantum harmonic (elastic) network.

Each family keeps its config classes (the ``system.kind`` entry points) in a light ``config``
module that imports its simulator lazily.
"""
