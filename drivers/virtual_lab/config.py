"""Config of the virtual lab (``physlearn lab serve CONFIG``): the network on the simulated bench,
its instruments and how they are wired, their imperfections and the faults to inject.

Example (``configs/virtual_lab.yaml``)::

    seed: 0
    graph: {type: layered, sizes: [10, 16, 3]}
    settling_tau: 0.0          # s, RC time constant of the node voltages
    source: {channels: 16}     # ch 1..10 -> input nodes, ch 11..13 -> output nodes (default)
    dmm: {noise: 1.0e-6, resolution: 1.0e-7}
    pots: {law: {kind: linear, n_taps: 1024, g_min: 1.0e-5, g_max: 1.0e-2}, spread: 0.0}
    # or, instead of pots, a memristor board whose device k is edge k:
    # memristors: {name: mem, device: {g_min: 1.0e-5, g_max: 1.0e-3, ...}, initial: 1.0e-4}
    switch: {relays: [{source: 14, node: 26, conductance: 1.0e-4}, ...]}
    faults: {timeout: 0.0, drop: 0.0, garble: 0.0, stuck: 0.0}

Node and edge numbering are those of :mod:`physlearn.simulators.graphs.generators` (the same graph
config as the simulator's). The edges' conductances come from exactly one weight bank: ``pots``
(digital potentiometers, wired to edges by ``pots.wiring``) or ``memristors`` (a memristor board,
device k on edge k; :class:`~physlearn.drivers.virtual_lab.memristor.MemristorSpec`). Source
channels, relays, potentiometer channels and memristor devices count from 1; multiplexer channels
from ``dmm.first_channel`` (101). Validation is pure pydantic (no numpy work, no I/O).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from physlearn.configbase import StrictModel
from physlearn.drivers.station.roles import graph_counts
from physlearn.drivers.station.weight_roles import TapLaw
from physlearn.drivers.virtual_lab.dialects.specs import StockSpec
from physlearn.drivers.virtual_lab.memristor import MemristorSpec
from physlearn.simulators.graphs.config import GraphConfig
from physlearn.simulators.resistor.config import DiodeResistorConfig, DiodesConfig


class SourceSpec(StrictModel):
    """A multi-channel source (VLAB-SRC): each channel a voltage or a current source."""

    name: str = Field("src", pattern=r"^[a-z][a-z0-9_]*$", description="instrument name")
    channels: int = Field(16, ge=1, le=99, description="number of channels")
    wiring: list[int | None] | None = Field(
        None,
        description="node each channel's output is wired to (index = channel - 1; null: not "
        "wired, or feeding a relay); default: input nodes, then output nodes, then unwired",
    )
    max_voltage: float = Field(10.0, gt=0, description="hardware voltage range +- (V)")
    max_current: float = Field(0.1, gt=0, description="hardware current range +- (A)")
    serial: str = Field("SRC0001", description="serial number in *IDN?")


class DMMSpec(StrictModel):
    """A DMM with a multiplexer card (VLAB-DMM): scans node voltages."""

    name: str = Field("dmm", pattern=r"^[a-z][a-z0-9_]*$")
    first_channel: int = Field(101, ge=1, description="number of the first multiplexer channel")
    mux_channels: int = Field(40, ge=1, description="number of multiplexer channels")
    wiring: list[int | None] | None = Field(
        None, description="node of each multiplexer channel (default: channel k -> node k)"
    )
    noise: float = Field(0.0, ge=0, description="reading noise, rms (V)")
    resolution: float = Field(0.0, ge=0, description="reading quantisation step (V; 0: none)")
    offset_drift: float = Field(0.0, description="offset drift of every reading (V/s)")
    range: float = Field(10.0, gt=0, description="|V| above this reads as overload 9.9E37")
    serial: str = Field("DMM0001")


class PotSpec(StrictModel):
    """A bank of digital potentiometers (VLAB-POT), one per network edge."""

    name: str = Field("pots", pattern=r"^[a-z][a-z0-9_]*$")
    channels: int | None = Field(None, ge=1, description="number of devices (default: edges)")
    law: TapLaw = Field(default_factory=TapLaw, description="nominal conductance vs tap")
    spread: float = Field(
        0.0, ge=0, lt=0.5, description="device-to-device gain spread, relative rms (seeded)"
    )
    drift: float = Field(
        0.0, ge=0, description="relative conductance drift rate, rms over devices (1/s, seeded)"
    )
    drift_interval: float = Field(0.1, gt=0, description="drift is applied in steps of (s)")
    wiring: list[int] | None = Field(
        None, description="edge each channel sits on (index = channel - 1; default: identity)"
    )
    initial_tap: int = Field(0, ge=0, description="tap of every device at power-on")
    measure_noise: float = Field(
        0.0, ge=0, description="relative rms noise of the isolated conductance measurement"
    )
    serial: str = Field("POT0001")


class RelaySpec(StrictModel):
    source: int = Field(ge=1, description="source channel feeding this relay")
    node: int = Field(ge=0, description="network node the relay connects to")
    conductance: float = Field(
        gt=0, description="series conductance when closed (S): a nudge resistor or 1/R_on"
    )


class SwitchSpec(StrictModel):
    """A switch matrix (VLAB-SWM): relays from source channels to nodes."""

    name: str = Field("swm", pattern=r"^[a-z][a-z0-9_]*$")
    relays: list[RelaySpec] = Field(min_length=1)
    serial: str = Field("SWM0001")


class FaultSpec(StrictModel):
    """Faults injected at random (seeded), as probabilities per command or per reply."""

    timeout: float = Field(0.0, ge=0, lt=1, description="a query's reply is never sent")
    drop: float = Field(0.0, ge=0, lt=1, description="the connection is closed on a command")
    garble: float = Field(0.0, ge=0, lt=1, description="a reply's characters are corrupted")
    stuck: float = Field(0.0, ge=0, lt=1, description="a scan repeats the previous reply")
    instruments: list[str] | None = Field(
        None, description="instruments that misbehave (default: all)"
    )
    seed: int = Field(0, ge=0, description="seed of the fault draws")

    def any(self) -> bool:
        return any(getattr(self, k) > 0 for k in ("timeout", "drop", "garble", "stuck"))


class LabConfig(StrictModel):
    """The simulated bench."""

    seed: int = Field(0, ge=0, description="seeds device spread, drift and noise")
    graph: GraphConfig = Field(description="the resistor network (as in the simulator config)")
    leakage: float = Field(
        1e-12,
        gt=0,
        description="leakage conductance from every node to ground (S); it also gives the "
        "network a reference when fewer than two sources drive it",
    )
    settling_tau: float = Field(
        0.0, ge=0, description="time constant of the node voltages after a change (s)"
    )
    source: SourceSpec = Field(default_factory=SourceSpec)
    dmm: DMMSpec = Field(default_factory=DMMSpec)
    pots: PotSpec | None = Field(
        None, description="the weight bank as digital potentiometers (VLAB-POT); or memristors"
    )
    switch: SwitchSpec | None = None
    memristors: MemristorSpec | None = Field(
        None,
        description="the weight bank as a memristor board (VLAB-MEM): device k is edge k, "
        "pulse-programmed; or pots",
    )
    stock: StockSpec | None = Field(
        None, description="instruments speaking real models' dialects (stock qcodes drivers)"
    )
    faults: FaultSpec = Field(default_factory=FaultSpec)
    diodes: DiodesConfig | None = Field(
        None,
        description="fixed diodes and bias rails (held inside the bench), as in the "
        "diode_resistor simulator's diodes section: the bench mirrors that system",
    )

    def n_nodes(self) -> int:
        return graph_counts(self.graph)[0]

    def n_edges(self) -> int:
        return graph_counts(self.graph)[1]

    def instrument_names(self) -> list[str]:
        names = [self.source.name, self.dmm.name]
        if self.pots is not None:
            names.append(self.pots.name)
        if self.switch is not None:
            names.append(self.switch.name)
        if self.stock is not None:
            names += self.stock.names()
        if self.memristors is not None:
            names.append(self.memristors.name)
        return names

    def ports(self) -> tuple[list[int], list[int]]:
        """(input nodes, output nodes) of the graph, in port order."""
        g = self.graph
        if g.type == "layered":
            n = sum(g.sizes)
            return list(range(g.sizes[0])), list(range(n - g.sizes[-1], n))
        if g.type == "edges":
            return list(g.input_nodes), list(g.output_nodes)
        built = g.build()
        return [int(i) for i in built.input_nodes], [int(o) for o in built.output_nodes]

    def source_wiring(self) -> list[int | None]:
        """Node wired to each source channel (index = channel - 1), None if unwired."""
        if self.source.wiring is not None:
            return list(self.source.wiring)
        ins, outs = self.ports()
        w: list[int | None] = [*ins, *outs]
        w += [None] * (self.source.channels - len(w))
        return w[: self.source.channels]

    def mux_wiring(self) -> list[int | None]:
        if self.dmm.wiring is not None:
            return list(self.dmm.wiring)
        n = self.n_nodes()
        return [k if k < n else None for k in range(self.dmm.mux_channels)]

    def pot_wiring(self) -> list[int]:
        """Edge of each potentiometer (index = channel - 1); [] without pots."""
        if self.pots is None:
            return []
        if self.pots.wiring is not None:
            return list(self.pots.wiring)
        return list(range(self.pot_count()))

    def pot_count(self) -> int:
        """Number of potentiometers (0 without pots)."""
        if self.pots is None:
            return 0
        return self.pots.channels if self.pots.channels is not None else self.n_edges()

    @model_validator(mode="after")
    def _check(self) -> LabConfig:
        names = self.instrument_names()
        if len(set(names)) != len(names):
            raise ValueError(f"instrument names must be distinct, got {names}")
        n, e = self.n_nodes(), self.n_edges()
        if self.source.wiring is not None and len(self.source.wiring) != self.source.channels:
            raise ValueError(
                f"source.wiring lists {len(self.source.wiring)} channels, source has "
                f"{self.source.channels}"
            )
        default_need = self.graph.n_inputs() + self.graph.n_outputs()
        if self.source.wiring is None and self.source.channels < default_need:
            raise ValueError(
                f"source has {self.source.channels} channels; the default wiring needs "
                f"{default_need} (inputs + outputs)"
            )
        for ch, node in enumerate(self.source_wiring(), start=1):
            if node is not None and not 0 <= node < n:
                raise ValueError(f"source channel {ch} is wired to node {node}, outside 0..{n - 1}")
        if self.dmm.wiring is not None and len(self.dmm.wiring) != self.dmm.mux_channels:
            raise ValueError("dmm.wiring must list one node per multiplexer channel")
        wired = [x for x in self.mux_wiring() if x is not None]
        for node in wired:
            if not 0 <= node < n:
                raise ValueError(f"dmm.wiring names node {node}, outside 0..{n - 1}")
        if self.dmm.wiring is None and self.dmm.mux_channels < n:
            raise ValueError(f"the multiplexer has {self.dmm.mux_channels} channels for {n} nodes")
        self._check_weight_bank(e)
        if self.switch is not None:
            direct = self.source_wiring()
            for k, r in enumerate(self.switch.relays, start=1):
                if r.source > self.source.channels:
                    raise ValueError(f"switch relay {k}: source channel {r.source} does not exist")
                if direct[r.source - 1] is not None:
                    raise ValueError(
                        f"switch relay {k}: source channel {r.source} is also wired directly "
                        f"to node {direct[r.source - 1]}"
                    )
                if not 0 <= r.node < n:
                    raise ValueError(f"switch relay {k}: node {r.node} outside 0..{n - 1}")
        if self.stock is not None:
            self.stock.check(self.source.channels, n)
        self._check_diodes()
        if self.faults.instruments is not None:
            unknown = set(self.faults.instruments) - set(names)
            if unknown:
                raise ValueError(f"faults.instruments names unknown instruments {sorted(unknown)}")
        return self

    def diode_nodes(self) -> set[int]:
        """Graph nodes a diode of ``diodes`` touches (empty without diodes)."""
        d, n = self.diodes, self.n_nodes()
        if d is None:
            return set()
        if d.placement != "hidden":
            return {k for pair in d.placement for k in pair if k < n}
        ins, outs = self.ports()
        return set(range(n)) - set(ins) - set(outs)

    def _check_diodes(self) -> None:
        """The diodes are a valid diode_resistor section on this graph, and no source channel
        or relay is wired to a node a diode touches (the rails are held inside the bench)."""
        if self.diodes is None:
            return
        try:
            DiodeResistorConfig(kind="diode_resistor", graph=self.graph, diodes=self.diodes)
        except ValidationError as exc:
            msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ValueError(f"diodes: {msg}") from None
        touched = self.diode_nodes()
        for ch, node in enumerate(self.source_wiring(), start=1):
            if node in touched:
                raise ValueError(
                    f"diodes: source channel {ch} is wired to node {node}, which a diode joins "
                    "to a bias rail; wire sources only to nodes without diodes"
                )
        for k, r in enumerate(self.switch.relays if self.switch else [], start=1):
            if r.node in touched:
                raise ValueError(
                    f"diodes: switch relay {k} reaches node {r.node}, which a diode joins to a "
                    "bias rail; connect relays only to nodes without diodes"
                )
        if self.diodes.placement != "hidden":
            n = self.n_nodes()
            for k, (a, c) in enumerate(self.diodes.placement):
                if a < n and c < n:
                    raise ValueError(
                        f"diodes: diode {k} = [{a}, {c}] joins two network nodes; on the bench "
                        "every diode joins a node to a bias rail (an index >= n_nodes)"
                    )

    def _check_weight_bank(self, e: int) -> None:
        """Exactly one of pots and memristors, covering each of the ``e`` edges once."""
        if (self.pots is None) == (self.memristors is None):
            got = "both" if self.pots is not None else "neither"
            raise ValueError(
                "give exactly one weight bank for the edges, pots (digital potentiometers) or "
                f"memristors (a memristor board); got {got}"
            )
        if self.memristors is not None:
            n = self.memristors.channels
            if n is not None and n != e:
                raise ValueError(
                    f"memristors.channels is {n} but the graph has {e} edges (device k is edge "
                    "k): omit channels or make it the number of edges"
                )
            return
        assert self.pots is not None
        pots = self.pot_wiring()
        if len(pots) != self.pot_count():
            raise ValueError("pots.wiring must list one edge per device")
        if sorted(pots) != list(range(e)):
            raise ValueError(
                f"pots.wiring must put exactly one device on each of the {e} edges"
                f" (got {len(pots)} devices)"
            )
        if self.pots.initial_tap > self.pots.law.n_taps - 1:
            raise ValueError("pots.initial_tap exceeds the top tap")


def parse_lab_config(raw: Any, source: str = "lab config") -> LabConfig:
    """Validate a raw mapping; errors are :class:`physlearn.config.ConfigError` naming the field."""
    from physlearn.config import validate_model

    return validate_model(LabConfig, raw, source, "virtual lab")


def load_lab_config(path: str | Path) -> LabConfig:
    from physlearn.config import ConfigError, read_yaml

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return parse_lab_config(raw, str(path))
