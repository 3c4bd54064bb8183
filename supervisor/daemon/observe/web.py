"""The loopback HTTP listener: /metrics, the status page and its event stream.

Read-only and GET-only. Every request passes three gates, in order: the
Host header must be one we serve (a DNS-rebinding page in the operator's
browser sends its own host name), the bearer token if one is configured
(or the cookie the page sets after ``/?token=...``, since EventSource
cannot send headers), and the method. The page itself loads only files
from ``page/`` under a Content-Security-Policy that forbids inline
script and style; the vendored plotting library is pinned by hash.
"""

from __future__ import annotations

import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from supervisor.config import ObserveSection
from supervisor.daemon.observe import sse
from supervisor.daemon.observe.bounded import Bounded
from supervisor.daemon.observe.metrics import registry
from supervisor.daemon.observe.source import SnapshotSource

log = structlog.get_logger("phalanxd")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Files the page may load, and their types; nothing else under /static/.
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
COOKIE = "phalanx_token"
WRITE_TIMEOUT = 10.0  # a client that stops reading frees its thread after this


def _page(name: str) -> bytes:
    return resources.files("supervisor.daemon.observe").joinpath("page", name).read_bytes()


class ObserveServer(Bounded, ThreadingHTTPServer):

    def __init__(self, cfg: ObserveSection, source: SnapshotSource) -> None:
        host, _, port = cfg.http.rpartition(":")
        self.cfg = cfg
        self.source = source
        self.registry = registry(source)
        self.slots = threading.BoundedSemaphore(cfg.max_clients)  # see bounded.py
        self.files = {name: _page(name) for name in [*STATIC, "index.html"]}
        super().__init__((host.strip("[]"), int(port)), Handler)
        bound = self.server_address[1]
        self.port = int(bound)
        names = {host, "localhost", "127.0.0.1", "[::1]"}
        self.hosts = {f"{n}:{self.port}".lower() for n in names}
        self.hosts.update(h.lower() for h in cfg.allowed_hosts)


class Handler(BaseHTTPRequestHandler):
    server: ObserveServer
    protocol_version = "HTTP/1.1"
    server_version = "phalanxd"
    sys_version = ""
    timeout = 30.0  # an idle keep-alive connection gives its thread back after this

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("observe_http_request", request=format % args)

    # ------------------------------------------------------------ replies
    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self._common(extra)
        self.end_headers()
        self.wfile.write(body)

    def _common(self, extra: dict[str, str] | None = None) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)

    def _refuse_method(self) -> None:
        self.close_connection = True
        self._send(405, b"read-only: only GET is served\n", extra={"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

    # ------------------------------------------------------------- gates
    def _host_ok(self) -> bool:
        return (self.headers.get("Host") or "").lower() in self.server.hosts

    def _token_ok(self, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(allowed, whether to set the cookie)."""
        token = self.server.cfg.token
        if not token:
            return True, False
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode()):
            return True, False
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), token.encode()):
                return True, False
        given = query.get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True, True
        return False, False

    # ------------------------------------------------------------ routes
    def do_GET(self) -> None:
        if not self._host_ok():
            self.close_connection = True
            self._send(421, b"unknown Host; add it to observe.allowed_hosts\n")
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        ok, set_cookie = self._token_ok(query)
        if not ok:
            self.close_connection = True
            self._send(401, b"bearer token required\n", extra={"WWW-Authenticate": "Bearer"})
            return
        self._route(url.path, set_cookie)

    def _route(self, path: str, set_cookie: bool) -> None:
        files = self.server.files
        if path == "/":
            extra = {"Set-Cookie": f"{COOKIE}={self.server.cfg.token}; HttpOnly; "
                     "SameSite=Strict; Path=/"} if set_cookie else None
            self._send(200, files["index.html"], "text/html; charset=utf-8", extra)
        elif path.startswith("/static/") and path[8:] in STATIC:
            self._send(200, files[path[8:]], STATIC[path[8:]])
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/snapshot.json":
            self._send(200, msgspec.json.encode(self.server.source.latest()),
                       "application/json")
        elif path == "/events":
            self._events()
        else:
            self._send(404, b"not found\n")

    def _events(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self._common({"Connection": "close"})
        self.end_headers()
        self.connection.settimeout(WRITE_TIMEOUT)
        try:
            sse.stream(self.server.source, self.wfile)
        except OSError:
            pass  # the browser went away, or stopped reading for WRITE_TIMEOUT


def serve(server: ObserveServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="phalanx-observe-http", daemon=True)
    thread.start()
    log.info("observe_http_listening", host=server.server_address[0], port=server.port)
    return thread
