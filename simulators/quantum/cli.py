"""``physlearn export-pulser RUN [--step N] [--pattern K] [--duration-us T] [--out F]``.

Writes the Rydberg machine a run trained, driven by one input pattern, as a Pulser sequence
(abstract-representation JSON) that prepares its Hamiltonian adiabatically on the run's Pulser
device and measures (:mod:`physlearn.simulators.quantum.pulser_export`). Nothing is sent
anywhere. Exit codes: 0 written, 2 a user mistake (not a run store, no device, step or pattern
out of range, a sweep the device refuses -- one line naming the limit).

The ``physlearn.commands`` entry point ``export-pulser`` names :func:`add_commands`; this module
only uses argparse at import time (Pulser is imported when the command runs).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from physlearn.registry import SubParsers

HELP = "Write a run's trained Rydberg machine as a Pulser sequence (abstract-repr JSON)."


def add_commands(sub: SubParsers) -> None:
    """Add ``physlearn export-pulser`` to the main command line's sub-commands."""
    sp = sub.add_parser("export-pulser", help=HELP, description=HELP)
    sp.set_defaults(func=cmd_export_pulser)
    sp.add_argument("run", metavar="RUN", help="run store of a rydberg system naming a device")
    sp.add_argument(
        "--step",
        type=int,
        default=-1,
        help="the step whose held parameters are exported (0-based; negative counts from the "
        "end; default -1, the last committed step)",
    )
    sp.add_argument("--pattern", type=int, default=0, help="index of the input pattern")
    sp.add_argument("--split", choices=["train", "test"], default="test", help="dataset split")
    sp.add_argument(
        "--duration-us", type=float, default=4.0, help="length of the adiabatic sweep (us)"
    )
    sp.add_argument(
        "--start-detuning",
        type=float,
        default=None,
        help="uniform detuning the sweep starts from (rad/us, negative; default: the drive's "
        "largest scale within the device limit)",
    )
    sp.add_argument("--out", help="JSON file (default: standard output)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")


def cmd_export_pulser(args: argparse.Namespace) -> int:
    """Write the sequence; anything Pulser or physlearn refuses is the user's to fix."""
    from physlearn.config import ConfigError
    from physlearn.simulators.quantum.pulser_export import export_run

    try:
        out = export_run(
            args.run,
            args.pattern,
            step=args.step,
            split=args.split,
            duration_us=args.duration_us,
            start_detuning=args.start_detuning,
            overrides=args.set,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    if not args.out:
        print(out.json)
        return 0
    with open(args.out, "w") as fh:
        fh.write(out.json)
    reads = ", ".join(f"q{a}" for a in out.output_atoms)
    print(
        f"wrote {args.out}: {out.device}, {out.duration_us:g} us sweep from Delta = "
        f"{out.start_detuning:.4g} rad/us to Omega = {out.rabi:.4g} rad/us and the trained "
        f"detunings (pattern label {out.label}); the outputs are the Rydberg populations of "
        f"{reads} in the measured bitstrings"
    )
    return 0
