"""Base classes for config models, shared by the core config and every system's own config.

Every model refuses unknown keys (``extra="forbid"``) and documents its fields, so the exported
JSON schema (``physlearn schema``) explains itself in an editor.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from physlearn.system import PhysicalSystem


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class SystemConfigBase(StrictModel):
    """Config of one kind of PhysicalSystem.

    Subclasses add ``kind: Literal["<name>"]`` (the discriminator) and their fields, and implement
    :meth:`build` with lazy imports, so that validating a config never imports heavy modules or
    touches hardware.
    """

    @abstractmethod
    def input_size(self) -> int:
        """Number of physical input channels (``PhysicalSystem.inputs.size``)."""

    @abstractmethod
    def output_size(self) -> int:
        """Number of physical outputs (``PhysicalSystem.outputs.size``)."""

    @abstractmethod
    def build(self, seed: int) -> PhysicalSystem:
        """Construct the system (not yet opened). ``seed`` fixes any random initialisation."""
