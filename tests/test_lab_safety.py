"""Exit paths and the dry run against the virtual lab: every way out of a run ramps the sources
down within their step; a dry run sends queries only. (Separate from test_lab_envelope, whose
module-scoped system holds the instrument names meanwhile.)"""

from __future__ import annotations

import numpy as np
import pytest
from qcodes.instrument import Instrument

from physlearn.config import parse_config
from physlearn.drivers.station.system import StationSystem
from physlearn.drivers.virtual_lab.testing import running_lab, write_station
from physlearn.run.start import build_system
from physlearn.system import Nudge

from .test_lab_envelope import (
    _LEVEL,
    BENCH,
    HW_BETA,
    QUIET,
    _commands,
    check_received,
    envelope_config,
)


def test_exit_paths_ramp_every_source_down_within_its_step(tmp_path):
    with running_lab(BENCH, record=True, **QUIET) as lab:
        raw = envelope_config(write_station(lab, tmp_path / "station.yaml"), tmp_path)
        system = build_system(parse_config(raw))
        start = lab.bench.summary()
        try:
            with pytest.raises(RuntimeError, match="boom"), system:
                system.equilibrate(np.full((1, 10), 0.95))
                system.equilibrate(
                    np.full((1, 10), 0.9), Nudge(beta=HW_BETA, target=np.full((1, 3), 0.7))
                )
                assert lab.bench.summary()["closed"].all()
                raise RuntimeError("boom")  # any exception inside the run
        finally:
            Instrument.close_all()
        state = lab.bench.summary()
        received = lab.received()
    assert not state["output"].any() and not state["volt"].any() and not state["closed"].any()
    assert check_received(received, start) > 20
    # the last writes to the input channels walk down from 0.95 V in steps of at most 0.3 V
    ch1 = [
        float(m.group(3))
        for i, c in _commands(received)
        if (m := _LEVEL.match(c)) and i == "src" and m.group(1) == "1"
    ]
    down = ch1[len(ch1) - 1 - ch1[::-1].index(0.9) :]  # from the last 0.9 V set-point on
    assert down[-1] == 0.0 and len(down) >= 4  # 0.9 V -> 0 V takes at least three 0.3 V steps
    assert all(b < a for a, b in zip(down, down[1:], strict=False))


def test_dry_run_sends_only_queries(tmp_path):
    with running_lab(BENCH, record=True, **QUIET) as lab:
        raw = envelope_config(write_station(lab, tmp_path / "station.yaml"), tmp_path)
        raw["estimator"]["beta"] = 4e-5  # W: worst-case nudge 0.8 mA, inside +-1 mA
        config = parse_config(raw)
        system = build_system(config)
        assert isinstance(system, StationSystem)
        checks = system.dry_run(config)
        received = lab.received()
    Instrument.close_all()
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    # a query is a header ending in "?" (possibly with parameters: ROUT:CLOS? (@1))
    assert received and all(cmd.split()[0].endswith("?") for _, cmd in _commands(received))
