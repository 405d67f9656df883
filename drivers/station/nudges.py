"""The nudges a bench realises, as source levels (``docs/physics.md``, §Bench).

* ``error``: current I_o = -beta * eps_o (A) injected into output o by current-mode channels;
  beta real (W for an error eps in 1/V, S for eps in V), either sign;
* ``clamp``: output o held at the clamp voltage by a voltage source switched onto it (coupled
  learning); beta unused;
* ``target``: relays connect each output through the hardware nudge conductance beta_hw (S) to a
  source at the target voltage: E + beta_hw/2 sum (V_o - y_o)^2; the nudge's beta must equal
  beta_hw (a negative or different conductance cannot be built).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from physlearn.system import FloatArray, Nudge

if TYPE_CHECKING:
    from physlearn.drivers.station.system import StationSystem


def nudge_levels(
    system: StationSystem, nudge: Nudge | None, batch: int
) -> tuple[str | None, FloatArray | None]:
    """The nudge's kind and its source levels ``(batch, n_out)`` (A or V); (None, None) for the
    free phase. ``ValueError`` for a nudge this bench cannot realise."""
    if nudge is None:
        return None, None
    kind = nudge.kind
    if kind not in system.supported_nudges:
        raise ValueError(
            f"this bench cannot realise a {kind!r} nudge (configured: "
            f"{sorted(system.supported_nudges)})"
        )
    v = nudge.checked_values(batch, system.outputs.size)
    beta = complex(nudge.beta)
    if kind in ("error", "target") and beta.imag != 0:
        raise ValueError("an instrument cannot realise a complex nudge (holomorphic EP)")
    if kind == "error":
        return kind, np.asarray(-beta.real * v, dtype=np.float64)
    if kind == "target":
        target = system.config.nudge.target
        assert target is not None
        if not math.isclose(beta.real, target.conductance, rel_tol=1e-9):
            raise ValueError(
                f"target nudge: the bench's nudge conductance is {target.conductance:g} S; beta "
                f"= {beta.real:g} cannot be realised (a negative or different conductance would "
                "need other hardware; use one-sided EP with beta = the hardware value, or an "
                "error nudge)"
            )
    return kind, np.asarray(v, dtype=np.float64)
