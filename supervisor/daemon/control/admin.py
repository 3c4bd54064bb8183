"""Commands that change the daemon: pause, resume, reread, update, reload,
shutdown, incr, decr (grow or shrink the pool, as circus does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.daemon import reload, shutdown
from supervisor.daemon.control.args import ConfigInvalid, int_arg
from supervisor.errors import BadRequest, ConfigError

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


MAX_STEP = 64  # workers one incr/decr may add or remove
MAX_POOL = 1024  # workers incr may grow the pool to


def _resize_by(d: Daemon, args: dict[str, Any], sign: int) -> Any:
    step = int_arg(args, "n", 1)
    assert step is not None
    if not 1 <= step <= MAX_STEP:
        raise BadRequest(f"n must be between 1 and {MAX_STEP}")
    if d.draining:
        raise BadRequest("the daemon is stopping; the pool is not resized")
    before = sum(1 for s in d.pool.slots if not s.retire)
    target = before + sign * step
    if target < 1:
        raise BadRequest(f"the pool has {before} worker(s) and cannot shrink below one")
    if target > MAX_POOL:
        raise BadRequest(f"the pool cannot grow beyond {MAX_POOL} workers with incr")
    d.pool.resize(target)
    # Like `update` growing the pool: until the next `update` or reload
    # re-reads workers.count from the file.
    return {"workers": target, "was": before}


def cmd_incr(d: Daemon, args: dict[str, Any]) -> Any:
    return _resize_by(d, args, +1)


def cmd_decr(d: Daemon, args: dict[str, Any]) -> Any:
    return _resize_by(d, args, -1)
