"""Headless Chromium for the kit's tests: load a page and say what it logged, requested and showed
(`Chromium.open`), or drive one with the keyboard (`Chromium.tab`). A test module imports
`chromium_fixture`, asks for `chromium` and is marked `needs_chromium`."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kit import requires

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = requires(CHROMIUM is not None, "no chromium here (apt-get install chromium)")
IMAGES_SCRIPT = "JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]))"


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: fd 3
    in, fd 4 out, messages ended by NUL): what a page logged, requested, and how its images came out."""

    def __init__(self) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # the browser reads fd 3 and writes fd 4: bash moves the pipe there, from fds above both
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
        flags += ["--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}"]
        shell = f'exec "$@" 3<&{ends[0]} 4>&{ends[1]} {ends[0]}<&- {ends[1]}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", shell, "bash", CHROMIUM, *flags, "about:blank"],
            pass_fds=ends,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in ends:
            os.close(fd)
        self._pending, self._events, self._id = b"", [], 0

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._id += 1
        message = {
            "id": self._id,
            "method": method,
            "params": params or {},
            **({"sessionId": session} if session else {}),
        }
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._id

    def _receive(self, answer: int | None = None, event: str | None = None, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while b"\0" in self._pending:
                raw, self._pending = self._pending.split(b"\0", 1)
                message = json.loads(raw)
                if answer is not None and message.get("id") == answer:
                    assert "error" not in message, message["error"]
                    return message.get("result", {})
                self._events.append(message)
                if event is not None and message.get("method") == event:
                    return message["params"]
            if select.select([self._read], [], [], 0.5)[0]:
                chunk = os.read(self._read, 1 << 20)
                assert chunk, "chromium closed its pipe"
                self._pending += chunk
        raise TimeoutError(f"chromium: no {event or answer} in {timeout_s:.0f} s")

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        return self._receive(answer=self._send(method, params, session))

    def wait_event(self, method: str, session: str, since: int) -> dict:
        """The first `method` event of `session` from the `since`-th event on, waiting for it if it has not come."""
        while True:
            for message in self._events[since:]:
                if message.get("method") == method and message.get("sessionId") == session:
                    return message["params"]
            since = len(self._events)
            self._receive(event=method)

    def tab(self, url: str) -> Tab:
        """A new tab on `url`, loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        tab = Tab(self, target, session, since=len(self._events))
        tab.go(lambda: self.call("Page.navigate", {"url": url}, session))
        return tab

    def open(self, path: Path) -> dict[str, Any]:
        """Load a page: its errors (console, exceptions, log), the URLs it requested, its images and a screenshot."""
        tab = self.tab(path.resolve().as_uri())
        images = tab.evaluate(IMAGES_SCRIPT)
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, tab.session)
        errors, requests = tab.errors(), tab.requests()
        tab.close()
        return {"errors": errors, "requests": requests, "images": json.loads(images), "screenshot": shot["data"]}

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)
        self.profile.cleanup()


class Tab:
    """One page of the browser: evaluate in it, type into it, and what it logged and requested since it opened."""

    def __init__(self, browser: Chromium, target: str, session: str, since: int) -> None:
        self.browser, self.target, self.session, self.since = browser, target, session, since

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.browser.call(method, params, self.session)

    def go(self, navigate: Any) -> None:
        """Run `navigate` (a navigation or a reload) and wait until the page it loads fired its load event."""
        since = len(self.browser._events)
        navigate()
        self.browser.wait_event("Page.loadEventFired", self.session, since)

    def reload(self) -> None:
        self.go(lambda: self.call("Page.reload"))

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 10.0) -> Any:
        """The value of `expression` once it is truthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"still false after {timeout_s:.0f} s: {expression}")

    def key(self, key: str, code: str | None = None, text: str | None = None, modifiers: int = 0) -> None:
        """Press and release a key as a person would: `key` is the DOM's KeyboardEvent.key ("j", "Escape"),
        `text` what it types (by default a one-character key types itself). `modifiers`: 8 is Shift."""
        typed = key if text is None and len(key) == 1 else text
        down = {"type": "keyDown" if typed else "rawKeyDown", "key": key, "code": code or _code(key)}
        down |= {"text": typed, "unmodifiedText": typed} if typed else {}
        self.call("Input.dispatchKeyEvent", down | {"modifiers": modifiers})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": down["code"], "modifiers": modifiers})

    def type(self, text: str) -> None:
        """Type `text` into the focused field, as an input method would."""
        self.call("Input.insertText", {"text": text})

    def _messages(self) -> list[dict]:
        return [m for m in self.browser._events[self.since :] if m.get("sessionId") == self.session]

    def errors(self) -> list[str]:
        """What the page logged as an error, and the exceptions it threw."""
        errors = []
        for message in self._messages():
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.exceptionThrown" or (
                method == "Runtime.consoleAPICalled" and params["type"] == "error"
            ):
                errors.append(json.dumps(params)[:300])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
        return errors

    def requests(self) -> list[str]:
        """The URLs the page requested (itself included)."""
        sent = [m for m in self._messages() if m.get("method") == "Network.requestWillBeSent"]
        return [m["params"]["request"]["url"] for m in sent]

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})


def _code(key: str) -> str:
    """The DOM's KeyboardEvent.code of a key on a US keyboard: "KeyJ", "Digit1", "Escape"."""
    if len(key) == 1 and key.isalpha():
        return f"Key{key.upper()}"
    if len(key) == 1 and key.isdigit():
        return f"Digit{key}"
    return key


@pytest.fixture(scope="module", name="chromium")
def chromium_fixture():
    """One browser for a test module: import this and ask for `chromium`."""
    browser = Chromium()
    yield browser
    browser.close()
