"""Intake: clients submit tasks on a ROUTER socket.

Frames as received (ROUTER prepends the peer's routing id)::

    DEALER:  [routing_id, body]        -> ack now, results as they finish
    REQ:     [routing_id, b"", body]   -> one reply: every result of the request

A request is checked whole before anything in it is accepted, then each task
is accepted or rejected on its own; nothing a client sends can stop the loop
or change another client's work.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import zmq

from supervisor import __version__
from supervisor.core.tasks import ReplyGroup, Task
from supervisor.daemon import credit
from supervisor.daemon.zmqio import has_input
from supervisor.errors import (
    BadRequest,
    NotAllowed,
    Overloaded,
    Paused,
    RequestError,
    ShuttingDown,
    TooLarge,
    UnknownTask,
)
from supervisor.protocol import (
    NO_ARGS,
    NO_KWARGS,
    PROTOCOL_VERSION,
    Ack,
    ErrorReply,
    Ping,
    Pong,
    RefOnly,
    Rejected,
    Result,
    Results,
    Submit,
    TaskIn,
    encoder,
    error_raw,
    intake_decoder,
    is_array,
    is_map,
)

if TYPE_CHECKING:
    from supervisor.daemon.state import DaemonState as Daemon

# Requests handled per wake-up before the loop tends to workers again.
BUDGET = 512


def on_readable(d: Daemon) -> bool:
    """Handle what is waiting; True if the budget ran out with more to read.

    Reads until ZMQ_EVENTS shows nothing more (see zmqio.has_input)."""
    sock = d.intake
    for _ in range(BUDGET):
        if not has_input(sock):
            return False
        handle(d, sock.recv_multipart(zmq.NOBLOCK))
    return has_input(sock)


def handle(d: Daemon, frames: list[bytes]) -> None:
    route = frames[0]
    if len(frames) == 3 and not frames[1]:
        req, body = True, frames[2]
    elif len(frames) == 2:
        req, body = False, frames[1]
    else:
        _refuse(d, route, len(frames) >= 2 and not frames[1], BadRequest(
            f"expected 1 body frame (DEALER) or an empty delimiter and 1 body frame (REQ), "
            f"got {len(frames) - 1} frames"
        ))
        return
    limit = d.cfg.tasks.max_message_bytes
    if len(body) > limit:
        _refuse(d, route, req, TooLarge(f"message is {len(body)} bytes, limit is {limit}"))
        return
    try:
        request = intake_decoder.decode(body)
    except msgspec.ValidationError as exc:
        _refuse(d, route, req, BadRequest(f"invalid request: {exc}"), body)
        return
    except msgspec.DecodeError as exc:
        _refuse(d, route, req, BadRequest(f"body is not MessagePack: {exc}"))
        return
    except RecursionError:  # msgspec's answer to deep nesting; must not kill the loop
        _refuse(d, route, req, BadRequest("body is nested too deeply"))
        return
    except UnicodeDecodeError as exc:  # msgspec raises it as is for a bad str
        _refuse(d, route, req, BadRequest(f"a string is not valid UTF-8: {exc.reason}"))
        return
    if isinstance(request, Ping):
        pong = Pong(__version__, PROTOCOL_VERSION, d.boot, len(d.slots), *credit.advertised(d))
        d.send_reply(route, encoder.encode(pong), req)
    elif isinstance(request, Submit):
        submit(d, route, req, request)


def _refuse(d: Daemon, route: bytes, req: bool, err: RequestError, body: bytes = b"") -> None:
    ref = None
    if body:
        try:  # echo the request's ref if the body is a readable map
            ref = _ref_decoder.decode(body).ref
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError,
                UnicodeDecodeError):
            pass
    d.send_reply(route, encoder.encode(ErrorReply(error_raw(err.type, err.message), ref)), req)


_ref_decoder = msgspec.msgpack.Decoder(RefOnly)


def request_refusal(d: Daemon) -> RequestError | None:
    """Why no task of any request would be accepted right now, if so."""
    if d.draining:
        return ShuttingDown("daemon is shutting down; submit to another instance")
    if d.paused:
        return Paused("intake is paused by the operator")
    return None


def name_refusal(d: Daemon, name: str) -> RequestError | None:
    module, sep, fn = name.partition(":")
    if not sep or not module or not fn:
        return BadRequest(f"task name {name!r} is not 'module:function'")
    if module not in d.allow:
        return NotAllowed(f"module {module!r} is not in tasks.allow")
    if d.known_tasks:  # once a worker has listed what it can run
        return UnknownTask(f"no task named {name!r}")
    return None


def check(d: Daemon, spec: TaskIn) -> RequestError | None:
    """The RequestError that refuses this task, or None (hot path: no raise)."""
    name = spec.task
    if name not in d.known_tasks:
        err = name_refusal(d, name)
        if err is not None:
            return err
    if spec.args and not is_array(spec.args):
        return BadRequest("args must be an array")
    if spec.kwargs and not is_map(spec.kwargs):
        return BadRequest("kwargs must be a map")
    if spec.timeout is not None and not spec.timeout >= 0:
        return BadRequest("timeout must be a number >= 0")
    if spec.max_attempts is not None and spec.max_attempts < 1:
        return BadRequest("max_attempts must be >= 1")
    if spec.soft_timeout is not None and not spec.soft_timeout >= 0:
        return BadRequest("soft_timeout must be a number >= 0")
    table = d.table
    limits = d.cfg.tasks
    if len(table) >= limits.max_pending:
        return Overloaded(f"{len(table)} tasks pending, limit {limits.max_pending}")
    if table.pending_bytes >= limits.max_pending_bytes:
        return Overloaded(
            f"{table.pending_bytes} bytes of pending arguments, limit {limits.max_pending_bytes}"
        )
    return None


def submit(d: Daemon, route: bytes, req: bool, request: Submit) -> None:
    table = d.table
    defaults = d.cfg.tasks
    accepted: list[str] = []
    rejected: list[Rejected] = []
    group = ReplyGroup(route) if req else None
    replays: list[Result] = []
    refusal = request_refusal(d)
    now = time.monotonic()
    for index, spec in enumerate(request.tasks):
        err = refusal or check(d, spec)
        if err is not None:
            error = error_raw(err.type, err.message)
            if group is not None:
                group.results.append(Result(spec.id, spec.task, False, 0, error=error))
            elif request.ack:
                rejected.append(Rejected(spec.id, index, error))
            else:
                replays.append(Result(spec.id, spec.task, False, 0, error=error))
            continue
        task_id = spec.id
        if task_id is not None:
            existing = table.by_id.get(task_id)
            if existing is not None:
                # Same id again (a client retrying after a reconnect, or two
                # clients agreeing on an id): one run, and every submitter
                # gets its own copy of the one result.
                existing.also_notify(None if req else route, group)
                if group is not None:
                    group.waiting += 1
                accepted.append(task_id)
                continue
            cached = table.cached_result(task_id)
            if isinstance(cached, Result):
                accepted.append(task_id)
                if group is not None:
                    group.results.append(cached)
                else:
                    replays.append(cached)
                continue
        key = table.next_key()
        if task_id is None:
            task_id = f"{d.boot}-{key}"
        task = Task(
            key,
            task_id,
            spec.task,
            spec.args or NO_ARGS,
            spec.kwargs or NO_KWARGS,
            None if req else route,
            spec.max_attempts or defaults.max_attempts,
            defaults.timeout if spec.timeout is None else spec.timeout,
            group,
            now,
            defaults.soft_timeout if spec.soft_timeout is None else spec.soft_timeout,
            spec.chunk,
            defaults.retry_timeouts if spec.retry_timeouts is None else spec.retry_timeouts,
        )
        if group is not None:
            group.waiting += 1
        table.add(task)
        accepted.append(task_id)
    if accepted and d.publisher.wants_event("task.accepted"):
        d.publisher.event("task.accepted", ids=accepted)
    if group is not None:
        if group.waiting == 0:
            d.send_reply(route, encoder.encode(Results(group.results)), req=True)
        return
    if request.ack:
        d.send_reply(route, encoder.encode(Ack(accepted, rejected, request.ref)))
    if replays:
        d.send_reply(route, encoder.encode(Results(replays)))
