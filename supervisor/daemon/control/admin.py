"""Commands that change the daemon: pause, resume, reread, update, reload, shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.daemon import reload, shutdown
from supervisor.daemon.control.args import ConfigInvalid
from supervisor.errors import ConfigError

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon


def cmd_pause(d: Daemon, args: dict[str, Any]) -> Any:
    d.set_paused(True)
    return {"paused": True}


def cmd_resume(d: Daemon, args: dict[str, Any]) -> Any:
    d.set_paused(False)
    return {"paused": False}


def cmd_reread(d: Daemon, args: dict[str, Any]) -> Any:
    try:
        _, changes = reload.reread(d)
    except ConfigError as exc:
        raise ConfigInvalid(str(exc)) from None
    return {"changes": [c.as_dict() for c in changes]}


def cmd_update(d: Daemon, args: dict[str, Any]) -> Any:
    try:
        changes = reload.update_from_file(d)
    except ConfigError as exc:
        raise ConfigInvalid(str(exc)) from None
    return {"changes": [c.as_dict() for c in changes]}


def cmd_reload(d: Daemon, args: dict[str, Any]) -> Any:
    return {"recycling": d.pool.recycle_all()}


def cmd_shutdown(d: Daemon, args: dict[str, Any]) -> Any:
    shutdown.begin_drain(d)
    return {"draining": True, "unfinished": len(d.pool.table)}
