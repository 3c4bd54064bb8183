"""A blocking client of the control socket, for the observer threads.

The observers never touch the daemon's objects: they send the same
control requests phalanxctl sends, so every read and every action goes
through the loop's own command handlers (control/commands.py), one at a
time, on the loop's terms. Each call waits at most ``timeout`` seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec
import zmq

from supervisor.errors import RequestError

SLICE_MS = 100


class ControlUnavailable(RequestError):
    """The loop did not answer in time (busy, stopping or gone)."""

    type = "ControlUnavailable"


class ControlRefused(RequestError):
    """The loop answered with an error; ``type`` is the control error's type."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_


class ControlLink:
    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._lock = threading.Lock()  # one request in flight on the one socket
        self._sock: zmq.Socket[bytes] | None = None
        self._closed = threading.Event()

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, raw: bool = False) -> Any:
        """The command's result (msgpack bytes if ``raw``); raises ControlRefused
        or ControlUnavailable."""
        body = msgspec.msgpack.encode({"cmd": cmd, "args": args or {}})
        with self._lock:
            if self._closed.is_set():
                raise ControlUnavailable("the observer is stopping")
            sock = self._socket()
            try:
                sock.send(body, zmq.NOBLOCK)
                # In slices, so close() never waits long for a call to a
                # loop that has already stopped.
                deadline = time.monotonic() + self.timeout
                while not sock.poll(SLICE_MS):
                    if self._closed.is_set() or time.monotonic() >= deadline:
                        raise ControlUnavailable(
                            f"no answer to {cmd!r} within {self.timeout:g}s")
                reply = sock.recv(zmq.NOBLOCK)
            except (zmq.ZMQError, ControlUnavailable) as exc:
                # A late answer must not be taken for the next request's.
                sock.close(linger=0)
                self._sock = None
                if isinstance(exc, ControlUnavailable):
                    raise
                raise ControlUnavailable(f"control socket: {exc}") from None
        if raw:
            return reply
        decoded = msgspec.msgpack.decode(reply)
        if not decoded.get("ok"):
            err = decoded.get("error") or {}
            raise ControlRefused(str(err.get("type", "Error")), str(err.get("message", "")))
        return decoded.get("result")

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
        self._ctx.term()
