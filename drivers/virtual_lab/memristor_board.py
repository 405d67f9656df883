"""The virtual lab's memristor board (VLAB-MEM<n>): an array of pulse-programmed memristive
devices (:mod:`physlearn.drivers.virtual_lab.memristor`) behind the small SCPI command set a
lab's microcontroller board speaks, served over TCP like every virtual-lab instrument.

The devices are the bench's weights (the lab config's ``memristors`` section instead of
``pots``): device ``d`` is the conductance of network edge ``d - 1``, held by the bench
(:attr:`Bench.memristors <physlearn.drivers.virtual_lab.bench.Bench.memristors>`). Every pulse
command that applies a pulse changes the network; the network sees the true conductances,
``MEM:READ?`` reports them with the devices' read noise.

Commands (besides ``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``, ``SYST:ERR?``; see
:mod:`physlearn.drivers.virtual_lab.lab` for the common rules and error codes):

``MEM:COUN?``
    number of devices ``n``.
``MEM:READ? [(@list)]``
    conductance of the listed devices (all if no list), comma separated (S), with read noise.
``MEM:WIND?``
    the nominal window ``g_min,g_max`` (S), as a data sheet gives it.
``MEM:PULS:SET <k>,(@list)`` / ``MEM:PULS:RES <k>,(@list)``
    ``k`` SET / RESET pulses to each listed device, ``0 <= k <= max_pulses``.
``MEM:PULS:ALL <c1>,...,<cn>``
    signed pulse counts, one per device (``+`` SET, ``-`` RESET), ``|c| <= max_pulses``.
``MEM:PULS:MAX?``
    ``max_pulses``, the most pulses one command may ask of a device.
``MEM:PULS:WIDT <s>`` / ``?``; ``MEM:PULS:WIDT:LIM?`` -> ``min,max`` (s)
``MEM:VOLT:SET <V>`` / ``?``; ``MEM:VOLT:RES <V>`` / ``?``; ``MEM:VOLT:LIM?`` -> ``max`` (V)
    pulse width and amplitudes; beyond their limits -222. A pulse other than the nominal one
    acts as :meth:`MemristorModel.pulse_scale` pulse-equivalents.

A count beyond ``max_pulses`` or below 0 (-222), a malformed number (-104) or a wrong number of
counts (-109) is refused before any pulse is applied. ``*RST`` restores the nominal pulse
settings; the devices keep their conductances (they are non-volatile).
"""

from __future__ import annotations

import re

import numpy as np

from physlearn.drivers.virtual_lab.bench import Bench
from physlearn.drivers.virtual_lab.instrument import (
    Handler,
    SimInstrument,
    need_command,
    need_query,
)
from physlearn.drivers.virtual_lab.memristor import RESET, SET, MemristorArray, MemristorSpec
from physlearn.drivers.virtual_lab.scpi import ScpiError, channel_list, fmt, integer, number

_COUNT_AND_LIST = re.compile(r"\s*([^,(]*?)\s*,\s*(\(@.*\))\s*", re.DOTALL)


