"""Headless Chromium driven over the DevTools protocol on a pipe, with the standard library only.

Chromium started with ``--remote-debugging-pipe`` reads protocol commands from file descriptor 3
and writes replies and events to descriptor 4, each a JSON message ended by a NUL byte. This
module opens a page, collects its console errors (script exceptions, ``console.error`` and failed
resource loads such as a missing image), evaluates JavaScript in it and takes screenshots, which is
all the report tests need, without Selenium or a websocket client.

Run directly, it writes a screenshot of a page: ``python test/chromium.py <page> <png> [W H]``.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-extensions", "--disable-sync", "--no-first-run",
    "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
)
TIMEOUT_S = 60.0
READ_CHUNK = 1 << 16


class BrowserError(RuntimeError):
    """The browser did not answer in time, answered with an error, or exited."""


class Chromium:
    """One headless browser process; use as a context manager so it is always stopped."""

    def __init__(self, executable: Path = CHROMIUM, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="hieseg-chromium-")
        self._log = tempfile.TemporaryFile()
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def descriptors_3_and_4() -> None:
            # Runs in the child between fork and exec; dup2 leaves the copies inheritable.
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self._process = subprocess.Popen(
            [str(executable), *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=descriptors_3_and_4, close_fds=False,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask the browser to quit, kill it if it does not, and remove its profile."""
        if self._process.poll() is None:
            try:
                self._send("Browser.close")
                self._process.wait(timeout=10)
            except (BrowserError, OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for descriptor in (self._commands, self._replies):
            try:
                os.close(descriptor)
            except OSError:
                pass
        self._log.close()
        self._profile.cleanup()

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept in ``events``."""
        message_id = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._receive(deadline)
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for_event(self, method: str, session: str) -> dict:
        """The first event ``method`` of ``session``, waiting for it if it has not come yet."""
        deadline = time.monotonic() + self.timeout_s
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            self.events.append(self._receive(deadline))

    def open(self, url: str, width: int = 1400, height: int = 900) -> Page:
        """A new tab showing ``url`` after its load event (every image loaded or failed)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_for_event("Page.loadEventFired", session)
        return Page(self, session)

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self._commands, data)
            data = data[written:]
        return self._next_id

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer from Chromium within {self.timeout_s:g} s{self._log_tail()}")
            ready, _, _ = select.select([self._replies], [], [], remaining)
            if ready:
                chunk = os.read(self._replies, READ_CHUNK)
                if not chunk:
                    raise BrowserError(f"Chromium exited (status {self._process.poll()}){self._log_tail()}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _log_tail(self) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip()
        return f"; its output ends: {text[-600:]}" if text else ""


class Page:
    """One tab of :class:`Chromium`."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str) -> object:
        """The JSON value of a JavaScript expression (promises awaited); a thrown exception raises BrowserError."""
        result = self.browser.call("Runtime.evaluate",
                                   {"expression": expression, "returnByValue": True, "awaitPromise": True},
                                   self.session)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Script exceptions, console.error/assert calls and error log entries (failed loads) of this page so far."""
        self.evaluate("0")  # lets events queued before this point arrive
        errors = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                errors.append(f"{entry['text']} {entry.get('url', '')}".strip())
        return errors

    def screenshot(self, path: Path) -> None:
        """PNG of the visible part of the page."""
        data = self.browser.call("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        Path(path).write_bytes(base64.b64decode(data))


def available() -> str | None:
    """None when the browser can be used, else why not (for a skip message)."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found (Debian package 'chromium'; .ci/run installs it where apt-get works)"
    return None


if __name__ == "__main__":
    page_path, png = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    size = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (1400, 900)
    with Chromium() as chromium:
        tab = chromium.open(page_path.as_uri(), *size)
        tab.screenshot(png)
        print("console errors:", tab.console_errors() or "none")
