"""Per-commit checksums of a run store, and their verification.

Every commit appends one record to the string array ``integrity/commits``: for each array it
appended to, the append dimension, the row range and a CRC-32 of the rows' bytes; for each
checkpoint entry it wrote, a CRC-32 of its values, with the slot and the checkpoint's step. The
attribute ``created`` of the ``integrity`` group holds the CRC-32 of the arrays written when the
store was made (coordinates, graph). The run attribute ``integrity_commits``, written with the
commit marker, counts the records that belong to committed data: a record of a commit that
never completed is ignored and overwritten by the next commit.

A checksum covers exactly the values a reader gets back (dtype and shape included), so a store
that verifies holds bit for bit what was written, and a resume from it continues exactly as the
uninterrupted run would have. CRC-32 detects accidental damage (a lost, truncated or corrupted
chunk, a changed dtype or shape), not deliberate tampering; it costs about a millisecond per
megabyte on the writer thread (zlib releases the GIL).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GROUP = "integrity"
LOG = "commits"
#: Rows read at once when streaming an array through its checksums.
_WINDOW_BYTES = 32 << 20


def _head(dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    """The CRC-32 seed binding a checksum to its dtype and shape."""
    return zlib.crc32(f"{dtype.str}:{','.join(str(int(n)) for n in shape)}".encode())


def digest(values: Any) -> int:
    """CRC-32 of an array as a reader gets it back: dtype, shape and bytes (strings as UTF-8)."""
    a = np.asarray(values)
    if a.dtype.kind in "OUST":
        text = "\x00".join(str(x) for x in a.ravel()).encode()
        return zlib.crc32(text, zlib.crc32(f"str:{a.shape}".encode()))
    a = np.ascontiguousarray(a)
    return zlib.crc32(a.reshape(-1).view(np.uint8).data, _head(a.dtype, a.shape))


@dataclass
class CommitRecord:
    """What one commit wrote (see the module docstring)."""

    index: int
    steps: int  # committed steps after this commit
    evals: int
    slot: str
    ck_step: int
    rows: dict[str, tuple[str, int, int, int]] = field(
        default_factory=dict
    )  # dim, start, stop, crc
    checkpoint: dict[str, int] = field(default_factory=dict)  # slot array name -> crc

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "steps": self.steps,
                "evals": self.evals,
                "slot": self.slot,
                "ck_step": self.ck_step,
                "rows": {k: list(v) for k, v in self.rows.items()},
                "checkpoint": self.checkpoint,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> CommitRecord:
        d = json.loads(text)
        rows = {k: (str(v[0]), int(v[1]), int(v[2]), int(v[3])) for k, v in d["rows"].items()}
        return cls(
            int(d["index"]),
            int(d["steps"]),
            int(d["evals"]),
            str(d["slot"]),
            int(d["ck_step"]),
            rows,
            {k: int(v) for k, v in d["checkpoint"].items()},
        )


def create_log(group: Any, created: dict[str, int]) -> Any:
    """Make the ``integrity`` group of a new store (``created``: checksums of its arrays)."""
    ig = group.create_group(GROUP, attributes={"format": 1, "created": created})
    ig.create_array(LOG, shape=(0,), chunks=(16,), dtype=str, dimension_names=["commit"])
    return ig


async def append_record(log: Any, record: CommitRecord) -> None:
    """Write ``record`` at its index of the log (an async zarr array), growing it as needed."""
    await log.resize((record.index + 1,))
    await log.setitem(record.index, np.array(record.to_json(), dtype=object))


@dataclass
class Damage:
    """One damaged piece: ``where`` names the array (and step range), ``what`` the problem."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def read_records(group: Any, count: int) -> tuple[list[CommitRecord], list[Damage]]:
    """The first ``count`` commit records of the store's log."""
    try:
        raw = group[GROUP][LOG][:count] if count else []
    except Exception as exc:  # zarr and numcodecs raise many types for a damaged chunk
        return [], [Damage(f"checksum log {GROUP}/{LOG}", f"cannot be read ({short(exc)})")]
    records: list[CommitRecord] = []
    if len(raw) < count:
        return [], [Damage(f"checksum log {GROUP}/{LOG}", f"holds {len(raw)} of {count} records")]
    for i, text in enumerate(raw):
        try:
            rec = CommitRecord.from_json(str(text))
        except (ValueError, KeyError, TypeError, IndexError):
            return [], [Damage(f"checksum log {GROUP}/{LOG}", f"record {i} is damaged or missing")]
        records.append(rec)
    return records, []


def check_created(group: Any) -> list[Damage]:
    """Compare the arrays written at creation with their checksums."""
    out = []
    for name, crc in dict(group[GROUP].attrs.get("created", {})).items():
        try:
            ok = digest(group[name][...]) == crc
        except Exception as exc:
            out.append(Damage(f"array {name!r}", f"cannot be read ({short(exc)})"))
            continue
        if not ok:
            out.append(Damage(f"array {name!r}", "does not match its checksum"))
    return out


