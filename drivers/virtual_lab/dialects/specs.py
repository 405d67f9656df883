"""Config of the stock-dialect instruments of the virtual lab (``LabConfig.stock``).

Each entry is one instrument that speaks the SCPI dialect of a real model closely enough that the
qcodes driver shipped for that model connects to it unmodified (see
:mod:`physlearn.drivers.virtual_lab.dialects`). Sources (N6705B channels, 2450s) drive *bench
source channels* (``source.channels``, counted from 1): the node each drives is the bench's
``source.wiring`` (default: input nodes, then output nodes), so the stock instrument and the
built-in ``VLAB-SRC`` front end share that channel's state. The 34980A matrix connects network
nodes (one per column) to rows; the 34465A reads row ``row`` of one matrix.

Timing (``stock.timing``): ``mode: fast`` (default, CI) answers at once; ``mode: datasheet``
delays the reply that observes an operation (``READ?``, ``FETCH?``, ``:MEASure?``, ``*OPC?``,
``*ESR?``, ``*WAI``) by the data-sheet duration of that operation; every figure is configurable.
Validation is pure pydantic (no numpy, no I/O).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from physlearn.configbase import StrictModel

_NAME = r"^[a-z][a-z0-9_]*$"


class TimingSpec(StrictModel):
    """Data-sheet timing of the stock instruments (seconds unless stated).

    Each figure's description names its source; "typical value, not from a data sheet" marks a
    figure no published source was found for (an order of magnitude a lab would see). The
    defaults are what the bench of ``configs/virtual_lab_stock_bench.yaml`` would show.
    """

    mode: Literal["fast", "datasheet"] = Field(
        "fast", description="fast: no waits (CI); datasheet: the figures below"
    )
    latency: float = Field(
        1e-3,
        ge=0,
        description="per command line: the instrument's command processing + LAN round trip; "
        "typical value, not from a data sheet",
    )
    line_frequency: Literal[50, 60] = Field(
        50,
        description="power line (Hz); 1 PLC = 1/f (Truevolt Operating and Service Guide, "
        "'Range, Resolution and Integration Time': 1 PLC = 20 ms at 50 Hz, 16.7 ms at 60 Hz)",
    )
    autozero_factor: float = Field(
        2.0,
        ge=1,
        description="reading time multiplier with autozero on (a zero measurement follows "
        "each reading): 34410A/11A/L4411A User's Guide, 'Making High-Speed dc and Resistance "
        "Measurements' -- autozero off 'will more than double your reading speeds'; the "
        "34465A's own figure not found",
    )
    relay_close: float = Field(
        0.10e-3,
        ge=0,
        description="34934A reed relay close time: 34980A User's Guide, Table 4 (matrix "
        "selection), 34934A open/close time 0.35 ms/0.10 ms",
    )
    relay_open: float = Field(
        0.35e-3,
        ge=0,
        description="34934A reed relay open time: 34980A User's Guide, Table 4 (matrix "
        "selection), 34934A open/close time 0.35 ms/0.10 ms",
    )
    dmm_trigger_delay: float = Field(
        100e-6,
        ge=0,
        description="34465A automatic trigger delay, DC volts at <= 0.02 PLC (x1.3 at "
        "0.06-0.2 PLC, x1.6 from 1 PLC): the 34410A/11A/L4411A User's Guide's automatic "
        "trigger delays (100/130/160 us, all ranges); the 34465A's own table not found",
    )
    dmm_range_change: float = Field(
        5e-3,
        ge=0,
        description="34465A range or function change; typical value, not from a data sheet",
    )
    smu_settle: float = Field(
        200e-6,
        ge=0,
        description="2450 source settling to 0.1 % after a level or output change: Model 2450 "
        "specifications (SPEC-2450 Rev. A), output settling time, 20 V range, 100 mA I-limit: "
        "< 200 us typical (a voltage-source figure, used for the current source too)",
    )
    psu_settle: float = Field(
        1e-3,
        ge=0,
        description="N6705B (N6784A module) settling after a level change; typical value, not "
        "from a data sheet (the N6784A's programming response time was not found)",
    )
    psu_output_on: float = Field(
        35e-3,
        ge=0,
        description="N67xx module output on: Series N6700 User's Guide, OUTPut[:STATe] -- "
        "'may take between 35 and 50 milliseconds'",
    )
    psu_output_off: float = Field(
        20e-3,
        ge=0,
        description="N67xx module output off: Series N6700 User's Guide, OUTPut[:STATe] -- "
        "'between 20 and 25 milliseconds'",
    )

    def get(self, name: str) -> float:
        """The figure ``name``, or 0 in fast mode."""
        return 0.0 if self.mode == "fast" else float(getattr(self, name))


class N6705BSpec(StrictModel):
    """A Keysight N6705B DC power analyzer: 4 module channels, each a bench source channel."""

    name: str = Field(pattern=_NAME)
    channels: list[int | None] = Field(
        min_length=4, max_length=4, description="bench source channel of modules 1..4 (null: none)"
    )
    max_voltage: float = Field(20.0, gt=0, description="module voltage range (V), e.g. N6762A 50")
    min_voltage: float = Field(
        0.0,
        le=0,
        description="lowest module voltage (V): 0 for the unipolar DC modules (N673xB..N676xA), "
        "-20 for the four-quadrant source/measure module N6784A",
    )
    max_current: float = Field(3.0, gt=0, description="module current range (A)")
    serial: str = Field("MY50001897")


class K2450Spec(StrictModel):
    """A Keithley 2450 SourceMeter on one bench source channel."""

    name: str = Field(pattern=_NAME)
    channel: int = Field(ge=1, description="bench source channel it drives")
    serial: str = Field("04512345")


class K34980ASpec(StrictModel):
    """A Keysight 34980A with one 34934A in 8x64 (1-wire) in ``slot``: column = node."""

    name: str = Field(pattern=_NAME)
    slot: int = Field(1, ge=1, le=8)
    columns: dict[int, int] | None = Field(
        None, description="node -> column (1..64); default: node k on column k + 1"
    )
    relay_conductance: float = Field(
        1e-2, gt=0, description="row-to-column path conductance when closed (S; 100 ohm AUTO100)"
    )
    serial: str = Field("MY54321000")


class K34465ASpec(StrictModel):
    """A Keysight 34465A DMM whose HI is on row ``row`` of matrix ``matrix`` (LO on ground)."""

    name: str = Field(pattern=_NAME)
    matrix: str = Field(pattern=_NAME, description="name of the 34980A it reads through")
    row: int = Field(1, ge=1, le=8)
    serial: str = Field("MY60001234")


class StockSpec(StrictModel):
    """Instruments with the dialects of real models (served next to the built-in ones)."""

    timing: TimingSpec = Field(default_factory=TimingSpec)
    n6705b: list[N6705BSpec] = Field(default_factory=list)
    k2450: list[K2450Spec] = Field(default_factory=list)
    k34980a: list[K34980ASpec] = Field(default_factory=list)
    k34465a: list[K34465ASpec] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _timing_word(cls, raw: Any) -> Any:
        """``timing: fast`` is short for ``timing: {mode: fast}``."""
        if isinstance(raw, dict) and isinstance(raw.get("timing"), str):
            return {**raw, "timing": {"mode": raw["timing"]}}
        return raw

    def names(self) -> list[str]:
        return [s.name for group in self._groups() for s in group]

    def _groups(self) -> list[list[Any]]:
        return [self.n6705b, self.k2450, self.k34980a, self.k34465a]

    def source_channels(self) -> list[tuple[str, int]]:
        """(instrument, bench channel) of every stock source channel."""
        out = [(n.name, c) for n in self.n6705b for c in n.channels if c is not None]
        return out + [(k.name, k.channel) for k in self.k2450]

    def check(self, n_channels: int, n_nodes: int) -> None:
        """Raise ValueError naming the entry that does not fit the bench."""
        seen: dict[int, str] = {}
        for name, ch in self.source_channels():
            if not 1 <= ch <= n_channels:
                raise ValueError(f"stock {name}: bench source channel {ch} outside 1..{n_channels}")
            if ch in seen:
                raise ValueError(
                    f"stock {name}: bench source channel {ch} already used by {seen[ch]}"
                )
            seen[ch] = name
        matrices = {m.name for m in self.k34980a}
        for m in self.k34980a:
            cols = m.columns or {k: k + 1 for k in range(min(n_nodes, 64))}
            for node, col in cols.items():
                if not 0 <= node < n_nodes or not 1 <= col <= 64:
                    raise ValueError(
                        f"stock {m.name}: columns maps node {node} to column {col}; "
                        f"nodes 0..{n_nodes - 1}, columns 1..64"
                    )
            if len(set(cols.values())) != len(cols):
                raise ValueError(f"stock {m.name}: two nodes share a column")
        for d in self.k34465a:
            if d.matrix not in matrices:
                raise ValueError(f"stock {d.name}: matrix {d.matrix!r} is not a k34980a entry")
