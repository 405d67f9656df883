"""SCPI dialects of real instruments, so that the qcodes drivers shipped for them connect to the
virtual lab unmodified (configured in ``LabConfig.stock``, see
:mod:`~physlearn.drivers.virtual_lab.dialects.specs`).

* :mod:`.keithley_2450` -- Keithley 2450 SourceMeter (``Keithley2450``);
* :mod:`.keysight_n6705b` -- Keysight N6705B DC power analyzer (``KeysightN6705B``);
* :mod:`.keysight_34980a` -- Keysight 34980A + 34934A 8x64 matrix (``Keysight34980A``);
* :mod:`.keysight_34465a` -- Keysight 34465A DMM (``Keysight34465A``);
* :mod:`.base` -- IEEE 488.2 common commands, event status register, reply timing.

Example: ``configs/virtual_lab_stock_bench.yaml``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config imports .specs, so this package imports nothing at load time
    from physlearn.drivers.virtual_lab.bench import Bench
    from physlearn.drivers.virtual_lab.dialects.base import StockInstrument
    from physlearn.drivers.virtual_lab.dialects.specs import StockSpec


def stock_instruments(spec: StockSpec, bench: Bench) -> list[StockInstrument]:
    """The stock-dialect instruments of ``spec`` on ``bench``, in config order by kind."""
    from physlearn.drivers.virtual_lab.dialects.keithley_2450 import K2450
    from physlearn.drivers.virtual_lab.dialects.keysight_34465a import DMM34465A
    from physlearn.drivers.virtual_lab.dialects.keysight_34980a import Matrix34980A
    from physlearn.drivers.virtual_lab.dialects.keysight_n6705b import N6705B

    t = spec.timing
    out: list[StockInstrument] = [N6705B(s, bench, t) for s in spec.n6705b]
    out += [K2450(s, bench, t) for s in spec.k2450]
    matrices = {s.name: Matrix34980A(s, bench, t) for s in spec.k34980a}
    out += list(matrices.values())
    out += [DMM34465A(s, bench, t, matrices[s.matrix]) for s in spec.k34465a]
    return out
