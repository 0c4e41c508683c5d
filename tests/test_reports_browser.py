"""The report and the live dashboard in a real browser: Debian's headless Chromium, driven over DevTools.

What only a browser can tell: that plotly.js (embedded, not fetched) runs under the page's
Content-Security-Policy, that every figure container is drawn, that nothing is requested from outside
127.0.0.1, that a study name made of markup shows as text and runs nothing, and that the dashboard picks up a
trial added after it was opened.

The DevTools client below is the standard library plus a minimal WebSocket (RFC 6455, client side, text
frames): no browser or driver is downloaded. A screenshot of each page is saved to ``tmp_path``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from report_studies import add_trial, create_hybrid_study, final_model_attr, fold_scores_for, sample_params

from hft_search.reports import make_server, write_report
from hft_search.reports.figures import FIGURES, FINAL_MODEL_FIGURES
from hft_search.storage import make_storage

CHROMIUM = shutil.which("chromium")
# In CI (.ci/run installs chromium) a missing browser is a failure, not a skip: CI must notice.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                       reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
EVIL_NAME = "<script>alert(1)</script>"
EVIL_REASON = '<img src=x onerror="alert(2)">out of memory'
TIMEOUT_S = 30.0
VIEWPORT = (1400, 4200)


# ------------------------------------------------------------------------------------------------------------
# A minimal DevTools client.
# ------------------------------------------------------------------------------------------------------------


class WebSocket:
    """The client side of RFC 6455, enough for DevTools: masked text frames out, (fragmented) frames in."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response.decode(errors="replace")

    def send(self, text: str) -> None:
        payload = text.encode()
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x81, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _exactly(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._exactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._exactly(8))
            payload = self._exactly(size)  # a server never masks its frames
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the connection")
            if opcode in (0x9, 0xA):  # ping, pong: not used by DevTools, skipped
                continue
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class DevTools:
    """Commands and events of one browser connection; events are kept for the checks at the end of a test."""

    def __init__(self, socket_: WebSocket) -> None:
        self.socket = socket_
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.receive())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, devtools: DevTools, session: str) -> None:
        self.devtools, self.session = devtools, session

    def call(self, method: str, **params: Any) -> dict:
        return self.devtools.call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {expression}")

    def _events(self, *methods: str) -> list[dict[str, Any]]:
        return [e for e in self.devtools.events if e.get("sessionId") == self.session and e["method"] in methods]

    def errors(self) -> list[str]:
        """JavaScript exceptions, console errors and browser log errors (CSP violations, failed loads)."""
        found = []
        for event in self._events("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded"):
            params = event["params"]
            if event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
        return found

    def requested_urls(self) -> list[str]:
        return [event["params"]["request"]["url"] for event in self._events("Network.requestWillBeSent")]

    def dialogs(self) -> list[str]:
        return [event["params"]["message"] for event in self._events("Page.javascriptDialogOpening")]

    def screenshot(self, path: Path) -> Path:
        """The page, down to its end or the viewport's. The viewport is tall from the start because WebGL
        canvases are placed for the viewport they were drawn in, and resizing it makes Plotly redraw."""
        height = min(VIEWPORT[1], self.evaluate("document.documentElement.scrollHeight"))
        clip = {"x": 0, "y": 0, "width": VIEWPORT[0], "height": height, "scale": 1}
        shot = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Browser:
    """Headless Chromium with a fresh profile, reached over its DevTools port."""

    def __init__(self, profile: Path, log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_S
        while not (port_file.exists() and len(port_file.read_text().splitlines()) == 2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"chromium did not start; see {log}")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()
        self.devtools = DevTools(WebSocket("127.0.0.1", int(port), path))

    def open(self, url: str) -> Page:
        """A new tab with events on, the error and network logs recording, then ``url`` loaded."""
        target = self.devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self.devtools, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=url)
        page.wait_for("document.readyState === 'complete'")
        return page

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, ConnectionError):
            self.devtools.call("Browser.close")
        self.devtools.socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    instance = Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    yield instance
    instance.close()


