"""The virtual lab on the network: one SCPI socket server per instrument (asyncio, one thread).

Each instrument listens on its own TCP port, like a LAN instrument on its own address: VISA
resource ``TCPIP::127.0.0.1::<port>::SOCKET``, messages terminated by ``\\n`` in both
directions. Ports are ephemeral (``port=0``) or consecutive from a base port in instrument order
(source, dmm, pots, switch, memristor board, stock instruments; those the lab has). The server
binds 127.0.0.1 only, unless ``allow_remote=True`` is passed explicitly with another host.

Faults (``LabConfig.faults``; probabilities, drawn from a seeded generator, per instrument):

* ``drop``: on receiving a command the server closes the connection without executing it;
* ``timeout``: a query's reply is never sent (the command *is* executed);
* ``garble``: some characters of a reply are replaced by junk (``#~?%&$!``); the terminator is
  kept, so the client reads the corrupted line;
* ``stuck``: a DMM scan (``READ?``) returns its previous reply verbatim, reading counter included.

:class:`LabServer` runs in a background thread (:meth:`start` / :meth:`stop`, or as a context
manager) or in the foreground (:meth:`serve_forever`, the CLI). With ``record=True`` every
received line is kept (:meth:`received`), which the safety tests use to check what reached an
instrument.

Bounds (the lab serves anyone who can reach its ports, so nothing a client sends may grow the
server without limit):

* ``max_connections`` (default 64) open connections *per instrument*; one more is accepted and
  closed at once, logged as ``refused connection from HOST:PORT to NAME: 64 connections open to
  it (max_connections 64)``;
* ``idle_timeout`` (default 300 s): a connection that completes no command line (or reads no
  reply) for that long is closed, logged as ``closed idle connection from HOST:PORT to NAME: no
  complete command for 300 s (idle_timeout)``;
* ``max_line`` (default 65536 bytes): a longer line is discarded unexecuted and queues
  ``-363,"Input buffer overrun"``; the connection stays open.

So at most ``max_connections * max_line`` bytes of input are buffered per instrument. Within a line,
channel lists are checked before they are expanded and the error queue holds 32 entries
(:mod:`physlearn.drivers.virtual_lab.scpi`). Log lines go to the
``physlearn.drivers.virtual_lab.server`` logger (refusals at WARNING, idle closes at INFO;
``physlearn lab serve`` prints both on stderr).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import numpy as np

from physlearn.drivers.virtual_lab.config import FaultSpec, LabConfig
from physlearn.drivers.virtual_lab.instrument import SimInstrument
from physlearn.drivers.virtual_lab.lab import VirtualLab
from physlearn.drivers.virtual_lab.scpi import ScpiError

LOOPBACK = "127.0.0.1"
_JUNK = "#~?%&$!"
#: default bounds (see the module docstring)
MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 300.0
MAX_LINE = 65536

_log = logging.getLogger(__name__)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def _discard(reader: asyncio.StreamReader, n: int) -> bool:
    """Drop ``n`` buffered bytes (part of an overlong line); False if the connection ended."""
    try:
        await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    return True


class _Idle(Exception):
    """A connection completed no command (or read no reply) within the idle timeout."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class FaultInjector:
    """Seeded fault draws; ``counts[kind]`` counts the faults injected so far."""

    def __init__(self, spec: FaultSpec) -> None:
        self.lock = threading.Lock()
        self.set_spec(spec)

    def set_spec(self, spec: FaultSpec) -> None:
        with self.lock:
            self.spec = spec
            self.rng = np.random.default_rng([spec.seed, 7])
            self.counts = {"drop": 0, "timeout": 0, "garble": 0, "stuck": 0}

    def draw(self, instrument: str, kind: str) -> bool:
        with self.lock:
            p = float(getattr(self.spec, kind))
            if p <= 0:
                return False
            if self.spec.instruments is not None and instrument not in self.spec.instruments:
                return False
            hit = bool(self.rng.random() < p)
            if hit:
                self.counts[kind] += 1
            return hit

    def garble(self, reply: str) -> str:
        with self.lock:
            chars = list(reply) or [" "]
            k = max(1, len(chars) // 4)
            pos = self.rng.choice(len(chars), size=min(k, len(chars)), replace=False)
            for p in pos:
                chars[int(p)] = _JUNK[int(self.rng.integers(len(_JUNK)))]
            if chars[0] not in _JUNK:  # a corrupted first character: detectably garbled
                chars[0] = _JUNK[0]
            return "".join(chars)


class LabServer:
    """Serve a :class:`VirtualLab` over SCPI sockets.

    Args:
        config: the lab.
        host: interface to bind; only loopback addresses unless ``allow_remote``.
        port: 0 for ephemeral ports, else the first of consecutive ports.
        allow_remote: permit a non-loopback ``host`` (the lab has no authentication).
        record: keep every received line (``received()``).
        clock: time source of the physics (seconds).
        max_connections: open connections per instrument (>= 1); more are closed at once.
        idle_timeout: seconds without a complete command line before a connection is closed.
        max_line: longest command line in bytes (>= 64); a longer one is discarded (-363).
    """

    def __init__(
        self,
        config: LabConfig,
        host: str = LOOPBACK,
        port: int = 0,
        allow_remote: bool = False,
        record: bool = False,
        clock: Callable[[], float] = time.monotonic,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        max_line: int = MAX_LINE,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not (math.isfinite(idle_timeout) and idle_timeout > 0):
            raise ValueError(
                f"idle_timeout must be a finite number of seconds > 0, got {idle_timeout}"
            )
        if max_line < 64:
            raise ValueError(f"max_line must be >= 64 bytes, got {max_line}")
        if not is_loopback(host) and not allow_remote:
            raise ValueError(
                f"the virtual lab binds loopback addresses only; {host!r} needs allow_remote "
                "(--allow-remote): anyone on that network could drive the instruments"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} outside 0..65535")
        self.lab = VirtualLab(config, clock)
        self.config = config
        self.host = host
        self.base_port = port
        self.record = record
        self.max_connections = int(max_connections)
        self.idle_timeout = float(idle_timeout)
        self.max_line = int(max_line)
        self._open: dict[str, int] = {}
        self.faults = FaultInjector(config.faults)
        self.ports: dict[str, int] = {}
        self._received: list[tuple[str, str]] = []
        self._rec_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.connections = 0

    # -- addresses ---------------------------------------------------------------------------
    @property
    def bench(self) -> Any:
        return self.lab.bench

    def address(self, name: str) -> str:
        """VISA resource name of instrument ``name``."""
        return f"TCPIP::{self.host}::{self.ports[name]}::SOCKET"

    @property
    def addresses(self) -> dict[str, str]:
        return {name: self.address(name) for name in self.ports}

    def station_config(self, timeout: float = 2.0) -> dict[str, Any]:
        """A qcodes station mapping for the served instruments (pyvisa-py, ``\\n`` terminated)."""
        out: dict[str, Any] = {}
        for name in self.ports:
            init: dict[str, Any] = {
                "visalib": "@py",
                "terminator": "\n",
                "timeout": timeout,
                "device_clear": False,
            }
            if name == self.config.source.name:
                init["max_voltage"] = self.config.source.max_voltage
                init["max_current"] = self.config.source.max_current
            out[name] = {"type": self.lab.driver_class(name), "address": self.address(name)}
            out[name]["init"] = init
        return {"instruments": out}

    # -- recording ---------------------------------------------------------------------------
    def received(self, instrument: str | None = None) -> list[tuple[str, str]]:
        """Copy of the received lines as (instrument, line), optionally for one instrument."""
        with self._rec_lock:
            return [r for r in self._received if instrument is None or r[0] == instrument]

    def clear_received(self) -> None:
        with self._rec_lock:
            self._received.clear()

    def open_connections(self, instrument: str | None = None) -> int:
        """Connections open now, to one instrument or to all."""
        if instrument is not None:
            return self._open.get(instrument, 0)
        return sum(self._open.values())

    def set_faults(self, spec: FaultSpec) -> None:
        """Change the injected faults while serving (tests)."""
        self.faults.set_spec(spec)

    # -- serving -----------------------------------------------------------------------------
    async def _handle(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One connection: refused beyond ``max_connections``, else served until EOF, a drop
        fault, or ``idle_timeout`` without a complete line."""
        peer = _peer(writer)
        n_open = self._open.get(name, 0)
        if n_open >= self.max_connections:
            _log.warning(
                "refused connection from %s to %s: %d connections open to it (max_connections %d)",
                peer, name, n_open, self.max_connections,
            )  # fmt: skip
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        self._open[name] = n_open + 1
        self.connections += 1
        try:
            await self._session(name, reader, writer)
        except _Idle as idle:
            _log.info("closed idle connection from %s to %s: %s (idle_timeout)", peer, name, idle)
        except Exception:  # pragma: no cover - a handler must never kill the loop
            _log.exception("%s: connection from %s failed", name, peer)
        finally:
            self._open[name] -= 1
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _session(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        inst = self.lab.instruments[name]
        faults = self.faults
        sock = writer.get_extra_info("socket")
        while True:
            _quick_ack(sock)
            line = await self._read_line(inst, reader)
            if line is None:
                return
            if self.record:
                with self._rec_lock:
                    self._received.append((name, line))
            if faults.draw(name, "drop"):
                return
            stale = inst.stale_reply(line)
            if stale is not None and faults.draw(name, "stuck"):
                reply: str | None = stale
            else:
                reply = inst.execute(line)
            delay = inst.take_delay()  # a timed dialect: the observed operation's duration
            if delay > 0:
                await asyncio.sleep(delay)
            if reply is None or faults.draw(name, "timeout"):
                continue
            if faults.draw(name, "garble"):
                reply = faults.garble(reply)
            writer.write(reply.encode("ascii", "replace") + b"\n")
            try:
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
            except TimeoutError:
                raise _Idle(f"reply not read for {self.idle_timeout:g} s") from None

    async def _read_line(self, inst: SimInstrument, reader: asyncio.StreamReader) -> str | None:
        """The next command line (None at EOF). A line longer than ``max_line`` is discarded
        and queues -363; waiting longer than ``idle_timeout`` for a line raises :class:`_Idle`."""
        overrun = False
        while True:
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
            except TimeoutError:
                raise _Idle(f"no complete command for {self.idle_timeout:g} s") from None
            except asyncio.LimitOverrunError as exc:
                overrun = True
                if not await _discard(reader, exc.consumed):
                    return None
                continue
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            if overrun:  # the tail of the overlong line
                inst.report(ScpiError(-363, f"line longer than {self.max_line} bytes"))
                overrun = False
                continue
            return raw.decode("ascii", "replace").strip()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            for k, name in enumerate(self.lab.instruments):
                port = 0 if self.base_port == 0 else self.base_port + k

                def handler(
                    r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: str = name
                ) -> Any:
                    return self._handle(_n, r, w)

                srv = await asyncio.start_server(
                    handler, self.host, port, reuse_address=True, limit=self.max_line
                )
                self._servers.append(srv)
                self.ports[name] = int(srv.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._error = exc
            await self._close_all()
            self._ready.set()
            return
        self._ready.set()
        await self._stopping.wait()
        await self._close_all()

    async def _close_all(self) -> None:
        for srv in self._servers:
            srv.close()
        for w in list(self._writers):
            w.close()
        for srv in self._servers:
            await srv.wait_closed()
        # let the connection handlers see EOF and finish
        pending = list(self._handlers)
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        self._servers.clear()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> Self:
        """Serve in a background thread; returns once every port is bound."""
        if self._thread is not None:
            raise RuntimeError("the lab server is already running")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="physlearn-virtual-lab", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            self._thread.join(timeout=5)
            self._thread = None
            raise OSError(f"virtual lab: cannot listen on {self.host}: {self._error}")
        return self

    def stop(self) -> None:
        """Close every connection and listening socket and join the thread (idempotent)."""
        thread, loop, ev = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout=10)
        self._thread = None

    def serve_forever(self, on_ready: Callable[[LabServer], None] | None = None) -> None:
        """Serve in the calling thread until :meth:`request_stop` (e.g. from a signal handler)."""
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            task = asyncio.ensure_future(self._serve())
            while not self._ready.is_set():
                await asyncio.sleep(0.01)
            if self._error is not None:
                await task
                return
            if on_ready is not None:
                on_ready(self)
            await task

        try:
            loop.run_until_complete(main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        if self._error is not None:
            raise OSError(f"virtual lab: cannot listen on {self.host}: {self._error}")

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` (or the background thread) to stop; signal-safe."""
        loop, ev = self._loop, self._stopping
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _quick_ack(sock: socket.socket | None) -> None:
    """Acknowledge the next segment at once (Linux ``TCP_QUICKACK``; re-armed before every
    read, as the kernel falls back to delayed acknowledgements). A client that leaves Nagle's
    algorithm on -- pyvisa-py's SOCKET sessions do, and cannot switch it off -- holds its second
    write of a write-write-query exchange (the stock 34980A driver's ``*CLS``, command,
    ``*ESR?``) until the first is acknowledged; with delayed acknowledgements that is ~40 ms per
    exchange, which LAN instruments do not add."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or quickack is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
    except OSError:
        return
