"""Configs of the quantum spin machines: ``kind: quantum | rydberg | ions``.

Validation happens when the config is loaded (nothing is built): Pauli labels are parsed, sizes
checked, and device limits (Rydberg: minimum atom distance, Rabi frequency, detuning, atom count)
refused with a message naming the violated limit. ``build`` imports the simulators lazily. The
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

import math
import re
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from physlearn.configbase import StrictModel, SystemConfigBase

if TYPE_CHECKING:
    from physlearn.simulators.quantum.ions import IonChain
    from physlearn.simulators.quantum.rydberg import RydbergArray
    from physlearn.simulators.quantum.sensitivity import SensitivitySystem
    from physlearn.simulators.quantum.states import SolverOptions
    from physlearn.simulators.quantum.system import QuantumSystem

_TEMPLATE = re.compile(r"\{i\s*([+-]\s*\d+)?\}")
TWO_PI = 2.0 * math.pi


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

    def options(self) -> SolverOptions:
        from physlearn.simulators.quantum.states import SolverOptions

        return SolverOptions(
            tol=self.tol,
            gap_tol=self.gap_tol,
            ncv=self.ncv,
            warm_ncv=self.warm_ncv,
            dense_below=self.dense_below,
            threads=self.threads,
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


class _QuantumCommon(SystemConfigBase):
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
    def _sensitivity_block(self) -> _QuantumCommon:
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
    def _thermal_size(self) -> _QuantumCommon:
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


class QuantumConfig(_QuantumCommon):
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


class RydbergLimitsConfig(StrictModel):
    """Device limits of the Rydberg array (checked when the config is loaded)."""

    min_distance: float = Field(4.0, gt=0, description="minimum atom distance (um)")
    rabi_max: float = Field(TWO_PI * 2.5, gt=0, description="largest Rabi frequency (rad/us)")
    detuning_max: float = Field(TWO_PI * 20.0, gt=0, description="largest |detuning| (rad/us)")
    max_atoms: int = Field(20, ge=1, le=24, description="largest register (atoms)")


class RydbergConfig(_QuantumCommon):
    """Rydberg tweezer array: H = sum Omega/2 X_i - sum Delta_i n_i + sum C6/r^6 n_i n_j."""

    kind: Literal["rydberg"] = Field("rydberg", description="system kind: Rydberg atom array")
    positions: list[tuple[float, float]] = Field(min_length=1, description="atom positions (um)")
    rydberg_level: Literal[60, 70] = Field(70, description="principal quantum number n (sets C6)")
    input_atoms: list[int] = Field(
        default_factory=list, description="atoms whose detuning carries an input (rad/us)"
    )
    output_atoms: list[int] = Field(default_factory=list, description="atoms read out as <n_i>")
    correlators: list[tuple[int, int]] = Field(
        default_factory=list, description="atom pairs read out as <n_i n_j>"
    )
    limits: RydbergLimitsConfig = Field(
        default_factory=RydbergLimitsConfig, description="device limits"
    )
    detuning_bound: float | None = Field(
        None, gt=0, description="bound of the trainable |Delta_i| (rad/us; default detuning_max)"
    )
    init_detuning: float | list[float] = Field(0.0, description="initial Delta_i (rad/us)")
    init_rabi: float = Field(TWO_PI * 1.0, ge=0, description="initial Omega (rad/us)")

    @model_validator(mode="after")
    def _device_limits(self) -> RydbergConfig:
        lim = self.limits
        n = len(self.positions)
        if n > lim.max_atoms:
            raise ValueError(f"{n} atoms exceed the device limit max_atoms = {lim.max_atoms}")
        pos = np.asarray(self.positions, dtype=float)
        d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1)) + np.diag(np.full(n, np.inf))
        if n > 1 and d.min() < lim.min_distance:
            i, j = np.unravel_index(int(np.argmin(d)), d.shape)
            raise ValueError(
                f"atoms {min(i, j)} and {max(i, j)} are {d[i, j]:.3g} um apart, below the device "
                f"limit min_distance = {lim.min_distance:g} um"
            )
        if self.init_rabi > lim.rabi_max:
            raise ValueError(
                f"init_rabi = {self.init_rabi:.6g} rad/us exceeds the device limit "
                f"rabi_max = {lim.rabi_max:.6g} rad/us"
            )
        bound = lim.detuning_max if self.detuning_bound is None else self.detuning_bound
        if bound > lim.detuning_max:
            raise ValueError(
                f"detuning_bound = {bound:.6g} rad/us exceeds the device limit "
                f"detuning_max = {lim.detuning_max:.6g} rad/us"
            )
        init = (
            np.broadcast_to(np.asarray(self.init_detuning, float), (n,))
            if not isinstance(self.init_detuning, list)
            else np.asarray(self.init_detuning, float)
        )
        if init.shape != (n,):
            raise ValueError(f"init_detuning needs {n} values, got {init.size}")
        if np.abs(init).max() > bound:
            raise ValueError(
                f"init_detuning reaches {np.abs(init).max():.6g} rad/us, beyond the detuning "
                f"bound {bound:.6g} rad/us (device limit detuning_max = {lim.detuning_max:.6g})"
            )
        for name, atoms in (
            ("input_atoms", self.input_atoms),
            ("output_atoms", self.output_atoms),
            ("correlators", [a for p in self.correlators for a in p]),
        ):
            bad = [a for a in atoms if not 0 <= a < n]
            if bad:
                raise ValueError(f"{name} refers to atom {bad[0]}, outside 0..{n - 1}")
        if not self.output_atoms and not self.correlators:
            raise ValueError("give output_atoms and/or correlators (the machine needs outputs)")
        return self

    def n_qubits(self) -> int:
        return len(self.positions)

    def input_size(self) -> int:
        return len(self.input_atoms)

    def machine_output_labels(self) -> list[str]:
        return [f"n[{a}]" for a in self.output_atoms] + [
            f"n[{i}]n[{j}]" for i, j in self.correlators
        ]

    def build_machine(self, seed: int) -> RydbergArray:
        from physlearn.simulators.quantum.rydberg import C6_RAD_US_UM6, RydbergArray, RydbergLimits

        lim = RydbergLimits(**self.limits.model_dump())
        n = len(self.positions)
        init = np.array(np.broadcast_to(np.asarray(self.init_detuning, float), (n,)))
        return RydbergArray(
            np.asarray(self.positions, float),
            c6=C6_RAD_US_UM6[self.rydberg_level],
            input_atoms=self.input_atoms,
            output_atoms=self.output_atoms,
            correlators=[tuple(p) for p in self.correlators],
            limits=lim,
            detuning_bound=self.detuning_bound,
            params={"detuning": init, "rabi": np.array(self.init_rabi)},
            temperature=self.temperature,
            shots=self.shots,
            solver=self.solver.options(),
        )


class IonsConfig(_QuantumCommon):
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
