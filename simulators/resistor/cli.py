"""``physlearn export-spice CONFIG [--pattern K] [--split train|test] [--out FILE]``.

Writes the resistor network of an experiment (its initial parameters, seeded as a run) driven by
one encoded input pattern as a SPICE netlist (:mod:`physlearn.simulators.resistor.spice`), to a
file or standard output. Exit codes: 0 written, 2 a user mistake (bad config, pattern out of
range, a system SPICE cannot express).

The ``physlearn.commands`` entry point ``export-spice`` names :func:`add_commands`; this module
only uses argparse at import time, since the command line imports it to build its parser.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from physlearn.registry import SubParsers

HELP = "Write a resistor network as a SPICE netlist."


def add_commands(sub: SubParsers) -> None:
    """Add ``physlearn export-spice`` to the main command line's sub-commands."""
    sp = sub.add_parser("export-spice", help=HELP, description=HELP)
    sp.set_defaults(func=cmd_export_spice)
    sp.add_argument("config", help="experiment YAML with a resistor or diode_resistor system")
    sp.add_argument("--pattern", type=int, default=0, help="index of the input pattern")
    sp.add_argument("--split", choices=["train", "test"], default="test", help="dataset split")
    sp.add_argument("--out", help="netlist file (default: standard output)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")


def cmd_export_spice(args: argparse.Namespace) -> int:
    """Write the netlist; a config SPICE cannot express is the user's to fix (ConfigError)."""
    from physlearn.config import ConfigError
    from physlearn.simulators.resistor.spice import export_from_config

    try:
        deck = export_from_config(args.config, args.pattern, split=args.split, overrides=args.set)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(deck)
        print(f"wrote {args.out}: run it with `ngspice -b {args.out}`")
    else:
        print(deck, end="")
    return 0
