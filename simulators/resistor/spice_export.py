"""What ``physlearn export-spice`` exports: the network of an experiment config (its initial
parameters, seeded as a run) or of a run store (the parameters it held at a chosen step), driven
by one encoded input pattern of the experiment's dataset, as a SPICE deck
(:func:`~physlearn.simulators.resistor.spice.to_netlist`).

A run store carries its validated config (attribute ``config``) and, per step, every parameter
group it held (``param_<group>``, read with :func:`physlearn.open_run`): the system is rebuilt
from that config and given the parameters of the step, so the deck is the trained network, not
the config's initialisation. Every problem is a ``ValueError`` whose message says what to fix
(the command line turns it into one line and exit 2).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from physlearn.system import Nudge

if TYPE_CHECKING:
    from physlearn.config import ExperimentConfig
    from physlearn.system import PhysicalSystem

Split = Literal["train", "test"]


def netlist_for(
    cfg: ExperimentConfig,
    system: PhysicalSystem,
    pattern: int,
    *,
    split: Split = "test",
    nudge_beta: float | None = None,
    origin: str = "",
) -> str:
    """The deck of ``system`` (built from ``cfg``) driven by the encoded input ``pattern`` of the
    ``split`` of ``cfg``'s dataset; ``nudge_beta`` > 0 adds a target nudge. ``origin`` is
    appended to the deck's title (e.g. which run and step the parameters come from)."""
    from physlearn.simulators.resistor.spice import to_netlist
    from physlearn.task import Task

    task = Task(cfg.task, cfg.task.dataset.load(cfg.seed), system.outputs.size)
    data = task.data
    xs, ys = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    if not 0 <= pattern < xs.shape[0]:
        raise ValueError(
            f"--pattern {pattern}: the {split} split has patterns 0..{xs.shape[0] - 1}"
        )
    x = task.encode_inputs(xs[pattern : pattern + 1])
    nudge = None
    if nudge_beta is not None:
        nudge = Nudge(beta=nudge_beta, target=task.encode_targets(ys[pattern : pattern + 1]))
    title = f"{cfg.name}: {split} pattern {pattern} (label {ys[pattern]}), seed {cfg.seed}"
    return to_netlist(system, x, nudge=nudge, title=title + origin)


def export_from_run(
    run: str | Path,
    pattern: int,
    *,
    step: int = -1,
    split: Split = "test",
    overrides: list[str] | None = None,
    nudge_beta: float | None = None,
) -> str:
    """The deck of the network a run held during optimiser step ``step`` (0-based, as
    ``open_run``'s ``step`` coordinate; negative counts from the last committed step, so -1 is
    the trained network as it stands), driven by ``pattern`` of the run's dataset ``split``.
    ``overrides`` (``key.path=value``) change the stored config before the system is rebuilt
    (e.g. ``system.diodes.model.kind=shockley`` for a run trained with ideal diodes)."""
    import physlearn
    from physlearn.config import ConfigError, apply_overrides, parse_config
    from physlearn.run.start import build_system
    from physlearn.simulators.resistor.linear import LinearResistorNetwork
    from physlearn.simulators.resistor.nonlinear import NonlinearResistorNetwork
    from physlearn.store.run_store import StoreError

    try:
        ds = physlearn.open_run(run)
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    raw: Any = ds.attrs.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{run}: the run store holds no experiment config")
    raw = apply_overrides(copy.deepcopy(raw), list(overrides or []))
    cfg = parse_config(raw, f"{run} (stored config)")
    try:
        system = build_system(cfg)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(system, LinearResistorNetwork | NonlinearResistorNetwork):
        raise ValueError(
            f"{run}: a {cfg.system.kind} run cannot be exported to SPICE; only resistor and "
            "diode_resistor runs are circuits"
        )
    n = int(ds.sizes.get("step", 0))
    if n == 0:
        raise ValueError(f"{run}: no step is committed yet; export its config instead")
    if not -n <= step < n:
        raise ValueError(f"--step {step}: the run has committed steps 0..{n - 1} (or -1..-{n})")
    k = step % n
    held = {
        str(name).removeprefix("param_"): ds[name].isel(step=k).values
        for name in ds.data_vars
        if str(name).startswith("param_")
    }
    missing = sorted(set(system.get_parameters()) - set(held))
    if missing:
        raise ValueError(f"{run}: the store has no param_{missing[0]} record to export")
    system.set_parameters({g: held[g] for g in system.get_parameters()})
    origin = f"; parameters held during step {k} of {Path(run).name}"
    return netlist_for(cfg, system, pattern, split=split, nudge_beta=nudge_beta, origin=origin)


def export_from_config(
    config_path: str,
    pattern: int,
    *,
    split: Literal["train", "test"] = "test",
    overrides: list[str] | None = None,
    nudge_beta: float | None = None,
) -> str:
    """The netlist of an experiment's system (initial parameters, seeded as a run) driven by the
    encoded input ``pattern`` of the ``split`` of its dataset; ``nudge_beta`` > 0 adds a target
    nudge (a conductance beta to the encoded target). Used by ``physlearn export-spice``.

    Raises ``ValueError`` with the reason (pattern out of range, ideal diodes, ...). A run
    store's trained network: :func:`export_from_run`.
    """
    from physlearn.config import load_config

    cfg = load_config(config_path, overrides)
    system = cfg.system.build(cfg.seed)
    return netlist_for(cfg, system, pattern, split=split, nudge_beta=nudge_beta)
