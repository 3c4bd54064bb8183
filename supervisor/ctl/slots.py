"""phalanxctl's per-slot commands: start, stop, restart, signal, pid, clear.

The daemon answers start/stop/restart at once (its one loop never blocks
on a worker), with the state the slot is passing through (``STOPPING``,
``STARTING``). Like supervisorctl, phalanxctl then waits until each slot
has settled, so that when ``phalanxctl stop 0`` returns the worker and
everything it started are gone: it polls ``status`` for those slots until
they reach their goal or fail, for at most ``--wait`` seconds.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from supervisor.ctl import render
from supervisor.ctl.core import EXIT_FAILED, EXIT_OK, CommandFailed, Ctl, Run, parse_slots

DEFAULT_WAIT = 30.0  # a worker may take restart.start_timeout (30 s) to say hello
POLL = 0.05
TRANSIENT = ("STARTING", "STOPPING", "EXITED")


def targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("slots", nargs="*", metavar="SLOT", help="slot numbers, or 'all'")


def slot_args(p: argparse.ArgumentParser) -> None:
    targets(p)
    p.add_argument("-w", "--wait", type=float, default=DEFAULT_WAIT, metavar="SECONDS",
                   help=f"wait this long for the slots to settle (default {DEFAULT_WAIT:g}; "
                        "0: do not wait)")


def _outcome(cmd: str, before: dict[str, Any], now: dict[str, Any]) -> tuple[str, bool] | None:
    """(word to print, ok) once a slot has settled after ``cmd``; None while not."""
    state = str(now.get("state"))
    if cmd == "stop":
        if before.get("state") == "STOPPED":
            return "not running", True
        if state == "STOPPED":
            return "stopped", True
        return None if state in TRANSIENT or state == "RUNNING" else (state.lower(), False)
    if cmd == "start" and before.get("state") == "RUNNING":
        return "already started", True
    if state == "RUNNING" and (cmd == "start" or now.get("pid") != before.get("pid")):
        return ("restarted" if cmd == "restart" else "started"), True
    if state in ("BACKOFF", "FATAL"):
        return f"ERROR ({state.lower()}: {now.get('last_exit') or 'did not start'})", False
    return None


def _slot_command(cmd: str) -> Run:
    def run(ctl: Ctl, ns: argparse.Namespace) -> int:
        slots = parse_slots(ns.slots, required=True)
        if ns.wait <= 0:
            ctl.show(ctl.call(cmd, {"slots": slots}), render.slot_states)
            return EXIT_OK
        before = {s["slot"]: s for s in ctl.call("status", {"slots": slots})}
        ctl.call(cmd, {"slots": slots})
        deadline = time.monotonic() + ns.wait
        while True:
            now = {s["slot"]: s for s in ctl.call("status", {"slots": list(before)})}
            outcomes = {i: _outcome(cmd, before[i], now[i]) for i in before}
            if all(outcomes.values()) or time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        ok = True
        lines = []
        for i, outcome in outcomes.items():
            if outcome is None:
                word, good = f"ERROR (still {now[i]['state'].lower()} after {ns.wait:g}s)", False
            else:
                word, good = outcome
            ok = ok and good
            lines.append(f"{i}: {word}")
        if ctl.json:
            ctl.dump([{"slot": i, "state": s["state"], "pid": s["pid"]} for i, s in now.items()])
        else:
            ctl.say("\n".join(lines))
        return EXIT_OK if ok else EXIT_FAILED

    return run


cmd_start = _slot_command("start")
cmd_stop = _slot_command("stop")
cmd_restart = _slot_command("restart")


def signal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("signal", metavar="SIG", help="TERM, SIGTERM, HUP, USR1, 9, ...")
    p.add_argument("slots", nargs="*", metavar="SLOT", help="slot numbers, or 'all'")


def cmd_signal(ctl: Ctl, ns: argparse.Namespace) -> int:
    sig: str | int = int(ns.signal) if ns.signal.isdigit() else ns.signal.upper()
    slots = parse_slots(ns.slots, required=True)
    result = ctl.call("signal", {"signal": sig, "slots": slots})
    if ctl.json:
        ctl.dump(result)
        return EXIT_OK
    name = sig if isinstance(sig, int) or sig.startswith("SIG") else f"SIG{sig}"
    for item in result:
        if item.get("pid"):
            ctl.say(f"{item.get('slot')}: sent {name} to pid {item['pid']}")
        else:
            ctl.say(f"{item.get('slot')}: no worker running, nothing signalled")
    return EXIT_OK


def cmd_pid(ctl: Ctl, ns: argparse.Namespace) -> int:
    slots = parse_slots(ns.slots, required=False)
    if slots is None:
        ctl.show(ctl.call("pid", {}), lambda result: str(result["pid"]))
        return EXIT_OK
    result = ctl.call("pid", {"slots": slots})
    if ctl.json:
        ctl.dump(result)
        return EXIT_OK
    if isinstance(slots, list) and len(slots) == 1:
        # One slot: the bare pid, for `kill -USR1 $(phalanxctl pid 3)`.
        pid = result[0].get("pid")
        if not pid:
            raise CommandFailed("NotRunning", f"slot {slots[0]} has no running worker")
        ctl.say(str(pid))
        return EXIT_OK
    ctl.say("\n".join(f"{i.get('slot')}: {i.get('pid') or '-'}" for i in result))
    return EXIT_OK


def cmd_clear(ctl: Ctl, ns: argparse.Namespace) -> int:
    slots = parse_slots(ns.slots, required=True)
    ctl.show(ctl.call("clear", {"slots": slots}),
             lambda result: "\n".join(f"{i['slot']}: cleared" for i in result))
    return EXIT_OK
