"""A small client of Chromium's DevTools protocol over a pipe (`--remote-debugging-pipe`), so a test
drives headless Chromium in real time: it waits for what the page itself reports as done, up to a
deadline of its own, instead of for a budget of virtual time that can run out while the browser
still decodes or loads on other threads.

The browser reads JSON messages from its fd 3 and writes its answers and events to its fd 4, each
message ended by a NUL byte.
"""

import base64
import fcntl
import json
import os
import select
import subprocess
import tempfile
import time


def _above_9(fd):
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class BrowserError(AssertionError):
    """The browser failed, answered with an error, or did not answer before the deadline."""


class Browser:
    """Headless Chromium, driven over the protocol pipe; a context manager that ends the browser.

    `deadline` is in seconds of real time for everything done with it, start to end."""

    def __init__(self, chromium, *args, profile, deadline=180.0):
        self.deadline = deadline
        self._ends_at = time.monotonic() + deadline
        self._stderr = tempfile.TemporaryFile()
        self._buffer = bytearray()
        self._events = []
        self._last_id = 0
        commands, self._commands = os.pipe()
        self._answers, answers = os.pipe()
        # Popen keeps passed fds at their numbers; bash puts the browser's ends at 3 and 4, from
        # numbers above 9 so that neither is overwritten before it is moved
        commands, answers = _above_9(commands), _above_9(answers)
        moved = f"3<&{commands} 4>&{answers} {commands}<&- {answers}>&-"
        try:
            self._process = subprocess.Popen(
                ["bash", "-c", f'exec "$@" {moved}', "bash", chromium]
                # no sandbox: CI runs as root, where Chromium refuses to start with one
                + ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"]
                + [f"--user-data-dir={profile}", *args],
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=self._stderr,
                pass_fds=(commands, answers),
            )
        finally:
            os.close(commands)
            os.close(answers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._process.poll() is None:
            try:
                self._write({"id": self._next_id(), "method": "Browser.close"})
                self._process.wait(timeout=10)
            except (BrowserError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for fd in (self._commands, self._answers):
            os.close(fd)
        self._stderr.close()

    def send(self, method, session=None, **params):
        """The result of command `method` (in the page of `session`, if given)."""
        message = {"id": self._next_id(), "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._write(message)
        while True:
            answer = self._receive()
            if answer.get("id") == message["id"]:
                if "error" in answer:
                    self._fail(f"{method} failed: {answer['error']}", kill=False)
                return answer["result"]
            self._events.append(answer)

    def wait_for(self, event, session=None):
        """The parameters of the next `event` (from the page of `session`, if given)."""
        while True:
            for message in self._events:
                if message.get("method") == event and message.get("sessionId") == session:
                    self._events.remove(message)
                    return message["params"]
            self._events.append(self._receive())

    def open(self, url, width, height):
        """A session of a new page of `width` x `height` CSS pixels that has loaded `url`."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.enable", session)
        navigated = self.send("Page.navigate", session, url=url)
        if "errorText" in navigated:
            self._fail(f"cannot open {url}: {navigated['errorText']}", kill=False)
        self.wait_for("Page.loadEventFired", session)
        return session

    def evaluate(self, session, expression):
        """The value of `expression` in the page, once the promise it gives (if any) settles."""
        result = self.send(
            "Runtime.evaluate",
            session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or details.get("text")
            self._fail(f"{expression} threw: {thrown}", kill=False)
        return result["result"].get("value")

    def screenshot(self, session, path):
        """Save the page's viewport as a PNG image at `path`."""
        shot = self.send("Page.captureScreenshot", session, format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def _next_id(self):
        self._last_id += 1
        return self._last_id

    def _write(self, message):
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._commands, data) :]
        except BrokenPipeError:
            self._fail(f"the browser stopped reading (sending {message.get('method')})")

    def _receive(self):
        while b"\0" not in self._buffer:
            left = self._ends_at - time.monotonic()
            if left <= 0:
                self._fail(f"the browser did not finish within {self.deadline:.0f} s of real time")
            ready, _, _ = select.select([self._answers], [], [], left)
            if ready:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    self._fail("the browser closed its end of the protocol pipe")
                self._buffer += chunk
        end = self._buffer.index(b"\0")
        message = json.loads(self._buffer[:end])
        del self._buffer[: end + 1]
        return message

    def _fail(self, reason, kill=True):
        if kill and self._process.poll() is None:
            self._process.kill()
        try:
            status = self._process.wait(timeout=5 if kill else 0)
        except subprocess.TimeoutExpired:
            status = "still running"
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")[-3000:]
        raise BrowserError(f"{reason} (exit status: {status}); Chromium's output:\n{stderr}")
