"""Wire formats: intake, publisher and the supervisor <-> worker pipe.

docs/PROTOCOL.md is the normative description for client authors; this
module is its executable twin. Everything is MessagePack (never pickle).

Why ``msgspec.Raw``: a task's ``args``/``kwargs`` and a result's ``value``
are ordinary MessagePack values on the wire, so a client in any language
writes them inline. The daemon declares those fields as ``Raw``, which keeps
the exact bytes without decoding them, and encoding a ``Raw`` splices the
bytes back in. The supervisor therefore routes payloads it never decodes:
only the worker decodes arguments and only the worker encodes results.
"""

from __future__ import annotations

from typing import Any

import msgspec

EMPTY = msgspec.Raw()
# What an absent args/kwargs becomes before it travels to a worker.
NO_ARGS = msgspec.Raw(b"\x90")  # []
NO_KWARGS = msgspec.Raw(b"\x80")  # {}
PROTOCOL_VERSION = 1
# Deepest nesting a worker sends in a result (workers/outcome.py checks it):
# the daemon's decoder refuses nesting past its recursion budget (~1000
# levels less its own stack), and whatever it cannot decode it must treat
# as garbage from the worker. Deeper results fail as Unserializable.
MAX_NESTING = 900

# The one task name whose arguments are pickled (a private Pool's lane; see
# workers/pickle_lane.py). Not a valid ``module:function`` name, so it can
# never collide with a task of an allowed module. args: [main, init, call]
# where main names the caller's __main__ (str), init is the pickled
# initializer or nil, call the pickled call; the value is pickled bytes.
PICKLE_TASK = "@pickle"

# ---------------------------------------------------------------- intake


class TaskIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    task: str
    id: str | None = None
    args: msgspec.Raw = EMPTY  # MessagePack array
    kwargs: msgspec.Raw = EMPTY  # MessagePack map with str keys
    timeout: float | None = None  # seconds; overrides tasks.timeout
    max_attempts: int | None = None  # overrides tasks.max_attempts
    soft_timeout: float | None = None  # overrides tasks.soft_timeout
    # A chunk: ``args`` is an array of argument arrays, the function runs
    # once per item, and the value is an array of [ok, value-or-error].
    chunk: bool = False
    retry_timeouts: bool | None = None  # overrides tasks.retry_timeouts


Ref = int | str | None  # a client's request reference, echoed in the reply


class Submit(msgspec.Struct, tag_field="op", tag="submit", forbid_unknown_fields=True):
    tasks: list[TaskIn]
    ref: Ref = None
    # False: no ack; a refused task is answered as a failed result instead,
    # saving one message per request (what the Python client does).
    ack: bool = True


class RefOnly(msgspec.Struct):
    """Enough of a refused request to echo its ``ref`` back."""

    ref: Ref = None


class Ping(msgspec.Struct, tag_field="op", tag="ping", forbid_unknown_fields=True):
    ref: Ref = None  # echoed in the pong: which ping it answers


class Fetch(msgspec.Struct, tag_field="op", tag="fetch", forbid_unknown_fields=True):
    """Results by id: retained ones now, pending ones when they finish."""

    ids: list[str]
    ref: Ref = None


IntakeRequest = Submit | Ping | Fetch


class Rejected(msgspec.Struct):
    id: str | None
    index: int  # position of the task in the request's ``tasks``
    error: msgspec.Raw


class Ack(msgspec.Struct, tag_field="op", tag="ack", omit_defaults=True):
    accepted: list[str]
    rejected: list[Rejected]
    ref: Ref = None


class Result(msgspec.Struct, omit_defaults=True):
    id: str | None
    task: str
    ok: bool
    attempts: int = 0
    value: msgspec.Raw = EMPTY  # set when ok
    error: msgspec.Raw = EMPTY  # set when not ok


class Results(msgspec.Struct, tag_field="op", tag="results"):
    results: list[Result]


class Pong(msgspec.Struct, tag_field="op", tag="pong", omit_defaults=True):
    version: str
    protocol: int
    boot: str
    workers: int
    ref: Ref = None
    # Replies to this connection dropped (its queue was full) since the
    # last pong to it: the client should re-attach its tasks by id.
    dropped: int = 0
    # Load-aware routing (docs/PROTOCOL.md, "credit"): tasks this daemon
    # would take now, its capacity, and the unfinished tasks it holds.
    credit: int = 0
    capacity: int = 0
    held: int = 0


class ErrorReply(msgspec.Struct, tag_field="op", tag="error", omit_defaults=True):
    error: msgspec.Raw
    ref: Ref = None


# ------------------------------------------------------------- publisher


class PublishedResults(msgspec.Struct):
    seq: int  # per topic, starts at 1: a jump means messages were missed
    gseq: int  # per daemon, across all topics
    boot: str  # changes when the daemon restarts (sequences restart too)
    results: list[Result]


# ---------------------------------------------------------- worker pipe
# Internal to one host; array_like keeps it compact and fast to decode.


class Work(msgspec.Struct, array_like=True):
    key: int
    task: str
    args: msgspec.Raw
    kwargs: msgspec.Raw
    soft_timeout: float = 0.0  # seconds; SoftTimeout is raised in the task
    chunk: bool = False
    digest: int = 0  # the task's digest, noted with its key (journal_handoff.py)


class Done(msgspec.Struct, array_like=True):
    key: int
    ok: bool
    value: msgspec.Raw  # the result, or an error map when not ok


class Hello(msgspec.Struct, tag="hello", array_like=True):
    pid: int
    tasks: list[str]
    errors: list[str]  # modules that failed to import, with the reason
    noting: bool = True  # False: it could not map the journal's hand-off file


class Batch(msgspec.Struct, tag="done", array_like=True):
    done: list[Done]


WorkerMessage = Hello | Batch

# ------------------------------------------------------------- helpers

encoder = msgspec.msgpack.Encoder()
intake_decoder: msgspec.msgpack.Decoder[IntakeRequest] = msgspec.msgpack.Decoder(IntakeRequest)
worker_decoder: msgspec.msgpack.Decoder[WorkerMessage] = msgspec.msgpack.Decoder(WorkerMessage)


def error_map(type_: str, message: str, traceback: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "message": message}
    if traceback:
        out["traceback"] = traceback
    return out


def error_raw(type_: str, message: str, traceback: str | None = None) -> msgspec.Raw:
    return msgspec.Raw(encoder.encode(error_map(type_, message, traceback)))


# First byte of a MessagePack value tells its family; checking it lets the
# daemon refuse wrong-typed args without decoding them.
def is_array(raw: msgspec.Raw) -> bool:
    if not raw:
        return True  # absent: no positional arguments
    b = memoryview(raw)[0]
    return 0x90 <= b <= 0x9F or b in (0xDC, 0xDD)


def is_map(raw: msgspec.Raw) -> bool:
    if not raw:
        return True
    b = memoryview(raw)[0]
    return 0x80 <= b <= 0x8F or b in (0xDE, 0xDF)
