"""Headless Chromium for the tests that open built pages in a real browser (tests/test_docs.py
for the documentation site, tests/face/test_microscope_site.py for a microscope site): the
:class:`Browser` driven over the DevTools protocol, :data:`IMAGES_SHOWN`, a static HTTP server
for a folder (:func:`serve`) and the skip mark for machines without Chromium."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless browser test needs Debian's chromium package (apt-get "
                             "install chromium); .ci/run installs it when it can")

# true when every image of the page has loaded and decoded
IMAGES_SHOWN = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``folder`` on an HTTP server on 127.0.0.1 while the block runs: its base URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (no package needed): open a
    page, collect its console errors, uncaught exceptions and failed loads, evaluate
    expressions, take a screenshot."""

    def __init__(self, profile: Path):
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()

        def pipes():  # Chromium reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--window-size=1280,900", "about:blank"],
            close_fds=False, preexec_fn=pipes, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=self.session)

    def _read(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [],
                                        max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._from_chrome, 1 << 16) if ready else b""
            if not chunk:
                return None
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while (answer := self._read(deadline)) is not None:
            if answer.get("id") == self._next_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]
            self.events.append(answer)
        raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")

    def open(self, url: str, settle: float = 1.0) -> list[str]:
        """Load ``url`` and wait ``settle`` s more; the errors it logged."""
        self.events.clear()
        self.call("Page.navigate", session=self.session, url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            event = self._read(deadline)
            assert event is not None, f"{url} did not finish loading"
            self.events.append(event)
        deadline = time.monotonic() + settle
        while (event := self._read(deadline)) is not None:
            self.events.append(event)
        return [error for e in self.events if (error := _error(e))]

    def value(self, expression: str):
        return self.call("Runtime.evaluate", session=self.session, expression=expression,
                         returnByValue=True)["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, OSError, AssertionError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _error(event: dict) -> str | None:
    """The error an event reports: console.error, an uncaught exception, a failed load."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description")))
                                            for a in params["args"])
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "exception: " + details.get("exception", {}).get("description", details["text"])
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        return f"{params['entry']['text']} ({params['entry'].get('url', '')})"
    return None
