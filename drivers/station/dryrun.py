"""The dry run of a station system (``physlearn run CONFIG --dry-run``, see
:mod:`physlearn.dryrun`): check the bench without applying anything.

:meth:`StationSystem.dry_run <physlearn.drivers.station.system.StationSystem.dry_run>` calls
:func:`station_checks`: start the virtual lab if configured, connect every instrument, compare
its ``*IDN?`` with ``identity``, resolve every role, compare the envelope with the drivers'
hardware ranges, read the present state of every source (a channel outputting a level outside
the envelope is a failure), check compliance trips and the potentiometer bank, and, with the
experiment config, check that every encoded input pattern lies inside the input envelope and
that the worst-case nudge does. Only queries are sent: no level, output, relay or tap is written.

The command prints the report (:func:`physlearn.dryrun.print_report`) and exits 0 if every check
passed, 2 if something must be fixed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from physlearn.drivers.errors import EnvelopeViolation
from physlearn.drivers.station.binding import is_off
from physlearn.dryrun import Check

if TYPE_CHECKING:
    from physlearn.config import ExperimentConfig
    from physlearn.drivers.station.binding import BoundSource
    from physlearn.drivers.station.system import StationSystem
    from physlearn.estimators.ep import EquilibriumPropagation
    from physlearn.losses import Loss


def _check(ok: bool, what: str, detail: str = "") -> Check:
    return Check(ok, what, detail)


def station_checks(system: StationSystem, experiment: ExperimentConfig | None) -> list[Check]:
    """Every dry-run check of a station system (see the module docstring).

    The sections run in order; a failure that makes the later ones meaningless (lab not
    started, an instrument not connected, a role not resolved, the state not readable) ends
    the list there.
    """
    out: list[Check] = []
    try:
        system.insts.start_lab()
    except Exception as exc:  # noqa: BLE001 - report, do not raise
        return [_check(False, "virtual lab", f"cannot start: {exc}")]
    if system.lab is not None:
        out.append(_check(True, "virtual lab", f"serving {system.lab.addresses}"))

    out.extend(_connect_checks(system))
    if not all(c.ok for c in out):
        return out
    out.extend(_identity_checks(system))

    try:
        system.bind()
    except KeyError as exc:
        out.append(_check(False, "roles", str(exc.args[0])))
        return out
    out.append(_check(True, "roles", "every channel and parameter of the config resolves"))

    for src in system.sources.values():
        out.extend(_envelope_checks(src))

    try:
        system.install_envelope()
        assert system.phases is not None
        system.phases.resync()
    except Exception as exc:  # noqa: BLE001
        out.append(_check(False, "present state", f"cannot read: {exc}"))
        return out
    for src in system.sources.values():
        out.extend(_present_state_checks(src))

    out.append(_bank_check(system))
    if experiment is not None:
        out.extend(experiment_checks(system, experiment))
    return out


def _connect_checks(system: StationSystem) -> list[Check]:
    """Load every needed instrument of the station YAML into a fresh qcodes station."""
    out: list[Check] = []
    station = system.insts.new_station()
    for name in system.insts.needed():
        try:
            inst = station.load_instrument(name, update_snapshot=False)
        except Exception as exc:  # noqa: BLE001
            out.append(_check(False, f"{name}: connect", f"{type(exc).__name__}: {exc}"))
            continue
        system.insts.by_name[name] = inst
        out.append(_check(True, f"{name}: connect", str(getattr(inst, "address", ""))))
    return out


def _identity_checks(system: StationSystem) -> list[Check]:
    """Compare every connected instrument's ``*IDN?`` with its ``identity`` pattern."""
    import re

    out: list[Check] = []
    for name, inst in system.insts.by_name.items():
        try:
            idn = inst.ask("*IDN?").strip()
        except Exception as exc:  # noqa: BLE001
            out.append(_check(False, f"{name}: identity", f"*IDN? failed: {exc}"))
            continue
        pattern = system.config.identity.get(name)
        if pattern is None:
            out.append(_check(True, f"{name}: identity", f"{idn!r} (no identity pattern set)"))
        else:
            ok = re.search(pattern, idn) is not None
            verdict = "matches" if ok else "does NOT match"
            out.append(_check(ok, f"{name}: identity", f"{idn!r} {verdict} {pattern!r}"))
    return out


