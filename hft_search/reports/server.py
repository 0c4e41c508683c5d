"""The live dashboard: a small standard-library HTTP server that shows every study of a storage as it runs.

Routes (all GET):

* ``/`` — the page: the list of studies and the figures of the selected one (``/?study=NAME``).
* ``/plotly.min.js``, ``/dashboard.js`` — the scripts, served from the installed packages (no network).
* ``/api/studies`` — one small JSON line per study: trial counts, best score and a *revision* hash.
* ``/api/study?name=NAME`` — the figures of one study, the same JSON the static report embeds.

The page polls ``/api/studies`` every few seconds and fetches a study's figures again only when its revision
changed, so an idle dashboard costs one small request per interval.

It binds 127.0.0.1 unless told otherwise and shows the storage only as :func:`hft_search.storage.mask_url`
writes it; errors answer a generic message and are logged. Every response carries a Content-Security-Policy
that allows script files from the server only, so a study name or attribute holding markup can never run.
Requests whose ``Host`` header names another host are refused (421): a web page elsewhere cannot use DNS
rebinding to make the browser read this dashboard under its own name (see :func:`allowed_hosts`).

``optuna-dashboard URL`` (``pip install "hft_search[dashboard]"``) reads the same storage unchanged, for
Optuna's own richer views; give it the journal file's path without the ``journal:`` prefix.
"""

from __future__ import annotations

import errno
import logging
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from optuna.storages import BaseStorage

from hft_search.exceptions import DashboardError, StorageError
from hft_search.reports._escape import html_text, script_json
from hft_search.reports.html import EVAL_FOR_WEBGL, RENDER_JS, STYLE, plotly_js, study_payload
from hft_search.reports.studies import summarize
from hft_search.storage import load_named_study, make_storage, mask_url

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_REFRESH_S = 5.0

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src 'self' {EVAL_FOR_WEBGL}; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

DASHBOARD_JS = (
    RENDER_JS
    + """\
const REFRESH_MS = Number(document.body.dataset.refreshMs);
const state = {study: new URLSearchParams(location.search).get("study"), revision: null};

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

function studyLink(summary) {
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.textContent = summary.name;
  link.href = "?study=" + encodeURIComponent(summary.name);
  if (summary.name === state.study) link.setAttribute("aria-current", "page");
  const best = summary.best === null ? "no finished trial" : summary.metric + " " + summary.best.toFixed(4);
  item.append(link, " " + summary.complete + "/" + summary.trials + " trials, " + best);
  return item;
}

function setStatus(message) {
  document.getElementById("status").textContent = message;
}

async function refresh() {
  try {
    const studies = await getJSON("api/studies");
    if (state.study === null && studies.length > 0) state.study = studies[0].name;
    document.getElementById("studies").replaceChildren(...studies.map(studyLink));
    const current = studies.find((summary) => summary.name === state.study);
    if (current === undefined) {
      setStatus(studies.length ? "No study of that name here." : "This storage holds no study yet.");
      return;
    }
    if (current.revision !== state.revision) {
      const payload = await getJSON("api/study?name=" + encodeURIComponent(state.study));
      document.getElementById("title").textContent = payload.study;
      document.title = payload.study + " · hft-search dashboard";
      renderFigures(payload, document.getElementById("figures"));
      state.revision = payload.revision;
      document.body.dataset.trials = String(payload.trials);
    }
    setStatus(current.trials + " trials · updated " + new Date().toLocaleTimeString());
  } catch (error) {
    setStatus("Refresh failed (" + error.message + "); retrying.");
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
"""
)


def dashboard_page(storage_label: str, refresh_s: float) -> str:
    """The dashboard's HTML shell; everything study-specific arrives through the JSON endpoints."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>hft-search dashboard</title>
<style>{STYLE}</style>
<script src="plotly.min.js"></script>
</head>
<body data-refresh-ms="{int(refresh_s * 1000)}">
<header><h1 id="title">hft-search dashboard</h1><p>storage {html_text(storage_label)}</p></header>
<nav><ul id="studies"></ul></nav>
<p id="status">Loading…</p>
<main id="figures"></main>
<script src="dashboard.js"></script>
</body>
</html>
"""


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})


