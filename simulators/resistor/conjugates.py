"""Conjugates and energy of a resistor network from node voltages alone (V), as a bench measures
them: the physics a station borrows from the simulator it mirrors (``system.mirrors``).

For trainable edges e = (i, j) of conductance g_e (S): dE/dg_e = 1/2 (V_i - V_j)^2 (V^2 = W/S);
for transistor edges with trainable gate V_G,e: dE/dV_G,e = 1/2 (V_i - V_j)^2 g'(V_G,e) (W/V).
Energy (co-content, W): E = 1/2 sum_e g_e (V_i - V_j)^2 + sum_d Phi(v_d): Phi = 0 for ideal diodes
(the indicator of the feasible set, which a measured equilibrium satisfies), the Shockley
co-content for Shockley diodes -- with a series resistance R_s the junction voltage v_j of the
unmeasured internal node solves v_j + R_s I(v_j) = v_d (monotone; bisection) and the pair
contributes Phi(v_j) + (v_d - v_j)^2 / (2 R_s).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from physlearn.simulators.resistor.elements import DiodeModel
from physlearn.system import FloatArray


def checked_voltages(voltages: ArrayLike, n_nodes: int) -> FloatArray:
    """``voltages`` as a real ``(batch, n_nodes)`` float array (V); ValueError otherwise."""
    v = np.asarray(voltages)
    if v.ndim != 2 or v.shape[1] != n_nodes or v.shape[0] < 1:
        raise ValueError(f"voltages must have shape (batch, {n_nodes}), got {v.shape}")
    if np.iscomplexobj(v) or not np.all(np.isfinite(v)):
        raise ValueError("voltages must be real and finite (V)")
    return v.astype(np.float64)


def checked_values(values: ArrayLike, n_edges: int, what: str) -> FloatArray:
    """One finite value per edge (``what`` names them in the error)."""
    g = np.asarray(values, dtype=np.float64)
    if g.shape != (n_edges,) or not np.all(np.isfinite(g)):
        raise ValueError(f"{what} must be {n_edges} finite values, got shape {g.shape}")
    return g


def half_square_drops(edges: np.ndarray, voltages: FloatArray) -> FloatArray:
    """1/2 (V_i - V_j)^2 ``(batch, E)`` (V^2) of every edge (i, j) of ``edges`` ``(E, 2)``."""
    dv = voltages[:, edges[:, 0]] - voltages[:, edges[:, 1]]
    return np.asarray(0.5 * dv * dv)


def diode_energy(model: DiodeModel, v: FloatArray) -> FloatArray:
    """Co-content (W) of diodes at branch voltages ``v`` ``(batch, m)``, summed per pattern:
    0 for ideal diodes, the Shockley co-content (with a series resistance, see the module)."""
    if model.kind == "ideal" or v.size == 0:
        return np.zeros(v.shape[0])
    rs = model.series_resistance
    if rs <= 0:
        return np.asarray(model.cocontent(v).sum(axis=1))
    lo = np.minimum(v, 0.0)
    hi = np.maximum(v, 0.0) + rs * model.saturation_current
    for _ in range(100):  # v_j + R_s I(v_j) is increasing in v_j: bisection to float precision
        mid = 0.5 * (lo + hi)
        above = mid + rs * model.current(mid) > v
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    vj = 0.5 * (lo + hi)
    return np.asarray((model.cocontent(vj) + 0.5 * (v - vj) ** 2 / rs).sum(axis=1))
