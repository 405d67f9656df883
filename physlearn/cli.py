"""The ``physlearn`` command line.

Exit codes: 0 success; 1 the run failed (an instrument or simulator error; the store keeps every
committed step and can be resumed); 2 a user mistake (bad config, bad store path, bad arguments),
reported in one message without a traceback; 130 the run was interrupted (Ctrl-C), resumable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from physlearn.registry import SubParsers

USER_ERROR = 2
RUN_FAILED = 1
INTERRUPTED = 130

EPILOG = """\
examples:
  physlearn validate configs/quickstart.yaml
  physlearn run configs/quickstart.yaml --set optimizer.lr=0.05 --set seed=3
  physlearn inspect runs/quickstart-20260101-120000.zarr --json
  physlearn resume runs/quickstart-20260101-120000.zarr

A run is a Zarr v3 group: physlearn.open_run(PATH) reads its committed steps as an xarray
Dataset (physlearn.open_sweep a sweep); `physlearn export PATH` writes them to netCDF.
"""


def _progress_wanted(args: argparse.Namespace) -> bool:
    """The sweep's bar over its runs: on a terminal, unless ``--progress off``."""
    return getattr(args, "progress", None) != "off" and sys.stderr.isatty()


def _progress(args: argparse.Namespace) -> Any:
    """How a run reports progress (physlearn.run.progress): ``--progress``, else a bar on a
    terminal and timed lines otherwise."""
    from physlearn.run.progress import ProgressSpec

    every = float(args.progress_every)
    if args.progress is None:
        return ProgressSpec.default(every)
    return ProgressSpec(args.progress, every)


def _print_result(res: Any) -> None:
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in res.metrics.items())
    print(f"run {res.status}: {res.committed_steps} steps committed to {res.path}")
    if metrics:
        print(f"  last metrics: {metrics}")
    print(f"  inspect: physlearn inspect {res.path}")
    if res.status != "success":
        print(f"  resume:  physlearn resume {res.path}")


def check_output_path(path: str | Path, what: str) -> None:
    """Refuse an output path that cannot be created, before anything is built: an existing file
    in its place, a file among its parents, or a directory it would be created in that is not
    writable. ``what`` names the option or field (``--out``, ``store.root``)."""
    from physlearn.config import ConfigError

    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {path}: a file is in the way; give a new path or a directory")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{what} {path}: cannot write in {parent} (permission denied or read-only); "
            "choose a writable location"
        )


def _module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a None entry in sys.modules
        return False


def _status_code(status: str) -> int:
    return {"success": 0, "abort": INTERRUPTED}.get(status, RUN_FAILED)


