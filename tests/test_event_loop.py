"""The event loop's wake-up rules (supervisor/daemon/loop.py), on real fds."""

from __future__ import annotations

import time
from typing import Any

import zmq

from supervisor.daemon.loop import EventLoop
from supervisor.daemon.zmqio import has_input


def test_requests_read_while_rechecking_get_a_turn_before_the_loop_waits(tmp_path: Any) -> None:
    """A send can disarm a socket's edge-triggered ZMQ_FD while a request
    arrives; the loop re-checks such sockets after the turn, and what it
    reads then must get a turn at once, not wait for the next timer.

    Real sockets: a ROUTER the loop watches and a DEALER peer. The first
    turn has the peer send a request and marks the ROUTER as sent on (as a
    reply would); the recheck reads the request, and the loop must turn
    again without asking how long to wait (a lost wake-up waited here)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    peer = ctx.socket(zmq.DEALER)
    endpoint = f"ipc://{tmp_path}/loop.sock"
    router.bind(endpoint)
    peer.connect(endpoint)
    loop = EventLoop()
    drained: list[bytes] = []
    turns: list[list[bytes]] = []
    waits = 0

    def drain() -> bool:
        while has_input(router):
            drained.append(router.recv_multipart(zmq.NOBLOCK)[1])
        return False

    def turn(now: float) -> None:
        turns.append(list(drained))
        if len(turns) == 1:
            peer.send(b"request")  # arrives while we send a reply...
            # ...which may consume the edge; wait until it is queued for us
            # (bounded), so the recheck below is what must find it.
            assert router.poll(10_000, zmq.POLLIN), "the request never reached the ROUTER"
            loop.sent_on(router)
        else:
            loop.stopped = True

    def wake_by(now: float) -> float:
        nonlocal waits
        if turns:  # waiting again after the first turn
            waits += 1
        return now + 60.0  # a lost wake-up would wait here (the test would time out)

    try:
        peer.send(b"first")  # the first poll returns for it
        loop.watch_zmq(router, drain)
        loop.run(turn, wake_by)
    finally:
        loop.close()
        peer.close(linger=0)
        router.close(linger=0)
        ctx.term()
    assert turns[-1][-1:] == [b"request"], turns
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
