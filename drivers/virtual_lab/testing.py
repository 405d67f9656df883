"""Helpers to run station configs against the virtual lab (tests, notebooks, benchmarks).

::

    with running_lab("configs/virtual_lab_bench.yaml", record=True) as lab:
        station = write_station(lab, tmp / "station.yaml")
        raw = bench_experiment(yaml.safe_load(open("configs/virtual_lab_resistor.yaml")), station)
        start_run(parse_config(raw), tmp / "run.zarr")
        lab.received("src")          # every line the source received

Every qcodes instrument a station system opened is closed by its ``close()``; tests that create
instruments themselves close them (qcodes names are global).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from physlearn.drivers.virtual_lab.config import LabConfig, load_lab_config, parse_lab_config
from physlearn.drivers.virtual_lab.server import LabServer


def lab_config(source: str | Path | dict[str, Any] | LabConfig, **sections: Any) -> LabConfig:
    """A lab config from a file, a mapping or a config; ``sections`` replace or update top-level
    sections (dicts are merged one level deep)."""
    if isinstance(source, LabConfig):
        raw: dict[str, Any] = source.model_dump(mode="json")
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        raw = load_lab_config(source).model_dump(mode="json")
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_lab_config(raw)


@contextmanager
def running_lab(
    source: str | Path | dict[str, Any] | LabConfig, record: bool = False, **sections: Any
) -> Iterator[LabServer]:
    """Serve a virtual lab on ephemeral 127.0.0.1 ports for the duration of the block."""
    server = LabServer(lab_config(source, **sections), record=record)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_station(server: LabServer, path: str | Path, timeout: float = 2.0) -> Path:
    """Write a qcodes station YAML pointing at ``server``'s instruments."""
    p = Path(path)
    p.write_text(yaml.safe_dump(server.station_config(timeout), sort_keys=False))
    return p


def bench_experiment(raw: dict[str, Any], station: str | Path, **system: Any) -> dict[str, Any]:
    """An experiment config (raw mapping) retargeted at ``station`` without an in-process lab;
    ``system`` replaces or updates (one level deep) fields of the system section."""
    out = copy.deepcopy(raw)
    sys_ = out["system"]
    sys_.pop("lab", None)
    sys_["station"] = str(station)
    for key, value in system.items():
        if isinstance(value, dict) and isinstance(sys_.get(key), dict):
            sys_[key] = {**sys_[key], **value}
        else:
            sys_[key] = value
    return out
