"""Real-hardware checks, opt-in: ``pytest tests/test_lab_hardware.py --device-address=ADDRESS``.

Skipped unless ``--device-address`` is given (tests/conftest.py). ADDRESS is a VISA resource
name, e.g. ``TCPIP::192.168.1.20::5025::SOCKET`` or ``GPIB0::12::INSTR``; the pyvisa-py backend
(``@py``) is used unless ``PHYSLEARN_VISALIB`` names another. They only query, except the last
one, which runs only against a VLAB-compatible source and leaves it in its safe state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.hardware


@pytest.fixture
def address(request: pytest.FixtureRequest) -> str:
    value = request.config.getoption("--device-address")
    assert value, "hardware tests need --device-address"
    return str(value)


@pytest.fixture
def resource(address: str) -> Iterator[Any]:
    import pyvisa

    rm = pyvisa.ResourceManager(os.environ.get("PHYSLEARN_VISALIB", "@py"))
    res = rm.open_resource(address, read_termination="\n", write_termination="\n", timeout=5000)
    try:
        yield res
    finally:
        res.close()
        rm.close()


def test_instrument_identifies_itself(resource):
    idn = resource.query("*IDN?").strip()
    fields = idn.split(",")
    assert len(fields) == 4 and all(f.strip() for f in fields[:2]), idn


def test_error_queue_is_readable_and_empty_after_a_query(resource):
    resource.write("*CLS")
    resource.query("*IDN?")
    code = resource.query("SYST:ERR?").split(",")[0].strip()
    assert int(code) == 0


def test_vlab_source_refuses_out_of_envelope_values_and_ends_safe(address, resource):
    from qcodes.instrument import Instrument

    from physlearn.drivers.instruments.source import VirtualLabSource
    from physlearn.drivers.station.config import Limits
    from physlearn.drivers.station.safety import RoleEnvelope, apply_to_parameter, hardware_range

    if ",VLAB-SRC" not in resource.query("*IDN?"):
        pytest.skip("not a VLAB-compatible source (physlearn lab serve)")
    resource.close()
    src = VirtualLabSource(
        "hw_src", address, visalib=os.environ.get("PHYSLEARN_VISALIB", "@py"), device_clear=False
    )
    try:
        ch = src.channels[0]
        if ch.output.get():
            pytest.skip("channel 1 is live; this test only drives an idle channel")
        env = RoleEnvelope("hw", "V", Limits(min=-0.1, max=0.1, step=0.05), (ch.full_name,))
        apply_to_parameter(ch.volt, env, hardware_range(ch.volt))
        ch.volt.get()
        with pytest.raises(ValueError):
            ch.volt.set(0.2)
        ch.volt.set(0.1)
        ch.volt.set(0.0)
        assert ch.volt.get() == 0.0 and ch.output.get() is False
    finally:
        Instrument.close_all()
