"""Control commands: one small handler each, found through ``COMMANDS``.

Every handler takes the daemon and the request's ``args`` map and returns
plain data (the reply's ``result``), or raises a RequestError whose type
the client sees. docs/PROTOCOL.md lists each command's arguments and result.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor import __version__
from supervisor.config import to_dict
from supervisor.daemon import intake
from supervisor.errors import BadRequest, ConfigError, RequestError

if TYPE_CHECKING:
    from supervisor.core.slots import Slot
    from supervisor.daemon.state import DaemonState as Daemon

Handler = Callable[["Daemon", dict[str, Any]], Any]


class UnknownSlot(RequestError):
    type = "UnknownSlot"


class ConfigInvalid(RequestError):
    type = "ConfigError"


# ------------------------------------------------------------- arguments
def _slots(d: Daemon, args: dict[str, Any], default_all: bool) -> list[Slot]:
    wanted = args.get("slots")
    if wanted is None or wanted == "all" or wanted == []:
        if wanted is None and not default_all:
            raise BadRequest("name the slots (a list of numbers) or 'all'")
        return list(d.slots)
    if not isinstance(wanted, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in wanted
    ):
        raise BadRequest("slots must be a list of slot numbers or 'all'")
    by_index = {s.index: s for s in d.slots}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise UnknownSlot(f"no such slot: {', '.join(map(str, missing))}")
    return [by_index[i] for i in wanted]


def _one_slot(d: Daemon, args: dict[str, Any]) -> Slot:
    index = args.get("slot")
    if not isinstance(index, int) or isinstance(index, bool):
        raise BadRequest("slot must be a slot number")
    return _slots(d, {"slots": [index]}, default_all=False)[0]


def _int_arg(args: dict[str, Any], key: str, default: int | None) -> int | None:
    value = args.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise BadRequest(f"{key} must be an integer")
    return value


# ------------------------------------------------------------ per slot
def slot_info(d: Daemon, slot: Slot) -> dict[str, Any]:
    now = time.monotonic()
    current = None
    if slot.inflight and slot.handle is not None:
        # The task the worker says it started, if it still holds it: a task
        # merely waiting in the worker's pipe is not "current".
        key = slot.handle.running_key()
        for task in slot.inflight:
            if task.key == key:
                since = round(now - slot.head_since, 3) if task is slot.inflight[0] else None
                current = {"id": task.id, "task": task.name, "for": since}
                break
    rss, cpu = slot.handle.usage() if slot.handle is not None else (None, None)
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
        "rss": rss,
        "cpu": cpu,
        "last_exit": slot.last_exit,
    }


# ------------------------------------------------------------ handlers
def cmd_status(d: Daemon, args: dict[str, Any]) -> Any:
    return [slot_info(d, s) for s in _slots(d, args, default_all=True)]


def cmd_start(d: Daemon, args: dict[str, Any]) -> Any:
    slots = _slots(d, args, default_all=False)
    for slot in slots:
        d.start_slot_by_operator(slot)
    return [{"slot": s.index, "state": s.state.name} for s in slots]


def cmd_stop(d: Daemon, args: dict[str, Any]) -> Any:
    slots = _slots(d, args, default_all=False)
    for slot in slots:
        d.stop_slot(slot)
    return [{"slot": s.index, "state": s.state.name} for s in slots]


def cmd_restart(d: Daemon, args: dict[str, Any]) -> Any:
    slots = _slots(d, args, default_all=False)
    for slot in slots:
        d.restart_slot(slot)
    return [{"slot": s.index, "state": s.state.name} for s in slots]


def _signal_number(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        try:
            number = int(signal.Signals[name])
        except KeyError:
            raise BadRequest(f"unknown signal {value!r}") from None
    else:
        raise BadRequest("signal must be a name (TERM, SIGHUP) or a number")
    try:
        signal.Signals(number)
    except ValueError:
        raise BadRequest(f"unknown signal {value!r}") from None
    return number


def cmd_signal(d: Daemon, args: dict[str, Any]) -> Any:
    number = _signal_number(args.get("signal"))
    out = []
    for slot in _slots(d, args, default_all=False):
        if slot.pid is not None:
            try:
                os.kill(slot.pid, number)
            except ProcessLookupError:
                pass
        out.append({"slot": slot.index, "pid": slot.pid})
    return out


def cmd_pid(d: Daemon, args: dict[str, Any]) -> Any:
    if args.get("slots") is None:
        return {"pid": os.getpid()}
    return [{"slot": s.index, "pid": s.pid} for s in _slots(d, args, default_all=True)]


def _complete_utf8(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last character
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else (
                4 if byte >> 3 == 0b11110 else 1)
            return len(data) - back if need > back else len(data)
    return len(data)


def _tail(ring: Any, args: dict[str, Any]) -> dict[str, Any]:
    offset = _int_arg(args, "offset", None)
    nbytes = _int_arg(args, "bytes", None)
    if nbytes is None:
        nbytes = 1600  # supervisorctl's default
    if nbytes < 0:
        raise BadRequest("bytes must be >= 0")
    data, end, overflow = ring.read(offset, nbytes if offset is None else 1 << 20)
    # A character split across two reads would decode as U+FFFD twice:
    # hand back only whole characters; the rest comes with the next read.
    keep = _complete_utf8(data)
    end -= len(data) - keep
    return {"data": data[:keep].decode("utf-8", "replace"), "offset": end, "overflow": overflow}


def cmd_tail(d: Daemon, args: dict[str, Any]) -> Any:
    slot = _one_slot(d, args)
    stream = args.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise BadRequest("stream must be 'stdout' or 'stderr'")
    return _tail(d.output_of(slot.index)[stream], args)


def cmd_maintail(d: Daemon, args: dict[str, Any]) -> Any:
    from supervisor.daemon.logs import MAIN_LOG

    return _tail(MAIN_LOG, args)


def cmd_clear(d: Daemon, args: dict[str, Any]) -> Any:
    slots = _slots(d, args, default_all=False)
    for slot in slots:
        for ring in d.output_of(slot.index).values():
            ring.clear()
    return [{"slot": s.index, "cleared": True} for s in slots]


def cmd_stats(d: Daemon, args: dict[str, Any]) -> Any:
    t = d.table
    running = sum(1 for s in d.slots if s.state.name == "RUNNING")
    return {
        "accepted": t.accepted,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "retried": t.retried,
        "quarantined": t.quarantined,
        "queued": t.queued,
        "in_flight": len(t) - t.queued,
        "restarts": sum(s.restart_count for s in d.slots),
        "rate": round(d.rate.rate(), 1),
        "latency": {"p50": d.latency.quantile(0.5), "p99": d.latency.quantile(0.99)},
        "per_task": {k: {"succeeded": v[0], "failed": v[1]} for k, v in d.task_counts.items()},
        "published": d.publisher.sent,
        "publish_dropped": d.publisher.dropped,
        "unroutable_replies": d.unroutable,
        "refused": dict(intake.refused),  # refusals by type, requests and tasks
        "uptime": round(time.monotonic() - d.started_mono, 3),
        "paused": d.paused,
        "draining": d.draining,
        "workers": {"running": running, "total": len(d.slots)},
    }


def cmd_version(d: Daemon, args: dict[str, Any]) -> Any:
    return {"version": __version__, "boot": d.boot, "pid": os.getpid()}


def cmd_config(d: Daemon, args: dict[str, Any]) -> Any:
    return to_dict(d.cfg)


def cmd_avail(d: Daemon, args: dict[str, Any]) -> Any:
    return sorted(d.known_tasks)


def cmd_pause(d: Daemon, args: dict[str, Any]) -> Any:
    d.paused = True
    d.publisher.event("supervisor.paused")
    return {"paused": True}


def cmd_resume(d: Daemon, args: dict[str, Any]) -> Any:
    d.paused = False
    d.publisher.event("supervisor.resumed")
    return {"paused": False}


def cmd_reread(d: Daemon, args: dict[str, Any]) -> Any:
    try:
        _, changes = d.reread()
    except ConfigError as exc:
        raise ConfigInvalid(str(exc)) from None
    return {"changes": [c.as_dict() for c in changes]}


def cmd_update(d: Daemon, args: dict[str, Any]) -> Any:
    try:
        changes = d.update_from_file()
    except ConfigError as exc:
        raise ConfigInvalid(str(exc)) from None
    return {"changes": [c.as_dict() for c in changes]}


def cmd_reload(d: Daemon, args: dict[str, Any]) -> Any:
    d.recycle_all()
    return {"recycling": [s.index for s in d.slots if s.recycle]}


def cmd_shutdown(d: Daemon, args: dict[str, Any]) -> Any:
    d.begin_drain()
    return {"draining": True, "unfinished": len(d.table)}


def cmd_help(d: Daemon, args: dict[str, Any]) -> Any:
    return sorted(COMMANDS)


COMMANDS: dict[str, Handler] = {
    "status": cmd_status,
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "signal": cmd_signal,
    "pid": cmd_pid,
    "tail": cmd_tail,
    "maintail": cmd_maintail,
    "clear": cmd_clear,
    "stats": cmd_stats,
    "version": cmd_version,
    "config": cmd_config,
    "avail": cmd_avail,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "reread": cmd_reread,
    "update": cmd_update,
    "reload": cmd_reload,
    "shutdown": cmd_shutdown,
    "help": cmd_help,
}
