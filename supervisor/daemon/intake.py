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
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

import msgspec
import structlog

from supervisor import __version__
from supervisor.core.tasks import ReplyGroup, Task, digest
from supervisor.daemon import admission, credit, durability
from supervisor.daemon.zmqio import has_input, recv_frames
from supervisor.errors import (
    BadRequest,
    IdConflict,
    RequestError,
    TooLarge,
)
from supervisor.protocol import (
    NO_ARGS,
    NO_KWARGS,
    PROTOCOL_VERSION,
    Ack,
    ErrorReply,
    Fetch,
    Ping,
    Pong,
    RefOnly,
    Rejected,
    Result,
    Results,
    Submit,
    encoder,
    error_raw,
    intake_decoder,
)

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon

log = structlog.get_logger("phalanxd.intake")

# Requests handled per wake-up before the loop tends to workers again.
BUDGET = 512
# Connections whose dropped replies we remember until they ping again; a
# client that never comes back must not grow this forever.
DROPPED_ROUTES_KEPT = 10_000

# Intake's own counters (one daemon per process): refusals by wire type,
# whole requests and single tasks alike (stats: refused), and replies
# dropped per connection, told to the client in its next pong.
refused: Counter[str] = Counter()
_dropped: OrderedDict[bytes, int] = OrderedDict()


def note_dropped(route: bytes) -> None:
    """A reply to ``route`` could not be queued (called by Outbox.send)."""
    _dropped[route] = _dropped.pop(route, 0) + 1
    if len(_dropped) > DROPPED_ROUTES_KEPT:
        _dropped.popitem(last=False)


def _count_refusal(err: RequestError, ref: object) -> None:
    n = refused[err.type] = refused[err.type] + 1
    if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th... of each type
        log.info("request_refused", type=err.type, reason=err.message, ref=ref, total=n)


def on_readable(d: Daemon) -> bool:
    """Handle what is waiting; True if the budget ran out with more to read.

    Reads until ZMQ_EVENTS shows nothing more (see zmqio.has_input)."""
    sock = d.intake
    for _ in range(BUDGET):
        if not has_input(sock):
            return False
        handle(d, recv_frames(sock))
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
        # The ref is read too (a skip over the rest, bounded by MAXMSGSIZE),
        # so the client knows which request this refuses.
        _refuse(d, route, req, TooLarge(f"message is {len(body)} bytes, limit is {limit}"),
                body)
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
        # How many replies to this client were dropped since it last heard:
        # it then re-attaches its pending tasks by id (docs/PROTOCOL.md).
        dropped = _dropped.pop(route, 0)
        pong = Pong(__version__, PROTOCOL_VERSION, d.boot, len(d.pool.slots), request.ref, dropped,
                    *credit.advertised(d))
        d.journal.hold(route, encoder.encode(pong), req)  # replies keep their order
    elif isinstance(request, Submit):
        submit(d, route, req, request)
    elif isinstance(request, Fetch):
        durability.fetch(d, route, req, request)


def _refuse(d: Daemon, route: bytes, req: bool, err: RequestError, body: bytes = b"") -> None:
    d.counters.refused(err.type)
    ref = None
    if body:
        try:  # echo the request's ref if the body is a readable map
            ref = _ref_decoder.decode(body).ref
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError,
                UnicodeDecodeError):
            pass
    _count_refusal(err, ref)
    # held like every reply, so replies leave in the order of requests
    d.journal.hold(route, encoder.encode(ErrorReply(error_raw(err.type, err.message), ref)), req)


_ref_decoder = msgspec.msgpack.Decoder(RefOnly)


def submit(d: Daemon, route: bytes, req: bool, request: Submit) -> None:
    pool = d.pool
    defaults = d.cfg.tasks
    accepted: list[str] = []
    rejected: list[Rejected] = []
    group = ReplyGroup(route) if req else None
    replays: list[Result] = []
    seen: set[str] = set()
    refusal = admission.request_refusal(d)
    check_one = admission.Checker(d).check
    now = time.monotonic()
    for index, spec in enumerate(request.tasks):
        if len(accepted) > len(seen):  # ids accepted so far in this request (only the new ones)
            seen.update(accepted[len(seen):])
        if spec.id is not None and spec.id in seen:
            continue  # a repeat of an accepted id inside one request collapses to one
        err = refusal or check_one(spec)
        fingerprint = 0
        if err is None:  # journal: the id is the idempotency key
            # One digest: the journal's and the task table's. Also for an id
            # the daemon chooses: a later submission may name that id.
            fingerprint = digest(spec.task, spec.args or NO_ARGS, spec.kwargs or NO_KWARGS)
            found = d.journal.lookup(spec.id, fingerprint)
            if isinstance(found, Result):
                accepted.append(spec.id or "")
                (group.results if group is not None else replays).append(found)
                continue
            err = found
        if err is not None:
            d.counters.refused(err.type)
            _count_refusal(err, request.ref)
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
            existing = pool.find(task_id)
            cached = pool.cached(task_id) if existing is None else None
            known = existing.digest if existing is not None else (
                cached[1] if cached is not None else None)
            # 0: not known (a daemon-chosen id): not checked.
            if known and known != fingerprint:
                err = IdConflict(f"task id {task_id!r} was accepted for another task or "
                                 f"other arguments; choose a new id")
                error = error_raw(err.type, err.message)
                if group is not None:
                    group.results.append(Result(task_id, spec.task, False, 0, error=error))
                elif request.ack:
                    rejected.append(Rejected(task_id, index, error))
                else:
                    replays.append(Result(task_id, spec.task, False, 0, error=error))
                continue
            if existing is not None:
                # Same id again (a client retrying after a reconnect, or two
                # clients agreeing on an id): one run, and every submitter
                # gets its own copy of the one result (once per peer).
                if pool.attach(existing, None if req else route, group) and group is not None:
                    group.waiting += 1
                accepted.append(task_id)
                continue
            if cached is not None:
                accepted.append(task_id)
                if group is not None:
                    group.results.append(cached[0])
                else:
                    replays.append(cached[0])
                continue
        key = pool.table.next_key()
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
        task.digest = fingerprint
        if d.journal.charges:  # it may have killed phalanxd before it was recorded
            quarantined = d.journal.precharge(task)
            if quarantined is not None:  # answered now (the journal answers a repeat)
                accepted.append(task_id)
                (group.results if group is not None else replays).append(quarantined)
                continue
        if group is not None:
            group.waiting += 1
        pool.accept(task)
        d.counters.accepted(spec.task)
        d.journal.accept(task)  # recorded before the ack (held below)
        accepted.append(task_id)
    if accepted and d.publisher.wants_event("task.accepted"):
        d.publisher.event("task.accepted", ids=accepted)
    # journal: every reply waits for this turn's commit
    if group is not None:
        if group.waiting == 0:
            d.journal.hold(route, encoder.encode(Results(group.results)), True)
        return
    if request.ack:
        d.journal.hold(route, encoder.encode(Ack(accepted, rejected, request.ref)))
    if replays:
        d.journal.hold(route, encoder.encode(Results(replays)))
