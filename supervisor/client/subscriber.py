"""Subscribing to what phalanxd publishes (results and lifecycle events),
from one daemon or several.

Each publisher gets its own SUB socket, so every message is known to come
from one endpoint (``Message.endpoint``) and sequence numbers are tracked
per daemon: ``seq`` counts per topic within one run (``boot``) of one
daemon, so the key is (endpoint, boot, topic). Two daemons publishing the
same topic interleave freely without looking like gaps, and a restarted
daemon (a new ``boot``, sequences from 1) is counted in ``restarts``, not
as a gap. Ready sockets are read in turn, so a busy publisher cannot
starve a quiet one.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self

import msgspec
import zmq

from supervisor.curve import ClientKeys, keys_by_endpoint

DEFAULT_PUBLISHER = os.environ.get("PHALANX_PUBLISHER", "tcp://127.0.0.1:7456")


class Message(msgspec.Struct):
    topic: str
    body: dict[str, Any]
    endpoint: str = ""  # the publisher it came from


class Subscriber:
    """Iterate over what phalanxd publishes: ``result.<task>`` and ``event.<kind>``.

        with Subscriber(["tcp://10.0.0.1:7456", "tcp://10.0.0.2:7456"],
                        topics=["event.worker."]) as sub:
            for msg in sub:
                print(msg.endpoint, msg.topic, msg.body)

    ``gaps`` counts messages missed per topic (all daemons together),
    ``daemon_gaps`` per publisher endpoint; both seen as jumps in ``seq``.
    ``restarts`` counts, per endpoint, the times its daemon's ``boot``
    changed. With ``curve`` (one ClientKeys for all, or one per endpoint)
    the sockets speak CURVE (docs/PROTOCOL.md).
    """

    def __init__(self, endpoint: str | Iterable[str] = DEFAULT_PUBLISHER,
                 topics: Iterable[str] = ("",), timeout: float | None = None,
                 curve: ClientKeys | Mapping[str, ClientKeys] | None = None) -> None:
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not endpoints:
            raise ValueError("no publisher endpoint")
        topic_list = list(topics)
        keys = keys_by_endpoint(curve, endpoints)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._by_sock: dict[zmq.Socket[bytes], str] = {}
        for ep in endpoints:
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            if ep in keys:
                keys[ep].apply(sock)
            for topic in topic_list:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            sock.connect(ep)
            self._by_sock[sock] = ep
            self._poller.register(sock, zmq.POLLIN)
        self._ready: deque[zmq.Socket[bytes]] = deque()
        self._timeout_ms = None if timeout is None else int(timeout * 1000)
        self._last: dict[tuple[str, str, str], int] = {}
        self._boot: dict[str, str] = {}
        self.gaps: dict[str, int] = {}
        self.daemon_gaps: dict[str, int] = dict.fromkeys(endpoints, 0)
        self.restarts: dict[str, int] = dict.fromkeys(endpoints, 0)

    @property
    def endpoints(self) -> list[str]:
        return list(self._by_sock.values())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ctx.closed:
            return
        for sock in self._by_sock:
            sock.close(linger=0)
        self._ctx.term()

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message from any publisher, or None after ``timeout`` s."""
        ms = self._timeout_ms if timeout is None else int(timeout * 1000)
        while True:
            if not self._ready:
                events = self._poller.poll(ms)
                if not events:
                    return None
                self._ready.extend(sock for sock, _ in events)
            sock = self._ready.popleft()
            try:
                topic, body = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            flags = sock.getsockopt(zmq.EVENTS)
            if isinstance(flags, int) and flags & zmq.POLLIN:
                self._ready.append(sock)  # more waiting: its turn comes again
            return self._track(self._by_sock[sock], topic.decode(), msgspec.msgpack.decode(body))

    def _track(self, endpoint: str, name: str, data: Any) -> Message:
        if not isinstance(data, dict):
            data = {"value": data}
        boot = str(data.get("boot", ""))
        if boot:
            seen = self._boot.get(endpoint)
            if seen is not None and seen != boot:
                self.restarts[endpoint] += 1
            self._boot[endpoint] = boot
        seq = data.get("seq")
        if isinstance(seq, int):
            key = (endpoint, boot, name)
            last = self._last.get(key)
            if last is not None and seq > last + 1:
                missed = seq - last - 1
                self.gaps[name] = self.gaps.get(name, 0) + missed
                self.daemon_gaps[endpoint] += missed
            self._last[key] = seq
        return Message(name, data, endpoint)

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.recv()
            if msg is None:
                return
            yield msg

    def results(self) -> Iterator[dict[str, Any]]:
        """Each published task result on its own (result messages are batched)."""
        for msg in self:
            if msg.topic.startswith("result."):
                yield from msg.body.get("results", [])
