"""What a station system reports about its bench: the snapshot stored with every run.

Identities, classes and addresses of the instruments, the value, unit, validator, ramp step and
inter-delay of every parameter the system drives, the envelope, the weight bank's limits and
law, and the network's size. Read from the qcodes caches (the state read at connect and kept
current by every write), so taking it sends nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from physlearn.drivers.station.system import StationSystem


def station_snapshot(system: StationSystem) -> dict[str, Any]:
    insts = system.insts
    instruments = {
        name: {
            "idn": insts.identity.get(name, ""),
            "class": f"{type(inst).__module__}.{type(inst).__name__}",
            "address": getattr(inst, "address", None),
        }
        for name, inst in insts.by_name.items()
    }
    params = {}
    for src in system.sources.values():
        for p in [*src.levels, *(src.outputs or []), *(src.compliance or [])]:
            params[p.full_name] = {
                "value": p.cache.get(get_if_invalid=False),
                "unit": p.unit,
                "vals": repr(p.vals),
                "step": p.step,
                "inter_delay": p.inter_delay,
            }
    cfg = system.config
    return {
        "class": type(system).__name__,
        "station": cfg.station,
        "virtual_lab": None if insts.lab is None else insts.lab.addresses,
        "instruments": instruments,
        "parameters": params,
        "envelope": {
            name: {**env.limits.model_dump(), "unit": env.unit}
            for name, env in system.envelopes.items()
        },
        "weights": {"kind": cfg.weights.kind, **system.bank.describe()},
        "n_nodes": system.n_nodes,
        "n_edges": int(system.edges.shape[0]),
        "supported_nudges": sorted(system.supported_nudges),
    }
