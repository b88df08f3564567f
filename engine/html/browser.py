"""Open a report in headless Chromium over the DevTools protocol: console errors, charts drawn, a screenshot.

Used by the tests and by ``make report-demo``; it drives the system's Chromium (Debian's ``chromium``) and
downloads nothing. The browser runs with a fresh profile, no background networking, and every host name
resolving nowhere, and the page is loaded with the network emulated offline: a page that needed the
network would show it as a failed request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EngineError

__all__ = ["CHROMIUM", "Browser", "BrowserError", "PageCheck", "check_page", "find_chromium"]

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--remote-debugging-port=0", "--hide-scrollbars",
)  # fmt: skip

# Per chart: is its SVG there, and how many marks (paths, rects, lines, symbols, text) does it hold.
_CHARTS_JS = """JSON.stringify([...document.querySelectorAll('div.chart')].map(div => {
  const svg = div.querySelector('svg');
  return {id: div.id, rendered: div.dataset.rendered === 'yes', svg: !!svg,
          marks: svg ? svg.querySelectorAll('path, rect, line, text').length : 0,
          width: svg ? svg.getBoundingClientRect().width : 0};
}))"""


class BrowserError(EngineError):
    """The browser could not be started or did not answer."""


@dataclass
class PageCheck:
    """What the browser saw of a page."""

    state: str  # the body's data-charts: rendered, failed or pending (timed out)
    charts: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for but itself
    render_ms: float = 0.0  # from navigation start until every chart was drawn (the page's own clock)
    busy_ms: float = 0.0  # the page's main-thread task time (CPU, whatever else the machine runs)
    screenshot: Path | None = None


def find_chromium() -> str | None:
    """The Chromium to drive: $CHROMIUM, else /usr/bin/chromium, else one on PATH; None when there is none."""
    for candidate in (os.environ.get("CHROMIUM"), CHROMIUM, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class _Session:
    def __init__(self, url: str, timeout: float) -> None:
        try:
            import websocket
        except ImportError:
            raise BrowserError("driving Chromium needs websocket-client: pip install 'capture-engine[dev]'") from None
        self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message')}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def _errors(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors, requests = [], []
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(str(p["entry"].get("text")))
        elif method == "Network.requestWillBeSent":
            url = str(p.get("request", {}).get("url", ""))
            if not url.startswith(("data:", "blob:", "about:")):
                requests.append(url)
    return errors, requests


def _endpoint(profile: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited with {proc.returncode} before it listened")
        if port_file.exists():
            lines = port_file.read_text().split()
            if lines:
                with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.1)
    raise BrowserError(f"chromium did not listen within {timeout:.0f} s")


class Browser:
    """One headless Chromium (a fresh profile) to open pages in, one after the other: ``with Browser() as b:``."""

    def __init__(self, chromium: str | None = None, *, width: int = 1100, timeout: float = 60.0) -> None:
        exe = chromium or find_chromium()
        if exe is None:
            raise BrowserError("no Chromium found (install Debian's chromium, or set CHROMIUM)")
        self.width, self.timeout = width, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="report-browser-")
        profile = Path(self._tmp.name)
        self._log = (profile / "stderr.log").open("wb")
        args = [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        # Its own process group: Chromium's helpers (zygote, renderers, crash handler) are stopped with it.
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=self._log, start_new_session=True)
        try:
            self._session = _Session(_endpoint(profile, self._proc, timeout), timeout)
            for domain in ("Runtime", "Log", "Page", "Network", "Performance"):
                self._session.call(f"{domain}.enable")
            self._session.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                               uploadThroughput=-1)  # fmt: skip
            self._session.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                               mobile=False)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        session = getattr(self, "_session", None)
        if session is not None:
            session.ws.close()
        self._signal(signal.SIGTERM)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._proc.wait()
        self._signal(signal.SIGKILL)  # any helper still writing into the profile
        self._log.close()
        # A helper may still be flushing its profile for a moment after the group is signalled.
        for _ in range(50):
            try:
                shutil.rmtree(self._tmp.name)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        self._tmp.cleanup()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def check(
        self, page: Path, *, screenshot: Path | None = None, max_height: int = 20_000, top: int = 0, scale: float = 1.0
    ) -> PageCheck:
        """Open `page` from disk offline, wait until its charts are drawn (or the timeout), report what happened.

        With `screenshot`, a PNG of the page from `top` (at most `max_height` CSS pixels, drawn at `scale`) is
        written there.
        """
        session = self._session
        session.call("Page.navigate", url="about:blank")  # so that the previous page's state is gone
        session.events.clear()
        page_uri = page.resolve().as_uri()
        session.call("Page.navigate", url=page_uri)
        deadline, state = time.monotonic() + self.timeout, "pending"
        while time.monotonic() < deadline:
            state = session.evaluate(f"location.href === {json.dumps(page_uri)} && document.body ? "
                                     "document.body.dataset.charts || 'pending' : 'pending'")  # fmt: skip
            if state in ("rendered", "failed"):
                break
            time.sleep(0.05)
        render_ms = float(session.evaluate("document.body.dataset.renderMs || performance.now()") or 0.0)
        charts = json.loads(session.evaluate(_CHARTS_JS) or "[]")
        metrics = {m["name"]: m["value"] for m in session.call("Performance.getMetrics").get("metrics", [])}
        if screenshot is not None:
            size = session.call("Page.getLayoutMetrics")["cssContentSize"]
            height = max(1, min(max_height, int(size["height"]) - top))
            clip = {"x": 0, "y": top, "width": self.width, "height": height, "scale": scale}
            shot = session.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.1)
        session.evaluate("1")  # collect the events that arrived meanwhile
        errors, requests = _errors(session.events)
        others = [r for r in requests if r != page_uri]
        busy = float(metrics.get("TaskDuration", 0.0)) * 1000
        return PageCheck(state=state, charts=charts, errors=errors, requests=others, render_ms=render_ms,
                         busy_ms=busy, screenshot=screenshot)  # fmt: skip


def check_page(
    page: Path,
    *,
    screenshot: Path | None = None,
    chromium: str | None = None,
    max_height: int = 20_000,
    top: int = 0,
    scale: float = 1.0,
    timeout: float = 60.0,
) -> PageCheck:
    """`Browser.check` of one page in a browser of its own."""
    with Browser(chromium, timeout=timeout) as browser:
        return browser.check(page, screenshot=screenshot, max_height=max_height, top=top, scale=scale)
