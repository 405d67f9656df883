"""An exclusive, OS-level writer lock for a run or sweep store.

One process at a time may write a store. The lock is ``fcntl.flock`` on the file
``<store>/.physlearn/writer.lock``: the kernel releases it when the holder exits or dies (SIGKILL
included), so a crashed writer never leaves a stale lock and no PID check is needed. The holder
writes its pid, host and start time into the file so that a refused process can name it.
``.physlearn`` is an empty Zarr group, so readers that list the store (xarray, zarr) see a group
they skip rather than an object they warn about.

Filesystems: ``flock`` is exclusive between processes on one host for every local filesystem.
On NFS, Linux emulates ``flock`` with POSIX byte-range locks, which the NFS lock manager
(NFSv3 ``lockd``, NFSv4 built in) makes exclusive between clients too; on filesystems mounted
with ``nolock`` or ``local_lock=flock``, or on SMB/CIFS and FUSE mounts that do not forward locks,
a lock only excludes writers on the same host. README.md ("Guarantees") says the same.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

#: The Zarr group, inside a store, that holds its lock file.
LOCK_DIR = ".physlearn"
LOCK_FILE = "writer.lock"
_GROUP_METADATA = {
    "zarr_format": 3,
    "node_type": "group",
    "attributes": {"description": "physlearn's writer lock (writer.lock); holds no data"},
}


def lock_path(store: str | Path) -> Path:
    """The lock file of the store at ``store``."""
    return Path(store) / LOCK_DIR / LOCK_FILE


def _prepare(store: Path) -> Path:
    """Make the lock group of ``store`` if it is missing; return the lock file's path."""
    group = store / LOCK_DIR
    if not (group / "zarr.json").is_file():
        group.mkdir(exist_ok=True)
        tmp = group / f"zarr.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(_GROUP_METADATA))
        os.replace(tmp, group / "zarr.json")
    return group / LOCK_FILE


class StoreLockedError(RuntimeError):
    """Another process holds the store's writer lock; the message names it."""


class StoreLock:
    """The writer lock of the store at ``path`` (a directory that must exist).

    ``acquire()`` takes it without waiting or raises :class:`StoreLockedError`; ``release()``
    (or leaving the ``with`` block, or the process ending) gives it back. The lock follows the
    directory when it is renamed: it is held on the file, not on its name.
    """

    def __init__(self, path: str | Path, purpose: str = "writing") -> None:
        self.path = Path(path)
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StoreLock:
        if self._fd is not None:
            return self
        fd = os.open(_prepare(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_current_holder(fd))
            os.close(fd)
            raise StoreLockedError(
                f"{self.path} is locked by another writer ({holder}); wait for it to finish "
                "or stop it, then try again"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "purpose": self.purpose,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def is_locked(path: str | Path) -> bool:
    """Whether some process holds the writer lock of the store at ``path`` right now."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def holder(path: str | Path) -> str:
    """A one-line description of who holds (or last held) the lock of the store at ``path``."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return "no lock file"
    try:
        return _describe(_read_holder(fd))
    finally:
        os.close(fd)


def _current_holder(fd: int, patience: float = 0.5) -> dict[str, object]:
    """The holder's record; a holder that has just taken the lock writes its record a moment
    later, so an empty record, or one naming a process of this host that no longer exists (the
    previous holder), is read again for up to ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        info = _read_holder(fd)
        if (info and not _dead_here(info)) or time.monotonic() > deadline:
            return info
        time.sleep(0.01)


def _dead_here(info: dict[str, object]) -> bool:
    """Whether ``info`` names a process of this host that has exited."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _read_holder(fd: int) -> dict[str, object]:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict[str, object]) -> str:
    if not info:
        return "holder unknown"
    return (
        f"{info.get('purpose', 'writing')} by pid {info.get('pid', '?')} on "
        f"{info.get('host', '?')} since {info.get('since', '?')}"
    )
