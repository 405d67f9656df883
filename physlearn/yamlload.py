"""Hardened YAML reading for every file physlearn takes from a user (configs, sweeps, stations,
virtual-lab files) and for ``--set`` values.

PyYAML's ``SafeLoader`` builds no arbitrary objects, but it still lets a small file cost a lot:
a chain of anchors and aliases (a "billion laughs" bomb) is a few hundred bytes that expands to
billions of values as soon as anything walks it (validation, a deep copy, a sweep grid); a
5 000-deep nested list overflows the recursion limit; a duplicated key silently drops the first
value. :class:`HardenedLoader` refuses each of these with a :class:`YAMLInputError` that names
the line, and :func:`load_yaml_file` bounds the file size and decodes strict UTF-8, naming the
offset of the first bad byte. The limits are far above any real config (the largest shipped
config has a few hundred values and a depth of 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: Largest file read (bytes). A config with an explicit 100 000-edge list is about 2 MB.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Deepest nesting of lists and mappings (the shipped configs nest at most 5 levels).
MAX_DEPTH = 64
#: Most values (scalars, lists, mappings) the document holds once every alias is expanded: what
#: anything that walks the data (validation, a deep copy, a sweep grid) visits.
MAX_EXPANDED_NODES = 1_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLInputError(ValueError):
    """A YAML document refused by the hardened loader; the message names where and why."""


class HardenedLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that bounds nesting depth and alias expansion and refuses duplicate keys.

    Depth is counted while composing (before PyYAML's recursive composer can overflow); the
    expanded size is counted on the composed node graph, sharing the count of aliased nodes, so
    the check itself costs one visit per distinct node.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        nests = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nests:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise YAMLInputError(
                    f"line {line}: lists and mappings nest deeper than {MAX_DEPTH} levels"
                )
        try:
            return super().compose_node(parent, index)
        finally:
            if nests:
                self._depth -= 1

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YAMLInputError(
                    f"line {line}: duplicate key {key!r} (first given at line {seen[key]}); "
                    "give each key once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Node) -> None:
    """Refuse a node graph whose alias-expanded size exceeds :data:`MAX_EXPANDED_NODES`.

    Sizes are memoised per node object, so a bomb of n doubling levels costs n visits; the
    graph is acyclic here (PyYAML refuses recursive aliases while composing)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids = _children(node)
        if children_done or not kids:
            total = 1 + sum(sizes[id(k)] for k in kids)
            if total > MAX_EXPANDED_NODES:
                line = node.start_mark.line + 1
                raise YAMLInputError(
                    f"line {line}: aliases expand to more than {MAX_EXPANDED_NODES:,} values "
                    "(an alias bomb?); write the values out or use fewer aliases"
                )
            sizes[id(node)] = total
            continue
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _describe(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"YAML syntax error{where}: {problem}"


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document with :class:`HardenedLoader`.

    Raises :class:`YAMLInputError` (one line: where and what) for syntax errors as well as for
    the refused constructs."""
    loader = HardenedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise YAMLInputError(" ".join(_describe(exc).split())) from None
    except RecursionError:  # a defence in depth: the depth bound should come first
        raise YAMLInputError(f"nesting deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file: at most :data:`MAX_FILE_BYTES`, strict UTF-8.

    Raises :class:`YAMLInputError` whose message starts with the path; ``OSError`` for a file
    that cannot be read."""
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise YAMLInputError(
            f"{p}: {size:,} bytes, more than the {MAX_FILE_BYTES:,} a config may have"
        )
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YAMLInputError(
            f"{p}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(line {line}); save the file as UTF-8"
        ) from None
    try:
        return load_yaml_text(text)
    except YAMLInputError as exc:
        raise YAMLInputError(f"{p}: {exc}") from None