class MemristorBoard(SimInstrument):
    """VLAB-MEM: the memristor board. ``array`` holds the devices: the bench's weights."""

    driver = "physlearn.drivers.instruments.memristor_board.MemristorBoard"

    def __init__(self, name: str, bench: Bench, spec: MemristorSpec) -> None:
        if bench.memristors is None:
            raise ValueError(f"{name}: the bench's weights are not memristors (no memristors)")
        self.spec = spec
        self.array: MemristorArray = bench.memristors
        super().__init__(name, bench, spec.serial)
        self.model = f"VLAB-MEM{self.array.n}"
        self.width = spec.device.width
        self.v_set = spec.device.v_set
        self.v_reset = spec.device.v_reset

    def commands(self) -> list[tuple[str, Handler]]:
        return [
            ("MEMory:COUNt", self._count),
            ("MEMory:READ", self._read),
            ("MEMory:WINDow", self._window),
            ("MEMory:PULSe:SET", self._pulse_set),
            ("MEMory:PULSe:RESet", self._pulse_reset),
            ("MEMory:PULSe:ALL", self._pulse_all),
            ("MEMory:PULSe:MAX", self._max),
            ("MEMory:PULSe:WIDTh:LIMits", self._width_limits),
            ("MEMory:PULSe:WIDTh", self._width),
            ("MEMory:VOLTage:LIMit", self._volt_limit),
            ("MEMory:VOLTage:SET", self._volt_set),
            ("MEMory:VOLTage:RESet", self._volt_reset),
        ]

    def reset(self) -> None:
        d = self.spec.device
        self.width, self.v_set, self.v_reset = d.width, d.v_set, d.v_reset

    # -- queries -----------------------------------------------------------------------------
    def _count(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return str(self.array.n)

    def _devices(self, arg: str | None) -> np.ndarray:
        n = self.array.n
        return np.asarray(channel_list(arg, 1, n, n), dtype=np.int64) - 1

    def _read(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        g = self.array.read(self.bench.clock())
        if arg is not None and arg.strip():
            g = g[self._devices(arg)]
        return ",".join(fmt(v) for v in g)

    def _window(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        d = self.spec.device
        return f"{fmt(d.g_min)},{fmt(d.g_max)}"

    def _max(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return str(self.spec.max_pulses)

    # -- pulses ------------------------------------------------------------------------------
    def _check_count(self, k: int) -> None:
        top = self.spec.max_pulses
        if not -top <= k <= top:
            raise ScpiError(-222, f"pulse count {k} not in -{top}..{top}")

    def _apply(self, counts: np.ndarray) -> None:
        """Apply checked pulse counts now; the network changes with the devices."""
        if not counts.any():
            return
        d = self.spec.device
        self.array.pulse(counts, self.bench.clock(),
                         s_set=d.pulse_scale(self.width, self.v_set, SET),
                         s_reset=d.pulse_scale(self.width, self.v_reset, RESET))  # fmt: skip
        self.bench.changed(conductances=True)

    def _pulse_listed(self, arg: str | None, sign: int) -> None:
        mm = _COUNT_AND_LIST.fullmatch(arg or "")
        if mm is None:
            raise ScpiError(-109, "expected <count>,(@devices)")
        k = integer(mm.group(1))
        if k < 0:
            raise ScpiError(-222, f"pulse count {k} is negative")
        self._check_count(k)
        devices = self._devices(mm.group(2))
        counts = np.zeros(self.array.n, dtype=np.int64)
        counts[devices] = sign * k
        self._apply(counts)

    def _pulse_set(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        need_command(query, "MEM:PULS:SET")
        self._pulse_listed(arg, SET)

    def _pulse_reset(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        need_command(query, "MEM:PULS:RES")
        self._pulse_listed(arg, RESET)

    def _pulse_all(self, m: re.Match[str], query: bool, arg: str | None) -> None:
        need_command(query, "MEM:PULS:ALL")
        n = self.array.n
        parts = (arg or "").split(",")
        if len(parts) != n:
            raise ScpiError(-109, f"expected {n} pulse counts, got {len(parts)}")
        counts = [integer(p) for p in parts]
        for k in counts:
            self._check_count(k)
        self._apply(np.asarray(counts, dtype=np.int64))

    # -- pulse settings ----------------------------------------------------------------------
    def _width_limits(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return f"{fmt(self.spec.width_min)},{fmt(self.spec.width_max)}"

    def _width(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return fmt(self.width)
        w = number(arg)
        lo, hi = self.spec.width_min, self.spec.width_max
        if not lo <= w <= hi:
            raise ScpiError(-222, f"pulse width {w:g} s not in {lo:g}..{hi:g} s")
        self.width = w
        return None

    def _volt_limit(self, m: re.Match[str], query: bool, arg: str | None) -> str:
        need_query(query)
        return fmt(self.spec.max_voltage)

    def _amplitude(self, arg: str | None) -> float:
        v = number(arg)
        top = self.spec.max_voltage
        if not 0 < v <= top:
            raise ScpiError(-222, f"pulse amplitude {v:g} V not in (0, {top:g}] V")
        return v

    def _volt_set(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return fmt(self.v_set)
        self.v_set = self._amplitude(arg)
        return None

    def _volt_reset(self, m: re.Match[str], query: bool, arg: str | None) -> str | None:
        if query:
            return fmt(self.v_reset)
        self.v_reset = self._amplitude(arg)
        return None
