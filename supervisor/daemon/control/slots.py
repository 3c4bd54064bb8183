"""Commands on worker slots: status, start, stop, restart, signal, pid."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from supervisor.daemon.control.args import pick_slots
from supervisor.errors import BadRequest

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon
    from supervisor.daemon.pool.state import WorkerSlot as Slot


def slot_info(d: Daemon, slot: Slot) -> dict[str, Any]:
    now = time.monotonic()
    current = None
    # The task the worker says it started, if it still holds it: a task
    # merely waiting in the worker's pipe is not "current".
    running = d.pool.running(slot)
    if running is not None:
        task, started = running
        current = {"id": task.id, "task": task.name, "for": round(now - started, 3)}
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


def cmd_status(d: Daemon, args: dict[str, Any]) -> Any:
    return [slot_info(d, s) for s in pick_slots(d, args, default_all=True)]


def cmd_start(d: Daemon, args: dict[str, Any]) -> Any:
    slots = pick_slots(d, args, default_all=False)
    for slot in slots:
        d.pool.start_slot(slot)
    return [{"slot": s.index, "state": s.state.name} for s in slots]


def cmd_stop(d: Daemon, args: dict[str, Any]) -> Any:
    slots = pick_slots(d, args, default_all=False)
    for slot in slots:
        d.pool.stop_slot(slot)
    return [{"slot": s.index, "state": s.state.name} for s in slots]


def cmd_restart(d: Daemon, args: dict[str, Any]) -> Any:
    slots = pick_slots(d, args, default_all=False)
    for slot in slots:
        d.pool.restart_slot(slot)
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
    for slot in pick_slots(d, args, default_all=False):
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
    return [{"slot": s.index, "pid": s.pid} for s in pick_slots(d, args, default_all=True)]
