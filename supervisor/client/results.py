"""Turning result messages into completed futures and collector batches.

A sink is what waits for one task id: an AsyncResult (submit), or a tuple
``(collector, index)`` / ``(collector, start, count)`` for map and imap,
which share one queue instead of a Future per item.
"""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from supervisor.client import heartbeat, routing
from supervisor.client.errors import TaskError, task_error
from supervisor.client.types import ext_hook
from supervisor.client.wire import Ack, Err, ErrorReply, Pong, Res, Results

if TYPE_CHECKING:
    from supervisor.client.engine import Engine
    from supervisor.client.links import Link

POLLIN, EVENTS = int(zmq.POLLIN), int(zmq.EVENTS)
# The backend's getsockopt returns a plain int; the sugar one builds an
# enum member per call, which is most of an idle check's cost.
_events = zmq.backend.Socket.get

SHUTTING_DOWN = "ShuttingDown"
# Refusals that mean "not here, not now": with several daemons the task
# goes to another one that takes work (routing.elsewhere); with one, or
# none other taking work, the refusal is the task's error.
NOT_HERE = frozenset({SHUTTING_DOWN, "Paused"})


class Collector:
    """Where map/imap results land: one queue put per incoming message.

    Each outcome is ``(index, ok, value)``; when not ok, value is the TaskError.
    """

    __slots__ = ("q", "batch")

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[list[tuple[int, bool, Any]]] = queue.SimpleQueue()
        self.batch: list[tuple[int, bool, Any]] | None = None


def error_of(res: Res) -> TaskError:
    err = res.error or Err("Unknown", "no error detail")
    return task_error(err.type, err.message, err.traceback, res.id)


def on_results(engine: Engine, results: list[Res]) -> None:
    pending = engine.pending
    sent = engine.sent
    window = engine.window
    touched: list[Collector] = []
    for res in results:
        task_id: str = res.id  # type: ignore[assignment]
        rec = sent.get(task_id)
        if rec is not None:
            if (not res.ok and res.error is not None and res.error.type in NOT_HERE
                    and engine.many and routing.elsewhere(engine, task_id, rec[2])):
                continue  # that daemon is draining or paused: another one runs it
            del sent[task_id]
            window.give(rec[1])
            rec[2].ids.discard(task_id)
        sink = pending.pop(task_id, None)
        if sink is None:
            continue  # a duplicate answer for an id already settled
        if sink.__class__ is tuple:
            coll = sink[0]
            batch = coll.batch
            if batch is None:
                batch = coll.batch = []
                touched.append(coll)
            if len(sink) == 2:
                batch.append((sink[1], True, res.value) if res.ok
                             else (sink[1], False, error_of(res)))
            else:
                chunk_outcomes(batch, sink[1], sink[2], res)
        elif res.ok:
            sink._complete(res.value, None)  # False if cancelled meanwhile: fine
        else:
            sink._complete(None, error_of(res))
    for coll in touched:
        done, coll.batch = coll.batch, None
        coll.q.put(done)  # type: ignore[arg-type]


def chunk_outcomes(batch: list[tuple[int, bool, Any]], start: int, count: int,
                   res: Res) -> None:
    """Spread a chunk's result ([ok, value-or-error] per item) over its items."""
    outcomes = res.value if res.ok else None
    if not isinstance(outcomes, list) or len(outcomes) != count:
        err = error_of(res) if not res.ok else TaskError(
            "BadResponse", "chunk result does not match the chunk", task_id=res.id)
        batch.extend((start + j, False, err) for j in range(count))
        return
    for j, outcome in enumerate(outcomes):
        if outcome[0]:
            batch.append((start + j, True, outcome[1]))
        else:
            e = outcome[1] if isinstance(outcome[1], dict) else {}
            batch.append((start + j, False, task_error(
                str(e.get("type", "Unknown")), str(e.get("message", "")),
                e.get("traceback"), res.id)))


class _RawRes(msgspec.Struct):
    id: str | None
    task: str
    ok: bool
    attempts: int = 0
    value: msgspec.Raw = msgspec.Raw()
    error: Err | None = None


class _RawResults(msgspec.Struct, tag_field="op", tag="results"):
    results: list[_RawRes]


_raw_decoder = msgspec.msgpack.Decoder(_RawResults)


def salvage(engine: Engine, body: bytes) -> None:
    """A results message that failed to decode whole: decode each value on
    its own, so one undecodable value fails its own task, not the batch."""
    try:
        msg = _raw_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # not a results message we understand (a newer daemon?)
    good: list[Res] = []
    for r in msg.results:
        try:
            value = msgspec.msgpack.decode(r.value, ext_hook=ext_hook) if r.value else None
        except (msgspec.DecodeError, TypeError) as exc:
            good.append(Res(r.id, r.task, False, r.attempts, None,
                            Err("BadResponse", f"result value cannot be decoded: {exc}")))
            continue
        good.append(Res(r.id, r.task, r.ok, r.attempts, value, r.error))
    on_results(engine, good)


def receive(engine: Engine, link: Link, now: float) -> None:
    sock = link.sock
    # ZMQ_EVENTS first: cheaper than the exception of an empty recv.
    while _events(sock, EVENTS) & POLLIN:  # type: ignore[operator]
        body = sock.recv(zmq.NOBLOCK)
        link.on_heard(now)
        try:
            msg = engine.decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
            salvage(engine, body)  # one bad value must not lose a batch
            continue
        if isinstance(msg, Results):
            on_results(engine, msg.results)
        elif isinstance(msg, Pong):
            action = link.on_pong(msg)
            if action and link.ids:
                if engine.many:
                    routing.after_pong(engine, link, action)
                else:
                    heartbeat.reattach(engine, link, link)
            waiters, engine.pong_waiters = engine.pong_waiters, []
            for fut in waiters:
                fut._complete(msg, None)
        elif isinstance(msg, ErrorReply):
            ids = engine.unacked.pop(msg.ref, [])  # type: ignore[arg-type]
            if msg.error.type == "TooLarge" and len(ids) > 1:
                heartbeat.resend_alone(engine, link, ids)  # one big task must not sink its batch
                continue
            for task_id in ids:
                e = msg.error
                engine.complete_error(task_id, task_error(e.type, e.message, task_id=task_id))
        elif isinstance(msg, Ack):
            engine.unacked.pop(msg.ref, None)  # type: ignore[arg-type]
            for rej in msg.rejected:
                if rej.id is not None:
                    e = rej.error
                    engine.complete_error(rej.id, task_error(e.type, e.message, task_id=rej.id))
