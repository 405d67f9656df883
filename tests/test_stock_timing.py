"""The stock dialects' data-sheet timing (``stock.timing: datasheet``): each operation keeps its
instrument busy for its own figure, and the reply that observes it waits that long.

The lab runs on a frozen clock (``VirtualLab(config, clock)``), so the delay a reply would wait
is exact: command latency 0 unless a test sets it, and every figure large enough to tell apart.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.drivers.virtual_lab.dialects.keysight_34465a import NPLCS
from physlearn.drivers.virtual_lab.dialects.specs import TimingSpec
from physlearn.drivers.virtual_lab.lab import VirtualLab
from physlearn.drivers.virtual_lab.testing import lab_config

CONFIG = "configs/virtual_lab_stock_bench.yaml"
FIGURES = {
    "latency": 0.0,
    "relay_close": 0.2,
    "relay_open": 0.5,
    "dmm_trigger_delay": 1.0,
    "psu_settle": 0.003,
    "psu_output_on": 0.035,
    "psu_output_off": 0.02,
    "smu_settle": 0.0002,
}


def frozen_lab(**figures: Any) -> VirtualLab:
    """The stock bench at data-sheet timing with ``figures``, its clock standing at 0."""
    timing = {"mode": "datasheet", **FIGURES, **figures}
    cfg = lab_config(CONFIG, stock={**lab_config(CONFIG).model_dump()["stock"], "timing": timing})
    return VirtualLab(cfg, clock=lambda: 0.0)


def waited(inst: Any, line: str) -> float:
    """Execute ``line`` and return the delay its reply waits."""
    inst.take_delay()
    inst.execute(line)
    return float(inst.take_delay())


def test_relays_close_and_open_in_their_own_times() -> None:
    """34934A: a close keeps the mainframe busy relay_close, an open relay_open (34980A User's
    Guide, 0.10 ms / 0.35 ms); the driver's *ESR? after the command waits for it."""
    mux = frozen_lab().instruments["mux"]
    assert waited(mux, "ROUT:CLOS (@1101)") == 0.0  # a write is not acknowledged
    assert waited(mux, "*ESR?") == pytest.approx(0.2)
    assert waited(mux, "ROUT:OPEN (@1101)") == 0.0
    assert waited(mux, "*ESR?") == pytest.approx(0.5 + 0.2)  # still busy with the close
    assert waited(mux, "ROUT:OPEN (@1101)") == 0.0
    assert waited(mux, "*OPC?") == pytest.approx(0.7)  # an open relay opening again: no time


def test_n6705b_output_switching_takes_longer_than_a_level() -> None:
    """N67xx modules: output on psu_output_on, off psu_output_off (Series N6700 User's Guide,
    35-50 ms / 20-25 ms), a level psu_settle."""
    psu = frozen_lab().instruments["psu1"]
    assert waited(psu, "OUTP ON,(@1)") == 0.0
    assert waited(psu, "*OPC?") == pytest.approx(0.035)
    psu.busy_until = 0.0
    waited(psu, "SOUR:VOLT 0.5,(@1)")
    assert waited(psu, "*OPC?") == pytest.approx(0.003)
    psu.busy_until = 0.0
    waited(psu, "OUTP OFF,(@1)")
    assert waited(psu, "*OPC?") == pytest.approx(0.02)


@settings(max_examples=20, deadline=None)
@given(nplc=st.sampled_from([x for x in NPLCS if x <= 10]), zero=st.booleans())
def test_read_waits_the_automatic_trigger_delay_and_the_integration(
    nplc: float, zero: bool
) -> None:
    """34465A READ?: the automatic trigger delay (x1 up to 0.02 PLC, x1.3 up to 0.2 PLC, x1.6
    from 1 PLC, as the data sheet's DC-volts table steps) + NPLC / 50 Hz, x autozero_factor
    with autozero on."""
    dmm = frozen_lab(autozero_factor=2.0).instruments["dmm34465a"]
    waited(dmm, f"VOLT:NPLC {nplc}")
    waited(dmm, f"VOLT:ZERO:AUTO {'ON' if zero else 'OFF'}")
    waited(dmm, "VOLT:RANG 10")
    dmm.busy_until = 0.0
    step = 1.0 if nplc <= 0.02 else (1.3 if nplc < 1 else 1.6)
    want = step * 1.0 + nplc / 50 * (2.0 if zero else 1.0)
    assert waited(dmm, "READ?") == pytest.approx(want)


def test_fast_mode_waits_for_nothing() -> None:
    """timing: fast (CI) -- no figure applies, whatever they are set to."""
    lab = frozen_lab(mode="fast", latency=1.0)
    mux, dmm = lab.instruments["mux"], lab.instruments["dmm34465a"]
    for inst, line in ((mux, "ROUT:CLOS (@1101)"), (mux, "*ESR?"), (dmm, "READ?")):
        assert waited(inst, line) == 0.0


def test_every_figure_names_its_source() -> None:
    """Each data-sheet figure's description cites where it comes from, or says that it is a
    typical value not taken from a data sheet (never a bare number)."""
    cited = ("Guide", "specifications", "SPEC-")
    for name, field in TimingSpec.model_fields.items():
        if name == "mode":
            continue
        text = field.description or ""
        assert "typical value, not from a data sheet" in text or any(c in text for c in cited), name
