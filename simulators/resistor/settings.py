"""Settings and the trainable parameter group of the non-linear resistor network
(:class:`~physlearn.simulators.resistor.nonlinear.NonlinearResistorNetwork`): the checks of its
solver settings and bounds, and the group it trains (edge conductances in S, or transistor gate
voltages in V)."""

from __future__ import annotations

import math

from physlearn.simulators.resistor.circuit import Element
from physlearn.system import ParameterGroup


def check_settings(
    element: str, backend: str, tol: float, max_iter: int, bounds: tuple[float, float]
) -> tuple[float, float]:
    """Refuse invalid solver settings and parameter bounds; return ``(lower, upper)``."""
    if element not in ("resistor", "transistor"):
        raise ValueError(f"element must be 'resistor' or 'transistor', got {element!r}")
    if backend not in ("auto", "dense", "sparse"):
        raise ValueError(f"backend must be 'auto', 'dense' or 'sparse', got {backend!r}")
    if not (math.isfinite(tol) and 0 < tol < 1e-3):
        raise ValueError(f"tol must be a relative tolerance in (0, 1e-3), got {tol!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    lower, upper = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
        raise ValueError(f"bounds need finite lower < upper, got {bounds}")
    if element == "resistor" and lower <= 0:
        raise ValueError(
            f"conductance bounds need 0 < lower (a resistor's conductance is positive), "
            f"got {bounds} S"
        )
    return lower, upper


def parameter_group(
    element: Element, lower: float, upper: float, resolution: float, n_edges: int
) -> ParameterGroup:
    """The trainable group: edge conductances (S) or transistor gate voltages (V)."""
    name, unit, long_name, e_unit = (
        ("conductance", "S", "edge conductance", "W")
        if element == "resistor"
        else ("gate", "V", "transistor gate voltage", "W")
    )
    group = ParameterGroup(
        name=name,
        shape=(n_edges,),
        dims=("edge",),
        lower=lower,
        upper=upper,
        unit=unit,
        resolution=float(resolution),
        long_name=long_name,
        energy_unit=e_unit,
    )
    if resolution < 0 or not math.isfinite(resolution):
        raise ValueError(f"resolution must be finite and >= 0, got {resolution!r}")
    return group
