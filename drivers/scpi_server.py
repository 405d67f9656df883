"""The virtual lab on the network: one SCPI socket server per instrument (asyncio, one thread).

Each instrument listens on its own TCP port, like a LAN instrument on its own address: VISA
resource ``TCPIP::127.0.0.1::<port>::SOCKET``, messages terminated by ``\\n`` in both
directions. Ports are ephemeral (``port=0``) or consecutive from a base port in instrument order
(source, dmm, pots, switch). The server binds 127.0.0.1 only, unless ``allow_remote=True`` is
passed explicitly with another host.

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
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import numpy as np

from physlearn.drivers.lab_config import FaultSpec, LabConfig
from physlearn.drivers.virtual_lab import VirtualLab

LOOPBACK = "127.0.0.1"
_JUNK = "#~?%&$!"


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
    """

    def __init__(
        self,
        config: LabConfig,
        host: str = LOOPBACK,
        port: int = 0,
        allow_remote: bool = False,
        record: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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

    def set_faults(self, spec: FaultSpec) -> None:
        """Change the injected faults while serving (tests)."""
        self.faults.set_spec(spec)

    # -- serving -----------------------------------------------------------------------------
    async def _handle(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        inst = self.lab.instruments[name]
        faults = self.faults
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    break
                line = raw.decode("ascii", "replace").strip()
                if self.record:
                    with self._rec_lock:
                        self._received.append((name, line))
                if faults.draw(name, "drop"):
                    break
                stale = inst.stale_reply(line)
                if stale is not None and faults.draw(name, "stuck"):
                    reply: str | None = stale
                else:
                    reply = inst.execute(line)
                if reply is None:
                    continue
                if faults.draw(name, "timeout"):
                    continue
                if faults.draw(name, "garble"):
                    reply = faults.garble(reply)
                writer.write(reply.encode("ascii", "replace") + b"\n")
                await writer.drain()
        except Exception as exc:  # pragma: no cover - a handler must never kill the loop
            print(f"virtual lab: {name}: connection handler failed: {exc!r}")
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            for k, name in enumerate(self.lab.instruments):
                port = 0 if self.base_port == 0 else self.base_port + k

                def handler(
                    r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: str = name
                ) -> Any:
                    return self._handle(_n, r, w)

                srv = await asyncio.start_server(handler, self.host, port, reuse_address=True)
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
