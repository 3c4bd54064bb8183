"""The control socket: phalanxctl's commands, one handler each.

Request: ``[routing_id, body]`` (DEALER) or ``[routing_id, b"", body]``
(REQ), body a MessagePack map ``{"cmd": str, "args": map?}``. Reply:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {type, message}}``.
Commands are dispatched through ``COMMANDS``, a plain mapping you can grep.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from supervisor import __version__
from supervisor.config import to_dict
from supervisor.errors import BadRequest, RequestError, UnknownCommand
from supervisor.protocol import encoder

if TYPE_CHECKING:
    from supervisor.daemon import Daemon

Handler = Callable[["Daemon", dict[str, Any]], Any]


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True):
    cmd: str
    args: dict[str, Any] = {}


_decoder = msgspec.msgpack.Decoder(ControlRequest)


def on_readable(d: Daemon) -> None:
    for _ in range(64):
        try:
            frames = d.control.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        route, req = frames[0], len(frames) == 3 and not frames[1]
        try:
            if len(frames) not in (2, 3) or (len(frames) == 3 and frames[1]):
                raise BadRequest("expected [body] or [empty, body]")
            request = _decoder.decode(frames[-1])
            handler = COMMANDS.get(request.cmd)
            if handler is None:
                raise UnknownCommand(f"unknown command {request.cmd!r}; try 'help'")
            reply: dict[str, Any] = {"ok": True, "result": handler(d, request.args)}
        except RequestError as err:
            reply = {"ok": False, "error": {"type": err.type, "message": err.message}}
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reply = {"ok": False, "error": {"type": "BadRequest", "message": str(exc)}}
        frames_out = [route, b"", encoder.encode(reply)] if req else [route, encoder.encode(reply)]
        try:
            d.control.send_multipart(frames_out, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass


def slot_status(d: Daemon, index: int) -> dict[str, Any]:
    slot = d.slots[index]
    now = time.monotonic()
    current = None
    if slot.inflight:
        head = slot.inflight[0]
        current = {"id": head.id, "task": head.name, "for": round(now - slot.head_since, 3)}
    return {
        "slot": slot.index,
        "state": slot.state.name,
        "pid": slot.pid,
        "uptime": round(now - slot.running_since, 3) if slot.running_since and slot.pid else 0.0,
        "restarts": slot.restart_count,
        "done": slot.tasks_done,
        "failed": slot.tasks_failed,
        "held": len(slot.inflight),
        "current": current,
        "last_exit": slot.last_exit,
    }


def cmd_status(d: Daemon, args: dict[str, Any]) -> Any:
    return [slot_status(d, s.index) for s in d.slots]


def cmd_stats(d: Daemon, args: dict[str, Any]) -> Any:
    t = d.table
    return {
        "accepted": t.accepted,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "retried": t.retried,
        "quarantined": t.quarantined,
        "queued": t.queued,
        "in_flight": len(t) - t.queued,
        "restarts": sum(s.restart_count for s in d.slots),
        "published": d.publisher.sent,
        "publish_dropped": d.publisher.dropped,
        "unroutable_replies": d.unroutable,
        "uptime": round(time.monotonic() - d.started_mono, 3),
    }


def cmd_version(d: Daemon, args: dict[str, Any]) -> Any:
    return {"version": __version__, "boot": d.boot, "pid": os.getpid()}


def cmd_config(d: Daemon, args: dict[str, Any]) -> Any:
    return to_dict(d.cfg)


def cmd_pause(d: Daemon, args: dict[str, Any]) -> Any:
    d.paused = True
    d.publisher.event("supervisor.paused")
    return {"paused": True}


def cmd_resume(d: Daemon, args: dict[str, Any]) -> Any:
    d.paused = False
    d.publisher.event("supervisor.resumed")
    return {"paused": False}


def cmd_shutdown(d: Daemon, args: dict[str, Any]) -> Any:
    d.begin_drain()
    return {"draining": True, "unfinished": len(d.table)}


def cmd_help(d: Daemon, args: dict[str, Any]) -> Any:
    return sorted(COMMANDS)


COMMANDS: dict[str, Handler] = {
    "status": cmd_status,
    "stats": cmd_stats,
    "version": cmd_version,
    "config": cmd_config,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "shutdown": cmd_shutdown,
    "help": cmd_help,
}
