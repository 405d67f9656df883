"""A conformance kit for :class:`~physlearn.system.PhysicalSystem`: the contract as checks.

Whoever writes a machine (physlearn's own simulators, a bench behind qcodes, a third party's
plugin) tests it against the rules of :mod:`physlearn.system` with one call, as scikit-learn's
``check_estimator`` does for estimators. Give :func:`check_system` a *factory*, a zero-argument
callable returning a fresh, unopened system, built the same way every time (same seed): the kit
builds independent copies from it (a fresh copy plays the resumed run of the carried-state check).
Each check opens its copy as a context manager, so an instrument bench is connected and made
safe as in a run. A failed check raises :class:`AssertionError` naming the check and what was
wrong; a check that does not apply (e.g. finite differences of an energy the system does not
report) is skipped and says why. In a pytest suite, :func:`iter_checks` yields ``(name, check)``
to parametrise over, one test per check::

    from physlearn.testing import check_system

    def test_my_machine_conforms():
        report = check_system(lambda: MyMachine(n=4, seed=0), beta=0.05)
        assert report["set_parameters"] == "passed"

Options (keywords of both functions) size the probes to the machine: ``input_range`` (input
unit), ``beta`` (energy unit per output unit, a nudge clearly above the solver's noise),
``target_offset`` (output unit), ``batch``, ``seed``, ``rtol`` (closeness of results the contract
calls equal, relative to each array's largest magnitude), ``hold_rtol`` (how far a continuous
group may hold a value from the request, e.g. a potentiometer's tap grid) and ``skip`` (names).
The checks never need pytest; only numpy.

The checks live by topic in :mod:`~physlearn.testing.parameters`,
:mod:`~physlearn.testing.equilibrium`, :mod:`~physlearn.testing.nudges` and
:mod:`~physlearn.testing.state`; what they share in :mod:`~physlearn.testing.probes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import Any

from physlearn.testing.equilibrium import (
    check_batch_invariance,
    check_energy_gradient,
    check_equilibrate_many,
    check_equilibrate_shapes,
)
from physlearn.testing.nudges import check_nudges
from physlearn.testing.parameters import check_description, check_set_parameters
from physlearn.testing.probes import Factory, KitOptions, SkipCheck
from physlearn.testing.state import check_carried_state, check_lifecycle

__all__ = [
    "CHECKS",
    "Factory",
    "KitOptions",
    "SkipCheck",
    "check_system",
    "iter_checks",
]

CHECKS: Mapping[str, Callable[[Factory, KitOptions], None]] = {
    "description": check_description,
    "set_parameters": check_set_parameters,
    "equilibrate_shapes": check_equilibrate_shapes,
    "energy_gradient": check_energy_gradient,
    "nudges": check_nudges,
    "equilibrate_many": check_equilibrate_many,
    "carried_state": check_carried_state,
    "lifecycle": check_lifecycle,
    "batch_invariance": check_batch_invariance,
}
"""Every check by name, in the order :func:`check_system` runs them."""


def _options(kwargs: Mapping[str, Any]) -> KitOptions:
    known = {f.name for f in fields(KitOptions)}
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; known: {sorted(known)}")
    opts = KitOptions(**kwargs)
    bad = set(opts.skip) - set(CHECKS)
    if bad:
        raise ValueError(f"skip names unknown checks {sorted(bad)}; checks: {list(CHECKS)}")
    return opts


def _named(
    name: str, fn: Callable[[Factory, KitOptions], None], factory: Factory, opts: KitOptions
) -> Callable[[], None]:
    """The check as a zero-argument callable whose AssertionError names the check; an
    unexpected exception of the system is a failure of the check too."""

    def run() -> None:
        try:
            fn(factory, opts)
        except SkipCheck:
            raise
        except AssertionError as exc:
            raise AssertionError(f"check {name!r} failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - reported as this check's failure
            raise AssertionError(f"check {name!r} failed: {type(exc).__name__}: {exc}") from exc

    run.__name__ = f"check_{name}"
    return run


def iter_checks(factory: Factory, **options: Any) -> Iterator[tuple[str, Callable[[], None]]]:
    """``(name, check)`` for every check not in ``skip``; ``check()`` raises AssertionError
    naming the check when the system breaks the contract, :class:`SkipCheck` when the check does
    not apply."""
    opts = _options(options)
    for name, fn in CHECKS.items():
        if name not in opts.skip:
            yield name, _named(name, fn, factory, opts)


def check_system(factory: Factory, **options: Any) -> dict[str, str]:
    """Run every check; the first failure raises AssertionError naming the check and what was
    wrong. Returns ``{name: "passed" | "skipped: <why>"}`` (skipped by ``skip`` or because the
    check does not apply)."""
    opts = _options(options)
    report = {name: "skipped: asked" for name in opts.skip}
    for name, check in iter_checks(factory, **options):
        try:
            check()
        except SkipCheck as why:
            report[name] = f"skipped: {why}"
        else:
            report[name] = "passed"
    return report
