"""Headless Chromium, driven over its DevTools pipe, to look at the report as a user does: open
``report.html``, click, wait until the charts are drawn, read the page, take a screenshot.

``chromium --dump-dom`` and ``--screenshot`` see a page as it loads, nothing more: they cannot
click into Snakemake's report or read the result page it opens in an iframe. This speaks the
DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ending in a NUL byte on file
descriptors 3 and 4), with the standard library alone. Every host name resolves to nothing and
every request goes to a dead proxy, so a page that needed the network would fail here.

Used by the tests (``tests/workflow/test_report.py``) and to make the screenshots in ``docs/``
(``python -m peftbench.report.browser REPORT TASK PNG``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Headless Chromium without network: no background services, every host resolves to nothing
#: and every request goes to a dead proxy, so a page that loads works offline. The tests and
#: the screenshot command share them (add ``--user-data-dir`` and the page's own flags).
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
)


def chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(RuntimeError):
    """Chromium failed, a script threw, or a condition did not come true in time."""


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, width: int = 1600, height: int = 1200, binary: str | None = None) -> None:
        binary = binary or chromium()
        if binary is None:
            raise BrowserError("no chromium binary found")
        self._profile = tempfile.TemporaryDirectory(prefix="peftbench-chromium-")
        # Chromium reads commands from fd 3 and writes answers to fd 4. Its ends are first
        # moved to fds >= 10, so that placing them on 3 and 4 cannot overwrite one another;
        # the child then closes every other descriptor (close_fds would run after this and
        # close 3 and 4 too).
        read_end, self._out = os.pipe()
        self._in, write_end = os.pipe()
        to_browser = fcntl.fcntl(read_end, fcntl.F_DUPFD_CLOEXEC, 10)
        from_browser = fcntl.fcntl(write_end, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(read_end)
        os.close(write_end)

        def child_fds() -> None:
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)
            os.closerange(5, os.sysconf("SC_OPEN_MAX"))

        self._process = subprocess.Popen(
            [
                binary,
                *OFFLINE_FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            close_fds=False,
            preexec_fn=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._size = (width, height)
        try:
            target = next(
                t["targetId"]
                for t in self.send("Target.getTargets", session=False)["targetInfos"]
                if t["type"] == "page"
            )
            self._session = self.send(
                "Target.attachToTarget", targetId=target, flatten=True, session=False
            )["sessionId"]
            self.send("Page.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End Chromium (the one this object started) and remove its profile."""
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._profile.cleanup()

    def send(self, method: str, *, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one DevTools command (to the page unless ``session`` is False) and return its
        result; events that arrive meanwhile are kept for :meth:`wait_event`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout=120)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("no answer from chromium")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise BrowserError("chromium closed its pipe (it crashed or was ended)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        """The next event ``method`` (one that already arrived first)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event.get("method") == method:
                    self._events.remove(event)
                    return event
            if time.monotonic() > deadline:
                raise BrowserError(f"no {method} event within {timeout} s")
            self._events.append(self._read(timeout=deadline - time.monotonic()))

    def open(self, page: Path | str) -> None:
        """Load a file (or URL) and wait for its load event."""
        url = (
            Path(page).resolve().as_uri() if not str(page).startswith(("file:", "data:")) else page
        )
        self._events.clear()
        self.send("Page.navigate", url=str(url))
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, *, frame: str | None = None) -> Any:
        """The value of a JavaScript expression (a promise is awaited), in the page or in the
        frame ``frame`` (an id from :meth:`child_frames`)."""
        params: dict[str, Any] = {
            "expression": expression,
            "awaitPromise": True,
            "returnByValue": True,
        }
        if frame is not None:
            # A world of our own in that frame: the same document, its own globals. The frame
            # may be cross-origin (Snakemake opens results from data: URLs), so the page's
            # own scripts could not reach into it.
            params["contextId"] = self.send(
                "Page.createIsolatedWorld", frameId=frame, worldName="peftbench-check"
            )["executionContextId"]
        result = self.send("Runtime.evaluate", **params)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"script failed: {text}")
        return result["result"].get("value")

    def wait_for(self, condition: str, *, frame: str | None = None, timeout: float = 60) -> None:
        """Wait until the JavaScript expression ``condition`` is true (checked every 0.2 s)."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({condition})", frame=frame):
            if time.monotonic() > deadline:
                raise BrowserError(f"not true within {timeout} s: {condition}")
            time.sleep(0.2)

    def child_frames(self) -> list[str]:
        """Ids of the page's frames (iframes), in document order."""
        tree = self.send("Page.getFrameTree")["frameTree"]
        return [child["frame"]["id"] for child in tree.get("childFrames", [])]

    def screenshot(self, path: Path | str) -> Path:
        """Save what the window shows as PNG."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path


#: How the Snakemake report opens a result in its main pane, as its own "eye" button does.
SHOW_RESULT = (
    "app.setView({{content: 'html', contentPath: results[{path}].data_uri, resultPath: {path}}})"
)


def open_report_result(browser: Browser, report: Path | str, result: str) -> str:
    """Open ``report`` (Snakemake's report.html) and show its result ``result`` (a path as
    registered in the report) the way clicking its link does; return the frame id of the
    result page, once its charts are drawn (or failed)."""
    browser.open(report)
    browser.wait_for("typeof app !== 'undefined' && document.querySelector('#app nav, #app ul')")
    browser.evaluate(SHOW_RESULT.format(path=json.dumps(result)))
    browser.wait_for("document.querySelector('iframe')")
    frames = browser.child_frames()
    if not frames:
        raise BrowserError("the report opened no frame")
    browser.wait_for(
        "document.readyState === 'complete' && "
        "document.querySelectorAll('.chart').length === "
        "document.querySelectorAll('.chart[data-rendered], .chart[data-error]').length",
        frame=frames[0],
    )
    return frames[0]


def main(argv: list[str]) -> int:
    """``python -m peftbench.report.browser REPORT TASK PNG``: a screenshot of ``report``
    showing the decision page of ``TASK``, as a user sees it after one click."""
    if len(argv) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    report, task, png = argv
    with Browser(width=1600, height=1300) as browser:
        open_report_result(browser, report, f"results/{task}/report/decision.html")
        time.sleep(1)  # let the last frame paint
        print(browser.screenshot(png))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
