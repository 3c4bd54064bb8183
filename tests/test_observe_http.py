"""The status page's listener: read-only, GET-only, Host-checked, token-gated.

Also the page's assets: the vendored uPlot is pinned by sha256 here and in
index.html's SRI attributes, and the page carries no inline script or style
(its Content-Security-Policy would refuse them).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.daemon.observe.web import CSP, STATIC
from tests.conftest import Daemon, StartDaemon, _factory, _teardown_all, short_tempdir, wait_until
from tests.observe_util import get, http_port

PAGE = Path(__file__).parent.parent / "supervisor" / "daemon" / "observe" / "page"
# uPlot 1.6.32 as published (npm pack uplot@1.6.32, dist/): a change to these
# files is a deliberate upgrade that updates this pin and index.html's SRI.
PINNED = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
}
TOKEN = "s3cret-token"


def test_vendored_files_match_their_pinned_hashes_and_the_pages_sri() -> None:
    html = (PAGE / "index.html").read_text()
    for name, digest in PINNED.items():
        data = (PAGE / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        sri = "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert re.search(rf'/static/{re.escape(name)}"\s+[^>]*integrity="{re.escape(sri)}"',
                         html), f"{name}: SRI attribute missing or stale"


def test_page_has_no_inline_script_or_style() -> None:
    html = (PAGE / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert ".innerHTML" not in (PAGE / "app.js").read_text()  # text only, never markup
    for src in re.findall(r'(?:src|href)="/static/([^"]+)"', html):
        assert src in STATIC, src


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One daemon for the read-only tests of this module."""
    path = short_tempdir()
    start, started = _factory(path, tmp_path_factory.mktemp("phalanxd"))
    try:
        yield http_port(start(observe={"http": "127.0.0.1:0", "max_clients": 3,
                                       "allowed_hosts": ["phalanx.test:8080"]}))
    finally:
        try:
            _teardown_all(started)
        finally:
            shutil.rmtree(path, ignore_errors=True)


def test_page_and_assets_are_served_with_a_strict_csp(port: int) -> None:
    status, headers, body = get(port, "/")
    assert status == 200 and b"<title>phalanxd</title>" in body
    assert headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    assert headers["x-content-type-options"] == "nosniff"
    for name, ctype in STATIC.items():
        status, headers, body = get(port, f"/static/{name}")
        assert status == 200 and headers["content-type"] == ctype
        assert body == (PAGE / name).read_bytes()
    assert get(port, "/static/../web.py")[0] == 404
    assert get(port, "/static/index.html")[0] == 404


def test_a_foreign_host_header_is_refused(port: int) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends
    Host: evil.example:PORT. Only our own names (and allowed_hosts) pass."""
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", ""):
        status, _, body = get(port, "/metrics", host=host)
        assert status == 421, (host, body)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "phalanx.test:8080"):
        assert get(port, "/metrics", host=host)[0] == 200, host


def test_nothing_but_get_is_served(port: int) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
        status, headers, _ = get(port, "/metrics", method=method)
        assert status == 405, method
        assert headers["allow"] == "GET"
    assert get(port, "/metrics", method="BREW")[0] == 501
    assert get(port, "/nope")[0] == 404


def test_event_stream_sends_history_then_a_snapshot_a_second(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/events", headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/event-stream"
        events: list[tuple[str, object]] = []

        def read_event() -> bool:
            kind = data = None
            while True:
                line = resp.fp.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and kind:
                    events.append((kind, data))
                    return len([k for k, _ in events if k == "snapshot"]) >= 2

        wait_until(read_event, 10)
        assert events[0][0] == "history" and isinstance(events[0][1], list)
        snaps = [d for k, d in events if k == "snapshot"]
        first, second = snaps[0]["snapshot"], snaps[1]["snapshot"]
        assert second["taken_at"] > first["taken_at"]
        assert [w["state"] for w in second["workers"]] == ["RUNNING", "RUNNING"]
        assert len(snaps[1]["point"]) == 6
    finally:
        conn.close()


def test_connections_beyond_max_clients_get_503(port: int) -> None:
    # The response owns the socket of a Connection: close reply; keep it, or
    # collecting it would hang up.
    streams: list[http.client.HTTPResponse] = []

    def open_stream() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/events", headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        if resp.status != 200:  # an earlier test's stream not yet noticed gone
            resp.close()
            conn.close()
            return False
        streams.append(resp)
        return True

    try:
        for _ in range(3):
            wait_until(open_stream, 15, interval=0.2)
        assert get(port, "/metrics")[0] == 503
    finally:
        for conn in streams:
            conn.close()
    wait_until(lambda: get(port, "/metrics")[0] == 200, 15, interval=0.2)


def test_a_configured_token_is_required(start_daemon: StartDaemon) -> None:
    d: Daemon = start_daemon(observe={"http": "127.0.0.1:0", "token": TOKEN})
    port = http_port(d)
    for path in ("/", "/metrics", "/events", "/static/app.js"):
        status, headers, _ = get(port, path)
        assert status == 401 and headers["www-authenticate"] == "Bearer", path
    assert get(port, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    # A browser opens /?token=..., gets an HttpOnly cookie, and the page's own
    # requests (EventSource cannot send headers) carry it.
    status, headers, _ = get(port, f"/?token={TOKEN}")
    assert status == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert get(port, "/static/app.js", {"Cookie": cookie.split(";")[0]})[0] == 200
    assert get(port, "/metrics", {"Cookie": "phalanx_token=nope"})[0] == 401
