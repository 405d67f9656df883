"""Base classes for config models, shared by the core config and every system's own config.

Every model refuses unknown keys (``extra="forbid"``) and documents its fields, so the exported
JSON schema (``physlearn schema``) explains itself in an editor.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from physlearn.system import PhysicalSystem


#: Size bounds of every config, derived from memory (float64 = 8 bytes). They are far above any
#: network trained here and far below what would exhaust a workstation, so a typo (a hidden
#: layer of 10**9 nodes) is refused at validation instead of allocating gigabytes.
#: Nodes of one network: node voltages / phases are 8 MB per pattern at this bound.
MAX_NODES = 1_000_000
#: Edges (trainable couplings) of one network: 80 MB per float64 copy at this bound; training
#: keeps about six copies (values, gradient, optimiser moments, bounds).
MAX_EDGES = 10_000_000
#: Values one batch holds per phase (batch x per-pattern state: node values, per-edge
#: conjugates, dense matrices, state vectors): 800 MB of float64 at this bound; an EP step
#: keeps about three phases.
MAX_BATCH_VALUES = 100_000_000
#: Optimiser steps of one run (steps given, or epochs x batches per epoch).
MAX_STEPS = 1_000_000_000


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment, and no
    float anywhere in it (fields, list and dict items) may be infinite or NaN: no physical
    setting, size or schedule of a campaign is, and an ``.inf`` that got through would only fail
    later -- after a store was created or the instruments were opened."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False
    )


class SystemConfigBase(StrictModel):
    """Config of one kind of PhysicalSystem.

    Subclasses add ``kind: Literal["<name>"]`` (the discriminator) and their fields, and implement
    :meth:`build` with lazy imports, so that validating a config never imports heavy modules or
    touches hardware. A ``physlearn.systems`` entry point named ``<name>`` registers the subclass
    (:mod:`physlearn.registry`).
    """

    #: Narrowed by every subclass to ``Literal["<name>"]``; declared here so that code holding
    #: any system's config can read it.
    kind: str
    #: The cost a ``target`` nudge realises on this system (``PhysicalSystem.native_cost``),
    #: known before the system is built so that a config can be checked against it.
    native_cost: ClassVar[str | None] = None

    @abstractmethod
    def input_size(self) -> int:
        """Number of physical input channels (``PhysicalSystem.inputs.size``)."""

    @abstractmethod
    def output_size(self) -> int:
        """Number of physical outputs (``PhysicalSystem.outputs.size``)."""

    def values_per_pattern(self) -> int:
        """Float64 values the system holds per pattern in one phase (node state, per-edge
        conjugates, dense matrices, state vectors); the experiment checks ``batch_size`` times
        this against :data:`MAX_BATCH_VALUES` before anything is built. Default: the ports."""
        return self.input_size() + self.output_size()

    @abstractmethod
    def build(self, seed: int) -> PhysicalSystem:
        """Construct the system (not yet opened). ``seed`` fixes any random initialisation."""
