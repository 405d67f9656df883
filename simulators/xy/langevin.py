"""Overdamped Langevin sampling of the XY oscillator network at temperature ``T``.

Samples ``p(phi) ~ exp(-F/T)`` over the free nodes for a batch of copies (thermal EP, see
``docs/physics.md``, §XY oscillators and §Thermal EP): the proposal is the Euler-Maruyama step of
``dphi = -dF/dphi dt + sqrt(2 T) dW``, in units of the inverse mobility with ``k_B = 1``,
optionally corrected by a Metropolis-Hastings test (MALA) so that ``exp(-F/T)`` is the exact
stationary law. ``F`` and its gradient come from :class:`~physlearn.simulators.xy.field.XYField`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physlearn.simulators.xy.field import FloatArray, XYField


@dataclass(frozen=True)
class LangevinSettings:
    """Overdamped Langevin sampling at temperature ``T`` (energy units, k_B = 1).

    Attributes:
        dt: time step (units of inverse mobility).
        burn_in: steps discarded before the first sample.
        n_samples: samples kept per copy.
        thin: steps between kept samples.
        metropolis: accept/reject each Euler-Maruyama step with the Metropolis-Hastings rule
            (MALA), which makes ``exp(-F/T)`` the exact stationary law; ``False`` integrates the
            plain Euler-Maruyama scheme, whose stationary law is biased by O(dt).
    """

    dt: float = 0.05
    burn_in: int = 200
    n_samples: int = 200
    thin: int = 5
    metropolis: bool = True


@dataclass
class LangevinResult:
    """``samples`` ``(B, S, n)`` phases (not wrapped), ``acceptance`` ``(B,)`` share of
    accepted proposals (1 without Metropolis), ``phi`` the last state ``(B, n)``."""

    samples: FloatArray
    acceptance: FloatArray
    phi: FloatArray


def langevin(
    field: XYField,
    phi0: FloatArray,
    temperature: float,
    settings: LangevinSettings,
    rng: np.random.Generator,
) -> LangevinResult:
    """Sample ``p(phi) ~ exp(-F(phi)/T)`` over the free nodes, starting from ``phi0`` ``(B, n)``.

    The proposal is the Euler-Maruyama step of ``dphi = -dF/dphi dt + sqrt(2 T) dW`` on free
    nodes; with ``settings.metropolis`` it is accepted with probability
    ``min(1, exp(-(F' - F)/T) q(phi|phi') / q(phi'|phi))`` (Roberts & Tweedie 1996), all copies
    in parallel.
    """
    if temperature <= 0:
        raise ValueError("Langevin sampling needs T > 0")
    phi = np.array(phi0, dtype=np.float64, copy=True)
    n_b = phi.shape[0]
    rows = np.arange(n_b, dtype=np.int64)
    fi = field.free_idx
    dt = settings.dt
    sig = np.sqrt(2.0 * temperature * dt)
    f_cur, g_full = field.energy_gradient(phi, rows)
    g_cur = g_full[:, fi]
    total = settings.burn_in + settings.n_samples * settings.thin
    out = np.empty((n_b, settings.n_samples, phi.shape[1]))
    accepted = np.zeros(n_b)
    k = 0
    for step in range(total):
        noise = rng.normal(size=(n_b, fi.size))
        prop = phi.copy()
        prop[:, fi] += -dt * g_cur + sig * noise
        f_new, g_new_full = field.energy_gradient(prop, rows)
        g_new = g_new_full[:, fi]
        if settings.metropolis:
            fwd = np.sum(noise**2, axis=1) * 0.5  # -log q(prop|phi) up to a constant
            back_d = phi[:, fi] - prop[:, fi] + dt * g_new
            bwd = np.sum(back_d**2, axis=1) / (4.0 * temperature * dt)
            with np.errstate(invalid="ignore", over="ignore"):
                log_a = -(f_new - f_cur) / temperature - bwd + fwd
            acc = np.isfinite(f_new) & (np.log(rng.random(n_b)) < log_a)
        else:
            acc = np.ones(n_b, dtype=bool)
        phi[acc] = prop[acc]
        f_cur = np.where(acc, f_new, f_cur)
        g_cur[acc] = g_new[acc]
        accepted += acc
        if (
            step >= settings.burn_in
            and (step - settings.burn_in) % settings.thin == settings.thin - 1
        ):
            out[:, k] = phi
            k += 1
    return LangevinResult(out, accepted / max(total, 1), phi)
