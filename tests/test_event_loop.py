"""The event loop's wake-up rules (supervisor/daemon/loop.py), on real fds."""

from __future__ import annotations

import os
import time
from typing import Any

import zmq

from supervisor.daemon.loop import EventLoop


class QueueSocket:
    """Stands in for a ZeroMQ socket as the loop sees it: a ZMQ_FD to poll
    and ZMQ_EVENTS telling whether a message waits."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.queue: list[Any] = []

    def getsockopt(self, opt: int) -> int:
        if opt == zmq.FD:
            return self.r
        return int(zmq.POLLIN) if self.queue else 0

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_requests_read_while_rechecking_get_a_turn_before_the_loop_waits() -> None:
    """A send can disarm a socket's edge-triggered ZMQ_FD while a request
    arrives; the loop re-checks such sockets after the turn, and what it
    reads then must get a turn at once, not wait for the next timer."""
    loop = EventLoop()
    sock = QueueSocket()
    drained: list[Any] = []
    turns: list[list[Any]] = []
    waits = 0

    def drain() -> bool:
        try:
            os.read(sock.r, 64)  # reading ZMQ_EVENTS re-arms ZMQ_FD
        except BlockingIOError:
            pass
        drained.extend(sock.queue)
        sock.queue.clear()
        return False

    def turn(now: float) -> None:
        turns.append(list(drained))
        if len(turns) == 1:
            sock.queue.append("request")  # arrives while we send a reply...
            loop.sent_on(sock)  # type: ignore[arg-type]  # ...which consumed the edge
        else:
            loop.stopped = True

    def wake_by(now: float) -> float:
        nonlocal waits
        if turns:  # waiting again after the first turn
            waits += 1
        return now + 60.0  # a lost wake-up would wait here (the test would time out)

    try:
        os.set_blocking(sock.r, False)
        loop.watch_zmq(sock, drain)  # type: ignore[arg-type]
        os.write(sock.w, b"x")  # the first poll returns at once
        loop.run(turn, wake_by)
    finally:
        loop.close()
        sock.close()
    assert turns == [[], ["request"]]
    assert waits == 0, "the loop waited before giving the request a turn"


def test_a_due_timer_runs_when_the_owner_asks_and_bounds_the_wait() -> None:
    loop = EventLoop()
    fired: list[float] = []
    start = time.monotonic()
    loop.at(start + 0.05, lambda: fired.append(time.monotonic()))

    def turn(now: float) -> None:
        loop.run_due(now)
        if fired:
            loop.stopped = True

    try:
        loop.run(turn, lambda now: None)
    finally:
        loop.close()
    assert fired and fired[0] >= start + 0.05
