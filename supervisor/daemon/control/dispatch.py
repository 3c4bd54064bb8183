"""The control socket: phalanxctl's commands, one handler each.

Request: ``[routing_id, body]`` (DEALER) or ``[routing_id, b"", body]``
(REQ), body a MessagePack map ``{"cmd": str, "args": map?}``. Reply:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {type, message}}``.
Commands are dispatched through ``COMMANDS``, a plain mapping you can grep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import zmq

from supervisor.daemon.control.commands import COMMANDS
from supervisor.daemon.zmqio import has_input
from supervisor.errors import BadRequest, RequestError, UnknownCommand
from supervisor.protocol import encoder

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon

log = structlog.get_logger("phalanxd")


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True):
    cmd: str
    args: dict[str, Any] = {}


_decoder = msgspec.msgpack.Decoder(ControlRequest)


def on_readable(d: Daemon) -> bool:
    """Answer waiting requests; True if the budget ran out with more left
    (reading until ZMQ_EVENTS is clear re-arms the loop's ZMQ_FD)."""
    for _ in range(64):
        if not has_input(d.control):
            return False
        frames = d.control.recv_multipart(zmq.NOBLOCK)
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
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError,
                UnicodeDecodeError) as exc:
            # RecursionError (deep nesting) and UnicodeDecodeError (a str that
            # is not UTF-8) are how msgspec refuses those inputs: bad input,
            # not a bug.
            reply = {"ok": False, "error": {"type": "BadRequest", "message": str(exc)}}
        except Exception as exc:  # a bug in one command must not stop the daemon
            log.exception("control_command_failed")
            reply = {"ok": False, "error": {"type": "InternalError", "message": repr(exc)}}
        frames_out = [route, b"", encoder.encode(reply)] if req else [route, encoder.encode(reply)]
        try:
            d.control.send_multipart(frames_out, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
    return has_input(d.control)
