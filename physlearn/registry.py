"""What is installed: entry points of three groups, found by one mechanism and loaded lazily.

* ``physlearn.systems``: the machines (``system.kind``); value: a
  :class:`~physlearn.configbase.SystemConfigBase` subclass.
* ``physlearn.datasets``: the datasets (``task.dataset.kind``); value: a
  :class:`~physlearn.datasets.DatasetConfigBase` subclass.
* ``physlearn.commands``: sub-commands of the ``physlearn`` command line; value: a function that
  adds them to the argparse sub-parsers (:mod:`physlearn.cli`).

A distribution adds a machine to physlearn by declaring, in its pyproject.toml::

    [project.entry-points."physlearn.systems"]
    toy = "toy_physlearn.config:ToyConfig"

The entry point's name is the ``kind`` a config uses; its value names the pydantic config class,
whose ``kind`` literal is that same name. physlearn's own systems, datasets and commands are
registered exactly this way, so nothing here or in the core knows any particular one.

Discovery reads installed metadata only (no plugin is imported); a config class is imported the
first time its kind is asked for, so validating a resistor config never imports a quantum or an
instrument module, and a broken third-party plugin affects only its own kind. A broken entry point
(it does not import, names something that is not a config class, or its ``kind`` disagrees with
its name) is a :class:`RegistryError` whose one-line message names the distribution and the
entry point.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from physlearn.configbase import StrictModel, SystemConfigBase
from physlearn.datasets import DatasetConfigBase

C = TypeVar("C", bound=StrictModel)


class SubParsers(Protocol):
    """What ``argparse.ArgumentParser.add_subparsers()`` returns, as far as commands use it."""

    @property
    def choices(self) -> Iterable[Any] | None:
        """The names added so far."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A new sub-command ``name``; ``kwargs`` as for ``argparse.ArgumentParser``."""


#: A ``physlearn.commands`` entry point: adds its sub-command(s) to the ``physlearn`` parser's
#: sub-parsers (``sub.add_parser(name, help=..., description=...)``, each parser with
#: ``set_defaults(func=...)``, a function of the parsed arguments returning the exit code;
#: a user mistake raises :class:`physlearn.config.ConfigError`, reported in one line, exit 2).
AddCommands = Callable[[SubParsers], None]


class RegistryError(ValueError):
    """A kind that cannot be used: not installed, registered twice, or a broken entry point.
    The message is one line naming the kind, and the distribution and entry point at fault."""


class UnknownKind(RegistryError):
    """No installed distribution registers this kind."""


#: The names these had when systems were the only group (tests and plugins use them).
SystemRegistryError = RegistryError
UnknownSystemKind = UnknownKind


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Group(Generic[C]):
    """An entry-point group whose values are config classes of one base, told apart by their
    ``kind`` (the entry point's name)."""

    #: The entry-point group, e.g. ``physlearn.systems``.
    name: str
    #: What a kind of this group is, for messages ("system", "dataset").
    what: str
    #: The class every registered config subclasses (``C``; typed wider so that it may be
    #: abstract).
    base: type[StrictModel]
    #: The command that lists the group, for messages (empty: none).
    listing: str = ""

    def discover(self) -> Mapping[str, tuple[Entry, ...]]:
        """Every registered kind and the entries that declare it (more than one: a conflict),
        sorted by kind. Reads installed metadata once per process; imports no plugin."""
        return _discover(self)

    def kinds(self) -> tuple[str, ...]:
        """The installed kinds, sorted (no plugin is imported)."""
        return tuple(self.discover())

    def entry(self, kind: str) -> Entry:
        """The one entry registering ``kind``; :class:`UnknownKind` naming the installed kinds
        if none does, :class:`RegistryError` naming the distributions if several do."""
        entries = self.discover().get(kind, ())
        if not entries:
            installed = ", ".join(repr(k) for k in self.kinds()) or "none"
            listing = f" (`{self.listing}` lists them)" if self.listing else ""
            raise UnknownKind(
                f"unknown {self.what} kind {kind!r}; installed kinds: {installed}{listing}"
            )
        if len(entries) > 1:
            names = "; ".join(e.where() for e in entries)
            raise RegistryError(
                f"{self.what} kind {kind!r} is registered more than once ({names}); uninstall one"
            )
        return entries[0]

    def config_class(self, kind: str) -> type[C]:
        """The config class of ``kind``, imported on first use (Python keeps the module) and
        checked every time (see :meth:`Entry.load`; microseconds)."""
        return typing.cast(type[C], self.entry(kind).load())

    def config_classes(self) -> dict[str, type[C]]:
        """Every installed kind's config class (imports them all); the first broken entry
        point raises :class:`RegistryError`."""
        return {kind: self.config_class(kind) for kind in self.kinds()}