def _envelope_checks(src: BoundSource) -> list[Check]:
    """The source's envelope against its drivers' hardware ranges, and its compliance value."""
    from physlearn.drivers.station.safety import hardware_range

    out: list[Check] = []
    lim = src.env.limits
    bad = []
    for p in src.levels:
        lo, hi = hardware_range(p)
        if lim.min < lo or lim.max > hi:
            bad.append(f"{p.full_name} [{lo:g}, {hi:g}]")
    out.append(
        _check(
            not bad,
            f"{src.name}: envelope within hardware",
            f"[{lim.min:g}, {lim.max:g}] {src.env.unit}, step {lim.step}, "
            f"rate <= {lim.rate():g} {src.env.unit}/s"
            + (f"; beyond the range of {', '.join(bad[:3])}" if bad else ""),
        )
    )
    if src.compliance is not None and src.cfg.compliance is not None:
        value = src.cfg.compliance.value
        errs = []
        for p in src.compliance:
            try:
                p.validate(value)
            except (ValueError, TypeError) as exc:
                errs.append(f"{p.full_name}: {exc.args[0]}")
        out.append(
            _check(
                not errs,
                f"{src.name}: compliance",
                f"{src.cfg.compliance.parameter} = {value:g}" + (f"; {errs[0]}" if errs else ""),
            )
        )
    return out


def _present_state_checks(src: BoundSource) -> list[Check]:
    """The source's cached levels against its envelope (a live output outside fails), and trips."""
    out: list[Check] = []
    lim = src.env.limits
    live, stray = [], []
    for k, p in enumerate(src.levels):
        v = p.cache.get(get_if_invalid=False)
        on = src.outputs is None or not is_off(src.outputs[k].cache.get(get_if_invalid=False))
        inside = v is not None and lim.min <= float(v) <= lim.max
        if not inside and on:
            live.append(f"{p.full_name} = {v}")
        elif not inside:
            stray.append(f"{p.full_name} = {v}")
    detail = "every level inside the envelope"
    if live:
        detail = f"output ON outside the envelope: {', '.join(live[:4])}; bring inside by hand"
    elif stray:
        detail = f"outputs off; {', '.join(stray[:3])} will be reset to the safe level at open"
    if src.pending:
        detail = f"levels resolve once the settings are written at open ({src.pending})"
    out.append(_check(not live, f"{src.name}: present state", detail))
    for trip in src.trips:
        try:
            status = trip.get()
        except Exception as exc:  # noqa: BLE001
            out.append(_check(False, f"{src.name}: trip status", str(exc)))
            continue
        ok = not status or is_off(status)
        out.append(
            _check(
                ok,
                f"{src.name}: trip status",
                f"{trip.full_name}: " + ("not tripped" if ok else f"TRIPPED ({status})"),
            )
        )
    return out


def _bank_check(system: StationSystem) -> Check:
    """The weight bank: one device per edge; pots: taps matching the law and the tap limits;
    memristors: every device readable."""
    from physlearn.drivers.station.weights import PotBank

    bank = system.bank
    n_edges = system.edges.shape[0]
    if not isinstance(bank, PotBank):
        try:
            g = bank.read_conductances()
        except Exception as exc:  # noqa: BLE001
            return _check(False, "weights: bank", f"cannot read the devices: {exc}")
        return _check(
            True,
            "weights: bank",
            f"{g.size} memristive devices for {n_edges} edges, reading "
            f"[{g.min():.3g}, {g.max():.3g}] S; trainable [{bank.group.lower:g}, "
            f"{bank.group.upper:g}] S, programming {bank.cfg.programming.mode}",
        )
    cfg = bank.cfg
    try:
        taps = np.asarray(bank.taps.get())
    except Exception as exc:  # noqa: BLE001
        return _check(False, "weights: bank", f"cannot read taps: {exc}")
    n_taps = getattr(bank.taps.root_instrument, "n_taps", None)
    hi = cfg.tap_limits[1]
    ok = taps.size == n_edges and (n_taps is None or hi <= n_taps - 1)
    if n_taps is not None and n_taps != cfg.law.n_taps:
        ok = False
    return _check(
        ok,
        "weights: bank",
        f"{taps.size} devices for {n_edges} edges, {n_taps} taps "
        f"(law: {cfg.law.n_taps}), tap limits {list(cfg.tap_limits)}, "
        f"conductance [{bank.group.lower:g}, {bank.group.upper:g}] S ({bank.tapmap.source})",
    )


