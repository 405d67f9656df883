"""Config of the instrument-backed resistor network (``system: kind: station``).

The experiment config that trained a simulator trains the bench by changing only its ``system``
section. The section names a qcodes Station YAML (instruments, addresses, drivers) and maps
*roles* to qcodes channels and parameters by name:

* ``inputs``: voltage-source channels clamping the input nodes, in ``graph.input_nodes`` order;
* ``nudge``: how the bench nudges the outputs, one or more of
  - ``error``: current-mode source channels wired to the output nodes inject
    ``I_o = -beta * eps_o`` (A); free phase: 0 A (an ideal current source at 0 A is an open
    circuit);
  - ``clamp``: voltage-source channels wired to the output nodes hold them at the clamp voltages
    (coupled learning, Dillavou et al.); free phase: their outputs are off (or their switches
    open);
  - ``target``: a fixed nudge conductance (``conductance``, S) from each output node through a
    switch to a voltage source at the target voltage; beta must equal that conductance;
* ``probes``: a meter reading every node voltage through its multiplexer (one scan, V);
* ``weights``: a bank of digital potentiometers, one per edge, whose tap sets the conductance.

Each source role carries its share of the **safety envelope** (:class:`Limits`): the allowed range
of the level, the ramp step and the delay between ramp steps, the compliance, and the safe
value. See :mod:`physlearn.drivers.station.safety`. The roles, the envelope and the tap law are
defined in :mod:`physlearn.drivers.station.roles` (the system and the virtual lab use them
without importing this module, which builds the system).

Names of channels expand brace ranges: ``"src.ch{01..10}"`` is ``src.ch01 ... src.ch10`` (the
width of the first bound sets the zero padding). Paths (``station``, ``lab.serve``,
``weights.calibration``) are relative to the directory physlearn runs in and are stored resolved.

Validation is pure pydantic + YAML: it never imports qcodes or pyvisa and never touches hardware.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import Field, field_validator, model_validator

from physlearn.configbase import StrictModel, SystemConfigBase
from physlearn.drivers.station.roles import (
    EquilibriumConfig,
    Limits,
    NudgeConfig,
    ProbeRole,
    RetryConfig,
    SourceRole,
    check_public,
    graph_counts,
    resolve_path,
)
from physlearn.drivers.station.weight_roles import TapLaw, WeightRole, WeightsRole
from physlearn.simulators.graphs.config import GraphConfig
from physlearn.simulators.resistor.config import DiodeResistorConfig, ResistorConfig
from physlearn.yamlload import YAMLInputError, load_yaml_file

if TYPE_CHECKING:
    from physlearn.drivers.station.system import StationSystem

#: The role types, importable from here as from the roles module (they are this config's
#: sections).
__all__ = ["LabServe", "Limits", "SourceRole", "StationConfig", "TapLaw", "WeightRole"]


#: Simulator configs a station may mirror (each provides ``conjugates_from_voltages``).
Mirrored: TypeAlias = ResistorConfig | DiodeResistorConfig


class LabServe(StrictModel):
    """Start the virtual lab in this process (background thread, ephemeral ports on 127.0.0.1)
    and point the station at it; it is stopped by ``close()``."""

    serve: str = Field(description="virtual-lab YAML (see configs/virtual_lab.yaml)")

    @field_validator("serve")
    @classmethod
    def _exists(cls, v: str) -> str:
        if not Path(v).expanduser().is_file():
            raise ValueError(f"virtual-lab file {v!r} does not exist")
        from physlearn.drivers.virtual_lab.config import load_lab_config

        load_lab_config(v)
        return resolve_path(v)


class StationConfig(SystemConfigBase):
    """A resistor network on the bench, driven through a qcodes station."""

    kind: Literal["station"] = Field(
        "station", description="system kind: instruments of a qcodes station"
    )
    station: str = Field(description="qcodes Station YAML (instruments, drivers, addresses)")
    lab: LabServe | None = Field(None, description="serve the virtual lab in-process (demo, CI)")
    graph: GraphConfig = Field(description="the network wired on the bench (edge order = pots)")
    identity: dict[str, str] = Field(
        default_factory=dict,
        description="instrument -> regular expression its *IDN? reply must match",
    )
    inputs: SourceRole = Field(description="voltage sources on the input nodes")
    nudge: NudgeConfig = Field(description="how the outputs are nudged")
    probes: ProbeRole = Field(description="the meter and multiplexer reading node voltages")
    weights: WeightsRole = Field(
        description="the devices setting the conductances: pots (default) or memristor"
    )
    equilibrium: EquilibriumConfig = Field(default_factory=EquilibriumConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    mirrors: Mirrored | None = Field(
        None,
        discriminator="kind",
        description="the simulator config the bench mirrors (kind resistor or diode_resistor): "
        "the graph comes from it, the conjugates and energy of the measured node voltages from "
        "its conjugates_from_voltages; none: a linear resistor network",
    )

    @model_validator(mode="before")
    @classmethod
    def _graph_from_mirror(cls, data: Any) -> Any:
        """Without ``graph``, the mirrored simulator's graph."""
        if isinstance(data, dict) and "graph" not in data:
            mirrors = data.get("mirrors")
            if isinstance(mirrors, dict) and "graph" in mirrors:
                data = {**data, "graph": mirrors["graph"]}
        return data

    def _check_mirror(self) -> None:
        m = self.mirrors
        if m is None:
            return
        if m.graph != self.graph:
            raise ValueError(
                f"graph {self.graph.model_dump(exclude_defaults=True)} disagrees with "
                f"mirrors.graph {m.graph.model_dump(exclude_defaults=True)}: omit graph (it is "
                "taken from mirrors) or make them the same"
            )
        if m.ground:
            raise ValueError(
                "mirrors.ground must be false: the bench has no ground source; wire a 0 V "
                "input node instead"
            )
        if isinstance(m, DiodeResistorConfig) and m.weights.element != "resistor":
            raise ValueError(
                "mirrors.weights.element must be resistor: the bench's weights are conductances"
            )
        if self.lab is not None:  # the served virtual lab must be the circuit mirrored
            from physlearn.drivers.virtual_lab.config import load_lab_config

            lab = load_lab_config(self.lab.serve)
            mine = m.diodes if isinstance(m, DiodeResistorConfig) else None
            if lab.graph != m.graph or lab.diodes != mine:
                what = "graph" if lab.graph != m.graph else "diodes"
                raise ValueError(
                    f"mirrors.{what} disagrees with the {what} of the lab served "
                    f"({self.lab.serve}): make them the same circuit"
                )

    @field_validator("station")
    @classmethod
    def _station_file(cls, v: str) -> str:
        p = Path(v).expanduser()
        if not p.is_file():
            raise ValueError(f"station file {v!r} does not exist")
        try:
            raw = load_yaml_file(p)
        except (YAMLInputError, OSError) as exc:
            raise ValueError(f"station file {v!r}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("instruments"), dict):
            raise ValueError(f"station file {v!r} has no 'instruments' mapping")
        return resolve_path(v)

    def station_instruments(self) -> set[str]:
        raw = load_yaml_file(self.station)
        return set(raw["instruments"])

    def referenced(self) -> list[tuple[str, str]]:
        """(field, dotted name) of every instrument path the roles use."""
        out = [("inputs.channels", n) for n in self.inputs.names()]
        out += [("inputs.trip_status", n) for n in self.inputs.trip_names()]
        for kind in self.nudge.kinds():
            role = getattr(self.nudge, kind)
            out += [(f"nudge.{kind}.sources.channels", n) for n in role.sources.names()]
            out += [(f"nudge.{kind}.sources.trip_status", n) for n in role.sources.trip_names()]
            sw = getattr(role, "switches", None)
            if sw is not None:
                out += [(f"nudge.{kind}.switches.channels", n) for n in sw.names()]
        out += self.probes.paths()
        out += self.weights.paths()
        return out

    @model_validator(mode="after")
    def _check(self) -> StationConfig:
        self._check_mirror()
        n_in, n_out = self.graph.n_inputs(), self.graph.n_outputs()
        if len(self.inputs.names()) != n_in:
            raise ValueError(
                f"inputs.channels names {len(self.inputs.names())} channels but the graph has "
                f"{n_in} input nodes"
            )
        if self.inputs.unit != "V":
            raise ValueError("inputs.unit must be V (input nodes are clamped by voltage sources)")
        kinds = self.nudge.kinds()
        if not kinds:
            raise ValueError("nudge: configure at least one of error, clamp, target")
        for kind in kinds:
            role = getattr(self.nudge, kind)
            want = "A" if kind == "error" else "V"
            if role.sources.unit != want:
                raise ValueError(f"nudge.{kind}.sources.unit must be {want}")
            n = len(role.sources.names())
            if n != n_out:
                raise ValueError(
                    f"nudge.{kind}.sources names {n} channels but the graph has {n_out} outputs"
                )
            sw = getattr(role, "switches", None)
            if sw is not None and len(sw.names()) != n_out:
                raise ValueError(
                    f"nudge.{kind}.switches names {len(sw.names())} relays but the graph has "
                    f"{n_out} outputs"
                )
            if kind == "clamp" and sw is None and role.sources.output is None:
                raise ValueError(
                    "nudge.clamp needs switches or source channels with an output relay"
                )
        n_nodes = self._n_nodes()
        n_probe = len(self.probes.channel_list())
        if n_probe != n_nodes:
            raise ValueError(
                f"probes.channels lists {n_probe} channels but the graph has {n_nodes} nodes "
                "(every node is measured)"
            )
        self.weights.check_edges(self._n_edges())
        known = self.station_instruments()
        for field, name in self.referenced():
            try:
                check_public(name)
            except ValueError as exc:
                raise ValueError(f"{field}: {exc}") from None
            inst = name.split(".")[0]
            if inst not in known:
                raise ValueError(
                    f"{field}: instrument {inst!r} (in {name!r}) is not in the station file "
                    f"(it has {sorted(known)})"
                )
        for inst in self.identity:
            if inst not in known:
                raise ValueError(f"identity: instrument {inst!r} is not in the station file")
            try:
                re.compile(self.identity[inst])
            except re.error as exc:
                raise ValueError(f"identity.{inst}: not a regular expression ({exc})") from None
        return self

    def _n_nodes(self) -> int:
        return graph_counts(self.graph)[0]

    def _n_edges(self) -> int:
        return graph_counts(self.graph)[1]

    def input_size(self) -> int:
        return self.graph.n_inputs()

    def output_size(self) -> int:
        return self.graph.n_outputs()

    def build(self, seed: int) -> StationSystem:
        from physlearn.drivers.station.system import StationSystem

        return StationSystem(self, seed=seed)
