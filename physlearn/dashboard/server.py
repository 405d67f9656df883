"""The dashboard's HTTP server: a Bokeh server application on one interface and port.

The socket is bound first (port 0: the system picks a free one), so the address printed and the
origins the page's websocket is accepted from name the port really used. Loopback interfaces
only, unless ``allow_remote``: the dashboard has no authentication and shows the runs' configs.
"""

from __future__ import annotations

import ipaddress
import signal
from dataclasses import dataclass
from typing import Any

from physlearn.dashboard.targets import Target


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def websocket_origins(host: str, port: int) -> list[str]:
    """Pages served from these origins may open the page's websocket: the loopback names on a
    loopback interface; the interface's address (any name, for a wildcard interface) else."""
    if is_loopback(host):
        return [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
    if _wildcard(host):
        return [f"*:{port}"]
    return [f"{host}:{port}"]


@dataclass
class Dashboard:
    """A running server: its address, and :meth:`stop`."""

    url: str
    port: int
    server: Any

    def stop(self) -> None:
        """Close the listening socket and every session."""
        self.server.stop()


def start(
    targets: list[Target],
    host: str = "127.0.0.1",
    port: int = 0,
    interval: float = 2.0,
    allow_remote: bool = False,
) -> Dashboard:
    """Bind ``host:port`` and serve the dashboard of ``targets`` on the current IO loop (started
    by the caller). A non-loopback ``host`` without ``allow_remote`` is a :class:`ValueError`."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"--host {host}: the dashboard binds loopback addresses only; add --allow-remote to "
            "serve on another interface (anyone on that network can read the runs)"
        )
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import BaseServer
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.util import bind_sockets
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    from physlearn.dashboard.page import build

    def make(doc: Any) -> None:
        build(doc, targets, interval)

    sockets, bound = bind_sockets(host, port)
    app = BokehTornado(
        {"/": Application(FunctionHandler(make))},
        extra_websocket_origins=websocket_origins(host, bound),
    )
    http = HTTPServer(app)
    http.add_sockets(sockets)
    server = BaseServer(IOLoop.current(), app, http)
    server.start()
    shown = "127.0.0.1" if _wildcard(host) else (f"[{host}]" if ":" in host else host)
    return Dashboard(f"http://{shown}:{bound}/", bound, server)


def serve_forever(dashboard: Dashboard) -> None:
    """Run the IO loop until Ctrl-C (SIGINT) or SIGTERM, then stop the server.

    The signals stop the loop through the event loop's own signal handling, wherever the
    process is when they arrive (a KeyboardInterrupt raised inside a page being built could be
    taken for that page's error); a second Ctrl-C interrupts at once."""
    from tornado.ioloop import IOLoop

    loop = IOLoop.current()
    aio = getattr(loop, "asyncio_loop")  # noqa: B009 -- tornado's IOLoop on asyncio

    def stop() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            aio.remove_signal_handler(sig)
        loop.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        aio.add_signal_handler(sig, stop)
    try:
        loop.start()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            aio.remove_signal_handler(sig)
        dashboard.stop()
