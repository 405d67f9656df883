"""The XY model from its definition: parameter groups, energy, conjugates, parameter checks.

The closed forms of ``docs/physics.md`` (§XY oscillators), written straight from the energy
``E(phi) = -sum_e W_e cos(phi_i - phi_j) - sum_k h_k cos(phi_k - psi_k)`` (dimensionless, unit
``"1"``; phases and bias directions in rad), per row of a batch of phases. They serve
:class:`~physlearn.simulators.xy.system.XYNetwork` (its conjugates, groups and parameter checks)
and the tests as an oracle independent of the vectorised
:class:`~physlearn.simulators.xy.field.XYField`.
"""

from __future__ import annotations

import numpy as np

from physlearn.system import FloatArray, ParameterGroup, Params

GROUPS = ("coupling", "bias_amplitude", "bias_direction")


def xy_parameter_groups(
    n_nodes: int,
    n_edges: int,
    coupling_bounds: tuple[float, float],
    bias_amplitude_bounds: tuple[float, float],
) -> dict[str, ParameterGroup]:
    """Every XY parameter group by name: ``coupling`` ``(E,)`` on the edges, ``bias_amplitude``
    and ``bias_direction`` (periodic, rad) ``(n,)`` on the nodes, with the hardware's bounds."""
    return {
        "coupling": ParameterGroup(
            "coupling",
            (n_edges,),
            ("edge",),
            *coupling_bounds,
            unit="1",
            long_name="coupling W_ij of the edge's oscillators",
            energy_unit="1",
        ),
        "bias_amplitude": ParameterGroup(
            "bias_amplitude",
            (n_nodes,),
            ("node",),
            *bias_amplitude_bounds,
            unit="1",
            long_name="bias field amplitude h_i on the node",
            energy_unit="1",
        ),
        "bias_direction": ParameterGroup(
            "bias_direction",
            (n_nodes,),
            ("node",),
            -np.pi,
            np.pi,
            unit="rad",
            periodic=True,
            long_name="bias field direction psi_i on the node",
            energy_unit="1",
        ),
    }


def checked_parameters(groups: dict[str, ParameterGroup], params: Params) -> Params:
    """``params`` as float64 copies after checking each against its group: known name, shape,
    finite, within bounds (``KeyError``/``ValueError`` naming the group; never clipped)."""
    checked: Params = {}
    for name, value in params.items():
        if name not in groups:
            raise KeyError(f"no XY parameter group {name!r}; known: {list(GROUPS)}")
        g = groups[name]
        v = np.array(value, dtype=np.float64)
        if v.shape != g.shape:
            raise ValueError(f"{name}: expected shape {g.shape}, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name}: non-finite values")
        bad = np.flatnonzero((v < g.lower) | (v > g.upper))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"{name}[{k}] = {v.reshape(-1)[k]:g} {g.unit} is outside the bounds "
                f"[{g.lower:g}, {g.upper:g}] ({bad.size} such values); project before writing"
            )
        checked[name] = v
    return checked


def xy_energy(
    edges: np.ndarray,
    coupling: FloatArray,
    bias_amplitude: FloatArray,
    bias_direction: FloatArray,
    phi: FloatArray,
) -> FloatArray:
    """Reference ``E(phi)`` per row of ``phi`` ``(B, n)`` straight from the definition
    (dimensionless): ``-sum_e W_e cos(phi_i - phi_j) - sum_k h_k cos(phi_k - psi_k)``."""
    e = np.asarray(edges, dtype=np.int64)
    pair = -(np.cos(phi[:, e[:, 0]] - phi[:, e[:, 1]]) @ coupling)
    return np.asarray(pair - np.cos(phi - bias_direction) @ bias_amplitude)


def xy_conjugates(
    edges: np.ndarray, bias_amplitude: FloatArray, bias_direction: FloatArray, phi: FloatArray
) -> Params:
    """``dE/dtheta`` for every group at phases ``phi`` ``(B, n)``: ``coupling`` ``(B, E)`` =
    ``-cos(phi_i - phi_j)`` (1), ``bias_amplitude`` ``(B, n)`` = ``-cos(phi - psi)`` (1),
    ``bias_direction`` ``(B, n)`` = ``-h sin(phi - psi)`` (1/rad)."""
    e = np.asarray(edges, dtype=np.int64)
    d = phi - bias_direction
    return {
        "coupling": np.asarray(-np.cos(phi[:, e[:, 0]] - phi[:, e[:, 1]])),
        "bias_amplitude": np.asarray(-np.cos(d)),
        "bias_direction": np.asarray(-bias_amplitude * np.sin(d)),
    }
