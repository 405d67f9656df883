"""Coupled phase oscillators (XY model): :mod:`.system` (the network, energy, conjugates and
nudges), :mod:`.relax` (batched Newton relaxation and Langevin sampling) and :mod:`.config`
(``system: kind: xy``). Conventions: ``docs/physics.md`` (§XY oscillators).
"""
