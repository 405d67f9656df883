"""The static import graph of the distribution: no cycles, and the core imports no plugin.

Every module under ``physlearn/``, ``drivers/`` (installed as ``physlearn.drivers``) and
``simulators/`` (``physlearn.simulators``) is parsed with :mod:`ast`, and every ``import`` and
``from ... import`` is found wherever it stands: at module level or inside a function (a lazy
import is the usual way a cycle hides), relative or absolute.

* No cycles among the imports that execute. An import under ``if TYPE_CHECKING:`` never runs; it
  lets two modules name each other's types in annotations (a config and the system it builds),
  which cannot break an import order, so it is not an edge of the cycle check.
* No core module (``physlearn/`` outside the two plugin trees) names ``physlearn.drivers`` or
  ``physlearn.simulators`` at all, not even for typing: the core knows plugins through entry
  points only (:mod:`physlearn.registry`).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

from .conftest import ROOT

#: Top-level folders and the package name each installs as (as setup.py's ROOTS).
FOLDERS = {
    "physlearn": "physlearn",
    "drivers": "physlearn.drivers",
    "simulators": "physlearn.simulators",
}
PLUGINS = ("physlearn.drivers", "physlearn.simulators")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module's dotted name (as installed) and its file; a package is its ``__init__``."""
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ours (``a.b.C`` -> module ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (the test of a typing-only block)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Imports(ast.NodeVisitor):
    """Every dotted name a module imports, each with whether it is typing-only: ``import a.b``
    gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` a submodule or a name of
    ``a``: resolved later); relative imports are made absolute against the module's package."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.found: list[tuple[str, bool]] = []
        self._typing_only = 0

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._typing_only += 1
        for child in node.body:
            self.visit(child)
        self._typing_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name, self._typing_only > 0) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        self.found += [(name, self._typing_only > 0) for name in names]


def _imported_names(module: str, path: Path) -> list[tuple[str, bool]]:
    """(dotted name, typing-only) of every import in ``module``'s file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    visitor = _Imports(package)
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return visitor.found


def import_graph(root: Path = ROOT, typing_only: bool = True) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (itself excluded); without the imports under
    ``if TYPE_CHECKING:`` when ``typing_only`` is False."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = _imported_names(module, path)
        targets = {_resolve(name, modules) for name, only in names if typing_only or not only}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others (itself only via a cycle)."""
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += graph[node]
    return seen


def knots(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The sets of modules that import each other (strongly connected components of more than
    one module), each sorted, in order; a few hundred modules make the quadratic search cheap."""
    reach = {module: _reachable(graph, module) for module in graph}
    found: list[list[str]] = []
    placed: set[str] = set()
    for module in sorted(graph):
        if module in placed or module not in reach[module]:
            continue
        knot = sorted(m for m in reach[module] if module in reach[m])
        placed.update(knot)
        found.append(knot)
    return found


def cycle_in(graph: Mapping[str, set[str]], knot: list[str]) -> list[str]:
    """A shortest cycle ``[a, b, ..., a]`` through the knot's first module (breadth first)."""
    start, members = knot[0], set(knot)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{knot} is not a cycle")


def describe(graph: Mapping[str, set[str]], knot: list[str]) -> str:
    """One cycle of the knot, and the knot's other modules if it has more."""
    cycle = cycle_in(graph, knot)
    others = sorted(set(knot) - set(cycle))
    return " -> ".join(cycle) + (f" (knotted with {', '.join(others)})" if others else "")


def core_imports_of_plugins(graph: Mapping[str, set[str]]) -> list[str]:
    """``core -> plugin`` for every import of a plugin module by a core module."""

    def plugin(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in PLUGINS)

    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if not plugin(module)
        for target in targets
        if plugin(target)
    )


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    """A source tree of the three folders with these files (relative path -> text)."""
    for folder in FOLDERS:
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# --------------------------------------------------------------------------------------------


def test_the_graph_covers_every_module_and_sees_lazy_imports() -> None:
    """The checker on the real tree: it sees all three trees and the imports inside functions
    (a checker that reads nothing would pass everything)."""
    graph = import_graph()
    assert len(graph) == len(module_files()) > 100
    assert {"physlearn.config", "physlearn.drivers.station.config"} <= set(graph)
    assert "physlearn.simulators.quantum.system" in graph
    # StationConfig.build imports the system inside the method
    assert "physlearn.drivers.station.system" in graph["physlearn.drivers.station.config"]


def test_cycles_and_core_imports_of_plugins_are_found(tmp_path: Path) -> None:
    """On a tree made for it: a lazy relative two-module cycle, a three-module cycle with a
    fourth module in its knot, a typing-only cycle (not a cycle at run time, but a core import
    of a plugin all the same) and a core module importing a plugin package."""
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import {}\n"
    root = _tree(
        tmp_path,
        {
            "physlearn/a.py": "def f():\n    from . import b\n",
            "physlearn/b.py": "from physlearn.a import f\n",
            "physlearn/core.py": "import physlearn.simulators\n",
            "physlearn/typed.py": typing_only.format("physlearn.drivers.t"),
            "drivers/t.py": "import physlearn.typed\n",
            "drivers/x.py": "from physlearn.drivers.y import Y\n",
            "drivers/y.py": "import physlearn.drivers.z\nY = 1\n",
            "drivers/z.py": "from .x import X\nfrom .w import W\n",
            "drivers/w.py": "from . import z\n",
            "simulators/p/__init__.py": "",
            "simulators/p/q.py": "from ...simulators.p import r\n",
            "simulators/p/r.py": "from ..p.q import Q\n",
        },
    )
    graph = import_graph(root, typing_only=False)
    assert [describe(graph, knot) for knot in knots(graph)] == [
        "physlearn.a -> physlearn.b -> physlearn.a",
        "physlearn.drivers.w -> physlearn.drivers.z -> physlearn.drivers.w "
        "(knotted with physlearn.drivers.x, physlearn.drivers.y)",
        "physlearn.simulators.p.q -> physlearn.simulators.p.r -> physlearn.simulators.p.q",
    ]
    assert core_imports_of_plugins(import_graph(root)) == [
        "physlearn.core -> physlearn.simulators",
        "physlearn.typed -> physlearn.drivers.t",
    ]


def test_no_import_cycles() -> None:
    """No two modules import each other at run time, directly or through others, even by an
    import inside a function."""
    graph = import_graph(typing_only=False)
    found = [describe(graph, knot) for knot in knots(graph)]
    assert not found, "import cycles: " + "; ".join(found)


def test_the_core_imports_no_plugin() -> None:
    """The core knows systems, datasets and commands by entry points only
    (:mod:`physlearn.registry`), never by importing physlearn.drivers or physlearn.simulators."""
    found = core_imports_of_plugins(import_graph())
    assert not found, "the core imports plugins: " + "; ".join(found)
