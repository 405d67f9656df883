"""Trapped-ion chain emulator: a long-range transverse-field Ising model (dimensionless units).

    H = sum_{i<j} J_ij X_i X_j + sum_i B_i Z_i  (+ h_x sum_i X_i, fixed, optional),

with ``J_ij = J0 / |i - j|**alpha`` (``0 <= alpha <= 3``: alpha -> 0 is all-to-all, large alpha
nearest-neighbour) or every ``J_ij`` trainable on its own. Energies, couplings and fields share
one unit (e.g. units of a reference J).

Trainable groups: ``field`` (ion,) = B_i, and either ``coupling`` () = J0 plus optionally
``alpha`` () (power law), or ``coupling`` (pair,) = J_ij for the pairs ``i < j`` in row-major
order (individual). Conjugates: ``dH/dB_i = Z_i``; ``dH/dJ0 = sum d_ij**-alpha X_i X_j``;
``dH/dalpha = -J0 sum ln(d_ij) d_ij**-alpha X_i X_j``; ``dH/dJ_ij = X_i X_j``.
Inputs add to the fields of the input ions; outputs are ``<Z_i>`` of the output ions followed by
``<X_i X_j>`` of the listed pairs.

Without ``h_x`` the model conserves the parity ``prod_i Z_i``: ground states of the two parity
sectors cross as parameters change, and at a crossing the ground state is degenerate (the solver
refuses it). A small fixed ``h_x`` (a carrier drive) turns crossings into avoided crossings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from physlearn.simulators.quantum.lanczos import SolverOptions
from physlearn.simulators.quantum.pauli import PauliBasis
from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
from physlearn.system import FloatArray, ParameterGroup, Params


def coupling_matrix(n: int, j0: float, alpha: float) -> FloatArray:
    """Symmetric ``(n, n)`` ``J_ij = j0 / |i - j|**alpha`` with zero diagonal."""
    idx = np.arange(n)
    d = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
    with np.errstate(divide="ignore"):
        j = j0 * np.where(d > 0, d, 1.0) ** (-alpha)
    j[idx, idx] = 0.0
    return np.asarray(j)


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _ion_groups(
    n: int,
    couplings: Literal["power_law", "individual"],
    train_alpha: bool,
    coupling_bound: float,
    field_bound: float,
    alpha_range: tuple[float, float],
) -> list[ParameterGroup]:
    """The chain's parameter groups: the fields ``B_i``, then every coupling ``J_ij``
    (``individual``) or the power law's scale ``J0`` and, when trained, its exponent."""
    groups = [
        ParameterGroup(
            "field",
            (n,),
            ("ion",),
            -field_bound,
            field_bound,
            "1",
            long_name="local field B_i",
            energy_unit="1",
        )
    ]
    if couplings == "individual":
        groups.append(
            ParameterGroup(
                "coupling",
                (n * (n - 1) // 2,),
                ("pair",),
                -coupling_bound,
                coupling_bound,
                "1",
                long_name="Ising coupling J_ij (i < j, row-major)",
                energy_unit="1",
            )
        )
    else:
        groups.append(
            ParameterGroup(
                "coupling",
                (),
                (),
                -coupling_bound,
                coupling_bound,
                "1",
                long_name="coupling scale J0 of J_ij = J0/|i-j|^alpha",
                energy_unit="1",
            )
        )
        if train_alpha:
            groups.append(
                ParameterGroup(
                    "alpha",
                    (),
                    (),
                    alpha_range[0],
                    alpha_range[1],
                    "1",
                    long_name="power-law exponent alpha",
                    energy_unit="1",
                )
            )
    return groups


class IonChainModel(HamiltonianModel):
    """Operators of the chain; the power-law coupling is non-linear in ``alpha``."""

    def __init__(
        self,
        n_ions: int,
        input_ions: Sequence[int],
        output_ions: Sequence[int],
        correlators: Sequence[tuple[int, int]],
        couplings: Literal["power_law", "individual"],
        train_alpha: bool,
        coupling_bound: float,
        field_bound: float,
        alpha_range: tuple[float, float] = (0.0, 3.0),
        x_field: float = 0.0,
    ) -> None:
        n = n_ions
        pairs = _pairs(n)
        self.pairs = pairs
        self.distance = np.array([j - i for i, j in pairs], dtype=np.float64)
        labels = [f"Z{i}" for i in range(n)] + [f"X{i} X{j}" for i, j in pairs]
        labels += [f"X{i}" for i in range(n)] if x_field else []
        basis = PauliBasis.from_labels(labels, n)
        self._zz_cols = np.array([basis.index(f"X{i} X{j}") for i, j in pairs], dtype=np.int64)
        for a in (*input_ions, *output_ions, *(k for p in correlators for k in p)):
            if not 0 <= a < n:
                raise ValueError(f"ion index {a} outside 0..{n - 1}")
        fields = np.stack([basis.vector([(1.0, f"Z{i}")]) for i in range(n)])
        self.kind = couplings
        groups = _ion_groups(n, couplings, train_alpha, coupling_bound, field_bound, alpha_range)
        param_ops: dict[str, FloatArray] = {"field": fields}
        if couplings == "individual":
            param_ops["coupling"] = (
                np.stack([basis.vector([(1.0, f"X{i} X{j}")]) for i, j in pairs])
                if pairs
                else np.zeros((0, basis.size))
            )
        self.train_alpha = train_alpha and couplings == "power_law"
        #: exponent used when alpha is not trained
        self.fixed_alpha = 1.0
        outs = [basis.vector([(1.0, f"Z{a}")]) for a in output_ions]
        outs += [basis.vector([(1.0, f"X{min(i, j)} X{max(i, j)}")]) for i, j in correlators]
        if not outs:
            raise ValueError("an ion chain needs at least one output")
        h0 = basis.vector([(x_field, f"X{i}") for i in range(n)]) if x_field else None
        super().__init__(
            basis,
            np.zeros(basis.size) if h0 is None else h0,
            np.stack([fields[a] for a in input_ions]) if input_ions else np.zeros((0, basis.size)),
            np.stack(outs),
            tuple(groups),
            param_ops,
            input_labels=tuple(f"B_in[{a}]" for a in input_ions),
            output_labels=tuple(f"Z[{a}]" for a in output_ions)
            + tuple(f"X[{i}]X[{j}]" for i, j in correlators),
        )

    def _alpha(self, params: Params) -> float:
        return float(params["alpha"]) if self.train_alpha else self.fixed_alpha

    def coefficients(self, params: Params) -> FloatArray:
        c = self.h0 + params["field"].reshape(-1) @ self.param_ops["field"]
        if self.kind == "individual":
            return c + params["coupling"].reshape(-1) @ self.param_ops["coupling"]
        c[self._zz_cols] += float(params["coupling"]) * self.distance ** (-self._alpha(params))
        return c

    def jacobian(self, params: Params) -> dict[str, FloatArray]:
        jac = {"field": self.param_ops["field"]}
        if self.kind == "individual":
            jac["coupling"] = self.param_ops["coupling"]
            return jac
        alpha = self._alpha(params)
        w = self.distance ** (-alpha)
        dj0 = np.zeros((1, self.basis.size))
        dj0[0, self._zz_cols] = w
        jac["coupling"] = dj0
        if self.train_alpha:
            da = np.zeros((1, self.basis.size))
            da[0, self._zz_cols] = -float(params["coupling"]) * np.log(self.distance) * w
            jac["alpha"] = da
        return jac


class IonChain(QuantumSystem):
    """A trapped-ion chain in its ground (or Gibbs) state; see the module docstring."""

    def __init__(
        self,
        n_ions: int,
        *,
        input_ions: Sequence[int] = (),
        output_ions: Sequence[int] = (),
        correlators: Sequence[tuple[int, int]] = (),
        couplings: Literal["power_law", "individual"] = "power_law",
        alpha: float = 1.0,
        train_alpha: bool = False,
        coupling_bound: float = 2.0,
        field_bound: float = 2.0,
        x_field: float = 0.0,
        params: Params | None = None,
        temperature: float = 0.0,
        shots: int = 0,
        solver: SolverOptions | None = None,
    ) -> None:
        model = IonChainModel(
            n_ions,
            input_ions,
            output_ions,
            correlators,
            couplings,
            train_alpha,
            coupling_bound,
            field_bound,
            x_field=x_field,
        )
        model.fixed_alpha = float(alpha)
        self.input_ions = tuple(input_ions)
        if params is None:
            params = {"field": np.full(n_ions, 0.5 * field_bound)}
            if couplings == "individual":
                params["coupling"] = coupling_matrix(n_ions, 1.0, alpha)[np.triu_indices(n_ions, 1)]
            else:
                params["coupling"] = np.array(1.0)
                if train_alpha:
                    params["alpha"] = np.array(alpha)
        super().__init__(
            model, params, temperature=temperature, shots=shots, solver=solver, name="ions"
        )

    def coupling_matrix(self) -> FloatArray:
        """The current symmetric ``J_ij`` (zero diagonal)."""
        m = self.model
        assert isinstance(m, IonChainModel)
        n = m.basis.n_qubits
        j = np.zeros((n, n))
        iu = np.triu_indices(n, 1)
        j[iu] = m.coefficients(self._params)[m._zz_cols]
        return j + j.T
