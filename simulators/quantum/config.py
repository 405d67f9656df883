"""Configs of the quantum spin machines: ``kind: quantum``, and what every Pauli machine shares.

Validation happens when the config is loaded (nothing is built): Pauli labels are parsed and
sizes checked. ``build`` imports the simulators lazily. The device machines built on
:class:`PauliMachineConfig` have their own modules: ``kind: rydberg`` in
:mod:`physlearn.simulators.quantum.rydberg_config` (device limits refused with a message naming
the violated limit), ``kind: ions`` in :mod:`physlearn.simulators.quantum.ions_config`. The
quantum harmonic network (``kind: elastic``) is configured in
:mod:`physlearn.simulators.harmonic.config`.

Every Pauli machine (``quantum``, ``rydberg``, ``ions``) takes an optional ``sensitivity`` block
(:class:`SensitivityConfig`): the outputs then become the sensitivities d<O_k>/d(lambda) of chosen
outputs to a sensed term ``lambda * B``, measured on two replicas at ``lambda0 +- delta``
(:mod:`physlearn.simulators.quantum.sensitivity`), so that a quantum sensor trains with the same
estimators, orchestrator and store.

Pauli terms accept a template: ``{pauli: "Z{i} X{i+1} Z{i+2}", coeff: -0.5, range: [0, 8]}``
expands to one string per ``i`` in ``[0, 8)``; ``period: 8`` wraps site indices modulo 8 (rings).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from physlearn.configbase import StrictModel, SystemConfigBase

if TYPE_CHECKING:
    from physlearn.simulators.quantum.lanczos import SolverOptions
    from physlearn.simulators.quantum.sensitivity import SensitivitySystem
    from physlearn.simulators.quantum.system import QuantumSystem

_TEMPLATE = re.compile(r"\{i\s*([+-]\s*\d+)?\}")


class PauliTerm(StrictModel):
    """``coeff * P`` for a Pauli string P ("X0 Z3", dense "XZI", or a template with {i})."""

    pauli: str = Field(description="Pauli label, e.g. 'X0 Z1' or template 'Z{i} Z{i+1}'")
    coeff: float = Field(1.0, description="real coefficient (energy unit of the machine)")
    range: tuple[int, int] | None = Field(
        None, description="template: expand for i in [start, stop) (site indices)"
    )
    period: int | None = Field(
        None, ge=1, description="template: site indices are taken modulo period (rings)"
    )

    @model_validator(mode="after")
    def _template(self) -> PauliTerm:
        has = bool(_TEMPLATE.search(self.pauli))
        if has and self.range is None:
            raise ValueError(f"template {self.pauli!r} needs a 'range: [start, stop]'")
        if not has and self.range is not None:
            raise ValueError(f"'range' given but {self.pauli!r} has no {{i}} placeholder")
        if self.range is not None and not 0 <= self.range[0] < self.range[1]:
            raise ValueError(f"range {list(self.range)} must satisfy 0 <= start < stop")
        return self

    def expand(self) -> list[tuple[float, str]]:
        if self.range is None:
            return [(self.coeff, self.pauli)]
        out = []
        for i in range(*self.range):

            def sub(m: re.Match[str], i: int = i) -> str:
                k = i + (int(m.group(1).replace(" ", "")) if m.group(1) else 0)
                return str(k % self.period if self.period else k)

            out.append((self.coeff, _TEMPLATE.sub(sub, self.pauli)))
        return out


def _expand(terms: list[PauliTerm]) -> list[tuple[float, str]]:
    return [t for term in terms for t in term.expand()]


def _check_labels(terms: list[tuple[float, str]], n: int, where: str) -> None:
    from physlearn.simulators.quantum.pauli import parse_pauli

    for _, lab in terms:
        try:
            parse_pauli(lab, n)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


class TrainableTerm(StrictModel):
    """A trainable operator ``theta_j A_j``: the terms are summed into one A_j, or with
    ``separate: true`` every expanded string gets its own parameter."""

    terms: list[PauliTerm] = Field(min_length=1, description="Pauli terms of A_j")
    separate: bool = Field(False, description="one trainable parameter per expanded string")
    init: float | None = Field(
        None, description="initial theta (default: uniform in the system's init range)"
    )


class OutputTerm(StrictModel):
    """An output observable ``O_k = sum coeff * P`` (its expectation value is the output)."""

    label: str = Field("", description="port label (default: the Pauli label)")
    terms: list[PauliTerm] = Field(min_length=1, description="Pauli terms of O_k")


class EigensolverConfig(StrictModel):
    """Ground-state solver settings (sparse Lanczos)."""

    tol: float = Field(1e-10, ge=0, description="ARPACK relative residual tolerance")
    gap_tol: float = Field(
        1e-6, ge=0, description="refuse a ground state with E1 - E0 below this (energy unit)"
    )
    ncv: int | None = Field(
        None,
        ge=3,
        le=100,
        description="Lanczos basis size of cold solves (default: ARPACK's, 20; at most 100: "
        "each basis vector is a state vector, 268 MB at 24 qubits)",
    )
    warm_ncv: int | None = Field(
        10,
        ge=3,
        le=100,
        description="Lanczos basis size of warm-started (nudged) solves (at most 100, as ncv)",
    )
    dense_below: int = Field(
        64,
        ge=0,
        le=4_096,
        description="dense eigh up to this Hilbert dimension (at most 4 096: the dense matrix "
        "is dim^2 complex values, 268 MB at the bound)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="threads for the sparse products of registers of 17 qubits and more (the "
        "same products, in row blocks); default: the available CPUs, at most OMP_NUM_THREADS",
    )
    degenerate: Literal["fail", "manifold"] = Field(
        "fail",
        description="a ground state within gap_tol of the next level: 'fail' stops the run; "
        "'manifold' takes the equal mixture over the levels within manifold_tol of E0 (the "
        "T -> 0 thermal state over a quasi-degenerate manifold, e.g. an open chain's edge "
        "doublet) and still stops at a level crossing (docs/physics.md, Quantum EP)",
    )
    manifold_tol: float = Field(
        1e-4, ge=0, description="energy window of a 'manifold' ground manifold (energy unit)"
    )

    def options(self) -> SolverOptions:
        from physlearn.simulators.quantum.lanczos import SolverOptions

        return SolverOptions(
            tol=self.tol,
            gap_tol=self.gap_tol,
            ncv=self.ncv,
            warm_ncv=self.warm_ncv,
            dense_below=self.dense_below,
            threads=self.threads,
            degenerate=self.degenerate,
            manifold_tol=self.manifold_tol,
        )


class SensitivityConfig(StrictModel):
    """Train a quantum sensor: the outputs become d<O_k>/d(lambda) for a sensed term lambda * B.

    Two replicas of the machine (same trainable Hamiltonian, lambda = point + delta and
    point - delta, solved independently) give y_k = (<O_k>+ - <O_k>-) / (2 delta); EP nudges
    them with +-beta eps/(2 delta) O_k and sums their conjugates
    (:mod:`physlearn.simulators.quantum.sensitivity`). Train with an unsupervised loss such as
    ``neg_abs`` (maximise |d<O>/d(lambda)|) or ``neg_sq``.
    """

    field: list[PauliTerm] = Field(
        min_length=1,
        description="the sensed operator B (H += lambda * B); coeffs in the machine's energy unit "
        "per unit of lambda",
    )
    point: float = Field(
        0.0, allow_inf_nan=False, description="operating point lambda0 (unit: 'unit')"
    )
    delta: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="half-step of the central difference: replicas at lambda0 +- delta (unit: "
        "'unit'); the output is d<O>/d(lambda) + O(delta^2)",
    )
    outputs: list[str] = Field(
        default_factory=list,
        description="labels of the machine's outputs to differentiate (default: every output)",
    )
    name: str = Field(
        "lambda",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="symbol of lambda in the output labels, d<O>/d<name>",
    )
    unit: str = Field("1", description="unit of lambda (outputs are [O unit]/[lambda unit])")


class PauliMachineConfig(SystemConfigBase):
    """What every Pauli machine (``quantum``, ``rydberg``, ``ions``) shares: temperature, shots,
    eigensolver and the optional ``sensitivity`` block; subclasses give the register and the
    machine (:meth:`n_qubits`, :meth:`machine_output_labels`, :meth:`build_machine`)."""

    temperature: float = Field(
        0.0, ge=0, description="T (energy unit, k_B = 1); 0 = ground state, > 0 dense Gibbs state"
    )
    shots: int = Field(
        0, ge=0, description="projective measurements per setting and estimate; 0 = exact"
    )
    solver: EigensolverConfig = Field(default_factory=EigensolverConfig, description="eigensolver")
    sensitivity: SensitivityConfig | None = Field(
        None,
        description="quantum sensor: outputs d<O>/d(lambda) of a sensed term lambda * B, from two "
        "replicas at lambda0 +- delta (default: outputs are <O> themselves)",
    )

    @model_validator(mode="after")
    def _sensitivity_block(self) -> PauliMachineConfig:
        s = self.sensitivity
        if s is None:
            return self
        terms = _expand(s.field)
        _check_labels(terms, self.n_qubits(), "sensitivity.field")
        if not any(c != 0 for c, _ in terms):
            raise ValueError("sensitivity.field: the sensed operator B is zero")
        labels = self.machine_output_labels()
        for o in s.outputs:
            if o not in labels:
                raise ValueError(
                    f"sensitivity.outputs: unknown output {o!r}; the machine's outputs are {labels}"
                )
        if len(set(s.outputs)) != len(s.outputs):
            raise ValueError("sensitivity.outputs: an output is named twice")
        return self

    def machine_output_labels(self) -> list[str]:
        """Labels of the machine's own outputs (what ``sensitivity.outputs`` names)."""
        raise NotImplementedError

    def output_size(self) -> int:
        s = self.sensitivity
        if s is not None and s.outputs:
            return len(s.outputs)
        return len(self.machine_output_labels())

    def build_machine(self, seed: int) -> QuantumSystem:
        """The machine itself, without the sensitivity replicas."""
        raise NotImplementedError

    def build(self, seed: int) -> QuantumSystem | SensitivitySystem:
        machine = self.build_machine(seed)
        s = self.sensitivity
        if s is None:
            return machine
        from physlearn.simulators.quantum.sensitivity import SensitivitySystem

        return SensitivitySystem(
            machine,
            _expand(s.field),
            point=s.point,
            delta=s.delta,
            outputs=s.outputs or None,
            twin=self.build_machine(seed),
            name=s.name,
            unit=s.unit,
        )

    @model_validator(mode="after")
    def _thermal_size(self) -> PauliMachineConfig:
        if self.temperature > 0 and self.n_qubits() > 12:
            raise ValueError(
                f"temperature > 0 uses dense diagonalisation: at most 12 qubits "
                f"(this machine has {self.n_qubits()})"
            )
        return self

    def n_qubits(self) -> int:
        raise NotImplementedError

    def values_per_pattern(self) -> int:
        """One complex state vector (2 float64 per amplitude) of the register per pattern."""
        return 2 * 2 ** self.n_qubits()


