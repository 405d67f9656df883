"""physlearn uses no private name of qcodes (issue 20): it talks to instruments through qcodes'
public API only, so a qcodes release may change its internals without breaking a bench.

The rule, checked on the syntax tree of every ``.py`` file under ``physlearn/``, ``drivers/``,
``simulators/``, ``benchmarks/`` and ``tests/``:

1. Imports. No qcodes module path with a component that starts with ``_`` or is named
   ``private`` (``import``, ``from ... import``, or ``importlib.import_module`` /
   ``__import__`` of a literal; e.g. ``qcodes.instrument_drivers.Keysight.private``: stock
   drivers are imported through their public package path), and no ``from qcodes... import
   _name``.
2. Attributes. No ``obj._name`` (read, assigned or deleted) and no ``getattr`` / ``setattr`` /
   ``hasattr`` / ``delattr`` of a literal ``"_name"`` unless ``_name`` is a name physlearn itself
   defines. Which object an attribute belongs to is not known without running the code, so the
   names physlearn defines are collected from all of it: function and class names, names
   assigned at module or class level (dataclass fields, constants), attributes assigned on
   ``self`` or ``cls`` (``self._x = ...``) and the entries of ``__slots__``. Dunder names
   (``__init__``) are public protocol and allowed. (A qcodes private that shares its name with
   one of physlearn's own -- ``_cache``, ``_data`` -- is not told apart by rule 2: rule 3 covers
   the classes that would reach it through ``self``.)
3. Overrides. A physlearn class derived from a qcodes class (directly or through physlearn
   classes) defines no method, class attribute or ``self._x`` attribute whose name a qcodes
   class of its MRO defines privately: that would replace qcodes' internals rather than use
   its public API (``self._visa_handle = ...`` in a VisaInstrument subclass, an override of
   ``_open_resource``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .conftest import ROOT

#: the scanned directories and the packages they install as
SCANNED = {
    "physlearn": "physlearn",
    "drivers": "physlearn.drivers",
    "simulators": "physlearn.simulators",
    "benchmarks": "benchmarks",
    "tests": "tests",
}
_ATTR_CALLS = {"getattr", "setattr", "hasattr", "delattr"}
_IMPORT_CALLS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Source:
    path: str  # relative to the scanned root, for the messages
    module: str  # its dotted module name
    package: str  # the package relative imports start from
    tree: ast.Module
    nodes: tuple[ast.AST, ...]  # every node of the tree (walked once)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "qcodes" and any(p.startswith("_") or p == "private" for p in parts)


def load(root: Path) -> list[Source]:
    """Every ``.py`` file under the scanned directories of ``root``, parsed."""
    out = []
    for folder, package in SCANNED.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("").parts
            parts = [package, *rel]
            if parts[-1] == "__init__":
                parts.pop()
                pkg = ".".join(parts)
            else:
                pkg = ".".join(parts[:-1])
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            nodes = tuple(ast.walk(tree))
            out.append(Source(str(path.relative_to(root)), ".".join(parts), pkg, tree, nodes))
    return out


def _targets(node: ast.AST) -> Iterator[ast.expr]:
    """The assignment targets of ``node`` (tuples unpacked)."""
    if isinstance(node, ast.Assign):
        stack = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        stack = [node.target]
    else:
        return
    while stack:
        t = stack.pop()
        if isinstance(t, (ast.Tuple, ast.List)):
            stack.extend(t.elts)
        elif isinstance(t, ast.Starred):
            stack.append(t.value)
        else:
            yield t


def _on_self(t: ast.expr) -> str | None:
    """``x`` of a target ``self.x`` / ``cls.x``, else None."""
    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
        return t.attr if t.value.id in ("self", "cls") else None
    return None


def _slots(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
    ):
        for c in ast.walk(node.value):
            if isinstance(c, ast.Constant) and isinstance(c.value, str):
                yield c.value


def defined_names(sources: list[Source]) -> set[str]:
    """Every name physlearn defines (see rule 2)."""
    names: set[str] = set()
    for src in sources:
        for node in src.nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            for t in _targets(node):
                if isinstance(t, ast.Name):
                    names.add(t.id)
                elif (attr := _on_self(t)) is not None:
                    names.add(attr)
            names.update(_slots(node))
    return names


def _import_violations(src: Source, node: ast.AST) -> Iterator[str]:
    where = f"{src.path}:{getattr(node, 'lineno', 0)}"
    if isinstance(node, ast.Import):
        for alias in node.names:
            if _private_module(alias.name):
                yield f"{where}: import of the private qcodes module {alias.name}"
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        mod = node.module
        if _private_module(mod):
            yield f"{where}: import from the private qcodes module {mod}"
        elif mod.split(".")[0] == "qcodes":
            for alias in node.names:
                if _private(alias.name) or _private_module(f"{mod}.{alias.name}"):
                    yield f"{where}: import of the private qcodes name {mod}.{alias.name}"
    elif isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        arg = node.args[0]
        if name in _IMPORT_CALLS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            if _private_module(arg.value):
                yield f"{where}: import of the private qcodes module {arg.value}"


def _attribute_violations(src: Source, node: ast.AST, defined: set[str]) -> Iterator[str]:
    where = f"{src.path}:{getattr(node, 'lineno', 0)}"
    if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in defined:
        yield f"{where}: .{node.attr} is no name physlearn defines (another library's private?)"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _ATTR_CALLS
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
        and _private(node.args[1].value)
        and node.args[1].value not in defined
    ):
        name = node.args[1].value
        yield f"{where}: {node.func.id}(..., {name!r}): no name physlearn defines"


# -- rule 3: overrides of qcodes' privates -------------------------------------------------------


def _imported(src: Source) -> dict[str, str]:
    """Local name -> dotted name of everything ``src`` imports."""
    out: dict[str, str] = {}
    for node in src.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    out[alias.asname] = alias.name
                else:
                    out[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = src.package.split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([base] if base else [])])
            for alias in node.names:
                out[alias.asname or alias.name] = f"{base}.{alias.name}"
    return out


def _dotted(expr: ast.expr, src: Source, imported: dict[str, str]) -> str | None:
    """The dotted name a base-class expression refers to (None if not a plain name)."""
    if isinstance(expr, ast.Subscript):  # Generic[...]
        expr = expr.value
    tail: list[str] = []
    while isinstance(expr, ast.Attribute):
        tail.insert(0, expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    head = imported.get(expr.id, f"{src.module}.{expr.id}")
    return ".".join([head, *tail])


@cache
def qcodes_privates(dotted: str) -> frozenset[str]:
    """The private names the qcodes class ``dotted`` and the qcodes classes of its MRO define:
    their members and the attributes their methods assign on ``self``."""
    module, _, name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return frozenset()
    names: set[str] = set()
    for k in inspect.getmro(cls):
        if not k.__module__.startswith("qcodes"):
            continue
        names.update(n for n in vars(k) if _private(n))
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(k)))):
            names.update(a for t in _targets(node) if (a := _on_self(t)) and _private(a))
    return frozenset(names)


def _own_names(cls: ast.ClassDef) -> Iterator[tuple[str, int]]:
    """What class ``cls`` defines itself: methods, class attributes, ``self.x`` attributes."""
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node.lineno
        for t in _targets(node):
            if isinstance(t, ast.Name):
                yield t.id, node.lineno
    for node in ast.walk(cls):
        for t in _targets(node):
            if (attr := _on_self(t)) is not None:
                yield attr, node.lineno


def override_violations(sources: list[Source]) -> Iterator[str]:
    classes: dict[str, tuple[Source, ast.ClassDef, list[str]]] = {}
    for src in sources:
        imported = _imported(src)
        for node in src.nodes:  # nested classes too, named as if at module level
            if isinstance(node, ast.ClassDef):
                bases = [b for e in node.bases if (b := _dotted(e, src, imported))]
                classes[f"{src.module}.{node.name}"] = (src, node, bases)

    def qcodes_bases(qual: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for b in classes[qual][2]:
            if b.split(".")[0] == "qcodes":
                out.add(b)
            elif b in classes and b not in seen:
                out |= qcodes_bases(b, seen | {qual})
        return out

    for qual, (src, node, _) in classes.items():
        privates = set().union(*(qcodes_privates(b) for b in qcodes_bases(qual)))
        for name, line in _own_names(node):
            if name in privates:
                yield f"{src.path}:{line}: {node.name} overrides qcodes' private {name}"


def violations(root: Path) -> list[str]:
    """Every breach of the rule (see the module docstring) in the code under ``root``."""
    sources = load(root)
    defined = defined_names(sources)
    out: list[str] = []
    for src in sources:
        for node in src.nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
                out.extend(_import_violations(src, node))
            if isinstance(node, (ast.Attribute, ast.Call)):
                out.extend(_attribute_violations(src, node, defined))
    out.extend(override_violations(sources))
    return sorted(set(out))


def test_physlearn_uses_no_private_name_of_qcodes():
    found = violations(ROOT)
    assert not found, "private names of qcodes in use:\n" + "\n".join(found)


def test_the_check_finds_every_kind_of_private_use(tmp_path):
    """Each rule flags what it forbids, and leaves what physlearn defines itself, dunder names
    and the public path of a stock driver alone."""
    pkg = tmp_path / "drivers"
    pkg.mkdir()
    (pkg / "good.py").write_text(
        "from qcodes.instrument import VisaInstrument\n"
        "from qcodes.instrument_drivers.Keysight import KeysightB1500\n"
        "class Mine(VisaInstrument):\n"
        "    __slots__ = ('_slot',)\n"
        "    def __init__(self):\n"
        "        self._own = 1\n"
        "    def _helper(self):\n"
        "        return self._own, self._slot, self.__class__, getattr(self, '_helper')\n"
    )
    (pkg / "bad.py").write_text(
        "import importlib\n"
        "import qcodes.instrument_drivers.Keysight.private.error_handling\n"
        "from qcodes.instrument_drivers.Keysight import private\n"
        "from qcodes.utils import _private_thing\n"
        "from qcodes.parameters._x import y\n"
        "from .good import Mine\n"
        "importlib.import_module('qcodes._secret')\n"
        "def bounds(v):\n"
        "    return v._min_value, getattr(v, '_max_value')\n"
        "class Worse(Mine):\n"
        "    def _open_resource(self, address, visalib):\n"
        "        self._visa_handle = None\n"
    )
    found = violations(tmp_path)
    assert not any(line.startswith("drivers/good.py") for line in found), found
    expected = {
        "drivers/bad.py:2": "private qcodes module qcodes.instrument_drivers.Keysight.private",
        "drivers/bad.py:3": "qcodes.instrument_drivers.Keysight.private",
        "drivers/bad.py:4": "qcodes.utils._private_thing",
        "drivers/bad.py:5": "qcodes.parameters._x",
        "drivers/bad.py:7": "qcodes._secret",
        "drivers/bad.py:9": "_min_value",
        "drivers/bad.py:11": "overrides qcodes' private _open_resource",
        "drivers/bad.py:12": "overrides qcodes' private _visa_handle",
    }
    for where, what in expected.items():
        assert any(line.startswith(where + ":") and what in line for line in found), (where, found)
    assert any(line.startswith("drivers/bad.py:9:") and "_max_value" in line for line in found)
