"""The installed systems: every ``physlearn.systems`` entry point, found and loaded lazily.

A distribution adds a machine to physlearn by declaring, in its pyproject.toml::

    [project.entry-points."physlearn.systems"]
    toy = "toy_physlearn.config:ToyConfig"

The entry point's name is the ``system.kind`` a config uses; its value names the pydantic config
class (a :class:`~physlearn.configbase.SystemConfigBase` subclass whose ``kind`` literal is that
same name). physlearn's own systems are registered exactly this way, so nothing here knows any
particular machine.

Discovery reads installed metadata only (no plugin is imported); a config class is imported the
first time its kind is asked for, so validating a resistor config never imports a quantum or an
instrument module, and a broken third-party plugin affects only its own kind. A broken entry point
(it does not import, names something that is not a config class, or its ``kind`` disagrees with
its name) is a :class:`SystemRegistryError` whose one-line message names the distribution and the
entry point.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType

from physlearn.configbase import SystemConfigBase

#: The entry-point group a distribution registers its systems in.
GROUP = "physlearn.systems"


class SystemRegistryError(ValueError):
    """A system kind that cannot be used: not installed, registered twice, or a broken entry
    point. The message is one line naming the kind, and the distribution and entry point at
    fault."""


class UnknownSystemKind(SystemRegistryError):
    """No installed distribution registers this kind."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class SystemEntry:
    """One registered system: its kind and where it comes from (nothing imported yet)."""

    kind: str
    #: ``module:ConfigClass`` as declared.
    target: str
    #: ``name version`` of the distribution that declares the entry point.
    distribution: str
    entry_point: EntryPoint

    def where(self) -> str:
        """The entry point and its distribution, for messages."""
        return (
            f"entry point {self.kind} = {self.target!r} (group {GROUP}) of distribution "
            f"{self.distribution}"
        )

    def load(self) -> type[SystemConfigBase]:
        """Import the config class and check that it is one: a concrete SystemConfigBase
        subclass whose ``kind`` literal is this entry point's name."""
        try:
            obj = self.entry_point.load()
        except Exception as exc:  # a plugin may fail to import in any way; report, don't crash
            raise SystemRegistryError(
                f"{self.where()} cannot be loaded: {type(exc).__name__}: {_one_line(str(exc))}"
            ) from None
        if not (isinstance(obj, type) and issubclass(obj, SystemConfigBase)):
            raise SystemRegistryError(
                f"{self.where()} names {_one_line(repr(obj))[:80]}, not a subclass of "
                "physlearn.configbase.SystemConfigBase"
            )
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
            raise SystemRegistryError(
                f"{self.where()}: {obj.__name__} does not implement {missing}"
            )
        literal = kind_literal(obj)
        if literal != self.kind:
            found = "no kind literal" if literal is None else f"kind literal {literal!r}"
            raise SystemRegistryError(
                f"{self.where()}: {obj.__name__} has {found}; it must be "
                f"kind: Literal[{self.kind!r}] to match the entry point's name"
            )
        return obj


def kind_literal(cls: type[SystemConfigBase]) -> str | None:
    """The single string of ``cls``'s ``kind: Literal["..."]`` field, or None when the field is
    missing or not a one-value string literal."""
    field = cls.model_fields.get("kind")
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return None
    values = typing.get_args(field.annotation)
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    return values[0]


def _distribution(ep: EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return "(unknown distribution)"
    return f"{dist.name} {dist.version}"


@functools.cache
def discover() -> MappingProxyType[str, tuple[SystemEntry, ...]]:
    """Every registered kind and the entries that declare it (more than one: a conflict),
    sorted by kind. Reads installed metadata once per process; imports no plugin."""
    found: dict[str, list[SystemEntry]] = {}
    for ep in entry_points(group=GROUP):
        entry = SystemEntry(ep.name, ep.value, _distribution(ep), ep)
        found.setdefault(ep.name, []).append(entry)
    return MappingProxyType({k: tuple(found[k]) for k in sorted(found)})


def kinds() -> tuple[str, ...]:
    """The installed system kinds, sorted (no plugin is imported)."""
    return tuple(discover())


def entry(kind: str) -> SystemEntry:
    """The one entry registering ``kind``; :class:`UnknownSystemKind` naming the installed kinds
    if none does, :class:`SystemRegistryError` naming the distributions if several do."""
    entries = discover().get(kind, ())
    if not entries:
        installed = ", ".join(repr(k) for k in kinds()) or "none"
        raise UnknownSystemKind(
            f"unknown system kind {kind!r}; installed kinds: {installed} "
            "(`physlearn systems` lists them)"
        )
    if len(entries) > 1:
        names = "; ".join(e.where() for e in entries)
        raise SystemRegistryError(
            f"system kind {kind!r} is registered more than once ({names}); uninstall one"
        )
    return entries[0]


def config_class(kind: str) -> type[SystemConfigBase]:
    """The config class of ``kind``, imported on first use (Python keeps the module) and checked
    every time (see :meth:`SystemEntry.load`; microseconds)."""
    return entry(kind).load()


def config_classes() -> dict[str, type[SystemConfigBase]]:
    """Every installed kind's config class (imports them all); the first broken entry point
    raises :class:`SystemRegistryError`."""
    return {kind: config_class(kind) for kind in kinds()}


def description(cls: type) -> str:
    """The summary (first paragraph) of a class's own docstring, on one line ("" without one:
    an inherited docstring describes the base, not this system)."""
    doc = cls.__dict__.get("__doc__") or ""
    return _one_line(inspect.cleandoc(doc).split("\n\n", 1)[0])
