"""Control commands over the journal: ``result`` (one id) and ``tasks``
(pending and recently finished). Payloads stay undecoded: a result's value
travels as the MessagePack bytes the worker made (``Raw``), which the
control reply splices in as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.errors import BadRequest, UnknownId
from supervisor.protocol import Result

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon

MAX_LIMIT = 10_000


def _result_map(r: Result) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "task": r.task, "ok": r.ok, "attempts": r.attempts}
    if r.ok:
        out["value"] = r.value
    else:
        out["error"] = r.error
    return out


def cmd_result(d: Daemon, args: dict[str, Any]) -> Any:
    tid = args.get("id")
    if not isinstance(tid, str):
        raise BadRequest("id must be a task id (a string)")
    task = d.pool.table.by_id.get(tid)
    if task is not None:
        return {"id": tid, "task": task.name, "state": "running" if task.slot is not None
                else "queued", "attempts": task.attempts}
    found = d.pool.table.cached_result(tid)
    if not isinstance(found, Result):
        found = d.journal.result(tid)
    if found is None:
        raise UnknownId(f"no pending or retained task has id {tid!r}")
    return {**_result_map(found), "state": "finished"}


def cmd_tasks(d: Daemon, args: dict[str, Any]) -> Any:
    limit = args.get("limit", 20)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 0 to {MAX_LIMIT}")
    pending: list[dict[str, Any]] = []
    for task in d.pool.table.by_key.values():
        if len(pending) >= limit:
            break
        pending.append({"id": task.id, "task": task.name, "attempts": task.attempts,
                        "state": "running" if task.slot is not None else "queued",
                        "slot": task.slot})
    return {"pending_count": len(d.pool.table), "pending": pending,
            "recent": d.journal.recent(limit), "journal": d.journal.stats()}


COMMANDS = {"result": cmd_result, "tasks": cmd_tasks}