def cmd_validate(args: argparse.Namespace) -> int:
    from physlearn.config import load_config

    cfg = load_config(args.config, args.set)
    print(f"{args.config}: valid ({cfg.system.kind} system, {cfg.total_steps()} steps)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from physlearn.config import load_config
    from physlearn.run.start import start_run

    cfg = load_config(args.config, args.set)
    if args.dry_run:
        from physlearn.dryrun import dry_run_command

        return dry_run_command(cfg, args.config)
    if args.out is not None:
        check_output_path(args.out, "--out")
    else:
        check_output_path(cfg.store.root, "store.root")
    res = start_run(
        cfg,
        args.out,
        progress=_progress(args),
        handle_signals=True,
        retain_freed_memory=args.retain_freed_memory,
    )
    _print_result(res)
    return _status_code(res.status)


def cmd_resume(args: argparse.Namespace) -> int:
    from physlearn.run.start import resume_run

    res = resume_run(
        args.store,
        progress=_progress(args),
        handle_signals=True,
        retain_freed_memory=args.retain_freed_memory,
    )
    _print_result(res)
    return _status_code(res.status)


def cmd_inspect(args: argparse.Namespace) -> int:
    from physlearn.run.inspect import follow, inspect_command

    if args.follow:
        return follow(args.store, args.json, args.interval)
    return inspect_command(args.store, args.json, args.verify)


def cmd_sweep(args: argparse.Namespace) -> int:
    from physlearn.sweep.command import sweep_command

    if args.out is not None and not args.dry_run:
        check_output_path(args.out, "--out")
    return sweep_command(
        args.sweep,
        out=args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        retry_failed=args.retry_failed,
        dry_run=args.dry_run,
        progress=_progress_wanted(args),
        retain_freed_memory=args.retain_freed_memory,
    )


def cmd_report(args: argparse.Namespace) -> int:
    from physlearn.config import ConfigError

    if not _module_available("matplotlib"):
        raise ConfigError(
            "report draws with matplotlib, which is not installed: pip install 'physlearn[sweep]'"
        )
    if args.out is not None:
        check_output_path(args.out, "--out")
    from physlearn.report.command import report_command

    return report_command(args.store, args.out)


def cmd_schema(args: argparse.Namespace) -> int:
    from physlearn.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_systems(args: argparse.Namespace) -> int:
    """List the installed systems (``physlearn.systems`` entry points): kind, config class,
    distribution, summary. A broken entry point is reported after the others, one line each
    naming it and its distribution, and the exit code is 2."""
    from physlearn import registry

    rows: list[dict[str, str]] = []
    broken: list[str] = []
    for kind in registry.kinds():
        try:
            entry = registry.entry(kind)
            cls = entry.load()
        except registry.SystemRegistryError as exc:
            broken.append(str(exc))
            continue
        rows.append(
            {
                "kind": kind,
                "config": f"{cls.__module__}:{cls.__qualname__}",
                "distribution": entry.distribution,
                "description": registry.description(cls),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        head = {"kind": "KIND", "config": "CONFIG", "distribution": "DISTRIBUTION"}
        widths = {k: max(len(r[k]) for r in [head, *rows]) for k in head}
        for r in [head, *rows]:
            cells = [r[k].ljust(widths[k]) for k in head]
            print("  ".join([*cells, r.get("description", "DESCRIPTION")]))
    for message in broken:
        print(f"physlearn: error: {message}", file=sys.stderr)
    return USER_ERROR if broken else 0


def _add_retain_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="keep freed heap memory mapped for the next step (glibc; process-wide, for the "
        "process that drives the runs; saves page faults on large networks)",
    )


def _add(
    sub: SubParsers, name: str, func: Callable[[argparse.Namespace], int], help_: str
) -> argparse.ArgumentParser:
    sp = sub.add_parser(name, help=help_, description=help_)
    sp.set_defaults(func=func)
    return sp


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_progress_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--progress",
        choices=("bar", "lines", "off"),
        help="bar: a progress bar; lines: one line every --progress-every seconds on stdout "
        "(for nohup, CI, services); off. Default: bar on a terminal, lines otherwise",
    )
    sp.add_argument(
        "--progress-every",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds between progress lines (default 30)",
    )


def _add_set_option(sp: argparse.ArgumentParser, help_: str | None = None) -> None:
    sp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help=help_)


def _add_run_commands(sub: SubParsers) -> None:
    """``run``, ``resume`` and ``validate``."""
    sp = _add(sub, "run", cmd_run, "Train: validate CONFIG, create a run store, run the campaign.")
    sp.add_argument("config", help="experiment YAML (see configs/ and `physlearn schema`)")
    sp.add_argument("--out", help="run store path (default: <store.root>/<name>-<time>.zarr)")
    _add_set_option(sp, "override a config field, value parsed as YAML (repeatable)")
    _add_progress_options(sp)
    sp.add_argument(
        "--dry-run",
        action="store_true",
        help="check the system (instruments: station, identities, envelope) without applying "
        "anything; exit 0 if ready, 2 if not",
    )
    _add_retain_flag(sp)

    sp = _add(
        sub, "resume", cmd_resume, "Continue an interrupted or aborted run from its last commit."
    )
    sp.add_argument("store", help="run store path")
    _add_progress_options(sp)
    _add_retain_flag(sp)

    sp = _add(sub, "validate", cmd_validate, "Check a config without running anything.")
    sp.add_argument("config")
    _add_set_option(sp)


def _add_inspect_command(sub: SubParsers) -> None:
    sp = _add(sub, "inspect", cmd_inspect, "Summarise a run store: status, steps, last metrics.")
    sp.add_argument("store")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument(
        "--verify",
        action="store_true",
        help="check every committed row and checkpoint against its checksum (exit 2 if damaged)",
    )
    sp.add_argument(
        "--follow",
        action="store_true",
        help="print a line (with --json: an object) whenever a commit lands, until the run ends",
    )
    sp.add_argument(
        "--interval",
        type=_positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="--follow: seconds between looks at the store (default 2)",
    )


