"""What ``physlearn export-pulser`` writes: the trained Rydberg machine of a run, for one input
pattern, as a Pulser sequence (abstract-representation JSON) on the run's Pulser device.

The sequence prepares the machine's Hamiltonian adiabatically: the atoms start in the product
state ``|g...g>`` (every device's initial state), the ground state of ``Omega = 0`` with the
uniform negative detuning ``start_detuning``; ``Omega`` and the local detunings then ramp
linearly, over ``duration_us``, to the trained ``Omega`` and to the trained ``Delta_i`` plus the
pattern's input detunings (:func:`~physlearn.simulators.quantum.pulser_bridge.sweep_sequence`);
the ground-rydberg measurement follows. Every value on the way is a convex combination of the
start and the end, so it stays within the device's limits when they do. Pulser checks each pulse
as it is added, the finished sequence as a QPU would (``mimic_qpu``), and the JSON by rebuilding
the sequence from it. Every problem is a ``ValueError`` whose message says what to fix.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from physlearn.config import ExperimentConfig
    from physlearn.simulators.quantum.rydberg import RydbergArray

Split = Literal["train", "test"]
TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class PulserExport:
    """An exported sequence and what it prepares (rad/us, us)."""

    json: str
    device: str
    duration_us: float
    rabi: float
    detunings: tuple[float, ...]
    start_detuning: float
    output_atoms: tuple[int, ...]
    label: str


def default_start_detuning(rabi: float, detunings: np.ndarray, detuning_max: float) -> float:
    """A start detuning (rad/us, negative) as deep as the drive's largest scale (at least
    2 pi x 1 rad/us), within the device's ``detuning_max``: ``|g...g>`` is then the start
    Hamiltonian's ground state with a gap of that size."""
    scale = max(float(np.abs(detunings).max(initial=0.0)), rabi, TWO_PI)
    return -min(detuning_max, scale)


def _load_run(
    run: str | Path, step: int, overrides: list[str]
) -> tuple[ExperimentConfig, Any, int]:
    """The run's stored config (with ``overrides``), its dataset (:func:`physlearn.open_run`)
    and the index of step ``step`` in it."""
    import physlearn
    from physlearn.config import apply_overrides, parse_config
    from physlearn.store.run_store import StoreError

    try:
        ds = physlearn.open_run(run)
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    raw: Any = ds.attrs.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{run}: the run store holds no experiment config")
    cfg = parse_config(apply_overrides(copy.deepcopy(raw), overrides), f"{run} (stored config)")
    n = int(ds.sizes.get("step", 0))
    if n == 0:
        raise ValueError(f"{run}: no step is committed yet; nothing trained to export")
    if not -n <= step < n:
        raise ValueError(f"--step {step}: the run has committed steps 0..{n - 1} (or -1..-{n})")
    return cfg, ds, step % n


def trained_machine(
    run: str | Path, step: int, overrides: list[str]
) -> tuple[ExperimentConfig, RydbergArray, int]:
    """The run's Rydberg machine holding the parameters of step ``step`` (0-based; negative
    counts from the last committed step), and that step's index."""
    from physlearn.config import ConfigError
    from physlearn.run.start import build_system
    from physlearn.simulators.quantum.rydberg import RydbergArray

    cfg, ds, k = _load_run(run, step, overrides)
    if cfg.system.kind != "rydberg":
        raise ValueError(f"{run}: system.kind is {cfg.system.kind!r}; export-pulser needs rydberg")
    if getattr(cfg.system, "device", None) is None:
        raise ValueError(
            f"{run}: system.device is not set; name the Pulser device to export for "
            "(e.g. --set system.device=DigitalAnalogDevice)"
        )
    try:
        system = build_system(cfg)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    assert isinstance(system, RydbergArray)
    missing = [g for g in system.get_parameters() if f"param_{g}" not in ds.data_vars]
    if missing:
        raise ValueError(f"{run}: the store has no param_{missing[0]} record to export")
    system.set_parameters(
        {g: ds[f"param_{g}"].isel(step=k).values for g in system.get_parameters()}
    )
    return cfg, system, k


def pattern_input(cfg: ExperimentConfig, n_outputs: int, pattern: int, split: Split) -> Any:
    """``(encoded input (1, n_in), label)`` of ``pattern`` in the ``split`` of the dataset."""
    from physlearn.task import Task

    task = Task(cfg.task, cfg.task.dataset.load(cfg.seed), n_outputs)
    data = task.data
    xs, ys = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    if not 0 <= pattern < xs.shape[0]:
        raise ValueError(
            f"--pattern {pattern}: the {split} split has patterns 0..{xs.shape[0] - 1}"
        )
    return task.encode_inputs(xs[pattern : pattern + 1]), ys[pattern]


def export_run(
    run: str | Path,
    pattern: int,
    *,
    step: int = -1,
    split: Split = "test",
    duration_us: float = 4.0,
    start_detuning: float | None = None,
    overrides: list[str] | None = None,
) -> PulserExport:
    """The Pulser sequence preparing the machine ``run`` held during ``step`` for input
    ``pattern`` (see the module docstring), checked by Pulser and rebuilt from its JSON."""
    from physlearn.simulators.quantum import pulser_bridge as pb

    if not duration_us > 0:
        raise ValueError(f"--duration-us {duration_us}: give a positive sweep duration (us)")
    cfg, machine, k = trained_machine(run, step, list(overrides or []))
    x, label = pattern_input(cfg, machine.outputs.size, pattern, split)
    try:
        machine.check_inputs(x)
    except ValueError as exc:
        raise ValueError(f"--pattern {pattern}: {exc}") from None
    detunings = machine.total_detunings(x)[0]
    rabi = float(machine.get_parameters()["rabi"])
    limits = machine.limits
    start = (
        default_start_detuning(rabi, detunings, limits.detuning_max)
        if start_detuning is None
        else start_detuning
    )
    if not -limits.detuning_max <= start < 0:
        raise ValueError(
            f"--start-detuning {start:.6g}: give a negative detuning within the device limit "
            f"detuning_max = {limits.detuning_max:.6g} rad/us (|g...g> must be the ground state)"
        )
    device = pb.load_device(str(limits.device))
    try:
        seq = pb.sweep_sequence(
            device, machine.positions, rabi, detunings, duration_us, start_detuning=start
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{device.name} refuses the sweep: {' '.join(str(exc).split())}") from None
    pb.check_sequence(seq)
    name = f"{cfg.name} step {k} {split} pattern {pattern}"
    text = pb.to_json(seq, name)
    pb.check_sequence(pb.from_json(text))
    return PulserExport(
        json=text,
        device=device.name,
        duration_us=seq.get_duration() / 1000.0,
        rabi=rabi,
        detunings=tuple(float(d) for d in detunings),
        start_detuning=start,
        output_atoms=tuple(machine.output_atoms),
        label=str(label),
    )
