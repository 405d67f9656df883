"""A real headless Chromium for tests of web pages, driven over the DevTools protocol.

Debian's ``chromium-headless-shell`` (or ``chromium``) runs as a subprocess with a fresh
profile under a temporary directory and a DevTools port the system picks; the test talks to it
over a websocket (tornado's client: tornado comes with Bokeh). ``--dump-dom`` cannot be used:
Bokeh renders its widgets inside shadow roots, which the dumped markup does not contain, so
:meth:`Browser.text` walks the live DOM, shadow roots included.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

#: Browser binaries tried, in order (Debian packages chromium-headless-shell and chromium).
BINARIES = ("chromium-headless-shell", "chromium", "chromium-browser")

#: Text of the page's document, shadow roots included, style and script contents excluded.
TEXT_JS = """(() => {
  const out = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) out.push(child.textContent);
      else if (!['STYLE', 'SCRIPT'].includes(child.nodeName)) walk(child);
    }
  };
  walk(document.body);
  return out.join(' ').replace(/\\s+/g, ' ');
})()"""


def find_browser() -> str | None:
    """The path of an installed Chromium, or None."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page; close it (or use ``with``) to end the process."""

    def __init__(self, binary: str, workdir: Path, width: int = 1280, height: int = 1600) -> None:
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # CI containers run as root, where the sandbox cannot start
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Debian's /usr/bin/chromium* are shell scripts that start the browser as their child:
            # a process group of its own lets close() end the browser, not only the script
            start_new_session=True,
        )
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            self.ws = self.loop.run_until_complete(self._connect(port))
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, active: Path, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the browser exited ({self.proc.returncode})")
            try:
                return int(active.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        raise TimeoutError("the browser did not open its DevTools port")

    async def _connect(self, port: int) -> Any:
        from tornado.websocket import websocket_connect

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        return await websocket_connect(pages[0]["webSocketDebuggerUrl"], max_message_size=1 << 28)

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""

        async def go() -> dict[str, Any]:
            ident = next(self.ids)
            await self.ws.write_message(
                json.dumps({"id": ident, "method": method, "params": params})
            )
            while True:
                msg = await self.ws.read_message()
                if msg is None:
                    raise RuntimeError("the browser closed its DevTools connection")
                reply = json.loads(msg)
                if reply.get("id") == ident:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply.get("result", {}))

        return self.loop.run_until_complete(asyncio.wait_for(go(), timeout))

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """The text the page shows now (shadow roots included)."""
        return str(self.evaluate(TEXT_JS) or "")

    def wait_for_text(self, needle: str, timeout: float = 30.0) -> str:
        """The page's text once it contains ``needle``; TimeoutError with the text else."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            time.sleep(0.2)
        raise TimeoutError(
            f"{needle!r} not shown within {timeout} s; the page shows: {text[:2000]}"
        )

    def screenshot(self, path: Path, whole: bool = True) -> Path:
        """A PNG of the whole page (beyond the window's height), or of the window only (which
        keeps what the pointer shows, e.g. a hover tooltip: the whole page is laid out anew)."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=whole)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait()
        self._signal_group(signal.SIGKILL)  # whatever of the browser outlived the script
        self.loop.close()

    def _signal_group(self, sig: int) -> None:
        """Signal the process group this browser was started in (its id is the script's pid)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
