"""phalanxctl's commands: one handler each, found through ``COMMANDS``.

A handler gets the session (``Ctl``) and its parsed arguments and returns
an exit code; it raises ``CtlFailure`` subclasses for errors. What each one
sends is the control request documented in docs/CLI.md; what it prints
comes from ctl_render (or is the result as JSON with ``--json``). The
streaming commands (tail, maintail, top, events) live in ctl_stream.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.ctl import render
from supervisor.ctl import slots as ctl_slots
from supervisor.ctl import stream as ctl_stream
from supervisor.ctl import tasks as ctl_tasks
from supervisor.ctl.core import EXIT_NOT_RUNNING, EXIT_OK, Ctl, Parser, Run, UsageError, parse_slots

Configure = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    run: Run
    configure: Configure | None = None
    # What the shell completes after the command name: "slots" (numbers and
    # all), "slot" (one number, then stdout/stderr), "signal" or nothing.
    completes: str = ""
    # status has supervisorctl's exit codes: 4 for unknown slot / no daemon.
    status_codes: bool = False


def parser_for(command: Command, prog: str) -> Parser:
    p = Parser(prog=prog, description=command.summary, add_help=True)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    if command.configure is not None:
        command.configure(p)
    return p


# --------------------------------------------------------------- options
def _slots_optional(p: argparse.ArgumentParser) -> None:
    p.add_argument("slots", nargs="*", metavar="SLOT", help="slot numbers or 'all' (default all)")


# ------------------------------------------------------------- handlers
def cmd_status(ctl: Ctl, ns: argparse.Namespace) -> int:
    slots = parse_slots(ns.slots, required=False)
    args = {"slots": slots} if isinstance(slots, list) else {}
    result = ctl.call("status", args)
    ctl.show(result, render.status)
    return EXIT_OK if all(s.get("state") == "RUNNING" for s in result) else EXIT_NOT_RUNNING


def cmd_stats(ctl: Ctl, ns: argparse.Namespace) -> int:
    ctl.show(ctl.call("stats", {}), render.stats)
    return EXIT_OK


def _flag_command(cmd: str, word: str) -> Run:
    def run(ctl: Ctl, ns: argparse.Namespace) -> int:
        ctl.show(ctl.call(cmd, {}), lambda result: f"intake {word}")
        return EXIT_OK

    return run


def _changes_command(cmd: str) -> Run:
    def run(ctl: Ctl, ns: argparse.Namespace) -> int:
        ctl.show(ctl.call(cmd, {}),
                 lambda result: render.changes(result["changes"], done=cmd == "update"))
        return EXIT_OK

    return run


def cmd_reload(ctl: Ctl, ns: argparse.Namespace) -> int:
    result = ctl.call("reload", {})
    if ctl.json:
        ctl.dump(result)
        return EXIT_OK
    slots = result.get("recycling") or []
    if slots:
        ctl.say("Recycling workers " + ", ".join(str(s) for s in slots)
                + " (rolling restart, one slot at a time)")
    else:
        ctl.say("No workers to recycle")
    return EXIT_OK


def cmd_shutdown(ctl: Ctl, ns: argparse.Namespace) -> int:
    if ctl.interactive and not ns.yes:
        try:
            answer = input("Really shut the remote phalanxd process down y/N? ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            return EXIT_OK
    result = ctl.call("shutdown", {})
    if ctl.json:
        ctl.dump(result)
    else:
        n = result.get("unfinished", 0)
        ctl.say(f"Shut down (draining: {n} unfinished task{'s' if n != 1 else ''})")
    return EXIT_OK


def _shutdown_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-y", "--yes", action="store_true", help="do not ask (interactive shell)")


def _resize_command(cmd: str) -> Run:
    def run(ctl: Ctl, ns: argparse.Namespace) -> int:
        ctl.show(ctl.call(cmd, {"n": ns.n}),
                 lambda r: f"workers: {r['was']} -> {r['workers']}")
        return EXIT_OK

    return run


def _resize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("n", nargs="?", type=int, default=1, help="how many workers (default 1)")


def cmd_version(ctl: Ctl, ns: argparse.Namespace) -> int:
    ctl.show(ctl.call("version", {}), lambda r: f"phalanxd {r['version']}  pid {r['pid']}"
             f"  boot {r['boot']}")
    return EXIT_OK


def cmd_config(ctl: Ctl, ns: argparse.Namespace) -> int:
    ctl.show(ctl.call("config", {}), render.config)
    return EXIT_OK


def cmd_avail(ctl: Ctl, ns: argparse.Namespace) -> int:
    ctl.show(ctl.call("avail", {}), lambda names: "\n".join(str(n) for n in names))
    return EXIT_OK


def cmd_help(ctl: Ctl, ns: argparse.Namespace) -> int:
    if ns.topic:
        command = COMMANDS.get(ns.topic)
        if command is None:
            raise UsageError(f"no such command {ns.topic!r}; try 'help'")
        ctl.say(parser_for(command, command.name).format_help().rstrip())
        return EXIT_OK
    ctl.say(help_text())
    return EXIT_OK


def help_text() -> str:
    rows = [[name, c.summary] for name, c in COMMANDS.items()]
    return ("commands (type help <command>):\n\n" + render.table(rows)
            + "\n\nIn the shell also: quit, exit (or Ctrl-D).")


def _help_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", nargs="?", metavar="COMMAND")


# ---------------------------------------------------------------- table
_TABLE = [
    Command("status", "show the state of worker slots (exit 3 if any is not RUNNING)",
            cmd_status, _slots_optional, completes="slots", status_codes=True),
    Command("start", "start stopped slots", ctl_slots.cmd_start, ctl_slots.slot_args,
            completes="slots"),
    Command("stop", "stop slots (SIGTERM, then SIGKILL to the worker's process group)",
            ctl_slots.cmd_stop, ctl_slots.slot_args, completes="slots"),
    Command("restart", "stop, then start slots", ctl_slots.cmd_restart, ctl_slots.slot_args,
            completes="slots"),
    Command("signal", "send a signal to the workers of slots", ctl_slots.cmd_signal,
            ctl_slots.signal_args, completes="signal"),
    Command("pid", "the daemon's pid, or the workers' pids of slots", ctl_slots.cmd_pid,
            _slots_optional, completes="slots"),
    Command("tail", "a slot's captured stdout/stderr; -f follows it", ctl_stream.cmd_tail,
            ctl_stream.tail_args, completes="slot"),
    Command("maintail", "the daemon's own log; -f follows it", ctl_stream.cmd_maintail,
            ctl_stream.maintail_args),
    Command("clear", "clear slots' captured output", ctl_slots.cmd_clear,
            ctl_slots.targets, completes="slots"),
    Command("stats", "task counters, rate, latency, per-task totals", cmd_stats),
    Command("top", "stats and status, refreshed every second (q to quit)",
            ctl_stream.cmd_top, ctl_stream.top_args),
    Command("pause", "stop accepting tasks (queued and running work goes on)",
            _flag_command("pause", "paused")),
    Command("resume", "accept tasks again", _flag_command("resume", "resumed")),
    Command("reread", "show what changed in the config file", _changes_command("reread")),
    Command("update", "apply config file changes (pool size, limits, ...)",
            _changes_command("update")),
    Command("incr", "grow the pool by one worker (or N) until the next update",
            _resize_command("incr"), _resize_args),
    Command("decr", "shrink the pool by one worker (or N); its tasks finish first",
            _resize_command("decr"), _resize_args),
    Command("reload", "rolling restart of every worker, no task lost", cmd_reload),
    Command("shutdown", "drain and stop the daemon", cmd_shutdown, _shutdown_args),
    Command("version", "the daemon's version, pid and boot id", cmd_version),
    Command("config", "the daemon's effective configuration", cmd_config),
    Command("avail", "task names the workers can run", cmd_avail),
    Command("result", "a task's result by id (from the journal; exit 1 if it failed)",
            ctl_tasks.cmd_result, ctl_tasks.result_args),
    Command("tasks", "pending tasks and recently finished ones", ctl_tasks.cmd_tasks,
            ctl_tasks.tasks_args),
    Command("events", "print published events as they happen (Ctrl-C stops)",
            ctl_stream.cmd_events, ctl_stream.events_args),
    Command("help", "list commands, or help COMMAND", cmd_help, _help_args),
]
COMMANDS: dict[str, Command] = {c.name: c for c in _TABLE}


def arguments(argv: list[str]) -> list[str]:
    """supervisorctl's ``tail -100 0`` means ``tail -n 100 0``."""
    return [a for arg in argv for a in (["-n", arg[1:]] if arg[1:].isdigit()
                                        and arg.startswith("-") else [arg])]


def parse(command: Command, argv: list[str], prog: str) -> argparse.Namespace:
    if command.name in ("tail", "maintail"):
        argv = arguments(argv)
    return parser_for(command, prog).parse_args(argv)