@contextlib.contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[str]:
    """Serve in a thread; yield the base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def static_server(folder: Path) -> http.server.HTTPServer:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)


# ------------------------------------------------------------------------------------------------------------
# Checks shared by both pages.
# ------------------------------------------------------------------------------------------------------------


def drawn(ids: list[str]) -> str:
    """A JavaScript test: every ``fig-<id>`` container exists and Plotly has drawn into it."""
    selectors = json.dumps([f"#fig-{key}" for key in ids])
    return f"{selectors}.every(s => {{ const d = document.querySelector(s); return d && d._fullLayout; }})"


SIZES_KEPT = """Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(d => Math.abs(d.getBoundingClientRect().height - d._fullLayout.height) > 1).map(d => d.id)"""
"""Figures whose container is not as tall as the figure (Plotly's responsive mode then clips or overlaps)."""


def check_page(page: Page, ids: list[str]) -> None:
    page.wait_for(drawn(ids))
    page.evaluate("new Promise(resolve => setTimeout(resolve, 2000))")  # let late resize handlers run
    assert page.evaluate(SIZES_KEPT) == []
    assert page.evaluate("document.querySelectorAll('.js-plotly-plot').length") == len(ids)
    assert page.evaluate("document.getElementById('title').textContent") == EVIL_NAME
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    trials_text = page.evaluate("document.getElementById('fig-trials').textContent")
    # drawn as text, not as an <img> element (a narrow table cell wraps it: compare without the spaces)
    assert EVIL_REASON.replace(" ", "") in trials_text.replace(" ", "")
    assert "WebGL is not supported" not in page.evaluate("document.body.textContent")  # parallel coordinates
    assert page.dialogs() == []
    assert page.errors() == []
    outside = [url for url in page.requested_urls() if not url.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert outside == []


def evil_study(storage: str) -> optuna.Study:
    """The realistic study, named with markup, with a failure reason holding markup and a final model."""
    study = create_hybrid_study(storage, name=EVIL_NAME, final_model=final_model_attr())
    add_trial(study, sample_params(random.Random(7)), [], optuna.trial.TrialState.FAIL, fail_reason=EVIL_REASON)
    return study


def test_report_in_browser(browser: Browser, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hft.db'}"
    evil_study(storage)
    index = write_report(EVIL_NAME, storage, tmp_path / "report")
    with serving(static_server(index.parent)) as base:
        page = browser.open(base + index.name)
        check_page(page, [*FIGURES, *FINAL_MODEL_FIGURES])
        shot = page.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 50_000
    fetched = [url for url in page.requested_urls() if not url.startswith("data:")]
    assert fetched == [base + index.name]  # plotly.js is in the page; nothing else is fetched


def test_dashboard_in_browser_shows_new_trials(browser: Browser, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hft.db'}"
    study = evil_study(storage)
    create_hybrid_study(storage, name="second study", n_complete=2)
    with serving(make_server(storage, port=0, refresh_s=0.3)) as base:
        page = browser.open(f"{base}?study={EVIL_NAME}")
        check_page(page, [*FIGURES, *FINAL_MODEL_FIGURES])
        before = int(page.wait_for("document.body.dataset.trials"))
        assert page.evaluate("document.getElementById('studies').children.length") == 2

        params = sample_params(random.Random(99))
        add_trial(study, params, fold_scores_for(params, random.Random(99)))
        new_number = before  # trial numbers start at 0
        page.wait_for(f"document.body.dataset.trials === '{before + 1}'")
        cells = page.evaluate("document.getElementById('fig-trials').data[0].cells.values[0]")
        assert str(new_number) in cells
        assert page.errors() == []
        shot = page.screenshot(tmp_path / "dashboard.png")
    assert shot.stat().st_size > 50_000


def test_dashboard_lists_an_empty_storage(browser: Browser, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    make_storage(storage)  # a storage without studies, as `run` leaves it before its first study
    with serving(make_server(storage, port=0, refresh_s=0.3)) as base:
        page = browser.open(base)
        page.wait_for("document.getElementById('status').textContent.includes('no study')")
        assert page.errors() == []
