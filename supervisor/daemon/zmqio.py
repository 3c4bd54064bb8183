"""Small ZeroMQ helpers shared by the loop's socket handlers."""

from __future__ import annotations

import zmq

# Plain ints: zmq's IntFlag members are slow to combine on the hot path.
POLLIN, POLLOUT, POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)


def has_input(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message is waiting, from ZMQ_EVENTS.

    Cheaper than reading until zmq.Again (building that exception costs more
    than handling a small request), and reading ZMQ_EVENTS is what re-arms
    the edge-triggered ZMQ_FD the loop polls (see EventLoop.watch_zmq).
    """
    return bool(int(sock.getsockopt(zmq.EVENTS)) & POLLIN)
