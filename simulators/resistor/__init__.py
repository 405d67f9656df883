"""Resistor networks: :mod:`.linear` (linear network, one sparse LU per update) and the
non-linear network with diodes and transistor edges -- :mod:`.circuit` (element bookkeeping and
Kron reduction), :mod:`.solvers` (Newton, active-set, line search) and :mod:`.nonlinear` (the
system and its exact gradient) -- with the element laws in :mod:`.elements`, the ngspice
cross-check in :mod:`.spice` and the configs in :mod:`.config`. Physics and sign conventions:
``docs/physics.md`` (§Resistor networks, §Non-linear resistor networks).
"""
