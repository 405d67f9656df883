"""Config of the trapped-ion chain: ``kind: ions``.

Validation happens when the config is loaded (nothing is built): ion indices, coupling and field
bounds. The Hamiltonian ``H = sum_{i<j} J_ij X_i X_j + sum B_i Z_i`` (dimensionless) and its
couplings are those of ``docs/physics.md`` (§Trapped-ion chains). ``build`` imports
:mod:`physlearn.simulators.quantum.ions` lazily; what every Pauli machine shares (temperature,
shots, eigensolver, sensitivity) is
:class:`~physlearn.simulators.quantum.config.PauliMachineConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from physlearn.simulators.quantum.config import PauliMachineConfig

if TYPE_CHECKING:
    from physlearn.simulators.quantum.ions import IonChain


class IonsConfig(PauliMachineConfig):
    """Trapped-ion chain: H = sum_{i<j} J_ij X_i X_j + sum B_i Z_i (dimensionless)."""

    kind: Literal["ions"] = Field("ions", description="system kind: trapped-ion chain")
    n_ions: int = Field(ge=2, le=20, description="ions in the chain")
    couplings: Literal["power_law", "individual"] = Field(
        "power_law", description="J_ij = J0/|i-j|^alpha (trainable J0) or every J_ij trainable"
    )
    j0: float = Field(1.0, description="initial J0 (power law) / J0 of the initial J_ij")
    alpha: float = Field(1.0, ge=0, le=3, description="power-law exponent alpha (0 <= alpha <= 3)")
    train_alpha: bool = Field(False, description="power law: also train alpha")
    coupling_bound: float = Field(2.0, gt=0, description="|J| bound (energy unit)")
    field_bound: float = Field(2.0, gt=0, description="|B_i| bound (energy unit)")
    init_field: float | list[float] = Field(0.5, description="initial B_i")
    x_field: float = Field(
        0.0,
        description="fixed h_x sum X_i (energy unit); breaks the Z-parity symmetry so that "
        "level crossings become avoided crossings",
    )
    input_ions: list[int] = Field(default_factory=list, description="ions whose field is an input")
    output_ions: list[int] = Field(default_factory=list, description="ions read out as <Z_i>")
    correlators: list[tuple[int, int]] = Field(
        default_factory=list, description="pairs read out as <X_i X_j>"
    )

    @model_validator(mode="after")
    def _check(self) -> IonsConfig:
        n = self.n_ions
        for name, ions in (
            ("input_ions", self.input_ions),
            ("output_ions", self.output_ions),
            ("correlators", [a for p in self.correlators for a in p]),
        ):
            bad = [a for a in ions if not 0 <= a < n]
            if bad:
                raise ValueError(f"{name} refers to ion {bad[0]}, outside 0..{n - 1}")
        if any(i == j for i, j in self.correlators):
            raise ValueError("a correlator needs two different ions")
        if not self.output_ions and not self.correlators:
            raise ValueError("give output_ions and/or correlators (the machine needs outputs)")
        if abs(self.j0) > self.coupling_bound:
            raise ValueError(f"j0 = {self.j0} exceeds coupling_bound = {self.coupling_bound}")
        f = np.asarray(self.init_field, float)
        if f.ndim and f.shape != (n,):
            raise ValueError(f"init_field needs {n} values")
        if np.abs(f).max() > self.field_bound:
            raise ValueError(f"init_field exceeds field_bound = {self.field_bound}")
        return self

    def n_qubits(self) -> int:
        return self.n_ions

    def input_size(self) -> int:
        return len(self.input_ions)

    def machine_output_labels(self) -> list[str]:
        return [f"Z[{a}]" for a in self.output_ions] + [
            f"X[{i}]X[{j}]" for i, j in self.correlators
        ]

    def build_machine(self, seed: int) -> IonChain:
        from physlearn.simulators.quantum.ions import IonChain, coupling_matrix

        n = self.n_ions
        params = {"field": np.array(np.broadcast_to(np.asarray(self.init_field, float), (n,)))}
        if self.couplings == "individual":
            params["coupling"] = coupling_matrix(n, self.j0, self.alpha)[np.triu_indices(n, 1)]
        else:
            params["coupling"] = np.array(self.j0)
            if self.train_alpha:
                params["alpha"] = np.array(self.alpha)
        return IonChain(
            n,
            input_ions=self.input_ions,
            output_ions=self.output_ions,
            correlators=[tuple(p) for p in self.correlators],
            couplings=self.couplings,
            alpha=self.alpha,
            train_alpha=self.train_alpha,
            coupling_bound=self.coupling_bound,
            field_bound=self.field_bound,
            x_field=self.x_field,
            params=params,
            temperature=self.temperature,
            shots=self.shots,
            solver=self.solver.options(),
        )
