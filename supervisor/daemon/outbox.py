"""Replies and publications, gathered during a turn and sent once at its end.

Whatever became ready together leaves together: one ``results`` message per
client per turn, one batch per published topic. A REQ submitter gets one
reply holding every result of its request (REQ allows one reply).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import zmq

from supervisor.core.tasks import ReplyGroup, Task, result_bytes
from supervisor.daemon import intake
from supervisor.daemon.loop import EventLoop
from supervisor.daemon.publisher import Publisher
from supervisor.daemon.zmqio import send_frames
from supervisor.protocol import Result, Results, encoder

log = structlog.get_logger("phalanxd")


class Outbox:
    def __init__(self, intake: zmq.Socket[bytes], publisher: Publisher, loop: EventLoop,
                 max_bytes: int) -> None:
        self.intake = intake
        self.max_bytes = max_bytes  # no reply message is larger (a lone result aside)
        self.publisher = publisher
        self.loop = loop
        self._replies: dict[bytes, list[Result]] = {}
        self._published: dict[str, list[Result]] = {}
        self.unroutable = 0  # replies dropped: the client is gone or stopped reading
        # A request/reply answer waits for the turn's journal commit (set by
        # the daemon to journal.hold); plain results wait in _replies anyway.
        self.hold: Callable[[bytes, bytes, bool], None] = self.send

    def deliver(self, task: Task, result: Result) -> None:
        """Queue a task's one result for its submitter(s) and subscribers."""
        self._reply_to(task.route, task.group, result)
        if task.extra:
            for route, group in task.extra:
                self._reply_to(route, group, result)
        bucket = self._published.get(task.name)
        if bucket is None:
            self._published[task.name] = [result]
        else:
            bucket.append(result)

    def _reply_to(self, route: bytes | None, group: ReplyGroup | None, result: Result) -> None:
        if group is not None:
            group.results.append(result)
            group.waiting -= 1
            if group.waiting == 0:
                self.hold(group.route, encoder.encode(Results(group.results)), True)
        elif route is not None:
            bucket = self._replies.get(route)
            if bucket is None:
                self._replies[route] = [result]
            else:
                bucket.append(result)

    def send(self, route: bytes, body: bytes, req: bool = False) -> None:
        frames = (route, b"", body) if req else (route, body)
        self.loop.sent_on(self.intake)  # a send may consume the ZMQ_FD edge
        try:
            send_frames(self.intake, frames, len(body) < 65536)
        except zmq.ZMQError as exc:
            # EHOSTUNREACH: the client is gone; EAGAIN: it stopped reading.
            # Either way the result is still published.
            self.unroutable += 1
            if exc.errno == zmq.EAGAIN:  # the client learns of it in its next pong
                intake.note_dropped(route)
            if self.unroutable & (self.unroutable - 1) == 0:  # log 1, 2, 4, 8...
                log.warning("reply_unroutable", error=str(exc), count=self.unroutable)

    def flush(self) -> None:
        if self._replies:
            replies, self._replies = self._replies, {}
            for route, results in replies.items():
                for part in split(results, self.max_bytes):
                    self.send(route, encoder.encode(Results(part)))
        if self._published:
            published, self._published = self._published, {}
            for name, results in published.items():
                self.publisher.results(name, results)
        if self.publisher.touched:
            self.publisher.touched = False
            self.loop.sent_on(self.publisher.sock)


def split(results: list[Result], max_bytes: int) -> list[list[Result]]:
    """Cut a client's results into messages of at most ``max_bytes`` each
    (a single result larger than that travels alone: workers never send one
    over the limit, see workers/loop.py)."""
    parts: list[list[Result]] = []
    current: list[Result] = []
    size = 0
    for result in results:
        n = result_bytes(result) + 32  # the envelope of one result, roughly
        if current and size + n > max_bytes:
            parts.append(current)
            current, size = [], 0
        current.append(result)
        size += n
    if current:
        parts.append(current)
    return parts
