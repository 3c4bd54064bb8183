"""Subscribing to what phalanxd publishes (results and lifecycle events),
from one daemon or several.

Each publisher gets its own SUB socket, so every message is known to come
from one endpoint (``Message.endpoint``), and sequence numbers are tracked
per (endpoint, boot, topic): ``seq`` counts per topic within one run
(``boot``) of one daemon. Two daemons publishing the same topic interleave
freely without looking like gaps, and a restarted daemon (a new ``boot``,
sequences from 1 again) is counted in ``restarts``, not as a gap. Ready
sockets are read in turn, so a busy publisher cannot starve a quiet one.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self

import msgspec
import zmq

from supervisor import payload
from supervisor.config import LOCAL_PUBLISHER, local_endpoint
from supervisor.curve import ClientKeys, keys_by_endpoint

DEFAULT_PUBLISHER = os.environ.get("PHALANX_PUBLISHER", "tcp://127.0.0.1:7456")
HEARTBEAT = "event.heartbeat"
POLLIN = int(zmq.POLLIN)


class Message(msgspec.Struct):
    topic: str
    body: dict[str, Any]
    endpoint: str = ""  # the publisher it came from


class Subscriber:
    """Iterate over what phalanxd publishes: ``result.<task>`` and ``event.<kind>``.

        with Subscriber(topics=["event.worker."]) as sub:
            for msg in sub:
                print(msg.topic, msg.body)

        with Subscriber(["tcp://10.0.0.1:7456", "tcp://10.0.0.2:7456"]) as sub:
            for msg in sub:
                print(msg.endpoint, msg.topic, msg.body)

    ``gaps`` counts messages missed per topic (all daemons together),
    ``daemon_gaps`` per publisher endpoint: jumps in ``seq``, and the tail
    of a topic lost with nothing after it, which the daemon's
    ``event.heartbeat`` (the last ``seq`` of every topic, each second)
    reveals. ``restarts`` counts, per endpoint, the times its daemon's
    ``boot`` changed. Heartbeats are yielded only if ``topics`` asked for
    them. ``curve``: one ClientKeys for every publisher, or one per endpoint.
    """

    def __init__(self, endpoint: str | Iterable[str] | None = None,
                 topics: Iterable[str] = ("",), timeout: float | None = None,
                 curve: ClientKeys | Mapping[str, ClientKeys] | None = None) -> None:
        if endpoint is None:  # as Client: $PHALANX_PUBLISHER, this user's local ipc, TCP
            endpoint = (os.environ.get("PHALANX_PUBLISHER")
                        or local_endpoint(LOCAL_PUBLISHER) or DEFAULT_PUBLISHER)
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not endpoints:
            raise ValueError("no publisher endpoint given")
        topics = list(topics)
        self._want_heartbeats = any(HEARTBEAT.startswith(t) for t in topics)
        keys = keys_by_endpoint(curve, endpoints)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._by_sock: dict[zmq.Socket[bytes], str] = {}
        for ep in endpoints:
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            for topic in [*topics, *([] if self._want_heartbeats else [HEARTBEAT])]:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            if ep in keys:  # CURVE to a publisher beyond loopback
                keys[ep].apply(sock)
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
        deadline = None if ms is None else time.monotonic() + ms / 1000
        while True:
            if not self._ready:
                left = None if deadline is None else max(
                    0, int((deadline - time.monotonic()) * 1000))
                events = self._poller.poll(left)
                if not events:
                    if left is not None:
                        return None
                    continue
                self._ready.extend(sock for sock, _ in events)
            sock = self._ready.popleft()
            try:
                topic, body = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            flags = sock.get(zmq.EVENTS)
            if isinstance(flags, int) and flags & POLLIN:
                self._ready.append(sock)  # more waiting: its turn comes again
            data = msgspec.msgpack.decode(body, ext_hook=payload.subscriber_ext_hook)
            endpoint = self._by_sock[sock]
            name = topic.decode()
            boot = data.get("boot", "")
            self._restart(endpoint, boot)
            self._seen(boot, name, data.get("seq"), endpoint=endpoint)
            if name == HEARTBEAT:
                topics = data.get("topics")
                if isinstance(topics, dict):
                    for t, seq in topics.items():
                        if (endpoint, boot, t) in self._last:  # only topics we follow
                            self._seen(boot, t, seq, tail=True, endpoint=endpoint)
                if not self._want_heartbeats:
                    continue
            return Message(name, data, endpoint)

    def _restart(self, endpoint: str, boot: object) -> None:
        if not isinstance(boot, str) or not boot:
            return
        seen = self._boot.get(endpoint)
        if seen is not None and seen != boot:
            self.restarts[endpoint] = self.restarts.get(endpoint, 0) + 1
        self._boot[endpoint] = boot

    def _seen(self, boot: str, name: str, seq: object, tail: bool = False,
              endpoint: str = "") -> None:
        if not isinstance(seq, int):
            return
        key = (endpoint, boot, name)
        last = self._last.get(key)
        if last is not None and seq > last + (0 if tail else 1):
            missed = seq - last - (0 if tail else 1)
            self.gaps[name] = self.gaps.get(name, 0) + missed
            self.daemon_gaps[endpoint] = self.daemon_gaps.get(endpoint, 0) + missed
        if last is None or seq > last:
            self._last[key] = seq

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
