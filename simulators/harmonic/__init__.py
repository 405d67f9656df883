"""Quantum harmonic (elastic) networks: :mod:`.elastic` (coupled oscillators in their exact
Gaussian ground or thermal state) and :mod:`.config` (``system: kind: elastic``). Conventions:
``docs/physics.md`` (§Elastic network).
"""
