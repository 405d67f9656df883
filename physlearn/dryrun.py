"""``physlearn run CONFIG --dry-run``: check a system without applying anything.

The command builds the system and, when the system offers a dry run (:class:`DryRunnable`: a
bench of instruments does, see :mod:`physlearn.drivers.station.dryrun`), prints the checks it
reports; any other system is ready once it builds. Nothing here knows a particular machine.

Exit status of the command: 0 every check passed, 2 something must be fixed (the report says
what).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO, runtime_checkable

if TYPE_CHECKING:
    from physlearn.config import ExperimentConfig

USER_ERROR = 2


@dataclass
class Check:
    """One line of a dry-run report: whether it passed, what was checked, what was found."""

    ok: bool
    what: str
    detail: str = ""


@runtime_checkable
class DryRunnable(Protocol):
    """A system that can check itself before a run without changing anything (instruments:
    connect, identify, compare the envelope with the hardware and the data), and is left
    disconnected afterwards."""

    def dry_run(self, experiment: ExperimentConfig | None = None) -> list[Check]:
        """The report; ``experiment`` adds the checks of its data and estimator."""
        ...


def print_report(checks: list[Check], title: str, stream: TextIO | None = None) -> bool:
    """Print one line per check and the verdict; True if every check passed."""
    stream = stream or sys.stdout
    print(title, file=stream)
    for c in checks:
        tag = "[ ok ]" if c.ok else "[FAIL]"
        print(f"  {tag} {c.what}" + (f": {c.detail}" if c.detail else ""), file=stream)
    failed = sum(not c.ok for c in checks)
    if failed:
        print(
            f"dry run FAILED: {failed} of {len(checks)} checks (nothing was written to any "
            "instrument)",
            file=stream,
        )
    else:
        print(
            f"dry run passed: {len(checks)} checks; nothing was written to any instrument",
            file=stream,
        )
    return failed == 0


def dry_run_command(config: ExperimentConfig, source: str) -> int:
    """Build the system and dry-run it; print the report; 0 if every check passed, else 2."""
    from physlearn.run.start import build_system

    system = build_system(config)
    title = f"dry run of {source} ({config.system.kind} system; only queries are sent)"
    if isinstance(system, DryRunnable):
        checks = system.dry_run(config)
    else:
        checks = [
            Check(True, "config", "valid"),
            Check(True, "system", f"{type(system).__name__} builds; no instruments to check"),
        ]
    return 0 if print_report(checks, title) else USER_ERROR