def _add_campaign_commands(sub: SubParsers) -> None:
    """``sweep`` and ``report``."""
    sp = _add(
        sub,
        "sweep",
        cmd_sweep,
        "Run a sweep of experiments on Dask (a local cluster or a scheduler); run it again to "
        "finish an interrupted one.",
    )
    sp.add_argument("sweep", help="sweep YAML: a base config, grid/random axes and seeds")
    sp.add_argument("--out", help="sweep store path (default: sweeps/<name>.zarr)")
    sp.add_argument("--scheduler", metavar="ADDRESS", help="use this Dask scheduler")
    sp.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local cluster of N worker processes (default: one per CPU; 0: no Dask, "
        "one run after another in this process)",
    )
    sp.add_argument(
        "--retry-failed", action="store_true", help="resume failed runs instead of skipping them"
    )
    sp.add_argument("--dry-run", action="store_true", help="validate and list the plan only")
    sp.add_argument(
        "--progress",
        choices=("bar", "off"),
        help="a bar over the sweep's runs (default on a terminal), or off",
    )
    _add_retain_flag(sp)

    sp = _add(sub, "report", cmd_report, "Figures and an HTML page for a run or a sweep store.")
    sp.add_argument("store", help="run or sweep store path")
    sp.add_argument("--out", help="output directory (default: <store>.report/ beside it)")


def _add_plugin_commands(sub: SubParsers) -> None:
    """The commands of the ``physlearn.commands`` entry points (the lab, SPICE export, a third
    party's). A broken one takes only its own name: that command then exits 2 with one line
    naming the entry point and its distribution; every other command works."""
    from physlearn import registry

    for found in registry.command_entries():
        try:
            registry.command_adder(found)(sub)
        except Exception as exc:  # noqa: BLE001 - a plugin may fail in any way; report it
            reason = str(exc)
            if not isinstance(exc, registry.RegistryError):
                reason = f"{found.where()} failed: {type(exc).__name__}: {' '.join(reason.split())}"
            if found.kind not in (sub.choices or ()):
                _add_broken_command(sub, found.kind, reason)


def _add_broken_command(sub: SubParsers, name: str, reason: str) -> None:
    def broken(args: argparse.Namespace) -> int:
        from physlearn.config import ConfigError

        raise ConfigError(f"command {name!r} is unavailable: {reason}")

    help_ = "(unavailable: its plugin is broken; run it to see why)"
    # every argument is taken as it comes (no option is known), so the reason is what is said
    sp = sub.add_parser(name, help=help_, description=help_, add_help=False, prefix_chars="\0")
    sp.set_defaults(func=broken)
    sp.add_argument("args", nargs=argparse.REMAINDER)


def _add_registry_commands(sub: SubParsers) -> None:
    """``schema`` and ``systems``."""
    _add(sub, "schema", cmd_schema, "Print the JSON schema of experiment configs (for editors).")
    sp = _add(
        sub, "systems", cmd_systems, "List the installed systems (system.kind) and their origin."
    )
    sp.add_argument("--json", action="store_true", help="print one JSON list")


def build_parser() -> argparse.ArgumentParser:
    """The ``physlearn`` parser: the core's commands and every installed plugin's."""
    from physlearn import __version__

    p = argparse.ArgumentParser(
        prog="physlearn",
        description="Train physical learning machines (simulated or real) with equilibrium "
        "propagation, logging every measurement to a Zarr run store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"physlearn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run_commands(sub)
    _add_inspect_command(sub)
    _add_campaign_commands(sub)
    _add_plugin_commands(sub)
    _add_registry_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from physlearn.config import ConfigError
    from physlearn.errors import DeviceError
    from physlearn.store.lock import StoreLockedError
    from physlearn.store.run_store import DiskFullError, StoreError
    from physlearn.system import PhysicsError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (ConfigError, StoreError, StoreLockedError) as exc:
        print(f"physlearn: error: {exc}", file=sys.stderr)
        return USER_ERROR
    except DiskFullError as exc:
        print(f"physlearn: run failed: {exc}", file=sys.stderr)
        return RUN_FAILED
    except KeyboardInterrupt:
        print("physlearn: interrupted; the store keeps every committed step", file=sys.stderr)
        return INTERRUPTED
    except PhysicsError as exc:
        print(
            f"physlearn: run failed: {exc}\n(the store keeps every committed step and records "
            "the error; `physlearn inspect STORE` shows it)",
            file=sys.stderr,
        )
        return RUN_FAILED
    except DeviceError as exc:  # a plugin's device stopped the run; it words the message
        print(exc.failure_message(), file=sys.stderr)
        return RUN_FAILED


if __name__ == "__main__":
    sys.exit(main())
