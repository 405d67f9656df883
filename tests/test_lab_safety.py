"""Exit paths and the dry run against the virtual lab, on physlearn's VLAB bench and on the
stock-driver bench: every way out of a run ramps the sources down within their step and leaves
every relay open; a dry run sends queries only. (Separate from test_lab_envelope, whose
module-scoped system holds the instrument names meanwhile.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qcodes.instrument import Instrument

from physlearn.config import parse_config
from physlearn.drivers.station.system import StationSystem
from physlearn.drivers.virtual_lab.testing import running_lab, write_station
from physlearn.run.start import build_system
from physlearn.system import Nudge

from .lab_benches import STOCK, assert_safe, commands, level_writes
from .test_lab_envelope import (
    BENCH,
    HW_BETA,
    QUIET,
    check_received,
    envelope_config,
    stock_envelope_config,
)

#: each bench's lab, its envelope config and the nudge to exit from (the VLAB bench's target
#: nudge closes its relays; the stock bench's error nudge drives the 2450s)
CASES = {
    "vlab": (BENCH, envelope_config, Nudge(beta=HW_BETA, target=np.full((1, 3), 0.7))),
    "stock": (STOCK.lab, stock_envelope_config, Nudge(beta=1e-4, error=np.full((1, 3), -9.0))),
}
PARAMS = ["vlab", pytest.param("stock", marks=pytest.mark.slow)]


def _config(name: str, lab: Any, tmp: Path) -> dict[str, Any]:
    return CASES[name][1](write_station(lab, tmp / "station.yaml"), tmp)


@pytest.mark.parametrize("name", PARAMS)
def test_exit_paths_ramp_every_source_down_within_its_step(tmp_path, name):
    lab_file, _, nudge = CASES[name]
    with running_lab(lab_file, record=True, **QUIET) as lab:
        system = build_system(parse_config(_config(name, lab, tmp_path)))
        start = lab.bench.summary()
        try:
            with pytest.raises(RuntimeError, match="boom"), system:
                system.equilibrate(np.full((1, 10), 0.95))
                system.equilibrate(np.full((1, 10), 0.9), nudge)
                held = lab.bench.summary()
                assert held["output"].all() and (held["closed"].all() or name == "stock")
                raise RuntimeError("boom")  # any exception inside the run
        finally:
            Instrument.close_all()
        assert_safe(lab)
        received = lab.received()
        assert check_received(lab, received, start) > 20
        # the last writes to the first input walk down from 0.9 V in steps of at most 0.3 V
        ch1 = [v for c, kind, v, _ in level_writes(lab, received) if (c, kind) == (1, "VOLT")]
        # and the error currents (0.9 mA) in steps of at most 0.4 mA
        amps = [v for c, kind, v, _ in level_writes(lab, received) if (c, kind) == (11, "CURR")]
    down = ch1[len(ch1) - 1 - ch1[::-1].index(0.9) :]  # from the last 0.9 V set-point on
    assert down[-1] == 0.0 and len(down) >= 4  # 0.9 V -> 0 V takes at least three 0.3 V steps
    assert all(b < a for a, b in zip(down, down[1:], strict=False))
    if name == "stock":
        # qcodes ramps by the envelope's step less the room left for the drivers' rounding
        q = system.envelopes["nudge.error"].qcodes_step()
        assert q is not None and q <= 4e-4
        assert amps[-4:] == pytest.approx([9e-4, 9e-4 - q, 9e-4 - 2 * q, 0.0], abs=1e-12)


#: what the stock drivers send on their own when they connect, changing nothing that drives the
#: network: the 34465A blanks its display text, the 34980A clears its status before each query
DRIVERS_OWN = {("dmm34465a", 'DISPLAY:TEXT ""'), ("mux", "*CLS")}


@pytest.mark.parametrize("name", PARAMS)
def test_dry_run_sends_only_queries(tmp_path, name):
    """A dry run connects, identifies and reads; it sends physlearn's commands as queries only
    (the stock drivers' own housekeeping on connecting aside) and the bench is left as it
    was."""
    with running_lab(CASES[name][0], record=True, **QUIET) as lab:
        raw = _config(name, lab, tmp_path)
        raw["estimator"]["beta"] = 4e-5  # W: worst-case nudge 0.8 mA, inside +-1 mA
        config = parse_config(raw)
        system = build_system(config)
        assert isinstance(system, StationSystem)
        before = lab.bench.summary()
        checks = system.dry_run(config)
        received = lab.received()
        after = lab.bench.summary()
        assert_safe(lab)
    Instrument.close_all()
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    for key in ("volt", "curr", "output", "closed", "taps"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    # a query is a header ending in "?" (possibly with parameters: ROUT:CLOS? (@1))
    others = {(i, c) for i, c in commands(received) if not c.split()[0].endswith("?")}
    assert received and others <= (DRIVERS_OWN if name == "stock" else set()), others
