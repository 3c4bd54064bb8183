"""Small ZeroMQ helpers shared by the loop's socket handlers.

The hot path calls pyzmq's Cython methods with plain int flags: the
sugar layer converts every option and flag to an enum member (and
``send_multipart``/``recv_multipart`` do that per frame), which was a
good part of what a lone round trip cost the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import zmq

# Plain ints: zmq's IntFlag members are slow to combine on the hot path.
POLLIN, POLLOUT, POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)
NOBLOCK, SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)
_EVENTS, _RCVMORE = int(zmq.EVENTS), int(zmq.RCVMORE)
# Typed loosely: the stubs describe the sugar layer's overloads.
_get = cast(Callable[[Any, int], int], zmq.backend.Socket.get)
_recv = cast(Callable[[Any, int], bytes], zmq.backend.Socket.recv)
_send = cast(Callable[[Any, bytes, int, bool], object], zmq.backend.Socket.send)


def has_input(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message is waiting, from ZMQ_EVENTS.

    Cheaper than reading until zmq.Again (building that exception costs more
    than handling a small request), and reading ZMQ_EVENTS is what re-arms
    the edge-triggered ZMQ_FD the loop polls (see EventLoop.watch_zmq).
    """
    return bool(_get(sock, _EVENTS) & POLLIN)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """One whole message, without blocking (zmq.Again if none)."""
    frames: list[bytes] = [_recv(sock, NOBLOCK)]
    while _get(sock, _RCVMORE):
        frames.append(_recv(sock, NOBLOCK))
    return frames


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[bytes], copy: bool = True) -> None:
    """One message of ``frames``, without blocking (zmq.Again if it would).

    ZeroMQ queues a multipart message atomically: if the first frame is
    accepted, so are the rest."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, NOBLOCK | SNDMORE if i < last else NOBLOCK, copy)
