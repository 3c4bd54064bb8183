"""A small synchronous client for the control socket (phalanxctl, tests, demo)."""

from __future__ import annotations

from typing import Any

import msgspec
import zmq

from supervisor.errors import PhalanxError
from supervisor.payload import layout, tuples


class ControlError(PhalanxError):
    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


class Unreachable(PhalanxError):
    """No answer from the control endpoint within the timeout."""


def _ext_hook(code: int, data: memoryview) -> Any:
    """A tuple in a task's result (payload/tuples.py) shows as the list JSON
    would make of it; other extension values stay as they are."""
    if code == layout.TUPLE:
        return list(tuples.unmark(data, _ext_hook))
    return msgspec.msgpack.Ext(code, bytes(data))


def call(endpoint: str, cmd: str, args: dict[str, Any] | None = None,
         timeout: float = 5.0) -> Any:
    """Send one command; return its result or raise ControlError/Unreachable."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(msgspec.msgpack.encode({"cmd": cmd, "args": args or {}}))
        if not sock.poll(int(timeout * 1000)):
            raise Unreachable(f"no reply from {endpoint} within {timeout:g}s")
        reply = msgspec.msgpack.decode(sock.recv(), ext_hook=_ext_hook)
    finally:
        sock.close(linger=0)
        ctx.term()
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise ControlError(err.get("type", "Error"), err.get("message", ""))
    return reply.get("result")
