"""Subscribing to what phalanxd publishes (results and lifecycle events)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, Self

import msgspec
import zmq

from supervisor import payload
from supervisor.config import LOCAL_PUBLISHER, local_endpoint

DEFAULT_PUBLISHER = os.environ.get("PHALANX_PUBLISHER", "tcp://127.0.0.1:7456")


class Message(msgspec.Struct):
    topic: str
    body: dict[str, Any]


class Subscriber:
    """Iterate over what phalanxd publishes: ``result.<task>`` and ``event.<kind>``.

        with Subscriber(topics=["event.worker."]) as sub:
            for msg in sub:
                print(msg.topic, msg.body)

    ``gaps`` counts messages missed per topic (seen as jumps in ``seq``).
    """

    def __init__(self, endpoint: str | None = None, topics: Iterable[str] = ("",),
                 timeout: float | None = None) -> None:
        if endpoint is None:  # as Client: $PHALANX_PUBLISHER, this user's local ipc, TCP
            endpoint = (os.environ.get("PHALANX_PUBLISHER")
                        or local_endpoint(LOCAL_PUBLISHER) or DEFAULT_PUBLISHER)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
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
        if ms is not None and not self._sock.poll(ms):
            return None
        topic, body = self._sock.recv_multipart()
        # Inline arrays decode; a shared-memory reference stays an Ext: the
        # segment belongs to the submitting client, which unlinks it.
        data = msgspec.msgpack.decode(body, ext_hook=payload.subscriber_ext_hook)
        name = topic.decode()
        key = (data.get("boot", ""), name)
        seq = data.get("seq")
        if isinstance(seq, int):
            last = self._last.get(key)
            if last is not None and seq > last + 1:
                self.gaps[name] = self.gaps.get(name, 0) + seq - last - 1
            self._last[key] = seq
        return Message(name, data)

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
