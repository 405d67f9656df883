"""``physlearn export RUN [--to netcdf] [--out FILE]``: a run's committed records in one file.

The file holds what :func:`physlearn.open_run` reads (every committed step and evaluation, with
its coordinates, units and long names); the run's attributes that are mappings, lists or
booleans (``config``, ``system_snapshot``, ``phases``, ...) are stored as JSON text, since
netCDF attributes are strings and numbers only; :func:`decode_attrs` turns them back.
Opening the file with ``xarray.open_dataset(FILE)`` gives the run back. Exit codes: 0 written,
2 a user mistake (no such run store, a directory in the way, no netCDF writer installed).

The ``physlearn.commands`` entry point ``export`` names :func:`add_commands`; this module
imports only argparse at import time (the command line imports it to build its parser).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

    from physlearn.registry import SubParsers

HELP = "Write a run's committed records to a netCDF file (what physlearn.open_run reads)."


def add_commands(sub: SubParsers) -> None:
    """Add ``physlearn export`` to the main command line's sub-commands."""
    sp = sub.add_parser("export", help=HELP, description=HELP)
    sp.set_defaults(func=cmd_export)
    sp.add_argument("run", help="run store path (a sweep's runs are <sweep>/<run_id>)")
    sp.add_argument("--to", choices=["netcdf"], default="netcdf", help="file format")
    sp.add_argument("--out", help="output file (default: the run's path with suffix .nc)")


def cmd_export(args: argparse.Namespace) -> int:
    """Read the run, write the file atomically (a reader never sees half a file)."""
    from physlearn.config import ConfigError

    if importlib.util.find_spec("xarray") is None:
        raise ConfigError("export reads with xarray, which is not installed: pip install xarray")
    engine = netcdf_engine()
    run = Path(args.run)
    out = Path(args.out) if args.out else run.with_suffix(".nc")
    if out.is_dir():
        raise ConfigError(f"--out {out}: a directory is in the way; give a file name")
    from physlearn.read.run import open_run
    from physlearn.sweep.plan import read_sweep_attrs

    if read_sweep_attrs(run) is not None:
        raise ConfigError(
            f"{run} is a sweep store: export its runs one by one ({run}/<run_id>), or read it "
            "whole with physlearn.open_sweep"
        )
    ds = open_run(run)  # StoreError (exit 2, one line) when RUN is not a readable run store
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_netcdf(ds, out, engine)
    except PermissionError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror})") from None
    print(f"wrote {out}: {ds.sizes['step']} steps, {ds.sizes['eval']} evaluations")
    return 0


def netcdf_engine() -> str:
    """The installed netCDF-4 writer xarray can use (netCDF-3 holds no 64-bit integers)."""
    from physlearn.config import ConfigError

    for module, engine in (("netCDF4", "netcdf4"), ("h5netcdf", "h5netcdf")):
        if importlib.util.find_spec(module) is not None:
            return engine
    raise ConfigError("writing netCDF needs h5netcdf or netCDF4: pip install h5netcdf")


def write_netcdf(ds: xr.Dataset, out: Path, engine: str) -> None:
    """Write ``ds`` (attributes encoded by :func:`encode_attrs`) to ``out`` through a temporary
    file in the same directory, renamed over ``out`` when complete."""
    import dask

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        # one thread: a chunk that fails to read must not leave other chunks' writes in flight,
        # which could reopen (recreate) the temporary file after it is removed below
        with dask.config.set(scheduler="synchronous"):
            ds.assign_attrs(encode_attrs(ds.attrs)).to_netcdf(tmp, engine=engine)  # type: ignore[call-overload]
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: The attribute naming the attributes :func:`encode_attrs` stored as JSON text.
JSON_ATTRS = "physlearn_json_attrs"


def encode_attrs(attrs: dict[Any, Any]) -> dict[str, Any]:
    """Attributes netCDF can hold: strings and numbers as they are, anything else (mappings,
    lists, booleans, None) as JSON text, their names listed in :data:`JSON_ATTRS`."""
    out: dict[str, Any] = {}
    encoded: list[str] = []
    for k, v in attrs.items():
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            out[str(k)] = v
        else:
            out[str(k)] = json.dumps(v, default=str)
            encoded.append(str(k))
    out[JSON_ATTRS] = json.dumps(encoded)
    return out


def decode_attrs(attrs: dict[Any, Any]) -> dict[str, Any]:
    """The attributes of a file written by :func:`write_netcdf` as the run had them."""
    out = {str(k): v for k, v in attrs.items() if k != JSON_ATTRS}
    for k in json.loads(attrs.get(JSON_ATTRS, "[]")):
        out[k] = json.loads(out[k])
    return out
