"""Control commands: one small handler each, found through ``COMMANDS``.

The handlers live by subject: slots.py (status, start, stop, restart,
signal, pid), output.py (tail, maintail, clear), info.py (stats, version,
config, avail), admin.py (pause, resume, reread, update, reload, shutdown);
args.py parses their arguments.

Every handler takes the daemon and the request's ``args`` map and returns
plain data (the reply's ``result``), or raises a RequestError whose type
the client sees. docs/PROTOCOL.md lists each command's arguments and result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.daemon.control import journal_commands
from supervisor.daemon.control.admin import (
    cmd_decr,
    cmd_incr,
    cmd_pause,
    cmd_reload,
    cmd_reread,
    cmd_resume,
    cmd_shutdown,
    cmd_update,
)
from supervisor.daemon.control.args import Handler
from supervisor.daemon.control.info import (
    cmd_avail,
    cmd_config,
    cmd_snapshot,
    cmd_stats,
    cmd_version,
)
from supervisor.daemon.control.output import cmd_clear, cmd_maintail, cmd_tail
from supervisor.daemon.control.slots import (
    cmd_pid,
    cmd_restart,
    cmd_signal,
    cmd_start,
    cmd_status,
    cmd_stop,
)

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon


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
    "incr": cmd_incr,
    "decr": cmd_decr,
    "snapshot": cmd_snapshot,
    "help": cmd_help,
    **journal_commands.COMMANDS,
}
