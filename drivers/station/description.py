"""What a station system reports about its bench: the snapshot stored with every run, and the
counters logged with every step (``system_<name>``: time inside instrument calls, settling
waits, readings, retries, reconnects; with memristors the devices write-verify left outside
its tolerance).

The snapshot: identities, classes and addresses of the instruments, the value, unit,
validator, ramp step and inter-delay of every parameter the system drives, the envelope, the
weight bank's limits and law, and the network's size. Read from the qcodes caches (the state
read at connect and kept current by every write), so taking it sends nothing.
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


def station_counters(system: StationSystem) -> dict[str, tuple[float, str, str]]:
    from physlearn.drivers.station.weights import MemristorBank

    t = system.timers
    out = {
        "instrument_time": (t.instrument, "s", "time inside instrument calls, cumulative"),
        "settle_wait": (t.settle, "s", "time waiting for the network to settle, cumulative"),
        "readings": (float(t.readings), "1", "node readings (or scans), cumulative"),
        "retries": (float(t.retries), "1", "instrument operations retried, cumulative"),
        "reconnects": (float(t.reconnects), "1", "VISA sessions reopened, cumulative"),
    }
    if isinstance(system.bank, MemristorBank):
        last = system.bank.last
        out["unverified_devices"] = (
            0.0 if last is None else float(last.unconverged.size),
            "1",
            "devices outside the write-verify tolerance after the last weight update",
        )
    return out