SYSTEMS: Group[SystemConfigBase] = Group(
    "physlearn.systems", "system", SystemConfigBase, "physlearn systems"
)
DATASETS: Group[DatasetConfigBase] = Group("physlearn.datasets", "dataset", DatasetConfigBase)
#: The group of the systems (its name, as before datasets registered too).
GROUP = SYSTEMS.name
#: Sub-commands of the command line: each value is an :data:`AddCommands` function.
COMMANDS = "physlearn.commands"


@dataclass(frozen=True)
class Entry:
    """One registered kind and where it comes from (nothing imported yet)."""

    kind: str
    #: ``module:attribute`` as declared.
    target: str
    #: ``name version`` of the distribution that declares the entry point.
    distribution: str
    entry_point: EntryPoint
    #: The config-class group it belongs to (None: a command, not a config class).
    group: Group[Any] | None = SYSTEMS

    def where(self) -> str:
        """The entry point and its distribution, for messages."""
        return (
            f"entry point {self.kind} = {self.target!r} (group {self.entry_point.group}) of "
            f"distribution {self.distribution}"
        )

    def load_object(self) -> object:
        """Import what the entry point names; any failure is a :class:`RegistryError`."""
        try:
            return self.entry_point.load()
        except Exception as exc:  # a plugin may fail to import in any way; report, don't crash
            raise RegistryError(
                f"{self.where()} cannot be loaded: {type(exc).__name__}: {_one_line(str(exc))}"
            ) from None

    def load(self) -> type[StrictModel]:
        """Import the config class and check that it is one: a concrete subclass of the
        group's base whose ``kind`` literal is this entry point's name."""
        assert self.group is not None, f"{self.where()} is not a config class"
        obj = self.load_object()
        base = self.group.base
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(
                f"{self.where()} names {_one_line(repr(obj))[:80]}, not a subclass of "
                f"{base.__module__}.{base.__qualname__}"
            )
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
            raise RegistryError(f"{self.where()}: {obj.__name__} does not implement {missing}")
        literal = kind_literal(obj)
        if literal != self.kind:
            found = "no kind literal" if literal is None else f"kind literal {literal!r}"
            raise RegistryError(
                f"{self.where()}: {obj.__name__} has {found}; it must be "
                f"kind: Literal[{self.kind!r}] to match the entry point's name"
            )
        return obj


#: The name it had when systems were the only group.
SystemEntry = Entry


def kind_literal(cls: type[StrictModel]) -> str | None:
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
def _discover(group: Group[Any]) -> MappingProxyType[str, tuple[Entry, ...]]:
    """:meth:`Group.discover`, once per process and group."""
    found: dict[str, list[Entry]] = {}
    for ep in entry_points(group=group.name):
        found.setdefault(ep.name, []).append(Entry(ep.name, ep.value, _distribution(ep), ep, group))
    return MappingProxyType({k: tuple(found[k]) for k in sorted(found)})


def discover() -> Mapping[str, tuple[Entry, ...]]:
    """The systems' :meth:`Group.discover`."""
    return SYSTEMS.discover()


def kinds() -> tuple[str, ...]:
    """The installed system kinds, sorted (no plugin is imported)."""
    return SYSTEMS.kinds()


def entry(kind: str) -> Entry:
    """The one entry registering system ``kind`` (see :meth:`Group.entry`)."""
    return SYSTEMS.entry(kind)


def config_class(kind: str) -> type[SystemConfigBase]:
    """The config class of system ``kind`` (see :meth:`Group.config_class`)."""
    return SYSTEMS.config_class(kind)


def config_classes() -> dict[str, type[SystemConfigBase]]:
    """Every installed system kind's config class (imports them all)."""
    return SYSTEMS.config_classes()


def command_entries() -> tuple[Entry, ...]:
    """The ``physlearn.commands`` entry points, sorted by name (nothing imported)."""
    eps = sorted(entry_points(group=COMMANDS), key=lambda ep: (ep.name, ep.value))
    return tuple(Entry(ep.name, ep.value, _distribution(ep), ep, None) for ep in eps)


def command_adder(found: Entry) -> AddCommands:
    """The function a ``physlearn.commands`` entry point names; :class:`RegistryError` if it
    does not import or is not callable."""
    obj = found.load_object()
    if not callable(obj):
        raise RegistryError(f"{found.where()} names {_one_line(repr(obj))[:80]}, not a function")
    return typing.cast(AddCommands, obj)


def description(cls: type) -> str:
    """The summary (first paragraph) of a class's own docstring, on one line ("" without one:
    an inherited docstring describes the base, not this system)."""
    doc = cls.__dict__.get("__doc__") or ""
    return _one_line(inspect.cleandoc(doc).split("\n\n", 1)[0])
