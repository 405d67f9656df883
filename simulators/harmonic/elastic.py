"""Quantum elastic network: coupled harmonic oscillators in their Gaussian ground state.

Scellier, arXiv:2406.00879 (quantum EP for harmonic networks). With hbar = 1 and dimensionless
units,

    H = sum_i p_i**2 / (2 m_i) + 1/2 sum_(i,j) k_ij (x_i - x_j)**2 + 1/2 sum_i k_i x_i**2
        - sum_i f_i x_i
      = p^T M^-1 p / 2 + x^T K x / 2 - f^T x.

The ground state (T = 0) is Gaussian and exact: mean ``mu = K^-1 f`` (the classical static
equilibrium) and covariance ``C = 1/2 M^-1/2 W^-1 M^-1/2``, ``W = (M^-1/2 K M^-1/2)**(1/2)``
(normal-mode frequencies); at ``T > 0`` (k_B = 1) ``W^-1`` becomes ``W^-1 coth(W / 2T)``.
Energy ``E0 = tr(W)/2 - f^T K^-1 f / 2`` (free energy at T > 0).

* Trainable: ``spring`` (edge,) = k_ij and ``anchor`` (node,) = k_i, both > 0.
* Conjugates (Hellmann--Feynman): ``dE/dk_ij = <(x_i - x_j)**2>/2``, ``dE/dk_i = <x_i**2>/2``.
* Inputs: forces ``f_i`` on the input oscillators (``-f_i x_i`` in H). Outputs: ``<x_o>``.
* Nudge (``error``): ``+beta sum_o eps_o x_o``, i.e. a force ``-beta eps_o`` on the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg as la

from physlearn.losses import Loss
from physlearn.system import (
    Equilibrium,
    FloatArray,
    Nudge,
    NudgeKind,
    ParameterGroup,
    Params,
    PhysicalSystem,
    Port,
    check_parameters,
)


class ElasticNetwork(PhysicalSystem):
    """A quantum harmonic (elastic) network; see the module docstring.

    Args:
        n_nodes: oscillators.
        edges: springs as ``(i, j)`` node pairs.
        input_nodes, output_nodes: oscillators driven by the input forces / read out.
        masses: ``(n_nodes,)`` masses (default 1).
        bounds: ``(k_min, k_max)`` > 0 for every spring and anchor constant.
        init: ``(low, high)`` range of the uniform random initialisation.
        temperature: ``T >= 0``.
        seed: initialisation seed.
    """

    supported_nudges: frozenset[NudgeKind] = frozenset({"error"})
    supports_complex_nudge = False
    native_cost = None

    def __init__(
        self,
        n_nodes: int,
        edges: Sequence[tuple[int, int]],
        input_nodes: Sequence[int],
        output_nodes: Sequence[int],
        *,
        masses: Sequence[float] | None = None,
        bounds: tuple[float, float] = (0.05, 5.0),
        init: tuple[float, float] | None = None,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0 < bounds[0] < bounds[1]:
            raise ValueError("spring bounds must satisfy 0 < k_min < k_max")
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        self.n_nodes = n_nodes
        self.edges = np.array(edges, dtype=np.int64).reshape(-1, 2)
        for a in (*self.edges.ravel(), *input_nodes, *output_nodes):
            if not 0 <= a < n_nodes:
                raise ValueError(f"node {a} outside 0..{n_nodes - 1}")
        self.input_nodes = np.array(input_nodes, dtype=np.int64)
        self.output_nodes = np.array(output_nodes, dtype=np.int64)
        if len(set(output_nodes)) != len(self.output_nodes):
            raise ValueError("output nodes must be distinct")
        self.masses = np.ones(n_nodes) if masses is None else np.asarray(masses, float)
        if self.masses.shape != (n_nodes,) or np.any(self.masses <= 0):
            raise ValueError("masses must be n_nodes positive values")
        self.temperature = float(temperature)
        self.bounds = bounds
        lo, hi = init or bounds
        rng = np.random.default_rng(seed)
        self._groups = (
            ParameterGroup(
                "spring",
                (len(self.edges),),
                ("edge",),
                bounds[0],
                bounds[1],
                "1",
                long_name="spring constant k_ij",
            ),
            ParameterGroup(
                "anchor",
                (n_nodes,),
                ("node",),
                bounds[0],
                bounds[1],
                "1",
                long_name="anchor spring constant k_i",
            ),
        )
        self._params: Params = {}
        self.set_parameters(
            {
                "spring": rng.uniform(lo, hi, len(self.edges)),
                "anchor": rng.uniform(lo, hi, n_nodes),
            }
        )

    # -- description -------------------------------------------------------------------------
    @property
    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        return self._groups

    @property
    def inputs(self) -> Port:
        return Port(
            len(self.input_nodes),
            "1",
            tuple(f"f[{a}]" for a in self.input_nodes),
            "forces on the input oscillators",
        )

    @property
    def outputs(self) -> Port:
        return Port(
            len(self.output_nodes),
            "1",
            tuple(f"x[{a}]" for a in self.output_nodes),
            "mean displacements <x_o>",
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "n_nodes": self.n_nodes,
            "n_edges": int(len(self.edges)),
            "temperature": self.temperature,
        }

    def set_parameters(self, params: Params) -> Params:
        self._params = check_parameters(self._groups, params)
        return self.get_parameters()

    def get_parameters(self) -> Params:
        return {k: v.copy() for k, v in self._params.items()}

    # -- physics -----------------------------------------------------------------------------
    def stiffness(self) -> FloatArray:
        """``K`` = spring Laplacian + diag(anchor)."""
        k = np.diag(self._params["anchor"].copy())
        i, j = self.edges[:, 0], self.edges[:, 1]
        s = self._params["spring"]
        np.add.at(k, (i, i), s)
        np.add.at(k, (j, j), s)
        np.add.at(k, (i, j), -s)
        np.add.at(k, (j, i), -s)
        return k

    def covariance(self) -> tuple[FloatArray, FloatArray]:
        """Position covariance ``C`` (same for every input) and normal-mode frequencies."""
        minv_sqrt = 1.0 / np.sqrt(self.masses)
        kt = self.stiffness() * minv_sqrt[:, None] * minv_sqrt[None, :]
        w2, u = np.linalg.eigh(kt)
        if w2.min() <= 0:
            raise ValueError("stiffness matrix is not positive definite")
        w = np.sqrt(w2)
        occ = 1.0 / w
        if self.temperature > 0:
            occ = occ / np.tanh(w / (2.0 * self.temperature))
        c = 0.5 * (u * occ) @ u.T
        return c * minv_sqrt[:, None] * minv_sqrt[None, :], w

    def _forces(self, inputs: FloatArray, nudge: Nudge | None) -> FloatArray:
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.ndim != 2 or inputs.shape[1] != len(self.input_nodes):
            raise ValueError(f"inputs must have shape (batch, {len(self.input_nodes)})")
        f = np.zeros((inputs.shape[0], self.n_nodes))
        f[:, self.input_nodes] += inputs
        if nudge is not None and nudge.beta != 0:
            if nudge.kind != "error":
                raise ValueError("ElasticNetwork realises only 'error' nudges")
            beta = complex(nudge.beta)
            if beta.imag != 0:
                raise ValueError("ElasticNetwork needs a real beta")
            f[:, self.output_nodes] -= beta.real * np.asarray(nudge.values, dtype=np.float64)
        return f

    def equilibrate(
        self,
        inputs: FloatArray,
        nudge: Nudge | None = None,
        warm_start: Any = None,
        rng: np.random.Generator | None = None,
    ) -> Equilibrium:
        """Exact Gaussian state for every sample (one Cholesky factorisation per call)."""
        f = self._forces(inputs, nudge)
        k = self.stiffness()
        chol = la.cho_factor(k)
        mu = la.cho_solve(chol, f.T).T  # (batch, n)
        cov, w = self.covariance()
        i, j = self.edges[:, 0], self.edges[:, 1]
        var_edge = cov[i, i] + cov[j, j] - 2 * cov[i, j]
        spring = 0.5 * ((mu[:, i] - mu[:, j]) ** 2 + var_edge[None, :])
        anchor = 0.5 * (mu**2 + np.diag(cov)[None, :])
        if self.temperature > 0:
            t = self.temperature
            zero_point = float(np.sum(t * np.log(2 * np.sinh(w / (2 * t)))))
        else:
            zero_point = 0.5 * float(w.sum())
        energy = zero_point - 0.5 * np.einsum("bi,bi->b", f, mu)
        resid = np.abs(mu @ k - f).max(axis=1)
        batch = f.shape[0]
        return Equilibrium(
            outputs=mu[:, self.output_nodes],
            conjugates={"spring": spring, "anchor": anchor},
            state=None,
            residual=resid,
            iterations=np.zeros(batch, dtype=np.int64),
            shots=0,
            energy=energy,
            observables={"position": mu},
            converged=np.ones(batch, dtype=bool),
        )

    def exact_gradient(self, inputs: FloatArray, targets: FloatArray, loss: Loss) -> Params:
        """Batch-mean dL/dk: ``dL/dk_ij = -(u_i - u_j)(mu_i - mu_j)``, ``dL/dk_i = -u_i mu_i``
        with ``u = K^-1 eps`` (eps on the outputs). Quantum fluctuations do not depend on the
        forces, so they drop out of the gradient of any loss on ``<x_o>``."""
        f = self._forces(inputs, None)
        chol = la.cho_factor(self.stiffness())
        mu = la.cho_solve(chol, f.T).T
        eps = np.zeros_like(mu)
        eps[:, self.output_nodes] = loss.grad(mu[:, self.output_nodes], targets)
        u = la.cho_solve(chol, eps.T).T
        i, j = self.edges[:, 0], self.edges[:, 1]
        return {
            "spring": -np.mean((u[:, i] - u[:, j]) * (mu[:, i] - mu[:, j]), axis=0),
            "anchor": -np.mean(u * mu, axis=0),
        }