def allowed_hosts(bound: str) -> frozenset[str] | None:
    """The host names a request may give in its ``Host`` header; None: any (bound to every interface).

    Bound to a loopback address, only the loopback names; bound to one address, that address and this
    machine's names. Bound to every interface (``0.0.0.0``) the server cannot know under which names users
    reach it, so it accepts any: whoever binds it so has chosen to expose it.
    """
    if bound in WILDCARD_ADDRESSES:
        return None
    if bound in LOOPBACK_NAMES or bound.startswith("127."):
        return LOOPBACK_NAMES | {bound}
    return frozenset({bound, socket.gethostname(), socket.getfqdn()})


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server that holds the storage and the pages it serves."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], storage: BaseStorage, storage_label: str, refresh_s: float) -> None:
        super().__init__(address, DashboardHandler)
        self.storage = storage
        self.storage_label = storage_label
        self.page = dashboard_page(storage_label, refresh_s).encode()
        self.allowed_hosts = allowed_hosts(address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class DashboardHandler(BaseHTTPRequestHandler):
    """Serves the routes listed in the module docstring."""

    server: DashboardServer
    server_version = "hft-search-dashboard"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        allowed = self.server.allowed_hosts
        if allowed is not None and host_name(self.headers.get("Host", "")) not in allowed:
            self._send_json({"error": "unknown host; open the dashboard by the address it is bound to"},
                            HTTPStatus.MISDIRECTED_REQUEST)
            return
        routes = {
            "/": lambda: self._send(self.server.page, "text/html; charset=utf-8"),
            "/plotly.min.js": lambda: self._send(plotly_js().encode(), "text/javascript", cache=True),
            "/dashboard.js": lambda: self._send(DASHBOARD_JS.encode(), "text/javascript"),
            "/api/studies": lambda: self._send_json([s.to_json() for s in summarize(self.server.storage)]),
            "/api/study": lambda: self._send_study(parse_qs(url.query).get("name", [""])[0]),
        }
        route = routes.get(url.path)
        if route is None:
            self._send_json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        try:
            route()
        except Exception:  # a request must never take the server down, nor show a traceback to the browser
            logger.exception("dashboard request %s failed", url.path)
            self._send_json({"error": "internal error; see the dashboard's log"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _send_study(self, name: str) -> None:
        try:
            study = load_named_study(name, self.server.storage, self.server.storage_label)
        except StorageError as error:
            self._send_json({"error": str(error)}, HTTPStatus.NOT_FOUND)
            return
        self._send_json(study_payload(study))

    def _send_json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(script_json(value).encode(), "application/json", status=status)

    def _send(self, body: bytes, content_type: str, *, status: HTTPStatus = HTTPStatus.OK, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("%s - %s", self.address_string(), format % args)


def make_server(
    storage: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, refresh_s: float = DEFAULT_REFRESH_S
) -> DashboardServer:
    """A dashboard server bound to ``host:port`` (port 0: any free port; see ``server.url``), not yet serving.

    The storage must exist already (``hft-search run`` creates it): a dashboard only reads, and a mistyped
    path must not leave an empty database behind.

    Raises:
        StorageError: the storage does not exist or cannot be opened (the URL is shown with its password
            masked).
        DashboardError: the address cannot be listened on (port in use or out of range, unknown host).
    """
    backend = make_storage(storage, must_exist=True)
    try:
        return DashboardServer((host, port), backend, mask_url(storage), refresh_s)
    except OverflowError:
        raise DashboardError(f"port {port} is out of range: use 1 to 65535 (0: any free port)") from None
    except socket.gaierror as error:
        raise DashboardError(f"--host {host!r} is not a known host name or address ({error.strerror}); use "
                             "127.0.0.1 (this machine only), 0.0.0.0 (every interface) or an address of "
                             "this machine") from None
    except OSError as error:
        why = {errno.EADDRINUSE: "the port is in use (another dashboard?): choose another --port, or 0 for "
                                 "any free one",
               errno.EADDRNOTAVAIL: "the address is not one of this machine's: use 127.0.0.1 or 0.0.0.0",
               errno.EACCES: "ports below 1024 need privileges: use a port of 1024 or more"}
        raise DashboardError(f"cannot listen on {host}:{port}: {why.get(error.errno, error.strerror)}") from None


def serve_dashboard(
    storage: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, refresh_s: float = DEFAULT_REFRESH_S
) -> None:
    """Serve the live dashboard of ``storage`` until interrupted (Ctrl-C)."""
    server = make_server(storage, host, port, refresh_s)
    logger.info("dashboard of %s on %s (Ctrl-C to stop)", server.storage_label, server.url)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logger.info("dashboard stopped")
