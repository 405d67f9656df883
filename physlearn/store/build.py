"""Building a new run store so that it appears under its name complete or not at all.

The store is made in a hidden sibling directory, ``.<name>.creating-<hex>``, with the writer
lock taken inside it first; when everything is written it is renamed to its name (the lock file
moves with it, so the lock is held throughout). A process killed meanwhile leaves only the
hidden directory: nothing under the name, so ``physlearn run --out NAME`` works again. A later
build of the same name removes such leftovers once nobody holds their lock and they have not
changed for a minute; nothing else is ever removed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.store import integrity
from physlearn.store.lock import StoreLock, is_locked

#: A store under construction: ``.<final name>.creating-<12 hex digits>`` beside its name.
CREATING = ".creating-"
#: A left-over construction directory unchanged for this long (and not locked) is removed.
STALE_BUILD_SECONDS = 60.0


def build(
    final: Path,
    coords: dict[str, tuple[np.ndarray, str]],
    checkpoint_shapes: dict[str, tuple[int, ...]],
    attrs: dict[str, Any],
    graph: dict[str, Any] | None,
) -> StoreLock:
    """Build the run group ``final`` (see the module docstring); return its writer lock, held.
    Raises FileExistsError when ``final`` exists (or appears meanwhile)."""
    import zarr

    if final.exists() or final.is_symlink():
        raise FileExistsError(final)
    remove_stale_builds(final)
    tmp = final.parent / f".{final.name}{CREATING}{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    lock = StoreLock(tmp, "physlearn run")
    try:
        lock.acquire()
        # "a": the directory is ours and new, but already holds the lock file
        g = zarr.open_group(str(tmp), mode="a", zarr_format=3)
        _populate(g, coords, checkpoint_shapes, graph)
        g.update_attributes(attrs)
        _publish(tmp, final)
    except BaseException:
        lock.release()
        shutil.rmtree(tmp, ignore_errors=True)  # our own directory, made above
        raise
    lock.path = final
    return lock


def _populate(
    g: Any,
    coords: dict[str, tuple[np.ndarray, str]],
    checkpoint_shapes: dict[str, tuple[int, ...]],
    graph: dict[str, Any] | None,
) -> None:
    """Write a new store's coordinates, checkpoint slots, graph and checksum log."""
    created: dict[str, int] = {}
    for name, (values, units) in coords.items():
        values = np.asarray(values)
        dtype: Any = str if values.dtype.kind in "UO" else values.dtype
        a = g.create_array(
            name,
            shape=values.shape,
            dtype=dtype,
            dimension_names=[name],
            attributes={"units": units, "long_name": name},
        )
        a[...] = values
        created[name] = integrity.digest(values)
    ck = g.create_group("checkpoint")
    for slot in ("a", "b"):
        sg = ck.create_group(slot)
        for key, shape in checkpoint_shapes.items():
            name = key.replace("/", "__")
            # dimension names as every array has them (xarray.open_datatree needs them); the
            # entry's own, so that no two entries' sizes can conflict
            dims = [f"{name}_{i}" for i in range(len(shape))]
            sg.create_array(name, shape=shape, dtype="f8", compressors=None, dimension_names=dims)
    if graph is not None:
        created |= _write_graph(g.create_group("graph"), graph)
    integrity.create_log(g, created)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished store to its name (refusing a name taken meanwhile) and make the
    rename durable."""
    try:
        os.rename(tmp, final)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise FileExistsError(final) from None
        raise
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_builds(final: Path) -> None:
    """Remove construction directories of ``final`` left by a killed process: only
    ``.<name>.creating-<hex>`` directories (not links) that no process has locked and that
    have not changed for STALE_BUILD_SECONDS."""
    pattern = re.compile(re.escape(f".{final.name}{CREATING}") + r"[0-9a-f]{12}")
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_BUILD_SECONDS
        except OSError:
            continue
        if stale and not is_locked(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)


def _write_graph(group: Any, layout: dict[str, Any]) -> dict[str, int]:
    """Write the graph arrays; return their checksums by path in the run group."""
    pos = np.asarray(layout["positions"], dtype=np.float64).reshape(-1, 2)
    edges = np.asarray(layout["edges"], dtype=np.int64).reshape(-1, 2)
    roles = np.asarray([str(r) for r in layout["node_roles"]], dtype=str)
    crcs: dict[str, int] = {}
    for name, values, dims, long_name in (
        ("positions", pos, ["node", "xy"], "node position in the drawing plane"),
        ("edges", edges, ["edge", "end"], "node indices at the two ends of each edge"),
        ("node_roles", roles, ["node"], "role of each node (input, output, hidden, ...)"),
    ):
        dtype: Any = str if values.dtype.kind == "U" else values.dtype
        a = group.create_array(
            name,
            shape=values.shape,
            dtype=dtype,
            dimension_names=dims,
            attributes={"units": "1", "long_name": long_name},
        )
        if values.size:
            a[...] = values
        crcs[f"graph/{name}"] = integrity.digest(values)
    group.update_attributes({"edge_group": str(layout["edge_group"])})
    return crcs