class QuantumConfig(PauliMachineConfig):
    """A generic spin-1/2 machine: H = H0 + sum x_i B_i + sum theta_j A_j (dimensionless)."""

    kind: Literal["quantum"] = Field("quantum", description="system kind: generic Pauli model")
    qubits: int = Field(ge=1, le=24, description="number of spin-1/2 sites")
    h0: list[PauliTerm] = Field(default_factory=list, description="fixed Hamiltonian terms")
    inputs: list[list[PauliTerm]] = Field(
        default_factory=list, description="input channel i adds x_i * (sum of these terms)"
    )
    trainable: list[TrainableTerm] = Field(
        min_length=1, description="trainable terms (parameter group 'theta', dims ('term',))"
    )
    outputs: list[OutputTerm] = Field(min_length=1, description="output observables")
    bounds: tuple[float, float] = Field(
        (-5.0, 5.0), description="bounds of every theta (dimensionless)"
    )
    init_range: tuple[float, float] = Field(
        (-0.5, 0.5), description="uniform random init of thetas without 'init'"
    )

    @model_validator(mode="after")
    def _check(self) -> QuantumConfig:
        n = self.qubits
        _check_labels(_expand(self.h0), n, "h0")
        for i, ch in enumerate(self.inputs):
            _check_labels(_expand(ch), n, f"inputs.{i}")
        for j, tr in enumerate(self.trainable):
            _check_labels(_expand(tr.terms), n, f"trainable.{j}")
        for k, out in enumerate(self.outputs):
            _check_labels(_expand(out.terms), n, f"outputs.{k}")
        lo, hi = self.bounds
        if not lo < hi:
            raise ValueError(f"bounds {list(self.bounds)}: lower must be < upper")
        ilo, ihi = self.init_range
        if not lo <= ilo <= ihi <= hi:
            raise ValueError(f"init_range {list(self.init_range)} must lie inside bounds")
        for j, tr in enumerate(self.trainable):
            if tr.init is not None and not lo <= tr.init <= hi:
                raise ValueError(
                    f"trainable.{j}.init = {tr.init} outside bounds {list(self.bounds)}"
                )
        return self

    def n_qubits(self) -> int:
        return self.qubits

    def trainable_operators(self) -> list[tuple[list[tuple[float, str]], float | None]]:
        """``[(terms of A_j, init_j)]`` after expanding ``separate`` entries."""
        out: list[tuple[list[tuple[float, str]], float | None]] = []
        for tr in self.trainable:
            terms = _expand(tr.terms)
            if tr.separate:
                out.extend(([t], tr.init) for t in terms)
            else:
                out.append((terms, tr.init))
        return out

    def input_size(self) -> int:
        return len(self.inputs)

    def machine_output_labels(self) -> list[str]:
        return [o.label or " + ".join(lab for _, lab in _expand(o.terms)) for o in self.outputs]

    def build_machine(self, seed: int) -> QuantumSystem:
        from physlearn.simulators.quantum.pauli import PauliBasis
        from physlearn.simulators.quantum.system import HamiltonianModel, QuantumSystem
        from physlearn.system import ParameterGroup

        n = self.qubits
        ops = self.trainable_operators()
        h0 = _expand(self.h0)
        ins = [_expand(ch) for ch in self.inputs]
        outs = [_expand(o.terms) for o in self.outputs]
        labels = ["I"] + [lab for _, lab in h0]
        labels += [lab for ch in ins for _, lab in ch] + [lab for a, _ in ops for _, lab in a]
        labels += [lab for o in outs for _, lab in o]
        basis = PauliBasis.from_labels(labels, n)
        group = ParameterGroup(
            "theta",
            (len(ops),),
            ("term",),
            self.bounds[0],
            self.bounds[1],
            "1",
            long_name="coefficients of the trainable Pauli terms",
        )
        zeros = np.zeros((0, basis.size))
        model = HamiltonianModel(
            basis,
            basis.vector(h0),
            np.stack([basis.vector(ch) for ch in ins]) if ins else zeros,
            np.stack([basis.vector(o) for o in outs]),
            (group,),
            {"theta": np.stack([basis.vector(a) for a, _ in ops])},
            input_labels=tuple(f"x{i}" for i in range(len(ins))),
            output_labels=tuple(self.machine_output_labels()),
        )
        rng = np.random.default_rng([seed, 41])
        init = np.array([v if v is not None else rng.uniform(*self.init_range) for _, v in ops])
        return QuantumSystem(
            model,
            {"theta": init},
            temperature=self.temperature,
            shots=self.shots,
            solver=self.solver.options(),
            name="quantum",
        )
