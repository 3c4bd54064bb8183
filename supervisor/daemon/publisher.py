"""The publisher: every result and lifecycle event, on topics, numbered.

An XPUB socket rather than PUB, because XPUB tells us what subscribers
asked for: with nobody subscribed to ``result.`` the daemon skips encoding
results a second time, which is most of the publisher's cost at high
throughput. Slow subscribers never block us: a full high-water mark drops
for that subscriber only, and the drop is theirs to see as a ``seq`` gap.

Frames: ``[topic, body]``. ``body`` is a MessagePack map with ``seq``
(per topic, from 1), ``gseq`` (per daemon) and ``boot`` (this daemon's
run), so a subscriber detects gaps per topic and restarts of the daemon.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import zmq

from supervisor.daemon.zmqio import has_input, send_frames
from supervisor.protocol import PublishedResults, Result, encoder

# What a subscriber that stops reading can cost us. libzmq queues up to
# SNDHWM *messages* per subscriber, whatever their size, and result
# messages are batches: with 100 000 messages of a few thousand results
# each, one hung subscriber could pin gigabytes here. So result batches are
# split into messages of about MAX_PUBLISH_BYTES, and the queue is SNDHWM
# of those: at most ~64 MiB per stalled subscriber (more only if single
# results are larger), which is still ~300 000 small results of backlog.
SNDHWM = 1000
# Every this many seconds, ``event.heartbeat`` carries the last ``seq`` of
# every topic: without it, losing the *last* messages of a topic (the
# tail) shows as no gap at all, since no later message reveals the jump.
HEARTBEAT_INTERVAL = 1.0
MAX_PUBLISH_BYTES = 64 * 1024
_RESULT_OVERHEAD = 48  # keys and headers of one encoded result map, roughly


class Publisher:
    def __init__(self, sock: zmq.Socket[bytes], boot: str) -> None:
        self.sock = sock
        self.boot = boot
        self.gseq = 0
        self._seq: dict[bytes, int] = {}
        self._subs: Counter[bytes] = Counter()
        self._wanted: dict[bytes, bool] = {}
        self.sent = 0
        self.touched = False
        self.dropped = 0

    # ------------------------------------------------------- subscriptions
    def on_readable(self) -> bool:
        """Drain subscribe/unsubscribe notifications from XPUB (until
        ZMQ_EVENTS is clear, which re-arms the loop's ZMQ_FD)."""
        self.touched = False
        while True:
            if not has_input(self.sock):
                return False
            msg = self.sock.recv(zmq.NOBLOCK)
            if not msg:
                continue
            prefix = bytes(msg[1:])
            if msg[0] == 1:
                self._subs[prefix] += 1
            elif msg[0] == 0 and self._subs[prefix] > 0:
                self._subs[prefix] -= 1
                if not self._subs[prefix]:
                    del self._subs[prefix]
            self._wanted.clear()

    def wanted(self, topic: bytes) -> bool:
        hit = self._wanted.get(topic)
        if hit is None:
            hit = any(topic.startswith(p) for p in self._subs)
            self._wanted[topic] = hit
        return hit

    # ------------------------------------------------------------ sending
    def _next(self, topic: bytes) -> tuple[int, int]:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        self.gseq += 1
        return seq, self.gseq

    def _send(self, topic: bytes, body: bytes) -> None:
        self.touched = True  # a send may consume the ZMQ_FD edge: re-check
        try:
            send_frames(self.sock, (topic, body), len(body) < 65536)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def results(self, task_name: str, results: list[Result]) -> None:
        topic = b"result." + task_name.encode()
        if not self.wanted(topic):
            self._next(topic)  # counted, never encoded: nobody would see it
            return
        base = len(task_name) + _RESULT_OVERHEAD
        chunk: list[Result] = []
        size = 0
        for r in results:
            n = base + len(r.value) + len(r.error) + len(r.id or "")
            if chunk and size + n > MAX_PUBLISH_BYTES:
                self._send_results(topic, chunk)
                chunk, size = [], 0
            chunk.append(r)
            size += n
        self._send_results(topic, chunk)

    def _send_results(self, topic: bytes, results: list[Result]) -> None:
        seq, gseq = self._next(topic)
        self._send(topic, encoder.encode(PublishedResults(seq, gseq, self.boot, results)))

    def wants_event(self, kind: str) -> bool:
        """Whether anyone subscribes to ``event.<kind>``. Per-task events
        are built only then, so the hot path pays one cached dict lookup."""
        return self.wanted(b"event." + kind.encode())

    def heartbeat(self) -> None:
        """``event.heartbeat`` with ``topics``: {topic: last seq published}."""
        if self.wanted(b"event.heartbeat"):
            last = {t.decode(errors="replace"): n for t, n in self._seq.items()
                    if t != b"event.heartbeat"}
            self.event("heartbeat", topics=last)

    def event(self, kind: str, **fields: Any) -> None:
        topic = b"event." + kind.encode()
        seq, gseq = self._next(topic)
        if not self.wanted(topic):
            return
        body = {"seq": seq, "gseq": gseq, "boot": self.boot, "kind": kind, "time": time.time()}
        body.update(fields)
        try:
            payload = encoder.encode(body)
        except TypeError:
            payload = encoder.encode({k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in body.items()})
        self._send(topic, payload)

