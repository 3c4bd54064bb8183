"""The client's view of the intake protocol (docs/PROTOCOL.md).

Separate from supervisor/protocol.py on purpose: the daemon keeps payloads
as undecoded ``Raw`` bytes, while the client encodes and decodes them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from supervisor import payload


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
    # Each task already encoded (types.encode_task, in the caller's thread):
    # its size is known before it is batched, and a resubmission re-sends
    # the same bytes without encoding again.
    tasks: list[msgspec.Raw]
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


class Ping(msgspec.Struct, tag_field="op", tag="ping", omit_defaults=True):
    ref: int | None = None


class Pong(msgspec.Struct, tag_field="op", tag="pong"):
    version: str
    protocol: int
    boot: str
    workers: int
    ref: int | str | None = None
    # Replies to this connection the daemon had to drop (its send queue to
    # us was full) since its last pong to us: a reason to re-attach.
    dropped: int = 0

    # Load-aware routing (docs/PROTOCOL.md, "credit").
    credit: int = 0
    capacity: int = 0
    held: int = 0


class Fetch(msgspec.Struct, tag_field="op", tag="fetch"):
    """Results by id, from the daemon's journal (docs/PROTOCOL.md)."""

    ids: list[str]
    ref: int


class ErrorReply(msgspec.Struct, tag_field="op", tag="error"):
    error: Err
    ref: int | str | None = None


Reply = Ack | Results | Pong | ErrorReply
# numpy arrays travel as extension values (supervisor/payload).
encoder = msgspec.msgpack.Encoder(enc_hook=payload.enc_hook)


