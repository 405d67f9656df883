"""Physics-backed :class:`physlearn.system.PhysicalSystem` implementations.

Installed as ``physlearn.simulators``: resistor networks (:mod:`physlearn.simulators.resistor`),
graph generators shared by the network simulators (:mod:`physlearn.simulators.graphs`), and
further systems (XY oscillators, quantum emulators) added by their owners.
"""
