"""Admission: the rules that refuse a task before it is accepted.

Pure reads of the daemon's state (paused, draining, the allowlist, what
the workers said they can run, the pending bounds in count and bytes);
intake.py applies them to each task of a request. Nothing here raises on
the hot path: a refusal is returned as the RequestError to send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.errors import (
    BadRequest,
    LimitExceeded,
    NotAllowed,
    Overloaded,
    Paused,
    RequestError,
    ShuttingDown,
    UnknownTask,
)
from supervisor.protocol import PICKLE_TASK, TaskIn, is_array, is_map

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon


def request_refusal(d: Daemon) -> RequestError | None:
    """Why no task of any request would be accepted right now, if so."""
    if d.draining:
        return ShuttingDown("daemon is shutting down; submit to another instance")
    if d.paused:
        return Paused("intake is paused by the operator")
    return None


def name_refusal(d: Daemon, name: str) -> RequestError | None:
    if name == PICKLE_TASK:
        if d.cfg.tasks.accept_pickle:
            return None  # a private Pool's daemon, before its workers said hello
        return NotAllowed(
            "pickled tasks are accepted only by a private supervisor.Pool's own daemon; "
            "this daemon runs MessagePack tasks from tasks.allow"
        )
    module, sep, fn = name.partition(":")
    if not sep or not module or not fn:
        return BadRequest(f"task name {name!r} is not 'module:function'")
    if module not in d.pool.allow:
        return NotAllowed(f"module {module!r} is not in tasks.allow")
    if d.pool.known_tasks:  # once a worker has listed what it can run
        why = d.pool.import_errors.get(module)
        if why:
            return UnknownTask(f"no task named {name!r}: module {module!r} failed to import "
                               f"in the workers: {why}")
        return UnknownTask(f"no task named {name!r}")
    return None


class Checker:
    """Per-task checks, with what they read bound once per request (a
    request carries up to hundreds of tasks: the lookups add up).
    ``check`` returns the RequestError that refuses a task, or None (hot
    path: no raise)."""

    __slots__ = ("d", "known", "limits", "table", "id_chars")

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.known = d.pool.known_tasks
        self.limits = d.cfg.tasks
        self.table = d.pool.table
        # An id of this many characters may be over max_id_bytes (UTF-8
        # takes at most 4 bytes a character); shorter ones never are.
        self.id_chars = self.limits.max_id_bytes // 4

    def check(self, spec: TaskIn) -> RequestError | None:
        if spec.task not in self.known:
            err = name_refusal(self.d, spec.task)
            if err is not None:
                return err
        limits = self.limits
        task_id = spec.id
        if task_id is not None and len(task_id) > self.id_chars and len(
                task_id.encode()) > limits.max_id_bytes:
            return BadRequest(f"task id is longer than {limits.max_id_bytes} bytes")
        if spec.args and not is_array(spec.args):
            return BadRequest("args must be an array")
        if spec.kwargs and not is_map(spec.kwargs):
            return BadRequest("kwargs must be a map")
        if spec.timeout is not None and not spec.timeout >= 0:
            return BadRequest("timeout must be a number >= 0")
        if spec.max_attempts is not None and spec.max_attempts < 1:
            return BadRequest("max_attempts must be >= 1")
        if spec.soft_timeout is not None and not spec.soft_timeout >= 0:
            return BadRequest("soft_timeout must be a number >= 0")
        # A malformed field is named before a limit (the fuzz test's contract).
        if spec.max_attempts is not None and spec.max_attempts > limits.max_attempts_limit:
            return LimitExceeded(
                f"max_attempts {spec.max_attempts} is over tasks.max_attempts_limit "
                f"({limits.max_attempts_limit})"
            )
        table = self.table
        if len(table) >= limits.max_pending:
            return Overloaded(f"{len(table)} tasks pending, limit {limits.max_pending}")
        if table.pending_bytes >= limits.max_pending_bytes:
            return Overloaded(
                f"{table.pending_bytes} bytes of pending arguments, limit "
                f"{limits.max_pending_bytes}"
            )
        return None
