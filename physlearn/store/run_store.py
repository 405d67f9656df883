"""The run store: one Zarr v3 group per run; :func:`physlearn.open_run` reads its committed
records as an xarray Dataset.

Layout
------
* Appendable arrays grow along ``step`` (one record per optimiser step) or ``eval`` (one record
  per evaluation). Every array carries ``dimension_names`` and the attributes ``units`` and
  ``long_name``; label coordinates (``phase``, ...) are string arrays.
* ``checkpoint/a`` and ``checkpoint/b``: two checkpoint slots (continuous "shadow" parameters,
  held parameters, optimiser state, and the state a system carries to the next step,
  ``carry__<name>``). Commits alternate between them.
* Group attributes: ``config`` (the validated config), ``physlearn_version``, ``guid``,
  ``run_timestamp``, ``completed_timestamp``, ``exit_status`` (``success`` / ``abort`` /
  ``fail``; absent while running), ``committed_steps``, ``committed_evals``, ``checkpoint_slot``,
  ``pid`` and ``host`` of the writer.
* ``graph`` (systems with a spatial structure, :class:`physlearn.system.Graph`): arrays
  ``positions`` (node, xy), ``edges`` (edge, end) and ``node_roles`` (node), and the attribute
  ``edge_group``. Arrays, not run attributes: every commit rewrites the run attributes, and a
  10 000-node layout would make each commit re-encode half a megabyte of JSON.

* ``integrity``: per-commit checksums (:mod:`physlearn.store.integrity`); the run attribute
  ``integrity_commits`` counts the committed records. Stores made before it have neither.

Crash safety
------------
A store is built in a hidden sibling directory (``.<name>.creating-<hex>``) and renamed to its
name when complete, so a crash during creation leaves nothing under the name. A commit writes
the data of the new records (Zarr resizes first, so a crash can leave a fill-value tail), the
checkpoint into the slot *not* in use and the commit's checksum record, then -- last -- the
attributes naming the new ``committed_steps`` and slot. zarr's local store replaces files
atomically, so a reader or a resume trusts exactly ``committed_steps`` records and the slot named
beside them. One process writes a store at a time: it holds the store's
:class:`~physlearn.store.lock.StoreLock` from creation or resume until it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.store import build, integrity
from physlearn.store.lock import StoreLock, StoreLockedError, is_locked
from physlearn.system import FloatArray, Params

APPEND_DIMS = ("step", "eval")
TARGET_CHUNK_BYTES = 4 << 20


@dataclass
class Checkpoint:
    """Everything a resume needs beyond the config: the step counter is the RNG and data
    position (both are pure functions of (seed, step))."""

    step: int
    shadow: Params
    held: Params
    optimizer: dict[str, FloatArray]
    # -- carried state (PhysicalSystem.carried_shapes): entries ``carry/<name>`` written with
    # this checkpoint; only the entries given are written (the campaign's ``valid`` says
    # whether the rest of the slot's carry arrays belong to this commit).
    carry: dict[str, FloatArray] = field(default_factory=dict)


def _fill(dtype: str) -> Any:
    kind = np.dtype(dtype).kind
    if kind == "f":
        return np.nan
    if kind == "b":
        return False
    return -1


class StoreError(RuntimeError):
    """The store is not a physlearn run, or is damaged; the message says what is wrong."""


class DiskFullError(RuntimeError):
    """The disk (or quota) holding a store filled up during a run; the message says where, how
    many steps are committed and how to continue."""


class RunStore:
    def __init__(self, path: Path, group: Any, lock: StoreLock | None = None) -> None:
        self.path = path
        self.group = group
        self.lock = lock  # held while this process writes the store
        # open handles: zarr re-reads and parses an array's metadata on every lookup by name
        self._arrays: dict[str, Any] = {}
        self._slots: dict[str, Any] = {}
        self._slot_arrays: dict[tuple[str, str], Any] = {}

    # -- creation / opening ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        coords: dict[str, tuple[np.ndarray, str]],
        checkpoint_shapes: dict[str, tuple[int, ...]],
        attrs: dict[str, Any],
        graph: dict[str, Any] | None = None,
    ) -> RunStore:
        """Create a new run group at ``path`` (must not exist).

        ``coords`` maps a coordinate name to (values, units); ``checkpoint_shapes`` maps checkpoint
        entries (``shadow/<g>``, ``held/<g>``, ``opt/<key>``) to shapes; ``graph`` is a
        :meth:`physlearn.system.Graph.graph_layout` dict, stored in the ``graph`` group.
        """
        import zarr

        p = Path(path)
        run_attrs = {
            **attrs,
            "guid": str(uuid.uuid4()),
            "run_timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "committed_steps": 0,
            "committed_evals": 0,
            "integrity_commits": 0,
            "checkpoint_slot": "",
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        try:
            lock = build.build(p, coords, checkpoint_shapes, run_attrs, graph)
        except FileExistsError:
            raise StoreError(f"{p} already exists; choose another --out or resume it") from None
        try:
            group = zarr.open_group(str(p), mode="r+", zarr_format=3)
        except BaseException:
            lock.release()
            raise
        return cls(p, group, lock)

    def release(self) -> None:
        """Give back the writer lock (if this process holds it)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- integrity ---------------------------------------------------------------------------
    def verify(self, full: bool = True) -> str:
        """Check the store against its checksums (:func:`physlearn.store.integrity.verify_group`);
        return a one-line verdict, or raise StoreError naming the first damaged array and
        step range."""
        damage = integrity.verify_group(self.group, full)
        if damage is None:
            return f"{self.path}: carries no checksums (made before physlearn recorded them)"
        if damage:
            raise StoreError(f"{self.path} is damaged: {integrity.summarise(damage)}")
        what = "verified" if full else "checkpoint and last commit verified"
        n = self.committed("step")
        return f"{self.path}: {what} ({n} steps, {self.committed('eval')} evaluations)"

    def create_array(
        self,
        name: str,
        record_shape: tuple[int, ...],
        dtype: Any,
        append_dim: str,
        dims: tuple[str, ...],
        units: str,
        long_name: str,
        compress: bool = False,
    ) -> None:
        """Create an empty appendable array; chunks hold ~4 MiB of records along ``append_dim``."""
        if append_dim not in APPEND_DIMS:
            raise ValueError(f"append dimension must be one of {APPEND_DIMS}")
        if len(dims) != len(record_shape):
            raise ValueError(f"{name}: dims {dims} do not match shape {record_shape}")
        dt = np.dtype(dtype)
        per = max(1, int(np.prod(record_shape, dtype=np.int64)) * dt.itemsize)
        chunk = int(np.clip(TARGET_CHUNK_BYTES // per, 1, 256))
        a = self.group.create_array(
            name,
            shape=(0, *record_shape),
            chunks=(chunk, *record_shape),
            dtype=dt,
            fill_value=_fill(dt.str),
            dimension_names=[append_dim, *dims],
            compressors="auto" if compress else None,
            # write every chunk: reads the same as skipping all-fill-value chunks, and spares
            # zarr's per-chunk comparison on the writer thread
            config={"write_empty_chunks": True},
            attributes={"units": units, "long_name": long_name},
        )
        self._arrays[name] = a

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", writer: str | None = None) -> RunStore:
        """Open a run group; ``writer`` (a purpose, e.g. ``"physlearn resume"``) first takes
        its writer lock, raising StoreLockedError (naming the holder) if another process has it.
        """
        import zarr

        p = Path(path)
        if not p.exists():
            raise StoreError(
                f"{p} does not exist (a run killed while its store was being created leaves "
                f"nothing: start it again with `physlearn run CONFIG --out {p}`)"
            )
        if not (p / "zarr.json").is_file():
            raise StoreError(f"{p} is not a Zarr group (no zarr.json)")
        lock = StoreLock(p, writer) if writer else None
        try:
            if lock is not None:
                _acquire(lock)
            g = zarr.open_group(str(p), mode=mode, zarr_format=3)  # type: ignore[arg-type]
            if "committed_steps" not in g.attrs or "config" not in g.attrs:
                raise StoreError(f"{p} is a Zarr group but not a physlearn run")
        except (StoreError, StoreLockedError):
            if lock is not None:
                lock.release()
            raise
        except Exception as exc:  # zarr raises several types for damaged metadata
            if lock is not None:
                lock.release()
            raise StoreError(f"{p}: cannot open the Zarr group ({exc})") from exc
        return cls(p, g, lock)

    def graph_layout(self) -> dict[str, Any] | None:
        """The system's graph as :meth:`physlearn.system.Graph.graph_layout` gives it (None when
        the run has no ``graph`` group)."""
        if "graph" not in self.group:
            return None
        gg = self.group["graph"]
        return {
            "positions": np.asarray(gg["positions"][...], dtype=np.float64),
            "edges": np.asarray(gg["edges"][...], dtype=np.int64),
            "node_roles": [str(r) for r in gg["node_roles"][...]],
            "edge_group": str(gg.attrs["edge_group"]),
        }

    # -- attributes --------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    def committed(self, dim: str = "step") -> int:
        return int(self.group.attrs[f"committed_{dim}s"])

    def update_attrs(self, **values: Any) -> None:
        """Set run attributes in one metadata write."""
        self.group.update_attributes(values)

    def status(self) -> str:
        """``running`` while a process holds the writer lock (this one included), else the
        recorded exit status, else ``interrupted`` (its writer died)."""
        if is_locked(self.path):
            return "running"
        return str(self.group.attrs.get("exit_status", "interrupted"))

    def array(self, name: str) -> Any:
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def array_names(self) -> list[str]:
        return sorted(k for k, _ in self.group.arrays())

    def read(self, name: str) -> np.ndarray:
        """An appendable array up to its committed length (or a coordinate, whole)."""
        return self._read(name, last=False)

    def read_last(self, name: str) -> np.ndarray:
        """The last committed record of an appendable array (only its chunk is read)."""
        return self._read(name, last=True)

    def _read(self, name: str, last: bool) -> np.ndarray:
        try:
            a = self.array(name)
            dims = a.metadata.dimension_names or ()
            if dims and dims[0] in APPEND_DIMS:
                n = self.committed(dims[0])
                return np.asarray(a[n - 1] if last else a[:n])
            return np.asarray(a[...])
        except Exception as exc:  # zarr and numcodecs raise many types for a damaged chunk
            raise StoreError(
                f"{self.path}: array {name!r} cannot be read ({integrity.short(exc)}); "
                f"`physlearn inspect {self.path} --verify` checks the whole store"
            ) from None

    # -- commits -----------------------------------------------------------------------------
    def commit(
        self,
        records: dict[str, np.ndarray],
        counts: dict[str, int],
        checkpoint: Checkpoint,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Append ``records`` (each stacked along its append dim) and commit them with
        ``checkpoint``; ``counts`` gives the number of new records per append dim and ``attrs``
        extra run attributes written with the commit marker."""
        start = {d: self.committed(d) for d in APPEND_DIMS}
        slot = "b" if self.group.attrs.get("checkpoint_slot") == "a" else "a"
        logged = "integrity_commits" in self.group.attrs  # a store made before checksums: none
        rec = integrity.CommitRecord(
            int(self.group.attrs.get("integrity_commits", 0)),
            start["step"] + counts.get("step", 0),
            start["eval"] + counts.get("eval", 0),
            slot,
            checkpoint.step,
        )
        jobs = []
        for name, data in records.items():
            a = self.array(name)
            dim = a.metadata.dimension_names[0]
            n = counts[dim]
            if data.shape[0] != n:
                raise ValueError(f"{name}: {data.shape[0]} records, expected {n}")
            if n:
                data = np.asarray(data, dtype=a.dtype)  # the checksum of the values stored
                jobs.append(_append(a.async_array, start[dim], data))
                if logged:
                    rec.rows[name] = (dim, start[dim], start[dim] + n, integrity.digest(data))
        jobs += self._checkpoint_jobs(slot, checkpoint, rec.checkpoint)
        marker: dict[str, Any] = {}
        if logged:
            jobs.append(integrity.append_record(self._log().async_array, rec))
            marker["integrity_commits"] = rec.index + 1
        # Every array's resize + write (and the checkpoint slot and the checksum record)
        # concurrently on zarr's I/O loop; the commit marker is written after all completed.
        _run_all(jobs)
        self._slot(slot).update_attributes({"step": checkpoint.step})
        # one metadata write: zarr's attrs.update() would write zarr.json once per key, and a
        # kill between keys would tear the commit marker
        self.group.update_attributes(
            {
                "committed_steps": rec.steps,
                "committed_evals": rec.evals,
                "checkpoint_slot": slot,
                **marker,
                **(attrs or {}),
            }
        )

    def _log(self) -> Any:
        if "__log__" not in self._arrays:
            self._arrays["__log__"] = self.group[integrity.GROUP][integrity.LOG]
        return self._arrays["__log__"]

    def _slot(self, slot: str) -> Any:
        if slot not in self._slots:
            self._slots[slot] = self.group["checkpoint"][slot]
        return self._slots[slot]

    def _slot_array(self, slot: str, key: str) -> Any:
        name = key.replace("/", "__")
        if (slot, name) not in self._slot_arrays:
            self._slot_arrays[slot, name] = self._slot(slot)[name]
        return self._slot_arrays[slot, name]

    def _checkpoint_jobs(
        self, slot: str, ck: Checkpoint, crcs: dict[str, int]
    ) -> list[Coroutine[Any, Any, None]]:
        """Writes of the checkpoint's entries into ``slot``; their checksums go into ``crcs``
        (by slot array name)."""
        entries = {f"shadow/{k}": v for k, v in ck.shadow.items()}
        entries |= {f"held/{k}": v for k, v in ck.held.items()}
        entries |= {f"opt/{k}": v for k, v in ck.optimizer.items()}
        entries |= {f"carry/{k}": v for k, v in ck.carry.items()}
        jobs: list[Coroutine[Any, Any, None]] = []
        for key, value in entries.items():
            a = self._slot_array(slot, key)
            stored = np.broadcast_to(np.asarray(value, dtype=a.dtype), a.shape)
            crcs[key.replace("/", "__")] = integrity.digest(stored)
            jobs.append(a.async_array.setitem(Ellipsis, stored))
        return jobs

    def checkpoint_entries(self) -> set[str]:
        """Entries every checkpoint slot holds (``shadow/<g>``, ``held/<g>``, ``opt/<key>``,
        ``carry/<name>``); a run created before an entry existed lacks it."""
        return {k.replace("__", "/", 1) for k, _ in self.group["checkpoint"]["a"].arrays()}

    def read_checkpoint(self) -> Checkpoint | None:
        slot = self.group.attrs.get("checkpoint_slot", "")
        if not slot:
            return None
        sg = self.group["checkpoint"][slot]
        shadow: Params = {}
        held: Params = {}
        opt: dict[str, FloatArray] = {}
        carry: dict[str, FloatArray] = {}
        parts = {"shadow": shadow, "held": held, "opt": opt, "carry": carry}
        for key, arr in sg.arrays():
            kind, _, name = key.partition("__")
            value = np.asarray(arr[...])
            parts[kind][name.replace("__", "/")] = value
        step = int(sg.attrs["step"])
        if step != self.committed("step"):
            raise StoreError(
                f"{self.path}: checkpoint slot {slot!r} is for step {step}, "
                f"but {self.committed('step')} steps are committed"
            )
        return Checkpoint(step, shadow, held, opt, carry)

    def truncate_to_committed(self) -> None:
        """Drop any uncommitted tail (a crash between resize and commit)."""
        for name in self.array_names():
            a = self.array(name)
            dims = a.metadata.dimension_names or ()
            if dims and dims[0] in APPEND_DIMS:
                n = self.committed(dims[0])
                if a.shape[0] != n:
                    a.resize((n, *a.shape[1:]))
        if "integrity_commits" in self.group.attrs:
            n = int(self.group.attrs["integrity_commits"])
            if self._log().shape[0] != n:
                self._log().resize((n,))

    def finish(self, status: str, **extra: Any) -> None:
        self.group.update_attributes(
            {
                "exit_status": status,
                "completed_timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **extra,
            }
        )

    def reopen_for_resume(self) -> None:
        """Mark the run as running again under this process."""
        attrs = {
            k: v
            for k, v in self.group.attrs.asdict().items()
            if k not in ("exit_status", "completed_timestamp", "error")
        }
        attrs.update({"pid": os.getpid(), "host": socket.gethostname()})
        self.group.attrs.put(attrs)


def _acquire(lock: StoreLock) -> None:
    """Take ``lock``; a store whose lock file cannot be made is the user's to fix."""
    try:
        lock.acquire()
    except OSError as exc:
        raise StoreError(
            f"{lock.path}: cannot take the writer lock ({exc.strerror}); "
            "is the store on a read-only or lock-less filesystem?"
        ) from None


async def _append(array: Any, start: int, data: np.ndarray) -> None:
    await array.resize((start + data.shape[0], *array.shape[1:]))
    await array.setitem(slice(start, start + data.shape[0]), data)


def _run_all(jobs: list[Coroutine[Any, Any, None]]) -> None:
    from zarr.core.sync import sync

    async def gather() -> list[Any]:
        # every job runs to its end even when one fails: no write may still be in flight when
        # the error is handled (and asyncio would complain about abandoned tasks at exit)
        return await asyncio.gather(*jobs, return_exceptions=True)

    for result in sync(gather()):
        if isinstance(result, BaseException):
            raise result


def to_jsonable(obj: Any) -> Any:
    """Config/snapshot values as plain JSON types (numpy scalars and arrays included)."""
    return json.loads(json.dumps(obj, default=_default))


def _default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, complex):
        return [o.real, o.imag]
    return str(o)  # Path and anything else: its text