def _input_range(experiment: ExperimentConfig, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    from physlearn.task import Task

    data = experiment.task.dataset.load(experiment.seed)
    task = Task(experiment.task, data, n_out)
    x = np.concatenate([task.encode_inputs(data.x_train), task.encode_inputs(data.x_test)])
    t = np.concatenate([task.encode_targets(data.y_train), task.encode_targets(data.y_test)])
    return x, t


def experiment_checks(system: StationSystem, experiment: ExperimentConfig) -> list[Check]:
    """Inputs of the whole dataset and the worst-case nudge against the envelope."""
    from physlearn.estimators.ep import EquilibriumPropagation
    from physlearn.run.campaign import build_estimator, objective_loss

    out: list[Check] = []
    x, t = _input_range(experiment, system.outputs.size)
    env = system.envelopes["inputs"]
    span = f"{x.shape[0]} patterns span [{x.min():.4g}, {x.max():.4g}] V"
    try:
        env.check(x)
        out.append(_check(True, "inputs: dataset inside the envelope", span))
    except EnvelopeViolation as exc:
        out.append(_check(False, "inputs: dataset inside the envelope", f"{span}; {exc}"))
    v_lo, v_hi = float(min(x.min(), 0.0)), float(max(x.max(), 0.0))
    t_lo, t_hi = float(t.min()), float(t.max())
    est = build_estimator(experiment.estimator)
    try:
        loss = objective_loss(experiment, system)
    except Exception as exc:  # noqa: BLE001
        return [*out, _check(False, "estimator", str(exc))]
    if isinstance(est, EquilibriumPropagation):
        out.extend(_ep_nudge_checks(system, experiment, est, loss, (v_lo, v_hi), (t_lo, t_hi)))
    elif type(est).__name__ == "CoupledLearning":
        if "clamp" not in system.supported_nudges:
            out.append(_check(False, "nudge", "coupled learning needs nudge.clamp"))
        else:
            out.append(_range_check(system, "nudge.clamp", min(v_lo, t_lo), max(v_hi, t_hi)))
    elif type(est).__name__ == "ThermalCovariance":
        out.append(_check(False, "estimator", "thermal EP needs thermal samples (a simulator)"))
    return out


def _ep_nudge_checks(
    system: StationSystem,
    experiment: ExperimentConfig,
    est: EquilibriumPropagation,
    loss: Loss,
    v: tuple[float, float],
    t: tuple[float, float],
) -> list[Check]:
    """The nudges of equilibrium propagation: the worst-case error current or the target nudge.

    ``v`` and ``t`` are the (low, high) spans of the free-state voltages and the targets.
    """
    (v_lo, v_hi), (t_lo, t_hi) = v, t
    try:
        kind = est.nudge_kind(system, loss)
    except ValueError as exc:
        return [_check(False, "nudge", str(exc))]
    betas = [b for b, _ in est.pairs if b != 0]
    if any(b.imag != 0 for b in betas):
        return [_check(False, "nudge", "complex (holomorphic) nudges need a simulator")]
    bmax = max(abs(b.real) for b in betas)
    if kind == "error":
        if loss.name == "cross_entropy":
            eps = 1.0 / experiment.task.temperature
        elif loss.name == "mse":
            eps = max(abs(v_hi - t_lo), abs(t_hi - v_lo))
        else:
            eps = math.nan
        return [_error_nudge_check(system, loss.name, bmax, eps)]
    if kind == "target":
        assert system.config.nudge.target is not None
        hw = system.config.nudge.target.conductance
        wrong = [b.real for b in betas if not math.isclose(b.real, hw, rel_tol=1e-9)]
        return [
            _check(
                not wrong,
                "nudge.target: beta",
                f"hardware nudge conductance {hw:g} S"
                + (f"; the estimator asks for beta {wrong}" if wrong else ""),
            ),
            _range_check(system, "nudge.target", t_lo, t_hi),
        ]
    return []


def _error_nudge_check(system: StationSystem, loss_name: str, bmax: float, eps: float) -> Check:
    """The worst-case error-nudge current ``bmax * eps`` against the ``nudge.error`` envelope."""
    lim = system.envelopes["nudge.error"].limits
    if math.isnan(eps):
        return _check(True, "nudge.error: worst case", f"cannot bound {loss_name}")
    imax = bmax * eps
    ok = -imax >= lim.min and imax <= lim.max
    return _check(
        ok,
        "nudge.error: worst case",
        f"|I| <= beta * max|dL/dV| = {bmax:g} * {eps:g} = {imax:.4g} A within "
        f"[{lim.min:g}, {lim.max:g}] A"
        if ok
        else f"|I| may reach {imax:.4g} A, outside [{lim.min:g}, {lim.max:g}] A: "
        "lower beta or widen the envelope",
    )


def _range_check(system: StationSystem, role: str, lo: float, hi: float) -> Check:
    lim = system.envelopes[role].limits
    ok = lim.min <= lo and hi <= lim.max
    return _check(
        ok,
        f"{role}: worst case",
        f"levels within [{lo:.4g}, {hi:.4g}] V (maximum principle) vs envelope "
        f"[{lim.min:g}, {lim.max:g}] V",
    )
