"""``physlearn lab ...``: serve the virtual lab, calibrate a potentiometer bank.

``physlearn lab serve LAB.yaml [--port N] [--station-out FILE] [--max-connections N]
[--idle-timeout SECONDS] [--max-line BYTES]``
    Serve the virtual lab on 127.0.0.1 until Ctrl-C (or SIGTERM): one port per instrument,
    consecutive from ``--port`` (default 5025, the SCPI port), or ephemeral with ``--port 0``.
    Prints each instrument's VISA address; ``--station-out`` writes a qcodes station YAML
    pointing at them. ``--host`` other than a loopback address needs ``--allow-remote``.
    Bounded: at most ``--max-connections`` (64) connections per instrument, each closed after
    ``--idle-timeout`` (300 s) without a complete command, lines of at most ``--max-line``
    (65536) bytes; each refusal or close is logged on stderr.
``physlearn lab calibrate EXPERIMENT.yaml --out CAL.json [--points K]``
    With every source in its safe state, set every potentiometer to K taps spread over the
    envelope's ``tap_limits``, measure each device isolated (``weights.channels`` /
    ``weights.measure``), and write the calibration table that ``weights.calibration`` reads.

Exit codes: 0 done, 2 a user mistake (bad file, port in use, remote host without the flag).
This module only uses argparse at import time: the ``physlearn.commands`` entry point ``lab``
names :func:`add_commands`, which the command line calls each time it builds its parser.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from physlearn.registry import SubParsers

USER_ERROR = 2
#: the lab server's default bounds (equal to physlearn.drivers.virtual_lab.server's; repeated
#: here so that building the parser imports nothing heavy)
MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 300.0
MAX_LINE = 65536


LAB_HELP = "The virtual lab: serve simulated instruments, calibrate a bank."


def add_commands(sub: SubParsers) -> None:
    """Add ``physlearn lab`` to the main command line's sub-commands."""
    sp = sub.add_parser("lab", help=LAB_HELP, description=LAB_HELP)
    sp.set_defaults(func=cmd_lab)
    configure_parser(sp)


def configure_parser(sp: argparse.ArgumentParser) -> None:
    """Add the ``lab`` sub-commands to the ``lab`` parser of the main CLI."""
    sub = sp.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)
    s = sub.add_parser(
        "serve",
        help="serve the virtual lab's instruments over SCPI (127.0.0.1)",
        description="Serve the virtual lab's instruments over SCPI sockets until Ctrl-C. "
        "Its resources are bounded: at most --max-connections connections per instrument (one "
        "more is closed at once), each closed after --idle-timeout seconds without a complete "
        "command line, lines of at most --max-line bytes (a longer one is discarded and queues "
        "-363), channel lists checked before they are expanded, 32 errors per instrument queued "
        "(the last becomes -350 'Queue overflow'). Refusals and closes are logged on stderr.",
    )
    s.add_argument("config", help="virtual-lab YAML (e.g. configs/virtual_lab.yaml)")
    s.add_argument(
        "--port",
        type=int,
        default=5025,
        help="first port (instruments take consecutive ports); 0: ephemeral (default 5025)",
    )
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    s.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the lab has no authentication)",
    )
    s.add_argument("--station-out", help="write a qcodes station YAML for the served lab here")
    s.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        metavar="N",
        help=f"open connections per instrument; more are refused (default {MAX_CONNECTIONS})",
    )
    s.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection after this long without a complete command line "
        f"(default {IDLE_TIMEOUT:g})",
    )
    s.add_argument(
        "--max-line",
        type=int,
        default=MAX_LINE,
        metavar="BYTES",
        help=f"longest command line; a longer one is discarded (default {MAX_LINE})",
    )
    s.set_defaults(lab_func=cmd_serve)

    c = sub.add_parser(
        "calibrate",
        help="measure conductance vs tap of every potentiometer, write a calibration JSON",
        description="Measure conductance vs tap of every potentiometer (sources safe).",
    )
    c.add_argument("config", help="experiment YAML with a station system")
    c.add_argument("--out", required=True, help="calibration JSON to write")
    c.add_argument("--points", type=int, default=17, help="taps measured per device (>= 2)")
    c.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    c.set_defaults(lab_func=cmd_calibrate)


def cmd_lab(args: argparse.Namespace) -> int:
    code: int = args.lab_func(args)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    import yaml

    from physlearn.config import ConfigError
    from physlearn.drivers.virtual_lab.config import load_lab_config
    from physlearn.drivers.virtual_lab.server import LabServer

    cfg = load_lab_config(args.config)
    try:
        server = LabServer(
            cfg,
            host=args.host,
            port=args.port,
            allow_remote=args.allow_remote,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            max_line=args.max_line,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    def ready(srv: LabServer) -> None:
        print(f"virtual lab {args.config}: serving {len(srv.ports)} instruments", flush=True)
        for name, inst in srv.lab.instruments.items():
            print(f"  {name:<6} {inst.idn():<40} {srv.address(name)}", flush=True)
        if args.station_out:
            Path(args.station_out).write_text(yaml.safe_dump(srv.station_config(), sort_keys=False))
            print(f"  station file: {args.station_out}", flush=True)
        print("Ctrl-C stops the lab.", flush=True)

    def stop(signum: int, frame: Any) -> None:
        server.request_stop()

    # the server's refusals and idle closes, one line each, on stderr
    log = logging.getLogger("physlearn.drivers.virtual_lab.server")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("virtual lab: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(ready)
    except OSError as exc:
        raise ConfigError(f"{exc} (is the port in use? try --port 0)") from None
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        log.removeHandler(handler)
    print("virtual lab stopped", flush=True)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from physlearn.config import ConfigError, load_config
    from physlearn.drivers.station.config import StationConfig
    from physlearn.drivers.station.system import StationSystem
    from physlearn.run.start import build_system

    cfg = load_config(args.config, args.set)
    if not isinstance(cfg.system, StationConfig):
        raise ConfigError("lab calibrate needs a config with system.kind = station")
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise ConfigError(f"--out {args.out}: a directory is in the way; name the JSON file")
    try:  # before anything is measured: the table must have somewhere to go
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--out {args.out}: cannot create {out.parent} ({exc.strerror})"
        ) from None
    system = build_system(cfg)
    assert isinstance(system, StationSystem)
    t0 = time.perf_counter()
    try:
        table = system.calibrate(args.points)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out.write_text(json.dumps(table))
    taps = np.asarray(table["taps"])
    g = np.asarray(table["conductance"])
    gain = g / np.asarray(cfg.system.weights.law.conductance(taps))[None, :]
    print(
        f"calibrated {g.shape[0]} devices at {taps.size} taps in {time.perf_counter() - t0:.2f} s"
        f" -> {args.out}"
    )
    print(
        f"  measured / nominal: median {np.median(gain):.4f}, device spread (rms) "
        f"{np.std(gain.mean(axis=1)):.4f}, extremes {gain.min():.4f} .. {gain.max():.4f}"
    )
    print(f"  use it: system.weights.calibration: {args.out}", file=sys.stdout)
    return 0
