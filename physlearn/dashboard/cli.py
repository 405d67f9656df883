"""``physlearn dashboard PATH... [--port N] [--host H --allow-remote] [--interval S]``.

Serves the live dashboard of the runs and sweeps given until Ctrl-C (exit 0). A path that is
not a run or sweep store, a non-loopback ``--host`` without ``--allow-remote``, a port in use or
a missing Bokeh are user mistakes: one line, exit 2. The ``physlearn.commands`` entry point
``dashboard`` names :func:`add_commands`; this module imports only argparse at import time.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from physlearn.registry import SubParsers

HELP = "Serve a live web page of runs and sweeps (loss, metrics, timing, graph, instruments)."


def add_commands(sub: SubParsers) -> None:
    """Add ``physlearn dashboard`` to the main command line's sub-commands."""
    sp = sub.add_parser("dashboard", help=HELP, description=HELP)
    sp.set_defaults(func=cmd_dashboard)
    sp.add_argument("paths", nargs="+", metavar="PATH", help="run stores and/or sweep stores")
    sp.add_argument(
        "--port", type=int, default=5006, help="TCP port (default 5006; 0: any free port)"
    )
    sp.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    sp.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the dashboard has no authentication)",
    )
    sp.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between reads of the stores (default 2)",
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Check the arguments, start the server, print its address, serve until Ctrl-C."""
    from physlearn.config import ConfigError
    from physlearn.dashboard.targets import classify

    if importlib.util.find_spec("bokeh") is None:
        raise ConfigError("the dashboard needs Bokeh: pip install 'physlearn[dashboard]'")
    if not (math.isfinite(args.interval) and 0.05 <= args.interval <= 3600):
        raise ConfigError(f"--interval {args.interval}: give seconds between 0.05 and 3600")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: give a TCP port from 0 to 65535")
    try:
        targets = classify(args.paths)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from physlearn.dashboard.server import serve_forever, start

    try:
        dashboard = start(targets, args.host, args.port, args.interval, args.allow_remote)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(
            f"--host {args.host} --port {args.port}: cannot listen there ({exc.strerror}); "
            "choose another port (0: any free one)"
        ) from None
    what = ", ".join(f"{t.kind} {t.path}" for t in targets)
    print(f"physlearn dashboard: {dashboard.url} ({what}); Ctrl-C stops it", flush=True)
    try:
        serve_forever(dashboard)
    except KeyboardInterrupt:  # a second Ctrl-C while the first was stopping the server
        pass
    print("physlearn dashboard: stopped", file=sys.stderr)
    return 0
