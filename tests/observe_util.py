"""Helpers for the observe tests: find the listener, make plain HTTP requests."""

from __future__ import annotations

import http.client
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, wait_until


def http_port(d: Daemon) -> int:
    """The port phalanxd bound for observe.http (configured as port 0)."""
    events = wait_until(lambda: d.log_events("observe_http_listening"), 10,
                        message=lambda: f"no observe_http_listening\n{d.log}")
    return int(events[-1]["port"])


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
        host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        hdrs = {"Host": f"127.0.0.1:{port}" if host is None else host, **(headers or {})}
        conn.putrequest(method, path, skip_host=True)
        for key, value in hdrs.items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read() if method != "HEAD" else b""
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def scrape(port: int, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client, by (name, labels)."""
    status, _, body = get(port, "/metrics", headers)
    assert status == 200, body
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def snapshot(port: int) -> dict[str, Any]:
    status, _, body = get(port, "/snapshot.json")
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]
