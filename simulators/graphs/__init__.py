"""Graphs of the network simulators: :mod:`.generators` builds the nodes, edges, ports and
drawing positions (layered, lattice, all-to-all, explicit edge lists) and :mod:`.config` holds
the ``system.graph`` configs that resistor, diode-resistor, XY, elastic and station machines
share. Node and edge numbering conventions are in ``docs/physics.md`` (§XY oscillators, Graphs).
"""
