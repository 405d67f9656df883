"""``physlearn export-spice CONFIG|RUN [--pattern K] [--step S] [--split train|test] [--out FILE]``.

Writes a resistor network driven by one encoded input pattern as a SPICE netlist
(:mod:`physlearn.simulators.resistor.spice`), to a file or standard output. The network is an
experiment config's (its initial parameters, seeded as a run) or, given a run store, the trained
one: the parameters the run held during step ``--step`` (default -1, the last committed step;
:mod:`physlearn.simulators.resistor.spice_export`). Exit codes: 0 written, 2 a user mistake (bad
config, pattern or step out of range, not a run store, a system SPICE cannot express).

The ``physlearn.commands`` entry point ``export-spice`` names :func:`add_commands`; this module
only uses argparse at import time, since the command line imports it to build its parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from physlearn.registry import SubParsers

HELP = "Write a resistor network (a config's, or a run's trained one) as a SPICE netlist."


def add_commands(sub: SubParsers) -> None:
    """Add ``physlearn export-spice`` to the main command line's sub-commands."""
    sp = sub.add_parser("export-spice", help=HELP, description=HELP)
    sp.set_defaults(func=cmd_export_spice)
    sp.add_argument(
        "config",
        metavar="CONFIG|RUN",
        help="experiment YAML with a resistor or diode_resistor system, or a run store of one",
    )
    sp.add_argument("--pattern", type=int, default=0, help="index of the input pattern")
    sp.add_argument(
        "--step",
        type=int,
        default=None,
        help="run store only: the step whose held parameters are exported (0-based; "
        "negative counts from the end; default -1, the last committed step)",
    )
    sp.add_argument("--split", choices=["train", "test"], default="test", help="dataset split")
    sp.add_argument("--out", help="netlist file (default: standard output)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")


def cmd_export_spice(args: argparse.Namespace) -> int:
    """Write the netlist; a source SPICE cannot express is the user's to fix (ConfigError)."""
    from physlearn.config import ConfigError
    from physlearn.simulators.resistor.spice_export import export_from_config, export_from_run

    source = Path(args.config)
    try:
        if source.is_dir():
            step = -1 if args.step is None else args.step
            deck = export_from_run(
                source, args.pattern, step=step, split=args.split, overrides=args.set
            )
        elif args.step is not None:
            raise ConfigError(f"--step {args.step}: only a run store has steps; {source} is not")
        else:
            deck = export_from_config(
                args.config, args.pattern, split=args.split, overrides=args.set
            )
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(deck)
        print(f"wrote {args.out}: run it with `ngspice -b {args.out}`")
    else:
        print(deck, end="")
    return 0
