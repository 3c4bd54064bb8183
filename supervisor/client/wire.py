"""The client's view of the intake protocol (docs/PROTOCOL.md).

Separate from supervisor/protocol.py on purpose: the daemon keeps payloads
as undecoded ``Raw`` bytes, while the client encodes and decodes them.
"""

from __future__ import annotations

from typing import Any

import msgspec


class TaskOut(msgspec.Struct, omit_defaults=True):
    task: str
    id: str
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    soft_timeout: float | None = None
    retry_timeouts: bool | None = None
    chunk: bool = False


# Per-submit options: (timeout, max_attempts, soft_timeout, retry_timeouts).
Opts = tuple[float | None, int | None, float | None, bool | None]
NO_OPTS: Opts = (None, None, None, None)


class Submit(msgspec.Struct, tag_field="op", tag="submit"):
    tasks: list[TaskOut]
    ref: int
    # No ack: refusals come back as failed results, one message less per
    # request on the latency path. A refused request still gets its error.
    ack: bool = False


class Err(msgspec.Struct):
    type: str
    message: str
    traceback: str | None = None


class Res(msgspec.Struct):
    id: str | None
    task: str
    ok: bool
    attempts: int = 0
    value: Any = None
    error: Err | None = None


class Rejected(msgspec.Struct):
    id: str | None
    error: Err
    index: int = -1


class Ack(msgspec.Struct, tag_field="op", tag="ack"):
    accepted: list[str]
    rejected: list[Rejected]
    ref: int | str | None = None


class Results(msgspec.Struct, tag_field="op", tag="results"):
    results: list[Res]


class Pong(msgspec.Struct, tag_field="op", tag="pong"):
    version: str
    protocol: int
    boot: str
    workers: int
    credit: int = 0
    capacity: int = 0
    held: int = 0


class ErrorReply(msgspec.Struct, tag_field="op", tag="error"):
    error: Err
    ref: int | str | None = None


encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Ack | Results | Pong | ErrorReply)


