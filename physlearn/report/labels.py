"""Human labels and value ranges for the report's figures.

* A swept config path (``store.flush_every``, ``system.graph.sizes.1``) is labelled with its
  field's title in the experiment config's JSON schema (:func:`physlearn.config.json_schema`),
  the path kept in parentheses because it is what the sweep file says: ``Flush every
  (store.flush_every)``, ``Sizes [1] (system.graph.sizes.1)``; a description whose first
  clause reads as a name is preferred to pydantic's title-cased field name (``Learning rate``,
  not ``Lr``). Tagged unions (``system``,
  ``estimator``, ``graph``) are resolved with the kinds of the run's stored config. The field's
  description goes in the report's table of axes.
* A record (``test_accuracy``, ``step_time``) is labelled with the ``long_name`` and ``units``
  the run store holds for it (:func:`record_label`).
* :func:`metric_range` is the range a metric can take (accuracy in [0, 1], a non-negative loss
  at or above 0), so that a mean +- std band never leaves it (:func:`clip_band`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

#: What the report shows for records every run has, when a store does not say.
FALLBACK_NAMES = {
    "test_accuracy": "accuracy on the test split",
    "test_loss": "objective on the test split",
    "loss": "objective at the free equilibrium, batch mean",
    "seed": "seed",
    "variant": "variant",
}


def _sentence(title: str) -> str:
    """``Flush Every`` -> ``Flush every`` (pydantic title-cases field names)."""
    words = title.replace("_", " ").split() or [title]
    return " ".join([words[0], *(w.lower() if w.istitle() else w for w in words[1:])])


def _resolve(node: Any, defs: Mapping[str, Any], value: Any) -> Any:
    """Follow ``$ref`` and pick a tagged union's branch by the tag in ``value`` (the config's
    section there), or the first non-null branch of an optional field."""
    for _ in range(8):
        if not isinstance(node, dict):
            return None
        if "$ref" in node:
            node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1])
            continue
        branches = node.get("oneOf") or node.get("anyOf")
        if not branches:
            return node
        disc = node.get("discriminator") or {}
        tag = value.get(disc.get("propertyName")) if isinstance(value, dict) else None
        ref = (disc.get("mapping") or {}).get(tag)
        if ref is not None:
            node = {"$ref": ref}
        else:
            node = next((b for b in branches if b.get("type") != "null"), None)
    return node


def field_info(
    path: str, config: Mapping[str, Any] | None, schema: Mapping[str, Any]
) -> tuple[str, str]:
    """(title, description) of the config field at dotted ``path``; title falls back to the
    last name of the path made readable, description to ``""``."""
    defs = schema.get("$defs", {})
    node: Any = schema
    value: Any = config
    title, description, parent = "", "", ""
    for part in path.split("."):
        node = _resolve(node, defs, value)
        if node is None:
            break
        if part.isdigit() and node.get("type") == "array":
            node, title = node.get("items"), f"{parent or 'entry'} [{part}]"
            value = value[int(part)] if isinstance(value, list) and int(part) < len(value) else None
            continue
        prop = (node.get("properties") or {}).get(part)
        if prop is None:
            node = None
            break
        target = _resolve(prop, defs, None) or {}
        description = str(prop.get("description") or target.get("description") or "")
        title = _short(description) or _sentence(str(prop.get("title") or part))
        parent, node = title, prop
        value = value.get(part) if isinstance(value, dict) else None
    if node is None or not title:
        last = next((p for p in reversed(path.split(".")) if not p.isdigit()), path)
        return _sentence(last.replace("_", " ")), ""
    return title, description


def _short(description: str) -> str:
    """The first clause of a field's description when it reads as a name (two to six words,
    e.g. ``Learning rate (parameter unit ...)`` -> ``Learning rate``), else ``""``."""
    clause = re.split(r"[(;.:,]", description, maxsplit=1)[0].strip()
    words = clause.split()
    if not 2 <= len(words) <= 6 or len(clause) > 45:
        return ""
    return clause[0].upper() + clause[1:]


def axis_titles(paths: list[str], config: Mapping[str, Any] | None) -> dict[str, tuple[str, str]]:
    """For each swept axis: (label ``Title (path)``, description). ``seed`` and ``variant``
    are their own labels. An unavailable schema (a broken plugin) leaves the paths."""
    from physlearn.config import ConfigError, json_schema

    try:
        schema: Mapping[str, Any] = json_schema()
    except ConfigError:
        schema = {}
    out: dict[str, tuple[str, str]] = {}
    for p in paths:
        if p in ("seed", "variant"):
            out[p] = (p, "")
            continue
        title, description = field_info(p, config, schema)
        out[p] = (f"{title} ({p})", description)
    return out


def record_label(name: str, attrs: Mapping[str, Any] | None = None) -> str:
    """``long_name (units)`` of a record from its array attributes (units ``1`` left out)."""
    attrs = attrs or {}
    long_name = str(attrs.get("long_name") or FALLBACK_NAMES.get(name, name.replace("_", " ")))
    units = str(attrs.get("units", "1"))
    return long_name if units in ("1", "") else f"{long_name} ({units})"


def metric_range(name: str, values: np.ndarray | None = None) -> tuple[float, float]:
    """The range of a metric: accuracies in [0, 1], cosines in [-1, 1], a loss or time at or
    above 0 when every value seen is (a loss can be signed, e.g. a negative log-likelihood
    gain), anything else unbounded."""
    if name.endswith("accuracy"):
        return 0.0, 1.0
    if name.endswith("cosine"):
        return -1.0, 1.0
    if name.endswith(("loss", "time")):
        v = np.asarray(values if values is not None else [], dtype=float)
        v = v[np.isfinite(v)]
        if not v.size or (v >= 0).all():
            return 0.0, math.inf
    return -math.inf, math.inf


def clip_band(
    mean: np.ndarray, spread: np.ndarray, bounds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge of ``mean`` +- ``spread`` clipped to ``bounds``."""
    lo, hi = bounds
    return np.clip(mean - spread, lo, hi), np.clip(mean + spread, lo, hi)