def check_checkpoint(group: Any, record: CommitRecord, superseded: bool = False) -> list[Damage]:
    """Compare the checkpoint slot ``record`` wrote with its checksums."""
    label = f"checkpoint slot {record.slot!r} (step {record.ck_step}"
    label += ", superseded: the next commit rewrites it)" if superseded else ")"
    try:
        sg = group["checkpoint"][record.slot]
        if int(sg.attrs.get("step", -1)) != record.ck_step and not superseded:
            return [Damage(label, f"says step {sg.attrs.get('step')}")]
        for name, crc in record.checkpoint.items():
            if digest(np.asarray(sg[name][...])) != crc:
                return [Damage(f"{label}, entry {name!r}", "does not match its checksum")]
    except Exception as exc:
        return [Damage(label, f"cannot be read ({short(exc)})")]
    return []


def check_rows(array: Any, name: str, ranges: list[tuple[str, int, int, int]]) -> list[Damage]:
    """Stream the rows of ``ranges`` (dim, start, stop, crc; sorted, disjoint) of ``array``
    through their checksums, each chunk read once; consecutive bad ranges are merged."""
    if not ranges:
        return []
    dim = ranges[0][0]
    bad: list[tuple[int, int, str]] = []

    def fail(start: int, stop: int, what: str) -> None:
        if bad and bad[-1][1] == start and bad[-1][2] == what:
            bad[-1] = (bad[-1][0], stop, what)
        else:
            bad.append((start, stop, what))

    try:
        shape = tuple(array.shape)
        dtype = np.dtype(array.dtype)
    except Exception as exc:
        return [Damage(f"array {name!r}", f"metadata cannot be read ({short(exc)})")]
    end = ranges[-1][2]
    if shape[0] < end:
        return [Damage(f"array {name!r}", f"holds {shape[0]} {dim}s but {end} are committed")]
    for (_, start, stop, crc), result in zip(
        ranges, _stream(array, ranges, dtype, shape), strict=True
    ):
        if isinstance(result, Exception):
            fail(start, stop, f"cannot be read ({short(result)})")
        elif result != crc:
            fail(start, stop, "rows do not match their checksum (lost or altered chunk)")
    return [Damage(f"array {name!r}, {dim}s {a}-{b - 1}", what) for a, b, what in bad]


def _stream(
    array: Any,
    ranges: list[tuple[str, int, int, int]],
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
) -> Iterator[int | Exception]:
    """The CRC-32 of each range's rows (or the read error), reading windows of whole chunks."""
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
    chunk = int(array.chunks[0]) if array.chunks else 1
    step = max(chunk, (_WINDOW_BYTES // row_bytes) // chunk * chunk)
    window: tuple[int, int, np.ndarray | Exception] | None = None
    for _, start, stop, _ in ranges:
        crc = _head(dtype, (stop - start, *shape[1:]))
        row = start
        err: Exception | None = None
        while row < stop:
            if window is None or not window[0] <= row < window[1]:
                w0 = row // chunk * chunk
                w1 = min(w0 + step, shape[0])
                try:
                    data: np.ndarray | Exception = np.ascontiguousarray(array[w0:w1])
                except Exception as exc:
                    data = exc
                window = (w0, w1, data)
            w0, w1, data = window
            part_end = min(stop, w1)
            if isinstance(data, Exception):
                err = data
            elif err is None:
                part = data[row - w0 : part_end - w0]
                crc = zlib.crc32(part.reshape(-1).view(np.uint8).data, crc)
            row = part_end
        yield err if err is not None else crc


def short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"


def summarise(damage: list[Damage]) -> str:
    """One line: the first damaged piece, and how many more there are."""
    more = f" (and {len(damage) - 1} more damaged)" if len(damage) > 1 else ""
    return f"{damage[0]}{more}"


def verify_group(group: Any, full: bool) -> list[Damage] | None:
    """Verify a run group against its checksums; None when it carries none.

    ``full``: every committed row, both checkpoint slots and the creation record. Otherwise
    (before a resume) what the resume reads or rewrites: the creation record, the checkpoint in
    use, and every commit whose rows share a chunk with the last committed row of an array (the
    chunk the next commit rewrites).
    """
    attrs = group.attrs
    if "integrity_commits" not in attrs or GROUP not in group:
        return None
    count = int(attrs["integrity_commits"])
    records, damage = read_records(group, count)
    if damage:
        return damage
    damage = check_created(group)
    if not records:
        return damage
    last = records[-1]
    committed = (int(attrs["committed_steps"]), int(attrs["committed_evals"]))
    if (last.steps, last.evals, last.slot) != (*committed, attrs.get("checkpoint_slot")):
        return [*damage, Damage("commit marker", "disagrees with the last commit record")]
    damage += check_checkpoint(group, last)
    if full:
        older = [r for r in records if r.slot != last.slot]
        if older:
            damage += check_checkpoint(group, older[-1], superseded=True)
    per_array: dict[str, list[tuple[str, int, int, int]]] = {}
    for rec in records:
        for name, entry in rec.rows.items():
            per_array.setdefault(name, []).append(entry)
    for name, ranges in per_array.items():
        try:
            array = group[name]
        except Exception as exc:
            damage.append(Damage(f"array {name!r}", f"cannot be opened ({short(exc)})"))
            continue
        if not full:
            chunk = int(array.chunks[0]) if array.chunks else 1
            lo = (ranges[-1][2] - 1) // chunk * chunk
            ranges = [r for r in ranges if r[2] > lo]
        damage += check_rows(array, name, ranges)
    return damage
