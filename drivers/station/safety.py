"""The safety envelope: what may ever be sent to an instrument, and the safe state.

Three layers keep every value inside the envelope of the config (:class:`~physlearn.drivers.
config.Limits` per source role, ``tap_limits`` for the weights):

1. :class:`RoleEnvelope.check` validates every value of an operation *before the first write*
   of that operation and raises :class:`~physlearn.drivers.errors.EnvelopeViolation` (a
   ``ValueError`` naming the role, the channel, the value and the limits). Nothing is clipped.
2. :func:`apply_to_parameter` installs the envelope on the qcodes parameter itself: its validator
   ``vals`` becomes the intersection of the driver's hardware range and the envelope, so qcodes
   refuses anything outside even when called directly (a notebook, a script); its ``step`` and
   ``inter_delay`` make qcodes ramp every change.
3. The ramp step given to qcodes is ``step * (1 - 1e-9) - 1e-7 * max(|min|, |max|)``: qcodes'
   ramp may exceed its step by a relative 1e-10 (rounding in ``permissive_range``), and a driver
   sends each level rounded to its format (8 significant digits is common: the N6705B's
   ``{:.8G}``, a relative 5e-8 of each end of a ramp step), so no write ever moves a level by more
   than the envelope's ``step``.

The safe state (every source ramped to its ``safe`` level, then its output switched off; every
relay open) is reached by :meth:`StationSystem.safe_state`, which :meth:`close` calls on every
exit path; :func:`shield_interrupts` keeps a further Ctrl-C from cutting a ramp short.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from physlearn.drivers.errors import EnvelopeViolation
from physlearn.drivers.station.roles import Limits

#: qcodes may overshoot its ramp step by a relative 1e-10; the envelope step is shrunk by this.
STEP_MARGIN = 1e-9
#: a driver's rounding of the levels it sends: 8 significant digits, a relative 5e-8 per level,
#: 1e-7 of the largest level for the two ends of a step
FORMAT_MARGIN = 1e-7
_MIN = np.minimum.reduce
_MAX = np.maximum.reduce


@dataclass(frozen=True)
class RoleEnvelope:
    """The envelope of one role: ``limits`` in ``unit``, for the named ``channels``."""

    role: str
    unit: str
    limits: Limits
    channels: tuple[str, ...]

    def check(self, values: Any) -> np.ndarray:
        """Return ``values`` as floats, or raise :class:`EnvelopeViolation` (nothing clipped)."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape[-1:] != (len(self.channels),):
            raise EnvelopeViolation(
                f"{self.role}: expected {len(self.channels)} values per pattern, got shape "
                f"{v.shape}"
            )
        lo, hi = self.limits.min, self.limits.max
        # the ufuncs' reductions themselves (v.min()/v.max() add a Python layer; once a batch)
        if _MIN(v, axis=None) >= lo and _MAX(v, axis=None) <= hi:  # NaN fails both
            return v
        bad = ~np.isfinite(v) | (v < lo) | (v > hi)
        if bad.any():
            idx = np.argwhere(bad)[0]
            k = int(idx[-1])
            value = float(v[tuple(idx)])
            raise EnvelopeViolation(
                f"{self.role}: {value:g} {self.unit} for {self.channels[k]} is outside the "
                f"safety envelope [{lo:g}, {hi:g}] {self.unit} ({int(bad.sum())} value(s) "
                "refused; nothing was sent)"
            )
        return v

    def qcodes_step(self) -> float | None:
        s = self.limits.step
        if s is None:
            return None
        largest = max(abs(self.limits.min), abs(self.limits.max))
        return s * (1.0 - STEP_MARGIN) - FORMAT_MARGIN * largest


def check_taps(taps: np.ndarray, tap_limits: tuple[int, int], channels: Sequence[str]) -> None:
    """Refuse taps outside ``tap_limits`` (inclusive) before anything is written."""
    lo, hi = tap_limits
    bad = (taps < lo) | (taps > hi)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        name = channels[k] if k < len(channels) else f"device {k + 1}"
        raise EnvelopeViolation(
            f"weights: tap {int(taps[k])} for {name} is outside the safety envelope "
            f"[{lo}, {hi}] ({int(bad.sum())} value(s) refused; nothing was sent)"
        )


def _hardware_range(param: Any) -> tuple[float, float]:
    """(min, max) of a parameter's existing Numbers-like validator, or (-inf, inf)."""
    v = getattr(param, "vals", None)
    lo = getattr(v, "min_value", None)  # qcodes Numbers / Ints / Arrays: public bounds
    hi = getattr(v, "max_value", None)
    lo_f = -np.inf if lo is None else float(lo)
    hi_f = np.inf if hi is None else float(hi)
    return lo_f, hi_f


def apply_to_parameter(param: Any, env: RoleEnvelope, hardware: tuple[float, float]) -> None:
    """Install the envelope on a qcodes parameter (validator, ramp step, inter-delay).

    ``hardware`` is the driver's own range (read before the first call, see
    :func:`hardware_range`); the validator becomes its intersection with the envelope.
    """
    from qcodes import validators as vals

    lo = max(env.limits.min, hardware[0])
    hi = min(env.limits.max, hardware[1])
    param.vals = vals.Numbers(lo, hi)
    param.step = env.qcodes_step()
    param.inter_delay = env.limits.inter_delay


def hardware_range(param: Any) -> tuple[float, float]:
    """The driver's range of a level parameter (its validator before the envelope is applied)."""
    return _hardware_range(param)


def apply_tap_limits(param: Any, tap_limits: tuple[int, int], n: int) -> None:
    """Restrict an array-of-taps parameter's validator to ``tap_limits``."""
    from qcodes import validators as vals

    param.vals = vals.Arrays(
        min_value=tap_limits[0], max_value=tap_limits[1], shape=(n,), valid_types=(np.integer,)
    )


@contextmanager
def shield_interrupts(what: str) -> Iterator[None]:
    """Defer SIGINT while ``what`` runs (main thread only): a ramp to the safe state must not be
    cut short. A Ctrl-C received meanwhile is reported and handed to the previous handler once
    the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []

    def handler(signum: int, frame: Any) -> None:
        received.append((signum, frame))
        print(f"\nphyslearn: {what} in progress -- please wait", file=sys.stderr)

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if received and callable(old):
            old(*received[0])
