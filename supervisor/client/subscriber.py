"""Subscribing to what phalanxd publishes (results and lifecycle events)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self

import msgspec
import zmq

from supervisor import payload
from supervisor.config import LOCAL_PUBLISHER, local_endpoint
from supervisor.curve import ClientKeys, keys_by_endpoint

DEFAULT_PUBLISHER = os.environ.get("PHALANX_PUBLISHER", "tcp://127.0.0.1:7456")
HEARTBEAT = "event.heartbeat"


class Message(msgspec.Struct):
    topic: str
    body: dict[str, Any]


class Subscriber:
    """Iterate over what phalanxd publishes: ``result.<task>`` and ``event.<kind>``.

        with Subscriber(topics=["event.worker."]) as sub:
            for msg in sub:
                print(msg.topic, msg.body)

    ``gaps`` counts messages missed per topic: jumps in ``seq``, and the
    tail of a topic lost with nothing after it, which the daemon's
    ``event.heartbeat`` (the last ``seq`` of every topic, each second)
    reveals. Heartbeats are yielded only if ``topics`` asked for them.
    """

    def __init__(self, endpoint: str | None = None, topics: Iterable[str] = ("",),
                 timeout: float | None = None,
                 curve: ClientKeys | Mapping[str, ClientKeys] | None = None) -> None:
        if endpoint is None:  # as Client: $PHALANX_PUBLISHER, this user's local ipc, TCP
            endpoint = (os.environ.get("PHALANX_PUBLISHER")
                        or local_endpoint(LOCAL_PUBLISHER) or DEFAULT_PUBLISHER)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        topics = list(topics)
        self._want_heartbeats = any(HEARTBEAT.startswith(t) for t in topics)
        for topic in [*topics, *([] if self._want_heartbeats else [HEARTBEAT])]:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        keys = keys_by_endpoint(curve, [endpoint]).get(endpoint)
        if keys is not None:  # CURVE to a publisher beyond loopback
            keys.apply(self._sock)
        self._sock.connect(endpoint)
        self._timeout_ms = None if timeout is None else int(timeout * 1000)
        self._last: dict[tuple[str, str], int] = {}
        self.gaps: dict[str, int] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds."""
        ms = self._timeout_ms if timeout is None else int(timeout * 1000)
        deadline = None if ms is None else time.monotonic() + ms / 1000
        while True:
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if left is not None and not self._sock.poll(left):
                return None
            topic, body = self._sock.recv_multipart()
            data = msgspec.msgpack.decode(body, ext_hook=payload.subscriber_ext_hook)
            name = topic.decode()
            boot = data.get("boot", "")
            self._seen(boot, name, data.get("seq"))
            if name == HEARTBEAT:
                topics = data.get("topics")
                if isinstance(topics, dict):
                    for t, seq in topics.items():
                        if (boot, t) in self._last:  # only topics we follow
                            self._seen(boot, t, seq, tail=True)
                if not self._want_heartbeats:
                    continue
            return Message(name, data)

    def _seen(self, boot: str, name: str, seq: object, tail: bool = False) -> None:
        if not isinstance(seq, int):
            return
        key = (boot, name)
        last = self._last.get(key)
        if last is not None and seq > last + (0 if tail else 1):
            self.gaps[name] = self.gaps.get(name, 0) + seq - last - (0 if tail else 1)
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
